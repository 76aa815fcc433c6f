from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ferbench.cli import app, reflow

runner = CliRunner()

GOOD = """
import torch.nn as nn
from ferbench.models import register_model

@register_model(input_size=40)
def tiny_net(num_classes=7, in_chans=1, **kwargs):
    \"\"\"A tiny user model.\"\"\"
    return nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def registry() -> Path:
    return Path(os.environ["FERBENCH_REGISTRY"])


def snapshot() -> dict:
    root = registry()
    return {p.name: p.read_bytes() for p in root.glob("*")} if root.exists() else {}


def test_register_then_use_everywhere_then_unregister(tmp_path):
    from ferbench.models import create_model, list_models, plugins

    model_file = write(tmp_path, "my_model.py", GOOD)
    result = runner.invoke(app, ["register", str(model_file)])
    assert result.exit_code == 0, result.output
    assert (registry() / "my_model.py").exists()
    index = yaml.safe_load((registry() / "index.yaml").read_text())
    assert index["tiny_net"]["file"] == "my_model.py"
    assert index["tiny_net"]["parameters"] > 0 and len(index["tiny_net"]["sha256"]) == 64
    plugins.reset()  # a new process: the model comes back from registry/
    assert "tiny_net" in list_models()
    assert create_model("tiny_net", num_classes=5).eval()(
        __import__("torch").zeros(1, 1, 40, 40)
    ).shape == (1, 5)
    listing = runner.invoke(app, ["models", "tiny*"])
    assert listing.exit_code == 0 and "tiny_net" in listing.output and "registry" in listing.output
    again = runner.invoke(app, ["register", str(model_file)])
    assert again.exit_code == 1 and "--force" in again.output
    forced = runner.invoke(app, ["register", str(model_file), "--force"])
    assert forced.exit_code == 0, forced.output
    removed = runner.invoke(app, ["unregister", "tiny_net"])
    assert removed.exit_code == 0
    assert not (registry() / "my_model.py").exists()
    plugins.reset()
    assert "tiny_net" not in list_models()


BAD_FILES = {
    "syntax.py": ("def broken(:\n    pass\n", "syntax error"),
    "nothing.py": ("import torch\nx = 1\n", "registers no model"),
    "shape.py": (
        """
        import torch.nn as nn
        from ferbench.models import register_model

        @register_model
        def wrong_shape(num_classes=7, in_chans=1, **kwargs):
            return nn.Sequential(nn.Flatten(), nn.Linear(48 * 48, 3))
        """,
        "expected (1, 7)",
    ),
    "clash.py": (
        """
        import torch.nn as nn
        from ferbench.models import register_model

        @register_model
        def cnn3(num_classes=7, in_chans=1, **kwargs):
            return nn.Linear(1, num_classes)
        """,
        "already registered",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_model_files_leave_the_registry_unchanged(tmp_path, name):
    text, message = BAD_FILES[name]
    runner.invoke(app, ["register", str(write(tmp_path, "good.py", GOOD))])
    before = snapshot()
    result = runner.invoke(app, ["register", str(write(tmp_path, name, text))])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert snapshot() == before


def test_missing_file_is_one_line(tmp_path):
    result = runner.invoke(app, ["register", str(tmp_path / "nope.py")])
    assert result.exit_code == 1
    assert "no such model file" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert snapshot() == {}


def test_unregister_unknown_name():
    result = runner.invoke(app, ["unregister", "ghost"])
    assert result.exit_code == 1 and "not a registered user model" in result.output


def test_models_table_lists_the_zoo():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    for name in ("cnn5", "cnn3", "resnet18", "resnet34", "resnet50"):
        assert name in result.output


def test_installed_packages_add_models_through_entry_points(tmp_path, monkeypatch):
    from ferbench.models import list_models, model_card, plugins

    site = tmp_path / "site"
    dist = site / "fer_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fer-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ferbench.models]\nplugin = fer_plugin_models\n")
    (site / "fer_plugin_models.py").write_text(GOOD.replace("tiny_net", "plugin_net"))
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    assert "plugin_net" in list_models()
    assert model_card("plugin_net").source.startswith("plugin:")


def test_help_wraps_prose_at_the_terminal_width_and_keeps_example_lines():
    doc = """Title line.

        Prose that the source
        breaks in two.

        Examples:
          ferbench run a.yaml
          ferbench run b.yaml
        """
    assert reflow(doc) == (
        "Title line.\n\nProse that the source breaks in two.\n\n"
        "Examples:\n  ferbench run a.yaml\n  ferbench run b.yaml"
    )
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "failed ones are recorded in their run directory" in " ".join(result.output.split())
    # the paragraph is one line at 200 columns, not broken where the docstring breaks it
    assert any(
        "run records" in ln and "interrupted ones" in ln for ln in result.output.splitlines()
    )
