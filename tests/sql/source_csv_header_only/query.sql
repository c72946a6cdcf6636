-- The source and the model keep their column types, and the model returns no rows.
SELECT
    c.table_name,
    c.column_name,
    c.data_type,
    c.is_nullable,
    (SELECT count(*) FROM classified_observations) AS model_rows
FROM information_schema.columns c
WHERE c.table_name IN ('target_classes', 'classified_observations')
ORDER BY c.table_name, c.ordinal_position
