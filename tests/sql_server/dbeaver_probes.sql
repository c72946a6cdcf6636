-- Metadata queries modelled on those DBeaver runs when it connects to a PostgreSQL
-- server and opens its navigator (databases, schemas, tables, columns, types).
SET extra_float_digits = 3;
SET application_name = 'DBeaver 25.1.5 - Main';
SELECT current_schema(), session_user;
SHOW search_path;
SELECT version();
SELECT db.oid, db.* FROM pg_catalog.pg_database db WHERE datname = 'datafusion';
SELECT * FROM pg_catalog.pg_settings WHERE name = 'standard_conforming_strings';
SELECT n.oid, n.*, d.description
  FROM pg_catalog.pg_namespace n
  LEFT OUTER JOIN pg_catalog.pg_description d
    ON d.objoid = n.oid AND d.objsubid = 0 AND d.classoid = 'pg_namespace'::regclass
  ORDER BY nspname;
SELECT t.oid, t.*, c.relkind, format_type(nullif(t.typbasetype, 0), t.typtypmod) AS base_type_name,
       d.description
  FROM pg_catalog.pg_type t
  LEFT OUTER JOIN pg_catalog.pg_type et ON et.oid = t.typelem
  LEFT OUTER JOIN pg_catalog.pg_class c ON c.oid = t.typrelid
  LEFT OUTER JOIN pg_catalog.pg_description d ON t.oid = d.objoid
  WHERE t.typname IS NOT NULL AND (c.relkind IS NULL OR c.relkind = 'c')
    AND (et.typcategory IS NULL OR et.typcategory <> 'C');
SELECT c.oid, c.*, d.description
  FROM pg_catalog.pg_class c
  LEFT OUTER JOIN pg_catalog.pg_description d
    ON d.objoid = c.oid AND d.objsubid = 0 AND d.classoid = 'pg_class'::regclass
  WHERE c.relkind NOT IN ('i', 'I', 'c');
SELECT c.relname, a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod) AS type_name,
       a.attnum, a.attnotnull
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  WHERE a.attnum > 0 AND NOT a.attisdropped
  ORDER BY c.relname, a.attnum;
SELECT table_catalog, table_schema, table_name, table_type FROM information_schema.tables
  ORDER BY table_catalog, table_schema, table_name;
SELECT table_schema, table_name, column_name, data_type, is_nullable
  FROM information_schema.columns ORDER BY table_schema, table_name, ordinal_position;
SELECT * FROM pg_catalog.pg_enum WHERE 1 <> 1 LIMIT 1;
SELECT reltype FROM pg_catalog.pg_class WHERE 1 <> 1 LIMIT 1;
