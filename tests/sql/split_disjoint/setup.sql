CREATE TABLE settings AS SELECT 7 AS seed, 20 AS max_images_per_proposal, 0.2 AS val_fraction,
    false AS fits_fallback, 'clean' AS caption_form, 0 AS min_cycle, 31 AS max_cycle;
CREATE TABLE proposals AS SELECT value AS proposal_id, 20 AS cycle, 'GO' AS proposal_type,
    'STARS' AS category, 't' AS title, 'p' AS pi, ' a' AS abstract_raw,
    'Category: STARS.  a' AS caption_paper, 'Category: STARS. a' AS caption_clean,
    CAST(NULL AS VARCHAR) AS text_repairs
FROM generate_series(1, 200);
CREATE TABLE observations AS SELECT value AS obsid, concat('o', value) AS obs_id,
    value AS proposal_id, 'HST' AS obs_collection, 'ACS/WFC' AS instrument_name,
    'T' AS target_name, 'F606W' AS filters, 'image' AS dataproduct_type,
    CAST(NULL AS DOUBLE) AS s_ra, CAST(NULL AS DOUBLE) AS s_dec
FROM generate_series(1, 200);
CREATE TABLE products AS
SELECT o.value AS obsid, o.value AS parent_obsid, concat('o', o.value) AS obs_id,
    concat('mast:HST/product/hst_', o.value, '_', i.value, '_total.jpg') AS data_uri,
    'PREVIEW' AS product_type, CAST(NULL AS VARCHAR) AS product_subgroup,
    concat('hst_', o.value, '_', i.value, '_total.jpg') AS product_filename, 10 AS size_bytes
FROM generate_series(1, 200) o CROSS JOIN generate_series(1, 3) i;
