SELECT o.obs_id, o.target_name, t.class, t.priority
FROM observations o
JOIN target_classes t ON o.target_name = t.target_name
