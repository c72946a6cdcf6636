//! The MAST Portal API request object and response envelope.
//!
//! A request is a JSON object posted as the form field `request` to
//! `POST /api/v0/invoke`:
//!
//! ```json
//! {"service": "Mast.Caom.Filtered", "params": {...}, "format": "json",
//!  "page": 1, "pagesize": 1000, "removenullcolumns": false, "timeout": 30}
//! ```
//!
//! A response is an envelope
//! `{status, msg, data: [{column: value}], fields: [{name, type}], paging}`
//! where `status` is `COMPLETE`, `EXECUTING` (the client re-sends the same
//! request) or `ERROR` (`msg` contains the reason). `paging` has `page`, `pageSize`,
//! `pagesFiltered`, `rows` (rows in this page), `rowsFiltered` (rows in the
//! whole result) and `rowsTotal`.
//!
//! Invariants enforced by [`Envelope::check_columns`]: column names in
//! `fields` are unique, and every required column is listed in `fields` and
//! present in every row. Unknown extra columns are ignored. JSON `null`
//! becomes `None` in the typed accessors of [`RowReader`], never NaN.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::ObsId;

/// One row of a MAST result: column name to JSON value.
pub type Row = Map<String, Value>;

/// A MAST Portal API request (the JSON sent in the `request` form field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MastRequest {
    pub service: String,
    pub params: Value,
    #[serde(default = "default_format")]
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagesize: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removenullcolumns: Option<bool>,
    /// Seconds MAST waits for the result before it returns `EXECUTING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

fn default_format() -> String {
    "json".to_owned()
}

impl MastRequest {
    /// Creates a JSON-format request for `service` with `params`, page 1.
    pub fn new(service: &str, params: Value) -> Self {
        Self {
            service: service.to_owned(),
            params,
            format: default_format(),
            page: Some(1),
            pagesize: None,
            removenullcolumns: Some(false),
            timeout: None,
        }
    }

    /// Returns the params as compact JSON, for logs and error messages.
    pub fn params_json(&self) -> String {
        self.params.to_string()
    }
}

/// A column description in `fields`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: String,
}

/// The `paging` object of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Paging {
    pub page: u64,
    pub page_size: u64,
    pub pages_filtered: u64,
    pub rows: u64,
    pub rows_filtered: u64,
    pub rows_total: u64,
}

/// Value of `status` while MAST is still computing the result.
pub const STATUS_EXECUTING: &str = "EXECUTING";
/// Value of `status` for a finished result.
pub const STATUS_COMPLETE: &str = "COMPLETE";
/// Value of `status` for a failed request.
pub const STATUS_ERROR: &str = "ERROR";

/// A MAST response envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub data: Vec<Row>,
    #[serde(default)]
    pub fields: Vec<Field>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

impl Envelope {
    /// Parses an envelope from JSON bytes; the error is the serde message.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes)
            .map_err(|err| format!("the body is not a MAST JSON envelope: {err}"))
    }

    /// Builds a complete single-page envelope for `rows` with `fields`.
    pub fn complete(fields: Vec<Field>, rows: Vec<Row>) -> Self {
        let row_count = rows.len() as u64;
        Self {
            status: STATUS_COMPLETE.to_owned(),
            msg: String::new(),
            data: rows,
            fields,
            paging: Some(Paging {
                page: 1,
                page_size: row_count.max(1),
                pages_filtered: 1,
                rows: row_count,
                rows_filtered: row_count,
                rows_total: row_count,
            }),
        }
    }

    /// Builds an `ERROR` envelope with `msg`.
    pub fn error(msg: impl Into<String>) -> Self {
        Self {
            status: STATUS_ERROR.to_owned(),
            msg: msg.into(),
            data: Vec::new(),
            fields: Vec::new(),
            paging: None,
        }
    }

    /// Checks that `fields` has no duplicate names and, when there are rows,
    /// that every column in `required` is listed in `fields` and present in
    /// every row. Returns the reason on failure.
    pub fn check_columns(&self, required: &[&str]) -> Result<(), String> {
        if let Some(duplicate) = first_duplicate_field(&self.fields) {
            return Err(format!(
                "column {duplicate:?} appears more than once in fields"
            ));
        }
        if self.data.is_empty() {
            // An empty result has nothing to read, and servers may omit
            // `fields` for it.
            return Ok(());
        }
        for column in required {
            if !self.fields.iter().any(|field| field.name == *column) {
                return Err(format!("required column {column:?} is missing from fields"));
            }
        }
        for (index, row) in self.data.iter().enumerate() {
            if let Some(column) = required.iter().find(|column| !row.contains_key(**column)) {
                return Err(format!(
                    "required column {column:?} is missing from row {index}"
                ));
            }
        }
        Ok(())
    }
}

