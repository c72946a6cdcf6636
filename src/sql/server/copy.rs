//! `COPY (query) TO STDOUT` and `COPY table TO STDOUT`, the statements that psql's
//! `\copy ... TO 'file'` sends, so analysts can export a result to a file on their own
//! machine. The rows go out in PostgreSQL's text or CSV copy format; nothing is written
//! on the server. Every other form of `COPY` is rejected by the read-only hook.
//!
//! Values are rendered as in query results (PostgreSQL's text forms), then escaped or
//! quoted here by PostgreSQL's rules. In text format, specials get backslash escapes and
//! NULL is `\N`. In CSV, a NULL is the bare NULL marker, and any value that could be
//! mistaken for it, or contains the delimiter, the quote or a line break, is quoted. So an empty string
//! (`""`) and a NULL stay apart when the file is read back.

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
    CopyResponse, DataRowEncoder, FieldInfo, Response,
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
    Text {
        delimiter: char,
        null: String,
    },
    Csv {
        delimiter: char,
        quote: char,
        escape: char,
        null: String,
        header: bool,
    },
}

impl CopyFormat {
    fn delimiter(&self) -> char {
        match self {
            CopyFormat::Text { delimiter, .. } | CopyFormat::Csv { delimiter, .. } => *delimiter,
        }
    }

    /// Appends one value, `None` for NULL, to `line`.
    fn push_value(&self, line: &mut String, value: Option<&str>) {
        match (self, value) {
            (CopyFormat::Text { null, .. } | CopyFormat::Csv { null, .. }, None) => {
                line.push_str(null);
            }
            (CopyFormat::Text { delimiter, .. }, Some(value)) => {
                for c in value.chars() {
                    match c {
                        '\\' => line.push_str("\\\\"),
                        '\n' => line.push_str("\\n"),
                        '\r' => line.push_str("\\r"),
                        '\t' => line.push_str("\\t"),
                        c if c == *delimiter => {
                            line.push('\\');
                            line.push(c);
                        }
                        c => line.push(c),
                    }
                }
            }
            (
                CopyFormat::Csv {
                    delimiter,
                    quote,
                    escape,
                    null,
                    ..
                },
                Some(value),
            ) => {
                let needs_quotes = value == null
                    || value == "\\."
                    || value.contains([*delimiter, *quote, '\n', '\r']);
                if !needs_quotes {
                    line.push_str(value);
                    return;
                }
                line.push(*quote);
                for c in value.chars() {
                    if c == *quote || c == *escape {
                        line.push(*escape);
                    }
                    line.push(c);
                }
                line.push(*quote);
            }
        }
    }

    /// Renders one line of `values`, ending in a newline.
    fn line<'a>(&self, values: impl Iterator<Item = Option<&'a str>>) -> String {
        let mut line = String::new();
        for (i, value) in values.enumerate() {
            if i > 0 {
                line.push(self.delimiter());
            }
            self.push_value(&mut line, value);
        }
        line.push('\n');
        line
    }
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

        // The header goes out with the first row, or alone for an empty result, so
        // the row count in psql's `COPY n` counts rows only.
        let header = match &self.format {
            CopyFormat::Csv { header: true, .. } => Some(
                self.format
                    .line(fields.iter().map(|field| Some(field.name()))),
            ),
            _ => None,
        };
        let pending_header = Arc::new(std::sync::Mutex::new(header));
        let format = self.format.clone();
        let header_for_rows = Arc::clone(&pending_header);
        let rows = batches
            .map(move |batch| {
                let mut lines = match batch {
                    Ok(batch) => encode_batch(&batch, &fields, &format),
                    Err(e) => vec![Err(PgWireError::ApiError(Box::new(e)))],
                };
                if let Some(Ok(first)) = lines.first_mut()
                    && let Some(header) = header_for_rows.lock().expect("not poisoned").take()
                {
                    first.insert_str(0, &header);
                }
                lines
            })
            .flat_map(futures::stream::iter);
        let rest =
            futures::stream::once(
                async move { pending_header.lock().expect("not poisoned").take() },
            )
            .filter_map(|header| async move { header.map(Ok) });
        let data = rows.chain(rest).map(|line: PgWireResult<String>| {
            line.map(|line| CopyData::new(line.into_bytes().into()))
        });
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
        let format = match self.format.as_deref().unwrap_or("text") {
            "text" => {
                if self.header || self.quote.is_some() || self.escape.is_some() {
                    return Err(unsupported("HEADER, QUOTE or ESCAPE with FORMAT text"));
                }
                CopyFormat::Text {
                    delimiter: self.delimiter.unwrap_or('\t'),
                    null: self.null.unwrap_or_else(|| "\\N".to_string()),
                }
            }
            "csv" => {
                let quote = self.quote.unwrap_or('"');
                CopyFormat::Csv {
                    delimiter: self.delimiter.unwrap_or(','),
                    quote,
                    escape: self.escape.unwrap_or(quote),
                    null: self.null.unwrap_or_default(),
                    header: self.header,
                }
            }
            other => return Err(unsupported(&format!("FORMAT {other}"))),
        };
        check_characters(&format)?;
        Ok(format)
    }
}

