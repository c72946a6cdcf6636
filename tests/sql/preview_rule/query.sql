-- Only "total" previews without "color" pass the preview rule; a proposal without any
-- preview contributes its science FITS images; spectra and auxiliary files never do.
SELECT proposal_id, product_filename, image_rule
FROM candidate_images
ORDER BY proposal_id, product_filename
