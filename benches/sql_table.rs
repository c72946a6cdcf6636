//! Publishes a large version of a dataset for the SQL benchmark: the latest version's
//! samples repeated until there are ROWS of them, each copy with its own keys, proposal
//! ids and captions, as the next version.
//!
//!   cargo bench --bench sql_table -- DATA_DIR DATASET ROWS
//!
//! The benchmark script `benches/sql.sh` runs it after publishing the embedded archive.

use std::path::PathBuf;

use datafusion::arrow::compute::concat_batches;
use paperclip::dataset::versions::{DatasetPaths, latest_version, publish};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [data_dir, dataset, rows] = args.as_slice() else {
        anyhow::bail!("usage: sql_table DATA_DIR DATASET ROWS");
    };
    let data_dir = PathBuf::from(data_dir);
    let rows: u64 = rows.parse()?;
    let paths = DatasetPaths::new(&data_dir, dataset);
    let latest = latest_version(&paths)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{dataset} has no version; run its pipeline first"))?;

    let ctx = paperclip::sql::new_session();
    paperclip::dataset::catalog::register_datasets(&ctx, &data_dir).await?;
    let base_rows = latest.counts.get("samples").copied().unwrap_or(1).max(1);
    let copies = rows.div_ceil(base_rows);
    // Each copy shifts the proposal ids by a million and numbers its keys and captions,
    // so no two rows are alike and proposals stay groups of a few rows.
    let columns: Vec<String> = ctx
        .table(format!(r#""{dataset}".latest.samples"#))
        .await?
        .schema()
        .fields()
        .iter()
        .map(|field| match field.name().as_str() {
            "key" => "concat(s.key, '-', CAST(c.value AS VARCHAR)) AS key".to_string(),
            "proposal_id" => "s.proposal_id + c.value * 1000000 AS proposal_id".to_string(),
            "caption" => {
                "concat(s.caption, ' Observation set ', CAST(c.value AS VARCHAR), '.') AS caption"
                    .to_string()
            }
            name => format!(r#"s."{name}""#),
        })
        .collect();
    let sql = format!(
        r#"SELECT {}
           FROM "{dataset}".latest.samples s CROSS JOIN range({copies}) c
           ORDER BY 1
           LIMIT {rows}"#,
        columns.join(", ")
    );
    let frame = ctx.sql(&sql).await?;
    let schema = frame.schema().as_arrow().clone();
    let batches = frame.collect().await?;
    let samples = concat_batches(&std::sync::Arc::new(schema), &batches)?;

    let mut record = latest.clone();
    record.version = latest.version + 1;
    record.run_id = format!("sql-bench-{rows}");
    record.counts = [("samples".to_string(), samples.num_rows() as u64)].into();
    record.shards = Vec::new();
    let staged = tempfile::tempdir_in(&data_dir)?;
    publish(&paths, staged.path(), samples, &record).await?;
    println!(
        "published {dataset} v{} with {} samples",
        record.version, record.counts["samples"]
    );
    Ok(())
}
