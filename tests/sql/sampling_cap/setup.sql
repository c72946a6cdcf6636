CREATE TABLE settings AS SELECT 42 AS seed, 20 AS max_images_per_proposal, 0.1 AS val_fraction,
    false AS fits_fallback, 'paper' AS caption_form, 0 AS min_cycle, 31 AS max_cycle;
CREATE TABLE proposals AS SELECT 100 AS proposal_id, 20 AS cycle, 'GO' AS proposal_type,
    'GALAXIES' AS category, 't' AS title, 'p' AS pi, ' a' AS abstract_raw,
    'Category: GALAXIES.  a' AS caption_paper, 'Category: GALAXIES. a' AS caption_clean,
    CAST(NULL AS VARCHAR) AS text_repairs;
CREATE TABLE observations AS SELECT value AS obsid, concat('o', value) AS obs_id,
    100 AS proposal_id, 'HST' AS obs_collection, 'ACS/WFC' AS instrument_name,
    'T' AS target_name, 'F606W' AS filters, 'image' AS dataproduct_type,
    CAST(NULL AS DOUBLE) AS s_ra, CAST(NULL AS DOUBLE) AS s_dec
FROM generate_series(1, 30);
-- 30 previews, and the first one listed a second time under observation 2.
CREATE TABLE products AS
SELECT value AS obsid, value AS parent_obsid, concat('o', value) AS obs_id,
    concat('mast:HST/product/hst_100_', value, '_total_drc.jpg') AS data_uri,
    'PREVIEW' AS product_type, CAST(NULL AS VARCHAR) AS product_subgroup,
    concat('hst_100_', value, '_total_drc.jpg') AS product_filename, 10 AS size_bytes
FROM generate_series(1, 30)
UNION ALL
SELECT 2, 2, 'o2', 'mast:HST/product/hst_100_1_total_drc.jpg', 'PREVIEW', NULL,
    'hst_100_1_total_drc.jpg', 10;
