"""Leakage: evaluation faces that were also trained on, found through re-encoding and shifts."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.data import load_dataset
from ferbench.data.leaks import aligned_nearest, leak_report, perceptual_hashes, shifted
from ferbench.data.synthetic import make_synthetic
from ferbench.models.checkpoint import load_checkpoint, save_checkpoint
from ferbench.models.factory import model_from_checkpoint
from ferbench.utils.opencv import cv2

cli = CliRunner()


def jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], 0)


def leaky_folders(root, copies: int = 6, fresh: int = 8):
    """train/<class>/ from one synthetic set; test/<class>/ holds `copies` training faces
    shifted by (1, 2) px and re-encoded, and `fresh` faces of another seed."""
    train = make_synthetic(n_per_class=10, size=48, seed=0)
    other = make_synthetic(n_per_class=10, size=48, seed=7)
    for split, faces in (("train", train), ("test", None)):
        for name in train.class_names:
            (root / split / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(train.images, train.labels)):
        cv2.imwrite(str(root / "train" / train.class_names[label] / f"{i}.png"), image)
    for i in range(copies):
        image, label = train.images[i * 9], train.labels[i * 9]
        moved = jpeg(shifted(image[None], 1, 2)[0])
        cv2.imwrite(str(root / "test" / train.class_names[label] / f"copy{i}.png"), moved)
    for i in range(fresh):
        image, label = other.images[i * 7], other.labels[i * 7]
        cv2.imwrite(str(root / "test" / other.class_names[label] / f"new{i}.png"), image)
    return root


def test_hash_survives_reencoding_and_the_alignment_search_undoes_shifts():
    faces = make_synthetic(n_per_class=4, size=48, seed=1).images
    base = perceptual_hashes(faces)
    again = perceptual_hashes(np.stack([jpeg(f) for f in faces]))
    assert np.bitwise_count(base ^ again).max() <= 4
    moved = np.stack([jpeg(f) for f in shifted(faces, 1, 2)])
    plain = np.bitwise_count(perceptual_hashes(moved) ^ base)
    best, where = aligned_nearest(base, moved)
    assert np.median(plain) >= 6  # a 2-px shift alone moves the hash a lot ...
    assert np.median(best) <= 2 and (where == np.arange(len(faces))).mean() > 0.9  # ... aligned


def test_leaks_finds_the_copied_faces_and_eval_reports_clean_accuracy(tmp_path, checkpoint):
    root = leaky_folders(tmp_path / "faces")
    data = load_dataset({"kind": "folder", "path": str(root), "size": 48})
    report = leak_report(data)
    test_idx = np.flatnonzero(data.splits == 2)
    leaked = set(report["test"]["leaked"])
    assert len(leaked) == 6 and leaked <= set(test_idx.tolist())
    assert report["test"]["exact"] == 0  # shifted and re-encoded: none pixel-identical
    result = cli.invoke(app, ["data", "leaks", str(root), "--out", str(tmp_path / "l.json")])
    assert result.exit_code == 0, result.output
    assert "test: 6 of 14 faces" in result.output
    assert json.loads((tmp_path / "l.json").read_text())["test"]["leaked"] == sorted(leaked)

    out = tmp_path / "eval.json"
    # leak figures are for a model trained on these very faces (data/identity.py)
    own = tmp_path / "own.pt"
    payload = load_checkpoint(checkpoint)
    faces = load_dataset({"kind": "folder", "path": str(root), "size": 32})
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "format")}
    save_checkpoint(own, model_from_checkpoint(payload), {**meta,
                    "data_fingerprint": faces.fingerprint()})  # fmt: skip
    evaluated = cli.invoke(
        app,
        [
            "eval",
            str(root),
            "--checkpoint",
            str(own),
            "--split",
            "test",
            "--out",
            str(out),
        ],  # fmt: skip
    )
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(out.read_text())
    assert metrics["leaked"] == 6 and "accuracy without them" in evaluated.output
    clean = (metrics["accuracy"] * 14 - metrics["accuracy_leaked"] * 6) / 8
    assert abs(metrics["accuracy_clean"] - clean) < 1e-9
