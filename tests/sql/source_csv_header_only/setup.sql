CREATE TABLE observations AS
SELECT obs_id, target_name
FROM (VALUES ('j8xi01', 'NGC-1300'), ('j8xi02', 'M-42')) AS t(obs_id, target_name);
