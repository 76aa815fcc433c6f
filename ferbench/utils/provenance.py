"""What produced a run directory: library versions, the ferbench commit and the machine.

Written into every ``config.yaml`` that ferbench makes (training runs and ensembles), so that a
benchmark row can say which code on which hardware produced its figures.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

from ferbench import __version__
from ferbench.device import cpu_isa, cpu_name


def versions() -> dict:
    import sklearn
    import timm

    return {
        "ferbench": __version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "timm": timm.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "commit": git_commit(),
    }


def git_commit() -> str:
    """The checkout's commit (with -dirty for local changes) when ferbench runs from git."""
    root = Path(__file__).resolve().parents[2]  # ferbench/utils/provenance.py -> the checkout
    if not (root / ".git").exists():
        return ""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=10"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def device_info(device: torch.device) -> dict:
    """The device's kind, thread count and name; on a CPU also its widest vector extension
    (speeds are only comparable between machines of one kind)."""
    info = {"type": device.type, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        info["name"], info["isa"] = cpu_name(), cpu_isa()
    return info
