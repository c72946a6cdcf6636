//! The `summaries` table the SQL models read: one row per summarized proposal.
//!
//! | column | type | |
//! |---|---|---|
//! | `proposal_id` | BIGINT | |
//! | `status` | VARCHAR | `ok`, `rejected`, `failed`, or `pending` (a plan that made no request) |
//! | `caption_summary` | VARCHAR | "objects, ...; use cases, ..."; NULL unless `ok` |
//! | `objects_and_phenomena` | LIST of VARCHAR | NULL unless `ok` |
//! | `science_use_cases` | LIST of VARCHAR | NULL unless `ok` |
//! | `summary_key` | VARCHAR | the cache key, for lineage |
//! | `reason` | VARCHAR | reason code; NULL when `ok` |
//!
//! The table always exists, empty when summaries are off, so models can join it either way.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::cache::{SummaryRecord, SummaryStatus, string_lists};
use super::stage::ProposalSummary;

/// Name of the table in the models' session.
pub const SUMMARIES_TABLE: &str = "summaries";

/// Status of a proposal that a plan did not request.
pub const PENDING_STATUS: &str = "pending";

fn schema() -> Schema {
    let list = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    Schema::new(vec![
        Field::new("proposal_id", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("caption_summary", DataType::Utf8, true),
        Field::new("objects_and_phenomena", list.clone(), true),
        Field::new("science_use_cases", list, true),
        Field::new("summary_key", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
    ])
}

/// Builds the table with one row per outcome.
pub fn summaries_batch(outcomes: &[ProposalSummary]) -> RecordBatch {
    let status = |o: &ProposalSummary| {
        o.record
            .as_ref()
            .map_or(PENDING_STATUS, |r| r.status.as_str())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            outcomes.iter().map(|o| o.proposal_id),
        )),
        Arc::new(StringArray::from_iter_values(outcomes.iter().map(status))),
        Arc::new(
            outcomes
                .iter()
                .map(|o| ok_record(o).and_then(|r| r.caption.as_deref()))
                .collect::<StringArray>(),
        ),
        string_lists(
            outcomes
                .iter()
                .map(|o| o.summary().map(|s| s.objects_and_phenomena.as_slice())),
        ),
        string_lists(
            outcomes
                .iter()
                .map(|o| o.summary().map(|s| s.science_use_cases.as_slice())),
        ),
        Arc::new(StringArray::from_iter_values(
            outcomes.iter().map(|o| o.summary_key.as_str()),
        )),
        Arc::new(
            outcomes
                .iter()
                .map(|o| match &o.record {
                    Some(record) => record.reason.as_deref(),
                    None => Some("not_requested"),
                })
                .collect::<StringArray>(),
        ),
    ];
    RecordBatch::try_new(Arc::new(schema()), columns).expect("columns match the schema")
}

fn ok_record(outcome: &ProposalSummary) -> Option<&SummaryRecord> {
    outcome
        .record
        .as_ref()
        .filter(|r| r.status == SummaryStatus::Ok)
}

/// Returns the table without rows, for runs with summaries off and for planning models.
pub fn empty_summaries_batch() -> RecordBatch {
    summaries_batch(&[])
}