/// Returns the first column name that occurs twice in `fields`.
pub fn first_duplicate_field(fields: &[Field]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    fields
        .iter()
        .map(|field| field.name.as_str())
        .find(|name| !seen.insert(*name))
}

/// Typed access to the columns of one row. Errors are reasons naming the
/// column and the row index; the caller adds service and params.
pub struct RowReader<'a> {
    pub row: &'a Row,
    pub index: usize,
}

impl<'a> RowReader<'a> {
    fn invalid(&self, column: &str, expected: &str) -> String {
        let value = self
            .row
            .get(column)
            .map(Value::to_string)
            .unwrap_or_default();
        format!(
            "column {column:?} in row {} is {value}, expected {expected}",
            self.index
        )
    }

    fn value(&self, column: &str) -> Option<&'a Value> {
        self.row.get(column).filter(|value| !value.is_null())
    }

    /// Returns the value of a required column, rejecting missing and null.
    pub fn required(&self, column: &str) -> Result<&'a Value, String> {
        self.value(column).ok_or_else(|| {
            format!(
                "required column {column:?} is null or missing in row {}",
                self.index
            )
        })
    }

    /// Reads an obsid given as a number or a string of digits. The error keeps the
    /// parser's explanation, which distinguishes a mission obs_id from a bad number.
    pub fn required_obsid(&self, column: &str) -> Result<ObsId, String> {
        let value = self.required(column)?;
        serde_json::from_value::<ObsId>(value.clone())
            .map_err(|err| format!("{} ({err})", self.invalid(column, "a numeric obsid")))
    }

    /// Reads a required, non-empty string; numbers are converted to their
    /// decimal text.
    pub fn required_string(&self, column: &str) -> Result<String, String> {
        self.optional_string(column)?
            .filter(|text| !text.is_empty())
            .ok_or_else(|| {
                format!(
                    "required column {column:?} is null, empty or missing in row {}",
                    self.index
                )
            })
    }

    /// Reads an optional string; numbers are converted to their decimal text.
    pub fn optional_string(&self, column: &str) -> Result<Option<String>, String> {
        match self.value(column) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(_) => Err(self.invalid(column, "a string")),
        }
    }

    /// Reads an optional float. Null, missing, empty strings and non-finite
    /// values become `None`, so a NULL never turns into NaN.
    pub fn optional_f64(&self, column: &str) -> Result<Option<f64>, String> {
        let parsed = match self.value(column) {
            None => None,
            Some(Value::Number(number)) => number.as_f64(),
            Some(Value::String(text)) if text.trim().is_empty() => None,
            Some(Value::String(text)) => Some(
                text.trim()
                    .parse::<f64>()
                    .map_err(|_| self.invalid(column, "a number"))?,
            ),
            Some(_) => return Err(self.invalid(column, "a number")),
        };
        Ok(parsed.filter(|value| value.is_finite()))
    }

    /// Reads an optional integer given as a JSON integer or a digit string.
    pub fn optional_i64(&self, column: &str) -> Result<Option<i64>, String> {
        match self.value(column) {
            None => Ok(None),
            Some(Value::Number(number)) => number
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.invalid(column, "an integer")),
            Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
            Some(Value::String(text)) => text
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| self.invalid(column, "an integer")),
            Some(_) => Err(self.invalid(column, "an integer")),
        }
    }

    /// Reads an optional non-negative integer.
    pub fn optional_u64(&self, column: &str) -> Result<Option<u64>, String> {
        match self.optional_i64(column)? {
            None => Ok(None),
            Some(value) => u64::try_from(value)
                .map(Some)
                .map_err(|_| self.invalid(column, "a non-negative integer")),
        }
    }
}

