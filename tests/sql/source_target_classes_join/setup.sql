CREATE TABLE settings AS SELECT 42 AS seed, 20 AS max_images_per_proposal, 0.1 AS val_fraction,
    true AS fits_fallback, 'paper' AS caption_form, 0 AS min_cycle, 31 AS max_cycle;
CREATE TABLE observations (
    obsid BIGINT, obs_id VARCHAR, proposal_id BIGINT, obs_collection VARCHAR,
    instrument_name VARCHAR, target_name VARCHAR, filters VARCHAR, dataproduct_type VARCHAR,
    calib_level BIGINT, t_min DOUBLE, t_exptime DOUBLE, s_ra DOUBLE, s_dec DOUBLE,
    obs_title VARCHAR, proposal_pi VARCHAR
) AS VALUES
    (1, 'a1', 100, 'HST', 'ACS/WFC', 'NGC-1300', 'F606W', 'image', 3, NULL, NULL, NULL, NULL, NULL, NULL),
    (2, 'b1', 200, 'HST', 'ACS/SBC', 'M-42', 'F165LP', 'image', 1, NULL, NULL, NULL, NULL, NULL, NULL),
    (3, 'c1', 300, 'HST', 'STIS/CCD', 'HD-189733', 'G750M', 'spectrum', 1, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE products (
    obsid BIGINT, parent_obsid BIGINT, obs_id VARCHAR, data_uri VARCHAR, product_type VARCHAR,
    product_subgroup VARCHAR, product_filename VARCHAR, size_bytes BIGINT, description VARCHAR
) AS VALUES
    (1, 1, 'a1', 'mast:HST/product/hst_100_01_acs_wfc_total_a1_drc.jpg', 'PREVIEW', NULL, 'hst_100_01_acs_wfc_total_a1_drc.jpg', 10, NULL),
    (1, 1, 'a1', 'mast:HST/product/hst_100_01_acs_wfc_color_a1_drc.jpg', 'PREVIEW', NULL, 'hst_100_01_acs_wfc_color_a1_drc.jpg', 10, NULL),
    (1, 1, 'a1', 'mast:HST/product/hst_100_01_acs_wfc_f606w_a1_drc.jpg', 'PREVIEW', NULL, 'hst_100_01_acs_wfc_f606w_a1_drc.jpg', 10, NULL),
    (1, 1, 'a1', 'mast:HST/product/a1_drc.fits', 'SCIENCE', 'DRC', 'a1_drc.fits', 10, NULL),
    (2, 2, 'b1', 'mast:HST/product/b1_raw.fits', 'SCIENCE', 'RAW', 'b1_raw.fits', 10, NULL),
    (2, 2, 'b1', 'mast:HST/product/b1_spt.fits', 'AUXILIARY', 'SPT', 'b1_spt.fits', 10, NULL),
    (3, 3, 'c1', 'mast:HST/product/c1_raw.fits', 'SCIENCE', 'RAW', 'c1_raw.fits', 10, NULL);
CREATE TABLE proposals AS SELECT value AS proposal_id, 20 AS cycle, 'GO' AS proposal_type,
    'GALAXIES' AS category, 't' AS title, 'p' AS pi, ' a' AS abstract_raw,
    'Category: GALAXIES.  a' AS caption_paper, 'Category: GALAXIES. a' AS caption_clean,
    CAST(NULL AS VARCHAR) AS text_repairs
FROM (VALUES (100), (200), (300)) AS ids(value);
