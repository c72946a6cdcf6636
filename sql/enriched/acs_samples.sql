-- ACS images only, captioned with the archive's metadata of each observation before
-- the proposal's abstract: "Target: X. Instrument: Y. Filters: Z. <clean caption>".
--
-- Reads the samples model, so the per-proposal cap and the split are the main
-- pipeline's: a proposal keeps its ACS images among the ones sampled for it.
SELECT
    s.* EXCLUDE (caption, caption_form),
    concat(
        'Target: ', coalesce(s.target_name, 'unknown'),
        '. Instrument: ', s.instrument_name,
        '. Filters: ', coalesce(s.filters, 'none'),
        '. ', s.caption_clean
    ) AS caption,
    'enriched' AS caption_form
FROM samples s
WHERE s.instrument_name LIKE 'ACS/%'
