-- The dataset's samples: at most settings.max_images_per_proposal images per proposal,
-- chosen by seeded sampling without replacement, with a proposal-disjoint
-- train/validation split and the caption form chosen in the pipeline file.
--
-- Caption forms: 'paper' and 'clean' are built from the abstract; 'summary' is the LLM
-- summary ("objects, ...; use cases, ...") from the summaries table. A proposal whose
-- summary is missing or failed gets its paper caption instead, with
-- caption_source = 'abstract_fallback', so the fallback is visible in every sample.
--
-- seeded_uniform(seed, key) is a value in [0, 1) that depends only on the seed and the
-- key, so the sample and the split are reproducible and do not reshuffle when other
-- proposals or products are added.
WITH distinct_products AS (
    -- A data URI listed under several observations of a proposal is one image;
    -- keep it once, under its lowest obsid.
    SELECT *
    FROM (
        SELECT
            c.*,
            row_number() OVER (PARTITION BY c.proposal_id, c.data_uri ORDER BY c.obsid) AS uri_rank
        FROM candidate_images c
    )
    WHERE uri_rank = 1
),
ranked AS (
    SELECT
        d.*,
        row_number() OVER (
            PARTITION BY d.proposal_id
            ORDER BY seeded_uniform(s.seed, concat('image:', d.data_uri)), d.data_uri
        ) AS sample_rank
    FROM distinct_products d
    CROSS JOIN settings s
)
SELECT
    r.proposal_id,
    pr.cycle,
    pr.proposal_type,
    pr.category,
    pr.title,
    pr.pi,
    r.obsid,
    r.obs_id,
    r.instrument_name,
    r.target_name,
    r.filters,
    r.s_ra,
    r.s_dec,
    r.data_uri,
    r.product_filename,
    r.product_type,
    r.size_bytes,
    r.image_rule,
    r.sample_rank,
    CASE
        WHEN seeded_uniform(s.seed, concat('split:', CAST(r.proposal_id AS VARCHAR))) < s.val_fraction
        THEN 'val'
        ELSE 'train'
    END AS split,
    CASE
        WHEN s.caption_form = 'summary' THEN coalesce(su.caption_summary, pr.caption_paper)
        WHEN s.caption_form = 'paper' THEN pr.caption_paper
        ELSE pr.caption_clean
    END AS caption,
    CASE
        WHEN s.caption_form = 'summary' AND su.caption_summary IS NULL THEN 'paper'
        ELSE s.caption_form
    END AS caption_form,
    CASE
        WHEN s.caption_form <> 'summary' THEN 'abstract'
        WHEN su.caption_summary IS NULL THEN 'abstract_fallback'
        ELSE 'summary'
    END AS caption_source,
    -- The cache key of the summary, also when it failed, because its row in the summary
    -- cache records why.
    CASE WHEN s.caption_form = 'summary' THEN su.summary_key END AS summary_key,
    pr.caption_paper,
    pr.caption_clean,
    pr.text_repairs
FROM ranked r
JOIN proposals pr ON pr.proposal_id = r.proposal_id
CROSS JOIN settings s
LEFT JOIN summaries su ON su.proposal_id = r.proposal_id
WHERE r.sample_rank <= s.max_images_per_proposal
