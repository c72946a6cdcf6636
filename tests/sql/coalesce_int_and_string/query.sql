-- COALESCE of an integer and a string: with the integer cast to VARCHAR first, the result
-- is a string and a NULL integer becomes ''. Without the cast, DataFusion 55.2 chooses
-- BIGINT and COALESCE(n, '') fails to plan; see tests/sql/README.md.
SELECT
    n,
    COALESCE(CAST(n AS VARCHAR), '') AS label,
    arrow_typeof(COALESCE(CAST(n AS VARCHAR), '')) AS label_type
FROM (VALUES (1), (NULL)) AS t(n)
ORDER BY n NULLS LAST
