from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.data import load_dataset
from ferbench.data.classes import FER2013_CLASSES
from ferbench.data.synthetic import make_synthetic
from ferbench.errors import FerbenchError

runner = CliRunner()
USAGES = ["Training", "PublicTest", "PrivateTest"]


def pixels(rng, n=48 * 48):
    return " ".join(map(str, rng.integers(0, 256, n)))


def write_fer_csv(path: Path, rows_per_usage=(14, 7, 7), bad_rows=True) -> Path:
    rng = np.random.default_rng(0)
    lines = ["emotion,pixels,Usage"]
    for usage, count in zip(USAGES, rows_per_usage):
        for i in range(count):
            lines.append(f"{i % 7},{pixels(rng)},{usage}")
    if bad_rows:
        lines.append(f"3,{pixels(rng, 100 * 3)},Training")  # 300 values: not a square
        lines.append(f"9,{pixels(rng)},Training")  # label out of range
        lines.append(f"2,{pixels(rng)[:-3]}abc,PublicTest")  # not a number
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_fer2013_csv_splits_classes_and_bad_rows(tmp_path):
    data = load_dataset({"kind": "auto", "path": str(write_fer_csv(tmp_path / "fer2013.csv"))})
    assert data.class_names == FER2013_CLASSES
    assert data.images.shape == (28, 48, 48) and data.images.dtype == np.uint8
    assert data.counts().sum(1).tolist() == [14, 7, 7]
    skipped = {k: v["count"] for k, v in data.problems.items()}
    assert skipped == {
        "rows skipped: pixel count not a square": 1,
        "rows skipped: label out of range 0-6": 1,
        "rows skipped: pixel values not integers 0-255": 1,
    }
    assert data.problems["rows skipped: label out of range 0-6"]["lines"] == [31]


def test_gzipped_csv_and_missing_columns(tmp_path):
    data = load_dataset(
        {"kind": "fer2013", "path": str(write_fer_csv(tmp_path / "f.csv.gz", bad_rows=False))}
    )
    assert len(data) == 28
    bad = tmp_path / "bad.csv"
    bad.write_text("label,image\n1,2\n")
    with pytest.raises(FerbenchError, match="missing column.*emotion, pixels"):
        load_dataset({"kind": "fer2013", "path": str(bad)})


def test_missing_path_lists_formats_and_where_to_get_fer2013(tmp_path):
    with pytest.raises(FerbenchError, match="data not found.*FER2013 CSV.*Kaggle"):
        load_dataset({"kind": "auto", "path": str(tmp_path / "nowhere.csv")})


def make_folder_layout(root: Path, prefixes=True, corrupt=True) -> Path:
    rng = np.random.default_rng(1)
    for split, usages in (("train", ["Training"]), ("test", ["PublicTest", "PrivateTest"])):
        for name in ("angry", "happy", "neutral"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for usage in usages:
                for i in range(4):
                    stem = f"{usage}_{i}" if prefixes else f"img_{usage}_{i}"
                    cv2.imwrite(
                        str(folder / f"{stem}.jpg"), rng.integers(0, 256, (48, 48), dtype=np.uint8)
                    )
    (root / "train" / "sad").mkdir()  # empty class folder
    if corrupt:
        (root / "train" / "happy" / "Training_broken.jpg").write_bytes(b"not a jpeg")
    return root


def test_fer2013_folders_restore_official_splits(tmp_path):
    data = load_dataset({"kind": "auto", "path": str(make_folder_layout(tmp_path / "fer"))})
    assert data.class_names == ["angry", "happy", "sad", "neutral"]  # FER2013 order
    assert data.counts().sum(1).tolist() == [12, 12, 12]
    assert data.problems["files skipped: unreadable or corrupt"]["count"] == 1
    assert data.problems["empty class folders"]["folders"] == ["train/sad"]
    assert not data.notes


def test_folders_without_prefixes_carve_a_seeded_validation_split(tmp_path):
    spec = {
        "kind": "folder",
        "path": str(make_folder_layout(tmp_path / "f", prefixes=False)),
        "val_fraction": 0.25,
    }
    first, second = load_dataset(spec), load_dataset({**spec, "cache": False})
    assert first.counts().sum(1).tolist() == [9, 3, 24]
    assert "carved" in first.notes[0]
    assert np.array_equal(first.splits, second.splits)


def test_any_face_folder_any_size_and_colour(tmp_path):
    rng = np.random.default_rng(2)
    for name in ("joy", "calm"):
        (tmp_path / "faces" / name).mkdir(parents=True)
        for i in range(10):
            image = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / "faces" / name / f"{i}.{'png' if i % 2 else 'bmp'}"), image)
    data = load_dataset({"kind": "folder", "path": str(tmp_path / "faces"), "size": 40})
    assert data.images.shape == (20, 40, 40)
    assert data.class_names == ["calm", "joy"]
    assert set(data.counts().sum(1).tolist()) != {0} and data.counts()[2].sum() > 0


