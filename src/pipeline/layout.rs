//! Shard layout of a new version. A full shard of the previous version whose samples all
//! reappear unchanged (same key, split and `sample_sha256`) is reused as it is: the new
//! version links the same file. Every other sample, new or changed, and the samples of a
//! partly filled or changed shard, is packed into new shards.
//!
//! Invariants: each sample is in exactly one shard of the new version; a reused shard contains
//! exactly the samples it contained before; new shard names continue the split's numbering
//! after the highest reused number, so no name is used twice within a version. A version
//! has at most one partly filled shard per split that it wrote itself, so daily refreshes
//! do not pile up small shards.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::prelude::SessionContext;

use super::assemble::AssembledRow;
use crate::dataset::shards::ShardInfo;
use crate::dataset::versions::{DatasetPaths, VersionRecord, version_provider};
use crate::error::Result;

/// The shards of the version a new one builds on.
pub struct PreviousShards {
    pub version: u64,
    dir: PathBuf,
    shards: BTreeMap<String, PreviousShard>,
}

struct PreviousShard {
    info: ShardInfo,
    /// (key, sample_sha256) of every sample in the shard.
    samples: Vec<(String, String)>,
}

/// Action for one shard of the new version.
pub enum ShardJob {
    /// Link `from` (a file of the previous version) under the same name. `rows` are the
    /// shard's samples in file order, written afresh when `from` is missing or damaged.
    Reuse {
        info: ShardInfo,
        from: PathBuf,
        rows: Vec<usize>,
    },
    /// Write these rows (indices into the assembled rows, in order) as a new shard.
    Write {
        name: String,
        split: String,
        rows: Vec<usize>,
    },
}

pub struct Layout {
    /// Shard name of each assembled row.
    pub shard_of_row: Vec<String>,
    pub jobs: Vec<ShardJob>,
}

impl Layout {
    pub fn reused_shards(&self) -> usize {
        self.jobs
            .iter()
            .filter(|job| matches!(job, ShardJob::Reuse { .. }))
            .count()
    }
}

/// Reads the (key, shard, sample_sha256) of every sample of `record`'s version; `None`
/// when the version predates the `sample_sha256` column, so nothing can be reused.
pub async fn read_previous(
    paths: &DatasetPaths,
    record: &VersionRecord,
) -> Result<Option<PreviousShards>> {
    let ctx = SessionContext::new();
    ctx.register_table(
        "previous",
        version_provider(paths, record.version, &ctx).await?,
    )?;
    let has_column = ctx
        .table("previous")
        .await?
        .schema()
        .has_column_with_unqualified_name("sample_sha256");
    if !has_column {
        return Ok(None);
    }
    let batches = ctx
        .sql("SELECT key, shard, sample_sha256 FROM previous ORDER BY key")
        .await?
        .collect()
        .await?;

    let mut shards: BTreeMap<String, PreviousShard> = record
        .shards
        .iter()
        .map(|info| {
            let shard = PreviousShard {
                info: info.clone(),
                samples: Vec::new(),
            };
            (info.name.clone(), shard)
        })
        .collect();
    for batch in &batches {
        let text = |i: usize| {
            let column = datafusion::arrow::compute::cast(
                batch.column(i),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )?;
            Ok::<_, crate::error::PipelineError>(
                column
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("cast to Utf8")
                    .clone(),
            )
        };
        let (keys, names, hashes) = (text(0)?, text(1)?, text(2)?);
        for row in 0..batch.num_rows() {
            if let Some(shard) = shards.get_mut(names.value(row)) {
                shard
                    .samples
                    .push((keys.value(row).to_string(), hashes.value(row).to_string()));
            }
        }
    }
    Ok(Some(PreviousShards {
        version: record.version,
        dir: paths.version_dir(record.version).join("shards"),
        shards,
    }))
}

/// Decides which shards to reuse and how to pack the rest. `rows` are ordered by
/// (split, key).
pub fn plan_layout(
    rows: &[AssembledRow],
    previous: Option<&PreviousShards>,
    samples_per_shard: usize,
) -> Layout {
    let mut shard_of_row: Vec<Option<String>> = vec![None; rows.len()];
    let mut jobs = Vec::new();
    let mut next_number: HashMap<&str, u64> = HashMap::new();

    if let Some(previous) = previous {
        let index: HashMap<&str, usize> = rows
            .iter()
            .enumerate()
            .map(|(i, row)| (row.key.as_str(), i))
            .collect();
        for (name, shard) in &previous.shards {
            let Some(members) = reusable_rows(shard, rows, &index, samples_per_shard) else {
                continue;
            };
            for &row in &members {
                shard_of_row[row] = Some(name.clone());
            }
            if let Some(number) = shard_number(name, &shard.info.split) {
                let next = next_number
                    .entry(rows_split(rows, &shard.info.split))
                    .or_default();
                *next = (*next).max(number + 1);
            }
            jobs.push(ShardJob::Reuse {
                info: shard.info.clone(),
                from: previous.dir.join(name),
                rows: members,
            });
        }
    }

    pack_remaining(
        rows,
        &mut shard_of_row,
        &mut next_number,
        samples_per_shard,
        &mut jobs,
    );
    Layout {
        shard_of_row: shard_of_row
            .into_iter()
            .map(|name| name.expect("every row is packed"))
            .collect(),
        jobs,
    }
}

/// Returns the rows of a previous shard when it can be reused: full, and every sample unchanged
/// and in the same split.
fn reusable_rows(
    shard: &PreviousShard,
    rows: &[AssembledRow],
    index: &HashMap<&str, usize>,
    samples_per_shard: usize,
) -> Option<Vec<usize>> {
    if shard.samples.len() != samples_per_shard || shard.info.samples != samples_per_shard {
        return None;
    }
    shard
        .samples
        .iter()
        .map(|(key, sha)| {
            let row = *index.get(key.as_str())?;
            let same = rows[row].sample_sha256 == *sha && rows[row].split == shard.info.split;
            same.then_some(row)
        })
        .collect()
}

