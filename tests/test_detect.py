"""Face detection on still photos: one box per face, none on textures or scenes."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.faces.detect import still_detector
from ferbench.utils.opencv import cv2

data = pytest.importorskip("skimage.data")
cli = CliRunner()


def bgr(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2BGR)


def collage() -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Two portraits among a coffee cup, a star field and gravel (the sample scenes whose
    MTCNN candidates score highest without a face), and where each portrait lies."""
    tiles = [
        data.astronaut(),
        data.camera(),
        data.coffee(),
        data.hubble_deep_field(),
        data.gravel(),
    ]
    tiles = [cv2.resize(bgr(t), (400, 400), interpolation=cv2.INTER_AREA) for t in tiles]
    sheet = np.full((800, 1200, 3), 255, np.uint8)
    places = [(0, 0), (400, 0), (800, 0), (0, 400), (400, 400)]
    for tile, (x, y) in zip(tiles, places):
        sheet[y : y + 400, x : x + 400] = tile
    return sheet, [(x, y, 400, 400) for x, y in places[:2]]


def test_one_box_per_face_on_portraits_and_none_on_scenes():
    sheet, portraits = collage()
    boxes = still_detector()(sheet)
    assert len(boxes) == 2, boxes
    for x, y, w, h in portraits:  # one box inside each portrait
        inside = [b for b in boxes if x <= b[0] + b[2] / 2 < x + w and y <= b[1] + b[3] / 2 < y + h]
        assert len(inside) == 1


def test_predict_gives_one_box_on_the_astronaut(tmp_path):
    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), bgr(data.astronaut()))
    result = cli.invoke(app, ["predict", str(photo), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count('"box"') == 1
