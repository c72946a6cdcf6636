-- The column is Int64 and nullable, the 1,000 empty fields are NULL, and the three
-- values after them are read as numbers.
SELECT
    c.column_name,
    c.data_type,
    c.is_nullable,
    (SELECT count(*) FROM readings) AS data_rows,
    (SELECT count(*) FROM counted_targets) AS counted_rows,
    (SELECT sum(exposure_count) FROM counted_targets) AS exposure_total
FROM information_schema.columns c
WHERE c.table_name = 'readings'
ORDER BY c.ordinal_position