/// Packs the rows without a shard, in order, into new shards per split.
fn pack_remaining<'a>(
    rows: &'a [AssembledRow],
    shard_of_row: &mut [Option<String>],
    next_number: &mut HashMap<&'a str, u64>,
    samples_per_shard: usize,
    jobs: &mut Vec<ShardJob>,
) {
    let mut open: Option<(String, String, Vec<usize>)> = None;
    for (row, sample) in rows.iter().enumerate() {
        if shard_of_row[row].is_some() {
            continue;
        }
        let full_or_other_split = open.as_ref().is_some_and(|(_, split, members)| {
            members.len() == samples_per_shard || *split != sample.split
        });
        if full_or_other_split {
            let (name, split, rows) = open.take().expect("checked above");
            jobs.push(ShardJob::Write { name, split, rows });
        }
        let (name, _, members) = open.get_or_insert_with(|| {
            let number = next_number.entry(sample.split.as_str()).or_default();
            let name = format!("{}-{:05}.tar", sample.split, *number);
            *number += 1;
            (name, sample.split.clone(), Vec::new())
        });
        members.push(row);
        shard_of_row[row] = Some(name.clone());
    }
    if let Some((name, split, rows)) = open {
        jobs.push(ShardJob::Write { name, split, rows });
    }
}

/// Borrows the split name from the rows, so the numbering map can key on it.
fn rows_split<'a>(rows: &'a [AssembledRow], split: &str) -> &'a str {
    rows.iter()
        .find(|row| row.split == split)
        .map_or("", |row| row.split.as_str())
}

/// Parses `<split>-<number>.tar`.
fn shard_number(name: &str, split: &str) -> Option<u64> {
    name.strip_prefix(split)?
        .strip_prefix('-')?
        .strip_suffix(".tar")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, split: &str, sha: &str) -> AssembledRow {
        AssembledRow {
            key: key.into(),
            split: split.into(),
            image_sha256: String::new(),
            sample_sha256: sha.into(),
        }
    }

    /// (shard name, split, [(key, sample_sha256)]).
    type ShardSpec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    fn previous(shards: &[ShardSpec<'_>]) -> PreviousShards {
        PreviousShards {
            version: 1,
            dir: PathBuf::from("v1/shards"),
            shards: shards
                .iter()
                .map(|(name, split, samples)| {
                    let shard = PreviousShard {
                        info: ShardInfo {
                            name: name.to_string(),
                            split: split.to_string(),
                            samples: samples.len(),
                            size_bytes: 1,
                            sha256: String::new(),
                            reused_from: None,
                        },
                        samples: samples
                            .iter()
                            .map(|(k, s)| (k.to_string(), s.to_string()))
                            .collect(),
                    };
                    (name.to_string(), shard)
                })
                .collect(),
        }
    }

    #[test]
    fn first_version_packs_from_zero() {
        let rows = [
            row("a", "train", "1"),
            row("b", "train", "2"),
            row("c", "val", "3"),
        ];
        let layout = plan_layout(&rows, None, 1);
        assert_eq!(
            layout.shard_of_row,
            ["train-00000.tar", "train-00001.tar", "val-00000.tar"]
        );
    }

    #[test]
    fn unchanged_full_shards_reused() {
        let prev = previous(&[
            ("train-00000.tar", "train", &[("a", "1"), ("b", "2")]),
            ("train-00001.tar", "train", &[("c", "3"), ("d", "4")]),
            ("train-00002.tar", "train", &[("e", "5")]),
        ]);
        // d changed, e is in a partly filled shard, f is new.
        let rows = [
            row("a", "train", "1"),
            row("b", "train", "2"),
            row("c", "train", "3"),
            row("d", "train", "X"),
            row("e", "train", "5"),
            row("f", "train", "6"),
        ];
        let layout = plan_layout(&rows, Some(&prev), 2);
        assert_eq!(layout.reused_shards(), 1);
        assert_eq!(
            layout.shard_of_row,
            [
                "train-00000.tar",
                "train-00000.tar",
                "train-00001.tar",
                "train-00001.tar",
                "train-00002.tar",
                "train-00002.tar",
            ]
        );
        let written: Vec<&str> = layout
            .jobs
            .iter()
            .filter_map(|job| match job {
                ShardJob::Write { name, .. } => Some(name.as_str()),
                ShardJob::Reuse { .. } => None,
            })
            .collect();
        assert_eq!(written, ["train-00001.tar", "train-00002.tar"]);
    }

    #[test]
    fn moved_split_not_reused() {
        let prev = previous(&[("train-00000.tar", "train", &[("a", "1")])]);
        let rows = [row("a", "val", "1")];
        let layout = plan_layout(&rows, Some(&prev), 1);
        assert_eq!(layout.reused_shards(), 0);
        assert_eq!(layout.shard_of_row, ["val-00000.tar"]);
    }

    #[test]
    fn new_names_continue_after_the_highest_reused_number() {
        let prev = previous(&[
            ("train-00000.tar", "train", &[("a", "1")]),
            ("train-00003.tar", "train", &[("b", "2")]),
        ]);
        let rows = [
            row("a", "train", "1"),
            row("b", "train", "2"),
            row("c", "train", "3"),
        ];
        let layout = plan_layout(&rows, Some(&prev), 1);
        assert_eq!(layout.reused_shards(), 2);
        assert_eq!(layout.shard_of_row[2], "train-00004.tar");
    }
}
