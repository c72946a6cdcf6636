-- With caption form 'summary', a proposal with an ok summary gets the summary caption;
-- one whose summary was rejected, or that has none, gets its paper caption, marked as a
-- fallback. The summary key stays for lineage, also for the rejected summary.
SELECT proposal_id, caption, caption_form, caption_source, summary_key
FROM samples
ORDER BY proposal_id
