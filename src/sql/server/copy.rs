//! `COPY (query) TO STDOUT` and `COPY table TO STDOUT`, the statements that psql's
//! `\copy ... TO 'file'` sends, so analysts can export a result to a file on their own
//! machine. The rows go out in PostgreSQL's text or CSV copy format; nothing is written
//! on the server. Every other form of `COPY` is rejected by the read-only hook.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::arrow_pg::encoder::encode_value;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::{
    CopyCsvOptions, CopyEncoder, CopyResponse, CopyTextOptions, FieldInfo, Response,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::copy::CopyData;
use datafusion_postgres::pgwire::types::format::FormatOptions;
use futures::StreamExt;

/// A `COPY ... TO STDOUT` request: the query whose rows are copied and their format.
#[derive(Debug, Clone)]
pub struct CopyOut {
    query: Statement,
    format: CopyFormat,
}

#[derive(Debug, Clone, PartialEq)]
enum CopyFormat {
    Text(CopyTextOptions),
    Csv {
        options: CopyCsvOptions,
        header: bool,
    },
}

/// Returns whether `statement` is a `COPY ... TO STDOUT`, the only `COPY` that reads.
pub fn is_copy_to_stdout(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Copy {
            to: true,
            target: CopyTarget::Stdout,
            ..
        }
    )
}

impl CopyOut {
    /// Reads a `COPY ... TO STDOUT` statement; `None` for any other statement, and an
    /// error for an option this server does not support.
    pub fn parse(statement: &Statement) -> Option<PgWireResult<Self>> {
        if !is_copy_to_stdout(statement) {
            return None;
        }
        let Statement::Copy {
            source,
            options,
            legacy_options,
            ..
        } = statement
        else {
            return None;
        };
        Some(Self::from_parts(source, options, legacy_options))
    }

    fn from_parts(
        source: &CopySource,
        options: &[CopyOption],
        legacy_options: &[CopyLegacyOption],
    ) -> PgWireResult<Self> {
        let query = match source {
            CopySource::Query(query) => Statement::Query(query.clone()),
            CopySource::Table {
                table_name,
                columns,
            } => {
                let columns = if columns.is_empty() {
                    "*".to_string()
                } else {
                    columns
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                parse_query(&format!("SELECT {columns} FROM {table_name}"))?
            }
        };
        let mut settings = Settings::default();
        for option in options {
            settings.apply(option)?;
        }
        for option in legacy_options {
            settings.apply_legacy(option)?;
        }
        Ok(Self {
            query,
            format: settings.into_format()?,
        })
    }

    /// Runs the query in `ctx` and returns its rows as a copy-out response.
    pub async fn respond(
        &self,
        ctx: &SessionContext,
        format_options: Arc<FormatOptions>,
    ) -> PgWireResult<Response> {
        let plan = super::WireTypes::plan(&self.query, ctx).await?;
        let frame = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        let schema = frame.schema().as_arrow().clone();
        let fields = Arc::new(arrow_schema_to_pg_fields(
            &schema,
            &Format::UnifiedText,
            Some(format_options),
        )?);
        let batches = frame
            .execute_stream()
            .await
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;

        let header = match &self.format {
            CopyFormat::Csv {
                options,
                header: true,
            } => Some(Ok(csv_header(&fields, options))),
            _ => None,
        };
        let format = self.format.clone();
        let rows = batches
            .map(move |batch| match batch {
                Ok(batch) => encode_batch(&batch, &fields, &format),
                Err(e) => vec![Err(PgWireError::ApiError(Box::new(e)))],
            })
            .flat_map(futures::stream::iter);
        let data = futures::stream::iter(header).chain(rows);
        Ok(Response::CopyOut(CopyResponse::new(
            0,
            schema.fields().len(),
            data,
        )))
    }
}

fn parse_query(sql: &str) -> PgWireResult<Statement> {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let mut statements = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql)
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    Ok(statements.remove(0))
}

