"""Datasets: every reader yields one in-memory FaceArrays, described by a ``DataSpec``."""

from ferbench.config import DATA_KINDS, DataSpec
from ferbench.data.arrays import SPLITS, FaceArrays
from ferbench.data.loader import load_dataset

__all__ = ["SPLITS", "DATA_KINDS", "DataSpec", "FaceArrays", "load_dataset"]
