"""Defaults of the live loop and of face cropping, in one place (no torch, no OpenCV here, so the
CLI can show them in `--help` without loading either)."""

from __future__ import annotations

# FER2013's crops came from a face detector: on 502 of 600 PrivateTest faces upscaled 4x, the
# alt2 cascade's box covers the whole crop (median crop/box side ratio 1.03, IQR 0.98-1.11), so
# crops need only ~2% extra per side to be framed like the training faces.
FER_MARGIN = 0.02

# Detect faces every 5 frames (and after scene cuts), tracking them in between: the labelled-
# video benchmark's best trade (README, Measured figures).
DETECT_EVERY = 5

# Keep a face the detector missed for this many detection rounds.
COAST = 1
