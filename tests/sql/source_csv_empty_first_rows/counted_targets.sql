SELECT target_name, exposure_count
FROM readings
WHERE exposure_count IS NOT NULL
