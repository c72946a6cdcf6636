CREATE TABLE settings AS SELECT 42 AS seed, 20 AS max_images_per_proposal, 0.0 AS val_fraction,
    false AS fits_fallback, 'summary' AS caption_form, 0 AS min_cycle, 31 AS max_cycle;
CREATE TABLE observations (
    obsid BIGINT, obs_id VARCHAR, proposal_id BIGINT, obs_collection VARCHAR,
    instrument_name VARCHAR, target_name VARCHAR, filters VARCHAR, dataproduct_type VARCHAR,
    calib_level BIGINT, t_min DOUBLE, t_exptime DOUBLE, s_ra DOUBLE, s_dec DOUBLE,
    obs_title VARCHAR, proposal_pi VARCHAR
) AS VALUES
    (1, 'a1', 100, 'HST', 'ACS/WFC', 'T', 'F606W', 'image', 3, NULL, NULL, NULL, NULL, NULL, NULL),
    (2, 'b1', 200, 'HST', 'ACS/WFC', 'T', 'F606W', 'image', 3, NULL, NULL, NULL, NULL, NULL, NULL),
    (3, 'c1', 300, 'HST', 'ACS/WFC', 'T', 'F606W', 'image', 3, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE products (
    obsid BIGINT, parent_obsid BIGINT, obs_id VARCHAR, data_uri VARCHAR, product_type VARCHAR,
    product_subgroup VARCHAR, product_filename VARCHAR, size_bytes BIGINT, description VARCHAR
) AS VALUES
    (1, 1, 'a1', 'mast:HST/product/hst_100_01_acs_wfc_total_a1_drc.jpg', 'PREVIEW', NULL, 'hst_100_01_acs_wfc_total_a1_drc.jpg', 10, NULL),
    (2, 2, 'b1', 'mast:HST/product/hst_200_01_acs_wfc_total_b1_drc.jpg', 'PREVIEW', NULL, 'hst_200_01_acs_wfc_total_b1_drc.jpg', 10, NULL),
    (3, 3, 'c1', 'mast:HST/product/hst_300_01_acs_wfc_total_c1_drc.jpg', 'PREVIEW', NULL, 'hst_300_01_acs_wfc_total_c1_drc.jpg', 10, NULL);
CREATE TABLE proposals AS SELECT value AS proposal_id, 20 AS cycle, 'GO' AS proposal_type,
    'GALAXIES' AS category, 't' AS title, 'p' AS pi, ' a' AS abstract_raw,
    concat('Category: GALAXIES.  abstract ', value) AS caption_paper,
    concat('Category: GALAXIES. abstract ', value) AS caption_clean,
    CAST(NULL AS VARCHAR) AS text_repairs
FROM (VALUES (100), (200), (300)) AS ids(value);
-- chr(59) is the semicolon of the caption, since this file is split at semicolons.
CREATE TABLE summaries AS
SELECT 100 AS proposal_id, 'ok' AS status,
    concat('spiral galaxies', chr(59), ' measure star formation') AS caption_summary,
    'key100' AS summary_key, CAST(NULL AS VARCHAR) AS reason
UNION ALL
SELECT 200, 'rejected', NULL, 'key200', 'schema_violation';