/// The options of a `COPY` statement, before they are checked against each other.
#[derive(Debug, Default)]
struct Settings {
    format: Option<String>,
    delimiter: Option<char>,
    null: Option<String>,
    header: bool,
    quote: Option<char>,
    escape: Option<char>,
}

impl Settings {
    fn apply(&mut self, option: &CopyOption) -> PgWireResult<()> {
        match option {
            CopyOption::Format(name) => self.format = Some(name.value.to_lowercase()),
            CopyOption::Delimiter(c) => self.delimiter = Some(*c),
            CopyOption::Null(text) => self.null = Some(text.clone()),
            CopyOption::Header(header) => self.header = *header,
            CopyOption::Quote(c) => self.quote = Some(*c),
            CopyOption::Escape(c) => self.escape = Some(*c),
            CopyOption::Encoding(name) if name.eq_ignore_ascii_case("utf8") => {}
            CopyOption::Encoding(name) if name.eq_ignore_ascii_case("utf-8") => {}
            other => return Err(unsupported(&other.to_string())),
        }
        Ok(())
    }

    fn apply_legacy(&mut self, option: &CopyLegacyOption) -> PgWireResult<()> {
        match option {
            CopyLegacyOption::Binary => self.format = Some("binary".to_string()),
            CopyLegacyOption::Delimiter(c) => self.delimiter = Some(*c),
            CopyLegacyOption::Null(text) => self.null = Some(text.clone()),
            CopyLegacyOption::Header => self.header = true,
            CopyLegacyOption::Csv(csv_options) => {
                self.format = Some("csv".to_string());
                for option in csv_options {
                    match option {
                        CopyLegacyCsvOption::Header => self.header = true,
                        CopyLegacyCsvOption::Quote(c) => self.quote = Some(*c),
                        CopyLegacyCsvOption::Escape(c) => self.escape = Some(*c),
                        other => return Err(unsupported(&other.to_string())),
                    }
                }
            }
            other => return Err(unsupported(&other.to_string())),
        }
        Ok(())
    }

    fn into_format(self) -> PgWireResult<CopyFormat> {
        match self.format.as_deref().unwrap_or("text") {
            "text" => {
                if self.header || self.quote.is_some() || self.escape.is_some() {
                    return Err(unsupported("HEADER, QUOTE or ESCAPE with FORMAT text"));
                }
                let defaults = CopyTextOptions::default();
                Ok(CopyFormat::Text(CopyTextOptions {
                    delimiter: self.delimiter.map_or(defaults.delimiter, Into::into),
                    null_string: self.null.map_or(defaults.null_string, Into::into),
                }))
            }
            "csv" => {
                let defaults = CopyCsvOptions::default();
                let quote = self.quote.map_or(defaults.quote, Into::into);
                Ok(CopyFormat::Csv {
                    options: CopyCsvOptions {
                        delimiter: self.delimiter.map_or(defaults.delimiter, Into::into),
                        escape: self.escape.map_or_else(|| quote.clone(), Into::into),
                        quote,
                        null_string: self.null.map_or(defaults.null_string, Into::into),
                        force_quote: Vec::new(),
                    },
                    header: self.header,
                })
            }
            other => Err(unsupported(&format!("FORMAT {other}"))),
        }
    }
}

fn unsupported(option: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        "0A000".to_string(),
        format!(
            "COPY option {option} is not supported by the paperclip SQL server; it copies \
             in FORMAT text or csv with DELIMITER and NULL, and in csv also with HEADER, \
             QUOTE and ESCAPE"
        ),
    )))
}

/// Encodes each row of `batch` as one copy-data message.
fn encode_batch(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
    format: &CopyFormat,
) -> Vec<PgWireResult<CopyData>> {
    let mut encoder = match format {
        CopyFormat::Text(options) => CopyEncoder::new_text(fields.clone(), options.clone()),
        CopyFormat::Csv { options, .. } => CopyEncoder::new_csv(fields.clone(), options.clone()),
    };
    let schema = batch.schema();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let encoded = (0..batch.num_columns()).try_for_each(|column| {
            encode_value(
                &mut encoder,
                batch.column(column),
                row,
                schema.field(column),
                &fields[column],
            )
        });
        match encoded {
            Ok(()) => rows.push(Ok(encoder.take_copy())),
            Err(error) => {
                rows.push(Err(error));
                break;
            }
        }
    }
    rows
}

