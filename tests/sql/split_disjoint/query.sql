-- No proposal is in both splits, roughly 20% of proposals are in validation, and the
-- clean caption form was used.
SELECT
    (SELECT count(*) FROM (SELECT proposal_id FROM samples GROUP BY proposal_id
                           HAVING count(DISTINCT split) > 1)) AS proposals_in_both_splits,
    (SELECT count(DISTINCT proposal_id) FROM samples WHERE split = 'val') AS val_proposals,
    (SELECT count(DISTINCT proposal_id) FROM samples) AS proposals,
    (SELECT min(caption) FROM samples) AS caption
