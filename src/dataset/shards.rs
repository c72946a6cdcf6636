//! WebDataset tar shards: each sample is three consecutive members `<key>.jpg`, `<key>.txt`
//! (the caption) and `<key>.json` (the sample's metadata).
//!
//! Key rule, shared by the writer and the reader: the key is the member's base name up to
//! its first dot, the extension is everything after that dot. The writer only accepts keys
//! made of ASCII letters, digits, `-` and `_`, so no key contains a dot or a slash and every
//! reader that splits at the first or the last dot agrees. Headers are deterministic (mtime 0,
//! mode 0644, uid/gid 0), so the same samples always give byte-identical shards.
//!
//! A shard is written to a temporary file, fsynced and renamed to its final name; a file
//! with a final name is therefore complete.

use std::fs::{self, File};
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{PipelineError, Result};

/// One sample's members.
pub struct ShardSample<'a> {
    pub key: &'a str,
    pub jpeg: &'a [u8],
    pub caption: &'a str,
    pub metadata_json: &'a [u8],
}

/// A finished shard as recorded in the version manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub name: String,
    pub split: String,
    pub samples: usize,
    pub size_bytes: u64,
    pub sha256: String,
    /// The earlier version whose identical file this version links instead of writing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<u64>,
}

/// Checks the sample key rule documented on this module.
pub fn validate_key(key: &str) -> Result<()> {
    let valid = !key.is_empty()
        && key.len() <= 200
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(PipelineError::Invalid(format!(
            "sample key {key:?} is invalid; keys use only ASCII letters, digits, '-' and '_'"
        )))
    }
}

/// Splits a member name into (key, extension) by the rule documented on this module.
pub fn split_member_name(name: &str) -> (&str, &str) {
    let base_start = name.rfind('/').map_or(0, |i| i + 1);
    match name[base_start..].find('.') {
        Some(dot) => (&name[..base_start + dot], &name[base_start + dot + 1..]),
        None => (name, ""),
    }
}

/// Writes the samples of one split into numbered shards `<split>-00000.tar`, ...
pub fn write_split(
    dir: &Path,
    split: &str,
    samples: &mut dyn Iterator<Item = Result<OwnedShardSample>>,
    samples_per_shard: usize,
) -> Result<Vec<ShardInfo>> {
    let mut shards = Vec::new();
    let mut current: Option<OpenShard> = None;

    for sample in samples {
        let sample = sample?;
        if current
            .as_ref()
            .is_some_and(|s| s.samples == samples_per_shard)
        {
            shards.push(current.take().expect("checked above").finish()?);
        }
        if current.is_none() {
            let name = format!("{split}-{:05}.tar", shards.len());
            current = Some(OpenShard::create(dir, name, split)?);
        }
        current
            .as_mut()
            .expect("created above")
            .append(&sample.borrowed())?;
    }
    if let Some(shard) = current {
        shards.push(shard.finish()?);
    }
    Ok(shards)
}

/// Writes `samples` as one shard named `name` in `dir`.
pub fn write_shard(
    dir: &Path,
    name: &str,
    split: &str,
    samples: &mut dyn Iterator<Item = Result<OwnedShardSample>>,
) -> Result<ShardInfo> {
    let mut shard = OpenShard::create(dir, name.to_string(), split)?;
    for sample in samples {
        shard.append(&sample?.borrowed())?;
    }
    shard.finish()
}

/// A sample with owned buffers, as produced by the image stage.
pub struct OwnedShardSample {
    pub key: String,
    pub jpeg: Vec<u8>,
    pub caption: String,
    pub metadata_json: Vec<u8>,
}

impl OwnedShardSample {
    fn borrowed(&self) -> ShardSample<'_> {
        ShardSample {
            key: &self.key,
            jpeg: &self.jpeg,
            caption: &self.caption,
            metadata_json: &self.metadata_json,
        }
    }
}

struct OpenShard {
    name: String,
    split: String,
    final_path: PathBuf,
    tmp_path: PathBuf,
    builder: tar::Builder<BufWriter<File>>,
    samples: usize,
}