/// Builds the CSV header line: the column names, quoted where CSV needs it.
fn csv_header(fields: &[FieldInfo], options: &CopyCsvOptions) -> CopyData {
    let quote = options.quote.as_str();
    let names: Vec<String> = fields
        .iter()
        .map(|field| {
            let name = field.name();
            let needs_quotes = name.contains(options.delimiter.as_str())
                || name.contains(quote)
                || name.contains(['\n', '\r']);
            if needs_quotes {
                let doubled = name.replace(quote, &format!("{}{quote}", options.escape));
                format!("{quote}{doubled}{quote}")
            } else {
                name.to_string()
            }
        })
        .collect();
    let line = format!("{}\n", names.join(options.delimiter.as_str()));
    CopyData::new(line.into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> PgWireResult<CopyOut> {
        CopyOut::parse(&parse_query(sql).unwrap()).expect("a COPY TO STDOUT")
    }

    #[test]
    fn psql_copy_csv_header_parses() {
        let copy = parse("COPY (SELECT 1 AS a) TO STDOUT CSV HEADER").unwrap();

        let CopyFormat::Csv { options, header } = copy.format else {
            panic!("{:?}", copy.format);
        };
        assert!(header);
        assert_eq!(options.delimiter, ",");
    }

    #[test]
    fn with_options_parse() {
        let copy = parse(
            "COPY t (a, b) TO STDOUT WITH (FORMAT csv, DELIMITER ';', NULL 'NA', HEADER true)",
        )
        .unwrap();

        assert_eq!(copy.query.to_string(), "SELECT a, b FROM t");
        let CopyFormat::Csv { options, header } = copy.format else {
            panic!("{:?}", copy.format);
        };
        assert!(header);
        assert_eq!(options.delimiter, ";");
        assert_eq!(options.null_string, "NA");
    }

    #[test]
    fn text_is_the_default() {
        let copy = parse("COPY t TO STDOUT").unwrap();

        assert_eq!(copy.format, CopyFormat::Text(CopyTextOptions::default()));
    }

    #[test]
    fn binary_and_unknown_options_rejected() {
        for sql in [
            "COPY t TO STDOUT WITH (FORMAT binary)",
            "COPY t TO STDOUT BINARY",
            "COPY t TO STDOUT WITH (FREEZE true)",
            "COPY t TO STDOUT WITH (HEADER true)",
        ] {
            let Err(PgWireError::UserError(info)) = parse(sql) else {
                panic!("{sql} was accepted");
            };
            assert_eq!(info.code, "0A000", "{sql}");
            assert!(info.message.contains("is not supported"), "{sql}");
        }
    }

    #[test]
    fn other_statements_are_not_copies() {
        for sql in ["SELECT 1", "COPY t TO '/tmp/t.csv'", "COPY t FROM STDIN"] {
            let statement = parse_query(sql).unwrap();
            assert!(CopyOut::parse(&statement).is_none(), "{sql}");
        }
    }

    #[test]
    fn header_quotes_awkward_names() {
        let fields = vec![
            FieldInfo::new(
                "plain".into(),
                None,
                None,
                datafusion_postgres::pgwire::api::Type::TEXT,
                datafusion_postgres::pgwire::api::results::FieldFormat::Text,
            ),
            FieldInfo::new(
                "a,\"b\"".into(),
                None,
                None,
                datafusion_postgres::pgwire::api::Type::TEXT,
                datafusion_postgres::pgwire::api::results::FieldFormat::Text,
            ),
        ];

        let header = csv_header(&fields, &CopyCsvOptions::default());

        assert_eq!(&header.data[..], b"plain,\"a,\"\"b\"\"\"\n");
    }
}
