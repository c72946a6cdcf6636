-- At most 20 of the 30 distinct images, each once, with ranks 1..20; the chosen set is
-- fixed by the seed.
SELECT count(*) AS images, count(DISTINCT data_uri) AS distinct_images,
    min(sample_rank) AS first_rank, max(sample_rank) AS last_rank,
    sum(CAST(regexp_replace(product_filename, '[^0-9]', '', 'g') AS BIGINT)) AS checksum_of_ids
FROM samples