/// Returns the text form used to compare a cell with a filter value: strings
/// as they are, numbers in decimal, booleans as `true`/`false`, and `None`
/// for null, arrays and objects.
pub fn cell_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(fields: &[&str], rows: Value) -> Envelope {
        let fields = fields
            .iter()
            .map(|name| Field {
                name: (*name).to_owned(),
                field_type: "string".to_owned(),
            })
            .collect();
        let rows = serde_json::from_value(rows).unwrap();
        Envelope::complete(fields, rows)
    }

    #[test]
    fn duplicate_field_is_named() {
        let env = envelope(&["obsid", "s_ra", "obsid"], json!([]));
        let reason = env.check_columns(&["obsid"]).unwrap_err();
        assert!(reason.contains("\"obsid\""), "{reason}");
        assert!(reason.contains("more than once"), "{reason}");
    }

    #[test]
    fn missing_required_column_is_named() {
        let env = envelope(
            &["obsid", "obs_id"],
            json!([{"obsid": 1, "obs_id": "a"}, {"obsid": 2}]),
        );
        let reason = env.check_columns(&["obsid", "obs_id"]).unwrap_err();
        assert!(reason.contains("\"obs_id\""), "{reason}");
        assert!(reason.contains("row 1"), "{reason}");

        let reason = env.check_columns(&["proposal_id"]).unwrap_err();
        assert!(
            reason.contains("\"proposal_id\" is missing from fields"),
            "{reason}"
        );
    }

    #[test]
    fn request_serializes_mast_fields() {
        let mut request = MastRequest::new("Mast.Caom.Products", json!({"obsid": "1"}));
        request.pagesize = Some(1_000);
        request.timeout = Some(30);
        let value = serde_json::to_value(&request).unwrap();
        let expected = json!({
            "service": "Mast.Caom.Products", "params": {"obsid": "1"}, "format": "json",
            "page": 1, "pagesize": 1000, "removenullcolumns": false, "timeout": 30
        });
        assert_eq!(value, expected);

        request.pagesize = None;
        let value = serde_json::to_value(&request).unwrap();
        assert!(value.get("pagesize").is_none(), "{value}");
    }

    #[test]
    fn empty_result_skips_required_columns() {
        let env = envelope(&[], json!([]));
        assert!(env.check_columns(&["obsid"]).is_ok());

        let duplicated = envelope(&["obsid", "obsid"], json!([]));
        assert!(duplicated.check_columns(&["obsid"]).is_err());
    }

    #[test]
    fn null_float_stays_none() {
        let row: Row =
            serde_json::from_value(json!({"s_ra": null, "s_dec": "", "t_min": 1.5})).unwrap();
        let reader = RowReader {
            row: &row,
            index: 0,
        };
        assert_eq!(reader.optional_f64("s_ra").unwrap(), None);
        assert_eq!(reader.optional_f64("s_dec").unwrap(), None);
        assert_eq!(reader.optional_f64("absent").unwrap(), None);
        assert_eq!(reader.optional_f64("t_min").unwrap(), Some(1.5));
    }

    #[test]
    fn cell_text_matches_string_forms() {
        assert_eq!(cell_text(&json!("13012")).as_deref(), Some("13012"));
        assert_eq!(cell_text(&json!(13012)).as_deref(), Some("13012"));
        assert_eq!(cell_text(&json!(null)), None);
    }
}
