"""Datasets: every reader yields one in-memory FaceArrays, described by a short spec."""

from ferbench.data.arrays import SPLITS, FaceArrays
from ferbench.data.loader import DATA_KINDS, DataSpec, load_dataset

__all__ = ["SPLITS", "DATA_KINDS", "DataSpec", "FaceArrays", "load_dataset"]
