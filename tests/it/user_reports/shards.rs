//! WebDataset shards: the key rule, cut files, gaps in shard numbers and shards of the same
//! name in different versions, through the shard reader, the published datasets and the
//! training loader.

use std::path::Path;

use paperclip::dataset::shards::{OwnedShardSample, read_shard, write_split};
use paperclip::dataset::verify::verify_dataset;
use paperclip::dataset::versions::{DatasetPaths, VersionRecord, list_versions};
use paperclip::train::data::SplitData;
use paperclip::train::synthetic::{ShapesSpec, publish_shapes};
use paperclip_archive::ServeOptions;

use crate::support::{pipeline_path, run_config, serve_snapshot};

const DATASET: &str = "hst-paperclip";

/// Builds a tar file of the given members, in order.
fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in members {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, *bytes).unwrap();
    }
    builder.into_inner().unwrap()
}

fn extensions(members: &[(String, Vec<u8>)]) -> Vec<&str> {
    members.iter().map(|(e, _)| e.as_str()).collect()
}

/// Publishes the fixture archive with `samples_per_shard`; returns the version record.
async fn publish_fixtures(root: &Path, samples_per_shard: usize) -> VersionRecord {
    let snapshot = root.join("snapshot");
    paperclip::snapshots::fixtures::build(&snapshot).unwrap();
    let server = serve_snapshot(&snapshot, ServeOptions::default()).await;
    let mut config = paperclip::pipeline::config::load(&pipeline_path()).unwrap();
    config.shards.samples_per_shard = samples_per_shard;
    run_config(&config, &root.join("data"), server.base_url()).await;
    let paths = DatasetPaths::new(&root.join("data"), DATASET);
    list_versions(&paths).await.unwrap().pop().unwrap()
}

async fn publish_shapes_dataset(
    data_dir: &Path,
    name: &str,
    train_samples: usize,
) -> VersionRecord {
    let spec = ShapesSpec {
        name: name.to_string(),
        train_samples,
        val_samples: 0,
        image_px: 16,
        seed: train_samples as u64,
    };
    publish_shapes(data_dir, &spec).await.unwrap();
    let paths = DatasetPaths::new(data_dir, name);
    list_versions(&paths).await.unwrap().pop().unwrap()
}

fn train_split(data_dir: &Path, record: &VersionRecord) -> Result<SplitData, String> {
    SplitData::load(data_dir, record, "train", "caption", 0, None).map_err(|e| e.to_string())
}

// https://github.com/huggingface/datasets/issues/7150
#[test]
fn dotted_paths_split_at_first_base_dot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dotted.tar");
    std::fs::write(
        &path,
        tar_of(&[
            ("some/path/22.0/1.1.png", b"png bytes"),
            ("some/path/22.0/1.1.txt", b"a caption"),
        ]),
    )
    .unwrap();

    let samples = read_shard(&path).unwrap();
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].key, "some/path/22.0/1");
    assert_eq!(extensions(&samples[0].members), ["1.png", "1.txt"]);

    // The writer rejects a key that another reader could split elsewhere.
    let sample = OwnedShardSample {
        key: "22.0".to_string(),
        jpeg: vec![0xFF, 0xD8, 0xFF, 0xD9],
        caption: "a caption".to_string(),
        metadata_json: b"{}".to_vec(),
    };
    let error = write_split(dir.path(), "train", &mut std::iter::once(Ok(sample)), 10)
        .expect_err("a dotted key is refused")
        .to_string();
    assert!(error.contains("\"22.0\""), "{error}");
}

// https://github.com/huggingface/datasets/issues/7150
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_member_names_have_one_dot() {
    let dir = tempfile::tempdir().unwrap();
    let record = publish_fixtures(dir.path(), 1000).await;
    let shards = DatasetPaths::new(&dir.path().join("data"), DATASET)
        .version_dir(record.version)
        .join("shards");
    let mut members = 0u64;
    for shard in &record.shards {
        let file = std::fs::File::open(shards.join(&shard.name)).unwrap();
        for entry in tar::Archive::new(file).entries().unwrap() {
            let name = entry
                .unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let first = name.split_once('.').map(|(key, _)| key);
            let last = name.rsplit_once('.').map(|(key, _)| key);
            assert!(first.is_some(), "{name} in {} has no dot", shard.name);
            assert_eq!(first, last, "{name} in {}", shard.name);
            members += 1;
        }
    }
    assert_eq!(members, 3 * record.counts["samples"]);
}

// https://github.com/webdataset/webdataset/issues/288
#[test]
fn multi_dot_extensions_stay_on_one_sample() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("speech.tar");
    std::fs::write(
        &path,
        tar_of(&[
            ("common_voice_en_VE1.wav.data", b"RIFF"),
            ("common_voice_en_VE1.wav.label", b"hello"),
            ("common_voice_en_VE2.wav.data", b"RIFF"),
            ("common_voice_en_VE2.wav.label", b"world"),
        ]),
    )
    .unwrap();

    let samples = read_shard(&path).unwrap();
    let keys: Vec<&str> = samples.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["common_voice_en_VE1", "common_voice_en_VE2"]);
    for sample in &samples {
        assert_eq!(extensions(&sample.members), ["wav.data", "wav.label"]);
    }
    assert_eq!(samples[1].members[1].1, b"world");
}

