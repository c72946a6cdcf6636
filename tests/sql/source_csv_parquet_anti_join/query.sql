-- Closures (2024-03-01, Pasadena), (2024-03-02, Baltimore) and (2024-03-03, Tucson)
-- remove two visits; the string types of both sides are shown.
SELECT
    o.date,
    o.city,
    o.visitors,
    arrow_typeof(o.city) AS csv_type,
    (SELECT DISTINCT arrow_typeof(c.city) FROM closures c) AS parquet_type
FROM open_visits o
ORDER BY o.date, o.city
