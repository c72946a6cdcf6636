-- Image products eligible for the dataset: one row per (observation, product).
--
-- Inputs: products (Mast.Caom.Products rows), observations (Mast.Caom.Filtered rows),
-- settings (one row of pipeline settings).
--
-- Preview rule of the PAPERCLIP method: productType PREVIEW whose file name contains
-- "total" (the Hubble Advanced Products total-detection previews) and not "color"
-- (multi-filter colour composites).
--
-- FITS rule, only when settings.fits_fallback is true: science images (raw, calibrated
-- or drizzled FITS) of imaging observations, for proposals that have no preview at all.
WITH product_rows AS (
    SELECT
        o.proposal_id,
        o.obsid,
        o.obs_id,
        o.instrument_name,
        o.target_name,
        o.filters,
        o.dataproduct_type,
        o.s_ra,
        o.s_dec,
        p.data_uri,
        p.product_filename,
        p.product_type,
        p.product_subgroup,
        p.size_bytes,
        lower(p.product_filename) AS file_name
    FROM products p
    JOIN observations o ON p.parent_obsid = o.obsid
),
previews AS (
    SELECT *, 'preview_total' AS image_rule
    FROM product_rows
    WHERE product_type = 'PREVIEW'
      AND strpos(file_name, 'total') > 0
      AND strpos(file_name, 'color') = 0
      AND (file_name LIKE '%.jpg' OR file_name LIKE '%.jpeg' OR file_name LIKE '%.png')
),
fits_images AS (
    SELECT r.*, 'fits_fallback' AS image_rule
    FROM product_rows r
    CROSS JOIN settings s
    WHERE s.fits_fallback
      AND r.product_type = 'SCIENCE'
      AND r.dataproduct_type = 'image'
      AND upper(coalesce(r.product_subgroup, '')) IN
          ('RAW', 'FLT', 'FLC', 'CAL', 'CRJ', 'DRZ', 'DRC', 'SFL', 'C0M', 'C0F')
      AND (r.file_name LIKE '%.fits' OR r.file_name LIKE '%.fits.gz')
      AND r.proposal_id NOT IN (SELECT proposal_id FROM previews)
)
SELECT * FROM previews
UNION ALL
SELECT * FROM fits_images
