-- The method's samples with the curator's target class ahead of the abstract; targets
-- missing from target_classes.csv are 'unclassified'.
SELECT
    s.* EXCLUDE (caption, caption_form),
    concat('Class: ', coalesce(t.class, 'unclassified'), '. ', s.caption_clean) AS caption,
    'classified' AS caption_form
FROM samples s
LEFT JOIN target_classes t ON s.target_name = t.target_name
