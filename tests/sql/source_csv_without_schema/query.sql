-- Never runs: loading the pipeline file fails and demands a schema.
SELECT * FROM classified