def test_ferplus_majority_labels(tmp_path):
    csv = write_fer_csv(tmp_path / "fer2013.csv", rows_per_usage=(4, 1, 1), bad_rows=False)
    header = (
        "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
    )
    rows = [
        "Training,fer0000000.png,8,1,0,0,0,0,0,1,0,0",  # neutral
        "Training,fer0000001.png,0,9,1,0,0,0,0,0,0,0",  # happy
        "Training,,0,0,0,0,0,0,0,0,0,10",  # dropped by FER+
        "Training,fer0000003.png,0,0,0,0,0,0,0,2,6,2",  # top vote unknown
        "PublicTest,fer0000004.png,0,0,0,0,0,0,0,7,3,0",  # contempt
        "PrivateTest,fer0000005.png,0,0,0,0,9,1,0,0,0,0",  # anger
    ]
    votes = tmp_path / "fer2013new.csv"
    votes.write_text("\n".join([header, *rows]) + "\n")
    data = load_dataset({"kind": "ferplus", "path": str(csv), "labels": str(votes)})
    assert data.class_names[-1] == "contempt" and len(data.class_names) == 8
    assert [data.class_names[i] for i in data.labels] == ["neutral", "happy", "contempt", "angry"]
    seven = load_dataset(
        {"kind": "ferplus", "path": str(csv), "labels": str(votes), "contempt": False}
    )
    assert len(seven.class_names) == 7 and len(seven) == 3


def test_class_sets_select_merge_drop():
    data = make_synthetic(4, 32)
    six = load_dataset(
        {
            "kind": "synthetic",
            "n_per_class": 4,
            "size": 32,
            "classes": ["angry", "fear", "happy", "neutral", "sad", "surprise"],
        }
    )
    assert six.class_names == ["angry", "fear", "happy", "neutral", "sad", "surprise"]
    assert len(six) == 24
    merged = load_dataset(
        {"kind": "synthetic", "n_per_class": 4, "size": 32, "merge": {"disgust": "angry"}}
    )
    assert "disgust" not in merged.class_names and len(merged) == len(data)
    assert (merged.labels == merged.class_names.index("angry")).sum() == 8
    with pytest.raises(FerbenchError, match="unknown class 'joy'.*known classes: angry"):
        load_dataset({"kind": "synthetic", "n_per_class": 4, "size": 32, "classes": ["joy"]})


def test_synthetic_is_deterministic_and_balanced():
    a, b, c = (
        make_synthetic(5, 48, seed=3),
        make_synthetic(5, 48, seed=3),
        make_synthetic(5, 48, seed=4),
    )
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    assert a.counts().sum(0).tolist() == [5] * 7
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_cache_hits_and_invalidates_on_change(tmp_path):
    csv = write_fer_csv(tmp_path / "fer2013.csv", bad_rows=False)
    first = load_dataset({"kind": "fer2013", "path": str(csv)})
    assert len(list(Path(os.environ["FERBENCH_CACHE_DIR"]).glob("fer2013-csv-*.npz"))) >= 1
    again = load_dataset({"kind": "fer2013", "path": str(csv)})
    assert again.fingerprint() == first.fingerprint()
    time.sleep(0.01)
    write_fer_csv(csv, rows_per_usage=(7, 7, 7), bad_rows=False)
    assert len(load_dataset({"kind": "fer2013", "path": str(csv)})) == 21


def test_data_info_and_synth_cli(tmp_path):
    out = tmp_path / "synth"
    result = runner.invoke(app, ["data", "synth", str(out), "--n-per-class", "3", "--size", "32"])
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["data", "info", str(out)])
    assert info.exit_code == 0, info.output
    assert "surprise" in info.output and "21" in info.output
    csv = runner.invoke(
        app, ["data", "synth", str(tmp_path / "s.csv"), "--n-per-class", "2", "--format", "csv"]
    )
    assert csv.exit_code == 0
    assert len(load_dataset({"kind": "auto", "path": str(tmp_path / "s.csv")})) == 14
    missing = runner.invoke(app, ["data", "info", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "Traceback" not in missing.output


FER_COUNTS = [
    [3995, 436, 4097, 7215, 4830, 3171, 4965],
    [467, 56, 496, 895, 653, 415, 607],
    [491, 55, 528, 879, 594, 416, 626],
]


@pytest.mark.slow
def test_shared_fer2013_both_forms_load_exact_counts(shared_data):
    csv = load_dataset({"kind": "auto", "path": str(shared_data / "fer2013" / "fer2013.csv.gz")})
    folders = load_dataset({"kind": "auto", "path": str(shared_data / "fer2013" / "images")})
    assert csv.counts().tolist() == FER_COUNTS
    assert folders.counts().tolist() == FER_COUNTS
    start = time.perf_counter()
    load_dataset({"kind": "auto", "path": str(shared_data / "fer2013" / "fer2013.csv.gz")})
    assert time.perf_counter() - start < 1.0  # cached


@pytest.mark.slow
def test_shared_ferplus_majority(shared_data):
    data = load_dataset(
        {
            "kind": "ferplus",
            "path": str(shared_data / "fer2013" / "fer2013.csv.gz"),
            "labels": str(shared_data / "ferplus" / "fer2013new.csv"),
        }
    )
    assert len(data.class_names) == 8
    assert 35000 < len(data) < 35887
    assert data.problems["repeated image names with another image's votes"] == 4


def test_data_info_keeps_its_statistics_with_the_cache(monkeypatch):
    """Blank images and duplicates are computed once per dataset content, then read back."""
    from ferbench.data import quality

    data = make_synthetic(n_per_class=6, seed=3)
    first = quality.summarize_problems(data)
    assert (Path(os.environ["FERBENCH_CACHE_DIR"]) / f"problems-{data.fingerprint()}.json").exists()

    def recomputed(_):
        raise AssertionError("statistics recomputed for a cached dataset")

    monkeypatch.setattr(quality, "_problems", recomputed)
    assert quality.summarize_problems(data) == first
