"""Files on disk (issue 55): annotated copies never overwrite each other or the originals, and
a damaged data cache entry is rebuilt, not raised."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.data import load_dataset

runner = CliRunner()
data = pytest.importorskip("skimage.data")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def photos(tmp_path) -> Path:
    """`photos/a/face.jpg` and `photos/b/face.jpg`: the same name, two different portraits."""
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    for name, image in (("a", astronaut), ("b", cv2.flip(astronaut, 1))):
        (tmp_path / "photos" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "photos" / name / "face.jpg"), image)
    return tmp_path / "photos"


def annotate(checkpoint: Path, out: Path, *inputs: Path):
    args = ["predict", *map(str, inputs), "--checkpoint", str(checkpoint), "--annotate", str(out)]
    return runner.invoke(app, [*args, "--json"])


def test_annotate_mirrors_the_inputs_relative_paths(tmp_path, photos, checkpoint):
    out = tmp_path / "annotated"
    result = annotate(checkpoint, out, photos)
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a/face.jpg", "b/face.jpg"]  # one annotated copy each, none overwritten
    for name, other in (("a", "b"), ("b", "a")):  # each copy is of its own photo
        copy = cv2.imread(str(out / name / "face.jpg")).astype(int)
        own = np.abs(copy - cv2.imread(str(photos / name / "face.jpg"))).mean()
        assert own < np.abs(copy - cv2.imread(str(photos / other / "face.jpg"))).mean()
    # files from two folders given one by one: laid out below their common folder
    again = tmp_path / "again"
    result = annotate(checkpoint, again, photos / "a" / "face.jpg", photos / "b" / "face.jpg")
    assert result.exit_code == 0, result.output
    assert (again / "a" / "face.jpg").is_file() and (again / "b" / "face.jpg").is_file()


def test_annotate_refuses_to_write_into_an_input_folder(photos, checkpoint):
    before = {p: digest(p) for p in photos.rglob("*.jpg")}
    for out, inputs in (
        (photos, [photos]),  # the source folder itself
        (photos / "a" / "annotated", [photos]),  # inside it: a later run would read the copies
        (photos / "a", [photos / "a" / "face.jpg"]),  # would replace the photo given
    ):
        result = annotate(checkpoint, out, *inputs)
        assert result.exit_code == 1, (out, result.output)
        assert "--annotate" in result.output and "Traceback" not in result.output
    assert {p: digest(p) for p in photos.rglob("*.jpg")} == before
    assert not (photos / "a" / "annotated").exists()


def test_a_truncated_cache_entry_is_rebuilt_with_a_note(tmp_path, capfd):
    faces = tmp_path / "faces"
    rng = np.random.default_rng(0)
    for label in ("happy", "sad"):
        (faces / label).mkdir(parents=True)
        for i in range(6):
            cv2.imwrite(str(faces / label / f"{i}.png"), rng.integers(0, 255, (24, 24), np.uint8))
    spec = {"kind": "folder", "path": str(faces), "size": 24}
    cache = Path(os.environ["FERBENCH_CACHE_DIR"])
    before = set(cache.glob("*.npz"))
    first = load_dataset(spec)
    (entry,) = set(cache.glob("*.npz")) - before
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # a copy cut short
    capfd.readouterr()
    again = load_dataset(spec)
    notes = [line for line in capfd.readouterr().err.splitlines() if "cache" in line]
    assert len(notes) == 1 and str(entry) in notes[0] and "rebuilding" in notes[0]
    assert again.fingerprint() == first.fingerprint()
    assert load_dataset(spec).fingerprint() == first.fingerprint()  # the rebuilt entry is whole
    assert not [line for line in capfd.readouterr().err.splitlines() if "cache" in line]
