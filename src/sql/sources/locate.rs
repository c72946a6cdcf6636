//! Finds the line and column of a row that a CSV or JSON source cannot be read at.
//!
//! The readers locate a bad row poorly. In DataFusion 55.2 a CSV value error counts data
//! rows instead of file lines and gives the column's index, and a JSON error gives no line.
//! After a failed read, these functions scan the file again and describe the first bad row
//! by its 1-based line in the file and its column name. They return `None` when the scan finds no bad row, and the caller then
//! keeps DataFusion's message.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::json::ReaderBuilder;

use super::sql_type_name;

/// One CSV record: the line it starts on (1-based) and its unquoted fields.
#[derive(Debug, PartialEq)]
pub(super) struct CsvRecord {
    pub line: usize,
    pub fields: Vec<String>,
}

/// Describes the first data row of a CSV file that does not fit `schema`: a row with
/// another number of fields, or a value that does not parse as its column's type.
pub(super) fn csv_problem(
    path: &Path,
    delimiter: u8,
    has_header: bool,
    schema: &Schema,
) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    csv_records(&text, char::from(delimiter))
        .iter()
        .skip(usize::from(has_header))
        .find_map(|record| record_problem(record, schema))
}

fn record_problem(record: &CsvRecord, schema: &Schema) -> Option<String> {
    if record.fields.len() != schema.fields().len() {
        return Some(field_count_problem(record, schema));
    }
    let (value, field) = record
        .fields
        .iter()
        .zip(schema.fields().iter())
        .find(|(value, field)| !value.is_empty() && !parses_as(value, field.data_type()))?;
    Some(format!(
        "line {}, column {}: {value:?} is not a valid {}; correct the value, leave the field empty for NULL, or declare the column VARCHAR and convert it in SQL",
        record.line,
        field.name(),
        sql_type_name(field.data_type())
    ))
}

fn field_count_problem(record: &CsvRecord, schema: &Schema) -> String {
    let declared: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let count = record.fields.len();
    let noun = if count == 1 { "field" } else { "fields" };
    let fix = if count > declared.len() {
        "remove the extra fields or declare the extra columns"
    } else {
        "add the missing fields (an empty field is NULL)"
    };
    format!(
        "line {} has {count} {noun}, but the schema declares {} ({}); {fix}",
        record.line,
        declared.len(),
        declared.join(", ")
    )
}

/// Returns whether the CSV reader accepts `value` for a column of `data_type`.
fn parses_as(value: &str, data_type: &DataType) -> bool {
    if *data_type == DataType::Boolean {
        // The CSV reader accepts only true and false in any case, but a cast also accepts yes and 1.
        return value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false");
    }
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    cast_with_options(&StringArray::from(vec![value]), data_type, &options).is_ok()
}

/// Splits CSV text into records the way the CSV reader's defaults do: `"` quotes a field,
/// `""` inside quotes is one quote, a quoted field may span lines, `\r\n` ends a line like
/// `\n`, and empty lines are skipped.
pub(super) fn csv_records(text: &str, delimiter: char) -> Vec<CsvRecord> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut started = false;
    let mut in_quotes = false;
    let mut line = 1;
    let mut start_line = 1;
    let mut chars = text.chars().peekable();

    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                _ => {
                    line += usize::from(c == '\n');
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                started = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if started {
                    fields.push(std::mem::take(&mut field));
                    records.push(CsvRecord {
                        line: start_line,
                        fields: std::mem::take(&mut fields),
                    });
                }
                started = false;
                line += 1;
                start_line = line;
            }
            c if c == delimiter => {
                fields.push(std::mem::take(&mut field));
                started = true;
            }
            _ => {
                field.push(c);
                started = true;
            }
        }
    }
    if started {
        fields.push(field);
        records.push(CsvRecord {
            line: start_line,
            fields,
        });
    }
    records
}

/// Describes the first line of a newline-delimited JSON file that does not decode with
/// `schema`. The decoder's message names the field.
pub(super) fn json_problem(path: &Path, schema: &Schema) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let schema = Arc::new(schema.clone());
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .find_map(|(index, line)| {
            let decoded = ReaderBuilder::new(schema.clone())
                .build(line.as_bytes())
                .and_then(|reader| reader.collect::<Result<Vec<_>, _>>());
            decoded.err().map(|error| {
                format!(
                    "line {}: {error}; correct the value or declare the column with a type it fits",
                    index + 1
                )
            })
        })
}
