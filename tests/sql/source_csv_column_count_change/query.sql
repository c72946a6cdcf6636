-- Never runs: reading the source fails and names the line with the extra field.
SELECT * FROM bands
