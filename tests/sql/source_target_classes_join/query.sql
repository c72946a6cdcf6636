-- NGC-1300 is in the CSV, M-42 is not; HD-189733 is a spectrum and never a sample.
SELECT proposal_id, target_name, caption, caption_form
FROM classified_samples
ORDER BY proposal_id
