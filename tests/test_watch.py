"""The three ways to watch `ferbench live`: a real window (under a virtual X display), the browser
view (`--serve`, in headless Chromium), and a clear line when OpenCV cannot load."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ferbench.infer.overlay import PALETTE

# Colours only the overlay draws (box, label background, probability bars); the grey one is left
# out because anti-aliased text and the clip's grey background come close to it.
MARKS = np.array([c[::-1] for c in PALETTE if len(set(c)) > 1])  # BGR → RGB


def overlay_pixels(rgb: np.ndarray, tolerance: int = 12) -> int:
    """How many pixels of an RGB screenshot carry one of the overlay's colours."""
    rgb = rgb[..., :3].astype(np.int16)
    near = np.abs(rgb[:, :, None, :] - MARKS[None, None]).max(-1) <= tolerance
    return int(near.any(-1).sum())


def clip_background(rgb: np.ndarray) -> int:
    """Pixels of the test clip's dark grey background (about 86, shifted a little by the video
    codec), which nothing else on the virtual screen has."""
    rgb = rgb[..., :3].astype(np.int16)
    spread, mean = rgb.max(-1) - rgb.min(-1), rgb.mean(-1)
    return int(((spread <= 8) & (mean > 70) & (mean < 105)).sum())


def ferbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "ferbench.cli", *args]


def _display_answers(display: str, seconds: float = 15) -> bool:
    from PIL import ImageGrab

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            ImageGrab.grab(xdisplay=display)
            return True
        except OSError:
            time.sleep(0.1)
    return False


@pytest.fixture
def xvfb(tmp_path):
    """A virtual X display of our own; skipped (with the reason) where none can start."""
    binary = shutil.which("Xvfb")
    if binary is None:
        pytest.skip("no X server: Xvfb is not installed (apt-get install xvfb)")
    number = next(n for n in range(90, 200) if not Path(f"/tmp/.X{n}-lock").exists())
    process = subprocess.Popen(
        [binary, f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "xvfb.log", "w"),
    )
    if not _display_answers(f":{number}") or process.poll() is not None:
        process.kill()
        reason = (tmp_path / "xvfb.log").read_text().strip().splitlines()[-3:]
        pytest.skip(f"Xvfb did not start on :{number}: {' / '.join(reason)}")
    yield f":{number}"
    process.terminate()
    process.wait(10)


def looped_clip(source: Path, target: Path, times: int) -> int:
    """The clip played `times` over, so the window stays up long enough to be looked at."""
    from ferbench.utils.opencv import cv2

    capture, frames = cv2.VideoCapture(str(source)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), 12, (width, height))
    for frame in frames * times:
        writer.write(frame)
    writer.release()
    return len(frames) * times


def test_live_window_draws_the_annotated_frame(tmp_path, xvfb, checkpoint, astronaut_video):
    from PIL import ImageGrab

    clip = tmp_path / "long.mp4"
    frames = looped_clip(astronaut_video[0], clip, 3)
    env = {**os.environ, "DISPLAY": xvfb}
    command = ferbench(
        "live", "--checkpoint", str(checkpoint), "--source", str(clip),
        "--max-frames", str(frames), "--detect-every", "1", "--backend", "torch",
        "--detector", "haar",  # the window is under test here, not the detector
    )  # fmt: skip
    for attempt in range(2):  # a loaded machine's fresh Xvfb may refuse Qt's first connection
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        shots, deadline = [], time.time() + 120
        while process.poll() is None and time.time() < deadline and len(shots) < 150:
            try:  # the window opens at the top left: grab that corner, judge after the run
                shots.append(np.asarray(ImageGrab.grab(bbox=(0, 0, 700, 450), xdisplay=xvfb)))
            except OSError:  # the display is busy opening the window: look again
                pass
            time.sleep(0.03)
        output = process.communicate(timeout=60)[0].decode()
        if "could not connect to display" not in output:
            break
        time.sleep(2)
    assert process.returncode == 0, output
    assert f"{frames} frames" in output
    on_screen = [shot for shot in shots if clip_background(shot) > 20_000]
    assert on_screen, "the clip never appeared in a window"
    assert max(overlay_pixels(shot) for shot in on_screen) > 200, "no box or label drawn"


def test_serve_shows_the_stream_in_headless_chromium(tmp_path, checkpoint, astronaut_video):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no headless browser: apt-get install chromium")
    command = ferbench(
        "live", "--checkpoint", str(checkpoint), "--source", str(astronaut_video[0]),
        "--serve", "0", "--detect-every", "1", "--backend", "torch",
        "--detector", "haar",  # the page is under test here, not the detector
    )  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, lines = None, []
        while url is None:
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if "serving the annotated stream on" in line:
                url = line.split(" on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")  # local only by default
        while "the video ended" not in line:  # the last frame then stays on the page
            line = process.stdout.readline()
            assert line, "".join(lines)
        shot = tmp_path / "page.png"
        subprocess.run(
            [
                browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                "--window-size=900,700", "--virtual-time-budget=4000", f"--screenshot={shot}", url,
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        from PIL import Image

        assert overlay_pixels(np.asarray(Image.open(shot).convert("RGB"))) > 200
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C stops the server cleanly
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert "stopped" in output


def test_opencv_that_cannot_load_is_one_line(tmp_path):
    """A GUI OpenCV without its system libraries fails at import; every command says what to
    install in one line instead of a traceback."""
    blocker = tmp_path / "cv2.py"
    blocker.write_text("raise ImportError('libGL.so.1: cannot open shared object file')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        ferbench("data", "info", "synthetic"), env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) <= 3 and "OpenCV cannot load (libGL.so.1" in result.stderr
    assert "apt-get install libgl1" in result.stderr


def test_serve_page_and_endpoints(checkpoint):
    """The server alone: page, stats and a JPEG frame, bound to localhost."""
    import json
    import urllib.request

    from ferbench.infer.serve import FrameServer

    server = FrameServer("127.0.0.1", 0, ["happy", "sad"]).start()
    try:
        frame = np.zeros((40, 60, 3), np.uint8)
        server.publish(frame, [{"id": 1, "label": "happy", "probabilities": [0.9, 0.1]}], 12.5)
        page = urllib.request.urlopen(server.url).read().decode()
        assert "/frame.jpg" in page and "frames/s" in page
        stats = json.loads(urllib.request.urlopen(server.url + "stats.json").read())
        assert stats["fps"] == 12.5 and stats["faces"][0]["label"] == "happy"
        jpeg = urllib.request.urlopen(server.url + "frame.jpg").read()
        assert jpeg[:2] == b"\xff\xd8"
    finally:
        server.close()