// https://github.com/rom1504/img2dataset/issues/164
#[test]
fn cut_shard_error_names_offset() {
    let dir = tempfile::tempdir().unwrap();
    let samples: Vec<OwnedShardSample> = (0..3)
        .map(|i| OwnedShardSample {
            key: format!("k{i}"),
            jpeg: vec![i as u8; 2000],
            caption: format!("caption {i}"),
            metadata_json: format!("{{\"key\":\"k{i}\"}}").into_bytes(),
        })
        .collect();
    let mut samples = samples.into_iter().map(Ok);
    let shards = write_split(dir.path(), "train", &mut samples, 10).unwrap();
    let path = dir.path().join(&shards[0].name);
    let whole = std::fs::read(&path).unwrap();
    assert_eq!(read_shard(&path).unwrap().len(), 3);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["train-00000.tar"], "no partial file is left");

    // Inside the data of the first image (header at 0, data from 512).
    std::fs::write(&path, &whole[..1500]).unwrap();
    let error = read_shard(&path).unwrap_err().to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(
        error.contains("truncated at byte 1500 in member k0.jpg"),
        "{error}"
    );

    // Right after the first sample's three members, where a tar reader sees an end.
    let mut archive = tar::Archive::new(whole.as_slice());
    let fourth = archive.entries().unwrap().nth(3).unwrap().unwrap();
    let boundary = fourth.raw_header_position() as usize;
    std::fs::write(&path, &whole[..boundary]).unwrap();
    let error = read_shard(&path).unwrap_err().to_string();
    assert!(
        error.contains(&format!("truncated at byte {boundary}")) && error.contains("k0.json"),
        "{error}"
    );
}

// https://github.com/rom1504/img2dataset/issues/164
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_rejects_shard_cut_between_samples() {
    let dir = tempfile::tempdir().unwrap();
    let record = publish_shapes_dataset(dir.path(), "cut", 8).await;
    assert_eq!(train_split(dir.path(), &record).unwrap().samples.len(), 8);

    let shard = DatasetPaths::new(dir.path(), "cut")
        .version_dir(record.version)
        .join("shards/train-00000.tar");
    let whole = std::fs::read(&shard).unwrap();
    let mut archive = tar::Archive::new(whole.as_slice());
    let fifth_sample = archive.entries().unwrap().nth(12).unwrap().unwrap();
    let boundary = fifth_sample.raw_header_position() as usize;
    std::fs::write(&shard, &whole[..boundary]).unwrap();

    let error = train_split(dir.path(), &record).unwrap_err();
    assert!(
        error.contains("train-00000.tar holds 4 samples, but the manifest of cut@1 lists 8"),
        "{error}"
    );
    assert!(error.contains("paperclip datasets verify cut"), "{error}");
}

// https://github.com/rom1504/img2dataset/issues/174
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_unlisted_shards_reported() {
    let dir = tempfile::tempdir().unwrap();
    let record = publish_fixtures(dir.path(), 1).await;
    let data_dir = dir.path().join("data");
    let paths = DatasetPaths::new(&data_dir, DATASET);
    let shards = paths.version_dir(record.version).join("shards");
    let train: Vec<&str> = record
        .shards
        .iter()
        .filter(|s| s.split == "train")
        .map(|s| s.name.as_str())
        .collect();
    assert!(train.len() >= 3, "{train:?}");
    let listed: usize = record
        .shards
        .iter()
        .filter(|s| s.split == "train")
        .map(|s| s.samples)
        .sum();

    // A shard no manifest lists, numbered after a gap, is not read.
    std::fs::copy(shards.join(train[0]), shards.join("train-00042.tar")).unwrap();
    assert_eq!(
        train_split(&data_dir, &record).unwrap().samples.len(),
        listed
    );

    // A listed shard that is gone is named, not skipped.
    std::fs::remove_file(shards.join(train[1])).unwrap();
    let error = train_split(&data_dir, &record).unwrap_err();
    assert!(error.contains(train[1]), "{error}");
    let problems = verify_dataset(&paths).await.unwrap();
    let items: Vec<&str> = problems.iter().map(|p| p.item.as_str()).collect();
    assert_eq!(items, [train[1], "train-00042.tar"], "{problems:?}");
}

// https://github.com/webdataset/webdataset/issues/463
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_shard_name_in_two_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let first = publish_shapes_dataset(dir.path(), "first", 100).await;
    let second = publish_shapes_dataset(dir.path(), "second", 50).await;
    for record in [&first, &second] {
        let names: Vec<&str> = record.shards.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["train-00000.tar"]);
    }

    let first = train_split(dir.path(), &first).unwrap();
    let second = train_split(dir.path(), &second).unwrap();
    assert_eq!((first.samples.len(), second.samples.len()), (100, 50));
    for data in [&first, &second] {
        let last = data.samples.len() - 1;
        for index in [0, last] {
            let metadata = data.metadata(index).unwrap();
            assert_eq!(metadata["caption"], data.samples[index].caption.as_str());
            assert_eq!(metadata["key"], data.samples[index].key.as_str());
            data.image(index).unwrap();
        }
    }
    assert!(
        (0..50).any(|i| first.samples[i].caption != second.samples[i].caption),
        "the two datasets hold different samples under the same keys"
    );
}
