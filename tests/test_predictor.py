"""The Predictor: checkpoints in, probabilities out, and wrong inputs said in one line."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.errors import FerbenchError
from ferbench.infer.predictor import Predictor
from ferbench.models import create_model

runner = CliRunner()


def test_predictor_batches_any_crop(checkpoint):
    predictor = Predictor(checkpoint)
    crops = [np.zeros((48, 48), np.uint8), np.full((90, 70, 3), 128, np.uint8)]
    probs = predictor.predict(crops)
    assert probs.shape == (2, 7)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert predictor.predict([]).shape == (0, 7)


def test_predictor_from_run_dir_and_quantized(checkpoint):
    plain, int8 = Predictor(checkpoint.parent), Predictor(checkpoint, quantize=True)
    crop = [np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)]
    assert np.abs(plain.predict(crop) - int8.predict(crop)).max() < 0.05


def test_wrong_checkpoints_say_why(tmp_path):
    import torch

    bare = tmp_path / "bare.pt"
    torch.save(create_model("cnn5").state_dict(), bare)
    with pytest.raises(FerbenchError, match="not a ferbench checkpoint"):
        Predictor(bare)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(FerbenchError, match="not a loadable PyTorch checkpoint"):
        Predictor(junk)
    with pytest.raises(FerbenchError, match="checkpoint not found"):
        Predictor(tmp_path / "none.pt")


def test_model_name_without_runs_explains(tmp_path):
    result = runner.invoke(
        app, ["predict", str(tmp_path), "--model", "cnn3", "--results", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "no finished run of 'cnn3'" in result.output and "ferbench run" in result.output


def test_bf16_run_is_evaluated_in_fp32_where_bf16_is_emulated(tmp_path, checkpoint):
    """`amp=checkpoint` keeps a bf16 run's precision only where the CPU has bf16 instructions:
    emulated bf16 was 15.6x slower than fp32 on 2 Zen 3 cores, for nearly the same accuracy."""
    import torch

    from ferbench.device import cpu_has_native_bf16
    from ferbench.models.checkpoint import load_checkpoint

    bf16 = tmp_path / "bf16.pt"
    torch.save({**load_checkpoint(checkpoint), "amp": "bf16"}, bf16)
    expected = "bf16" if cpu_has_native_bf16() else "off"
    assert Predictor(bf16, amp="checkpoint").runtime.amp == expected
    assert Predictor(checkpoint, amp="checkpoint").runtime.amp == "off"