impl OpenShard {
    fn create(dir: &Path, name: String, split: &str) -> Result<Self> {
        let final_path = dir.join(&name);
        let tmp_path = dir.join(format!(".{name}.partial"));
        let file = File::create(&tmp_path).map_err(|e| PipelineError::io(&tmp_path, e))?;
        Ok(Self {
            name,
            split: split.to_string(),
            final_path,
            tmp_path,
            builder: tar::Builder::new(BufWriter::new(file)),
            samples: 0,
        })
    }

    fn append(&mut self, sample: &ShardSample<'_>) -> Result<()> {
        validate_key(sample.key)?;
        let members: [(&str, &[u8]); 3] = [
            ("jpg", sample.jpeg),
            ("txt", sample.caption.as_bytes()),
            ("json", sample.metadata_json),
        ];
        for (extension, bytes) in members {
            let member = format!("{}.{extension}", sample.key);
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Regular);
            self.builder
                .append_data(&mut header, &member, bytes)
                .map_err(|e| PipelineError::io(&self.tmp_path, e))?;
        }
        self.samples += 1;
        Ok(())
    }

    fn finish(self) -> Result<ShardInfo> {
        let writer = self
            .builder
            .into_inner()
            .map_err(|e| PipelineError::io(&self.tmp_path, e))?;
        let file = writer
            .into_inner()
            .map_err(|e| PipelineError::io(&self.tmp_path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| PipelineError::io(&self.tmp_path, e))?;
        drop(file);

        let (sha256, size_bytes) = crate::store::blobs::hash_file(&self.tmp_path)?;
        fs::rename(&self.tmp_path, &self.final_path)
            .map_err(|e| PipelineError::io(&self.final_path, e))?;
        Ok(ShardInfo {
            name: self.name,
            split: self.split,
            samples: self.samples,
            size_bytes,
            sha256,
            reused_from: None,
        })
    }
}

/// A sample read back from a shard, grouped by key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadSample {
    pub key: String,
    pub members: Vec<(String, Vec<u8>)>,
}

/// Reads a shard and groups consecutive members by key; a truncated tar is an error naming
/// the shard and the byte offset where reading stopped. A tar cut between two members
/// looks complete to a tar reader, so the end-of-archive blocks the writer puts after the
/// last member must be there too.
pub fn read_shard(path: &Path) -> Result<Vec<ReadSample>> {
    let file = File::open(path).map_err(|e| PipelineError::io(path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| PipelineError::io(path, e))?
        .len();
    let mut archive = tar::Archive::new(file);
    let mut samples: Vec<ReadSample> = Vec::new();
    let entries = archive.entries().map_err(|e| PipelineError::io(path, e))?;
    let mut members_end = 0;
    let mut last_member = None;

    for entry in entries {
        let mut entry = entry.map_err(|e| truncated(path, e))?;
        let offset = entry.raw_file_position();
        let name = entry
            .path()
            .map_err(|e| truncated(path, e))?
            .to_string_lossy()
            .into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|e| {
            PipelineError::Invalid(format!(
                "shard {} is truncated at byte {offset} in member {name}: {e}",
                path.display()
            ))
        })?;
        if bytes.len() as u64 != entry.size() {
            return Err(PipelineError::Invalid(format!(
                "shard {} is truncated at byte {} in member {name}, which should have {} bytes; \
                 the file was cut while written or copied, publish or copy it again",
                path.display(),
                offset + bytes.len() as u64,
                entry.size()
            )));
        }
        members_end = offset + entry.size().next_multiple_of(TAR_BLOCK_BYTES);
        last_member = Some(name.clone());
        let (key, extension) = split_member_name(&name);
        if samples.last().is_none_or(|s| s.key != key) {
            samples.push(ReadSample {
                key: key.to_string(),
                members: Vec::new(),
            });
        }
        let sample = samples.last_mut().expect("pushed above");
        sample.members.push((extension.to_string(), bytes));
    }
    if file_len < members_end + END_OF_ARCHIVE_BYTES {
        let after = last_member.map_or("the start".to_string(), |name| format!("member {name}"));
        return Err(PipelineError::Invalid(format!(
            "shard {} is truncated at byte {file_len}: it ends after {after} without the \
             end-of-archive blocks; the file was cut while written or copied, publish or copy \
             it again",
            path.display()
        )));
    }
    Ok(samples)
}

