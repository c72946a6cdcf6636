SELECT band, sum(n) AS n FROM readings GROUP BY band
