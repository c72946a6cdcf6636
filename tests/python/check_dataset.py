"""Reads a published paperclip dataset with third-party readers.

Opens every kept version's metadata table with the `deltalake` package (time travel by
version) and every shard with the `webdataset` package, and checks that both agree with
the version manifest. Versions that `paperclip datasets gc` removed (listed in
`expired.json`) are skipped, and the Delta history must hold exactly the kept versions.
Exits non-zero with a message on the first disagreement.

Usage: python tests/python/check_dataset.py DATA_DIR DATASET
"""

import io
import json
import os
import sys
from pathlib import Path

import deltalake
import webdataset
from PIL import Image


def leave(code: int) -> None:
    """Exits without running interpreter teardown.

    The `deltalake` package can abort at interpreter shutdown ("terminate called without an
    active exception") after every check passed, which would turn a passing check into a
    failure. Flushing and leaving through `os._exit` skips that teardown.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def fail(message: str) -> None:
    print(f"check_dataset: {message}", file=sys.stderr)
    leave(1)


def check_version(root: Path, manifest: dict) -> int:
    version = manifest["version"]
    table = deltalake.DeltaTable(str(root / "samples"), version=version - 1)
    rows = table.to_pyarrow_table().to_pylist()
    expected = manifest["counts"]["samples"]
    if len(rows) != expected:
        fail(f"v{version}: Delta table has {len(rows)} rows, manifest says {expected}")
    by_key = {row["key"]: row for row in rows}

    shard_dir = root / "versions" / f"v{version}" / "shards"
    urls = [str(shard_dir / shard["name"]) for shard in manifest["shards"]]
    seen = 0
    for sample in webdataset.WebDataset(urls, shardshuffle=False):
        key = sample["__key__"]
        if key not in by_key:
            fail(f"v{version}: shard sample {key} is not in the Delta table")
        row = by_key[key]
        image = Image.open(io.BytesIO(sample["jpg"]))
        if image.size != (512, 512):
            fail(f"v{version}: {key}.jpg is {image.size}, expected 512x512")
        if sample["txt"].decode("utf-8") != row["caption"]:
            fail(f"v{version}: {key}.txt differs from the caption column")
        metadata = json.loads(sample["json"])
        if metadata["image_sha256"] != row["image_sha256"]:
            fail(f"v{version}: {key}.json image_sha256 differs from the table")
        seen += 1
    if seen != expected:
        fail(f"v{version}: shards hold {seen} samples, manifest says {expected}")
    return seen


def expired_versions(root: Path) -> set:
    """Returns the versions `paperclip datasets gc` removed, read from `expired.json`."""
    path = root / "expired.json"
    if not path.exists():
        return set()
    return {entry["version"] for entry in json.loads(path.read_text())["versions"]}


def main() -> None:
    if len(sys.argv) != 3:
        fail("usage: check_dataset.py DATA_DIR DATASET")
    root = Path(sys.argv[1]) / "datasets" / sys.argv[2]
    expired = expired_versions(root)
    manifests = {}
    for path in root.glob("versions/v*/manifest.json"):
        manifest = json.loads(path.read_text())
        if manifest["version"] in expired:
            fail(f"{path} belongs to a version gc removed; run `paperclip datasets gc` again")
        manifests[manifest["version"]] = manifest
    if not manifests:
        fail(f"no published version under {root}")
    history = deltalake.DeltaTable(str(root / "samples")).history()
    in_history = {entry["version"] + 1 for entry in history if "paperclip" in entry}
    kept = in_history - expired
    if kept != set(manifests):
        fail(f"Delta history holds versions {sorted(kept)}, the manifests {sorted(manifests)}")
    for version in sorted(manifests):
        manifest = manifests[version]
        seen = check_version(root, manifest)
        print(f"v{manifest['version']}: {seen} samples read with deltalake and webdataset")


if __name__ == "__main__":
    main()
    leave(0)
