-- Never runs: reading the source fails and names the line and the column of "seven".
SELECT * FROM exposures
