-- A COALESCE over a CASE that may return NULL, inside a self join, keeps the literal's
-- value and type (some engines inserted a narrowing cast and failed on 11111).
WITH t AS (SELECT 11111 AS n, CASE WHEN 1 = 0 THEN 1 ELSE NULL END AS maybe)
SELECT
    COALESCE(a.maybe, b.n) AS coalesced,
    arrow_typeof(COALESCE(a.maybe, b.n)) AS coalesced_type
FROM t a JOIN t b ON a.n = b.n