/// Size of a tar block: headers and padded member data.
const TAR_BLOCK_BYTES: u64 = 512;

/// The two zero blocks that end a complete tar file.
const END_OF_ARCHIVE_BYTES: u64 = 2 * TAR_BLOCK_BYTES;

fn truncated(path: &Path, error: std::io::Error) -> PipelineError {
    PipelineError::Invalid(format!(
        "shard {} is unreadable or truncated: {error}",
        path.display()
    ))
}

/// SHA-256 of a byte slice as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &str) -> Result<OwnedShardSample> {
        Ok(OwnedShardSample {
            key: key.to_string(),
            jpeg: vec![0xFF, 0xD8, 0xFF, 0xD9],
            caption: format!("caption of {key}"),
            metadata_json: format!("{{\"key\":\"{key}\"}}").into_bytes(),
        })
    }

    #[test]
    fn splits_into_numbered_shards() {
        let dir = tempfile::tempdir().unwrap();
        let mut samples = (0..5).map(|i| sample(&format!("p1_obs{i}")));
        let shards = write_split(dir.path(), "train", &mut samples, 2).unwrap();
        let names: Vec<_> = shards.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["train-00000.tar", "train-00001.tar", "train-00002.tar"]
        );
        assert_eq!(shards.iter().map(|s| s.samples).sum::<usize>(), 5);

        let read = read_shard(&dir.path().join("train-00001.tar")).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].key, "p1_obs2");
        let extensions: Vec<_> = read[0].members.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(extensions, ["jpg", "txt", "json"]);
    }

    #[test]
    fn shards_are_byte_identical_for_same_samples() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let a = write_split(
            first.path(),
            "val",
            &mut (0..3).map(|i| sample(&format!("k{i}"))),
            10,
        )
        .unwrap();
        let b = write_split(
            second.path(),
            "val",
            &mut (0..3).map(|i| sample(&format!("k{i}"))),
            10,
        )
        .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn members_are_plain_files_with_safe_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut samples = (0..3).map(|i| sample(&format!("p1_obs{i}")));
        write_split(dir.path(), "train", &mut samples, 10).unwrap();

        let file = File::open(dir.path().join("train-00000.tar")).unwrap();
        let mut archive = tar::Archive::new(file);
        let mut members = 0;
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            assert_eq!(header.entry_type(), tar::EntryType::Regular, "{name}");
            assert_eq!(header.mode().unwrap(), 0o644, "{name}");
            assert_eq!(
                (header.uid().unwrap(), header.gid().unwrap()),
                (0, 0),
                "{name}"
            );
            assert!(header.link_name().unwrap().is_none(), "{name}");
            assert!(!name.contains('/'), "{name}");
            assert!(!name.contains(".."), "{name}");
            members += 1;
        }
        assert_eq!(members, 9);
    }

    #[test]
    fn dotted_or_slashed_keys_are_rejected() {
        assert!(validate_key("p13012_jbz504eoq").is_ok());
        assert!(validate_key("22.0").is_err());
        assert!(validate_key("a/b").is_err());
        assert!(validate_key("").is_err());
    }

    #[test]
    fn member_names_split_at_first_dot() {
        assert_eq!(
            split_member_name("/some/path/22.0/1.1.png"),
            ("/some/path/22.0/1", "1.png")
        );
        assert_eq!(
            split_member_name("abc.VE1.wav.data"),
            ("abc", "VE1.wav.data")
        );
        assert_eq!(split_member_name("k.jpg"), ("k", "jpg"));
    }

    #[test]
    fn truncated_shard_reports_offset() {
        let dir = tempfile::tempdir().unwrap();
        let shards = write_split(
            dir.path(),
            "train",
            &mut (0..3).map(|i| sample(&format!("k{i}"))),
            10,
        )
        .unwrap();
        let path = dir.path().join(&shards[0].name);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..1100]).unwrap();
        let error = read_shard(&path).unwrap_err().to_string();
        assert!(error.contains("truncated"), "{error}");
    }
}