/// Rejects delimiters and quotes that would make the output ambiguous, as PostgreSQL
/// does.
fn check_characters(format: &CopyFormat) -> PgWireResult<()> {
    let delimiter = format.delimiter();
    if matches!(delimiter, '\n' | '\r') {
        return Err(invalid_option("the COPY delimiter cannot be a line break"));
    }
    match format {
        CopyFormat::Text { null, .. } => {
            let escapes_use = delimiter == '\\'
                || delimiter == '.'
                || delimiter.is_ascii_lowercase()
                || delimiter.is_ascii_digit();
            if escapes_use {
                return Err(invalid_option(&format!(
                    "the text COPY delimiter cannot be {delimiter:?}, which escapes use"
                )));
            }
            if null.contains(delimiter) {
                return Err(invalid_option(
                    "the COPY NULL marker cannot contain the delimiter",
                ));
            }
        }
        CopyFormat::Csv { quote, null, .. } => {
            if *quote == delimiter {
                return Err(invalid_option("the COPY delimiter and quote must differ"));
            }
            if null.contains([delimiter, *quote]) {
                return Err(invalid_option(
                    "the COPY NULL marker cannot contain the delimiter or the quote",
                ));
            }
        }
    }
    Ok(())
}

fn invalid_option(problem: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        "22023".to_string(),
        format!("{problem}; choose another character"),
    )))
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

/// Encodes each row of `batch` as one line: the values in PostgreSQL's text forms,
/// escaped or quoted by `format`.
fn encode_batch(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
    format: &CopyFormat,
) -> Vec<PgWireResult<String>> {
    let mut encoder = DataRowEncoder::new(fields.clone());
    let schema = batch.schema();
    let mut lines = Vec::with_capacity(batch.num_rows());
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
        if let Err(error) = encoded {
            lines.push(Err(error));
            break;
        }
        let data_row = encoder.take_row();
        match row_values(&data_row.data) {
            Some(values) => lines.push(Ok(format.line(values.into_iter()))),
            None => {
                lines.push(Err(PgWireError::ApiError(
                    "a value of the row is not valid UTF-8 text".into(),
                )));
                break;
            }
        }
    }
    lines
}

/// Splits an encoded data row into its values: each is a 4-byte length (-1 for NULL)
/// followed by that many bytes of text. `None` when a value is not UTF-8.
fn row_values(data: &[u8]) -> Option<Vec<Option<&str>>> {
    let mut values = Vec::new();
    let mut rest = data;
    while let Some((length, tail)) = rest.split_first_chunk::<4>() {
        let length = i32::from_be_bytes(*length);
        if length < 0 {
            values.push(None);
            rest = tail;
            continue;
        }
        let (value, tail) = tail.split_at_checked(length as usize)?;
        values.push(Some(std::str::from_utf8(value).ok()?));
        rest = tail;
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> PgWireResult<CopyOut> {
        CopyOut::parse(&parse_query(sql).unwrap()).expect("a COPY TO STDOUT")
    }

    fn csv(format: &CopyFormat) -> (char, char, char, &str, bool) {
        let CopyFormat::Csv {
            delimiter,
            quote,
            escape,
            null,
            header,
        } = format
        else {
            panic!("{format:?}");
        };
        (*delimiter, *quote, *escape, null, *header)
    }

    #[test]
    fn psql_copy_csv_header_parses() {
        let copy = parse("COPY (SELECT 1 AS a) TO STDOUT CSV HEADER").unwrap();

        assert_eq!(csv(&copy.format), (',', '"', '"', "", true));
    }

    #[test]
    fn with_options_parse() {
        let copy = parse(
            "COPY t (a, b) TO STDOUT WITH (FORMAT csv, DELIMITER ';', NULL 'NA', HEADER true)",
        )
        .unwrap();

        assert_eq!(copy.query.to_string(), "SELECT a, b FROM t");
        assert_eq!(csv(&copy.format), (';', '"', '"', "NA", true));
    }

    #[test]
    fn text_is_the_default() {
        let copy = parse("COPY t TO STDOUT").unwrap();

        let expected = CopyFormat::Text {
            delimiter: '\t',
            null: "\\N".to_string(),
        };
        assert_eq!(copy.format, expected);
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
    fn ambiguous_characters_rejected() {
        for sql in [
            "COPY t TO STDOUT WITH (FORMAT csv, DELIMITER '\"')",
            "COPY t TO STDOUT WITH (FORMAT csv, QUOTE ',')",
            "COPY t TO STDOUT WITH (FORMAT text, DELIMITER 'a')",
            "COPY t TO STDOUT WITH (FORMAT text, DELIMITER '\\')",
        ] {
            let Err(PgWireError::UserError(info)) = parse(sql) else {
                panic!("{sql} was accepted");
            };
            assert_eq!(info.code, "22023", "{sql}");
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
    fn csv_keeps_null_and_empty_apart() {
        let format = parse("COPY t TO STDOUT CSV").unwrap().format;

        let line = format.line(
            [
                None,
                Some(""),
                Some("a,b"),
                Some("say \"hi\""),
                Some("x\ny"),
                Some("plain"),
            ]
            .into_iter(),
        );

        assert_eq!(line, ",\"\",\"a,b\",\"say \"\"hi\"\"\",\"x\ny\",plain\n");
    }

    #[test]
    fn csv_escape_differs_from_quote() {
        let format = parse("COPY t TO STDOUT WITH (FORMAT csv, QUOTE '''', ESCAPE '\\')")
            .unwrap()
            .format;

        let line = format.line([Some("it's")].into_iter());

        assert_eq!(line, "'it\\'s'\n");
    }

    #[test]
    fn text_escapes_specials() {
        let format = parse("COPY t TO STDOUT").unwrap().format;

        let line = format.line([None, Some("a\tb\\c\nd"), Some("")].into_iter());

        assert_eq!(line, "\\N\ta\\tb\\\\c\\nd\t\n");
    }

    #[test]
    fn header_quotes_awkward_names() {
        let format = parse("COPY t TO STDOUT CSV HEADER").unwrap().format;

        let line = format.line([Some("plain"), Some("a,\"b\"")].into_iter());

        assert_eq!(line, "plain,\"a,\"\"b\"\"\"\n");
    }
}
