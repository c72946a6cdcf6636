-- COALESCE of numbers and strings is a string: the numbers are cast to the string type,
-- so COALESCE(1, '') is '1' and a NULL integer becomes ''. Numbers alone stay numeric.
SELECT
    n,
    COALESCE(n, '') AS label,
    arrow_typeof(COALESCE(n, '')) AS label_type,
    COALESCE(1, '') AS literal,
    arrow_typeof(COALESCE(1, '')) AS literal_type,
    COALESCE(n, x, 'none') AS first_present,
    arrow_typeof(COALESCE(n, 2.5)) AS numbers_type
FROM (VALUES (1, 'a'), (NULL, 'b'), (NULL, NULL)) AS t(n, x)
ORDER BY n NULLS LAST, x NULLS LAST
