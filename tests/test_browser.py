"""`ferbench live --source browser`: the browser's camera through the live pipeline.

The server's rules with real JPEGs over HTTP, then the whole path in headless Chromium with a
fake camera playing a clip into the page."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from chromium import Chromium, find_chromium, write_y4m

from ferbench.infer import browser


def jpeg(frame: np.ndarray) -> bytes:
    from ferbench.utils.opencv import cv2

    return cv2.imencode(".jpg", frame)[1].tobytes()


def post(url: str, body: bytes, content_type: str = "image/jpeg") -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def astronaut_frame() -> np.ndarray:
    from skimage import data

    from ferbench.utils.opencv import cv2

    frame = np.full((360, 640, 3), 90, np.uint8)
    frame[80:280, 200:380] = cv2.cvtColor(data.astronaut()[20:220, 120:300], cv2.COLOR_RGB2BGR)
    return frame


class Clock:
    """A clock the test moves (session timeouts, rate limits) instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served(checkpoint, tmp_path):
    """A FrameServer with browser sessions on a free port, the real cnn5 checkpoint and the
    Haar detector; yields (url, sessions, clock)."""
    from ferbench.faces.detect import make_detector
    from ferbench.infer.live import Annotator, FaceLocator
    from ferbench.infer.predictor import Predictor
    from ferbench.infer.serve import FrameServer

    predictor = Predictor(checkpoint)
    detector, clock = make_detector("haar"), Clock()
    annotate = Annotator(predictor, log=tmp_path / "faces.csv")
    sessions = browser.BrowserSessions(
        annotate, lambda ids: FaceLocator(detector, ids=ids), clock=clock
    )
    server = FrameServer("127.0.0.1", 0, predictor.class_names, sessions).start()
    annotate.server = server
    try:
        yield server.url, sessions, clock
    finally:
        server.close()
        sessions.finish()


def test_a_frame_comes_back_as_faces_and_the_page_is_the_camera_page(served):
    url, sessions, clock = served
    page = urllib.request.urlopen(url).read().decode()
    assert "getUserMedia" in page and '"happy"' in page  # the classes reach the page
    status, body = post(url + "frame?session=tab-00000001", jpeg(astronaut_frame()))
    assert status == 200, body
    reply = json.loads(body)
    assert (reply["width"], reply["height"], reply["frame"]) == (640, 360, 0)
    assert len(reply["faces"]) == 1
    face = reply["faces"][0]
    assert 180 <= face["box"][0] + face["box"][2] / 2 <= 400  # on the astronaut
    assert abs(sum(face["probabilities"]) - 1) < 0.01 and reply["server_ms"] > 0
    # the latest browser frame is also what /frame.jpg and /stats.json show
    assert urllib.request.urlopen(url + "frame.jpg").read()[:2] == b"\xff\xd8"
    assert json.loads(urllib.request.urlopen(url + "stats.json").read())["faces"][0]["id"] == 0


def test_bad_requests_get_a_4xx_and_nothing_breaks(served):
    url, sessions, clock = served
    frame = jpeg(astronaut_frame())
    png = __import__("cv2").imencode(".png", astronaut_frame())[1].tobytes()
    assert post(url + "frame?session=tab-00000001", png)[0] == 415  # not a JPEG
    assert post(url + "frame?session=tab-00000001", png, "image/png")[0] == 415
    assert post(url + "frame?session=tab-00000001", b"\xff\xd8\xff" + b"x" * 500)[0] == 400
    assert post(url + "frame?session=bad", frame)[0] == 400  # session id too short
    assert post(url + "frame", frame)[0] == 400  # no session
    status, body = post(url + "frame?session=tab-00000001", b"\xff\xd8\xff" + bytes(3 << 20))
    assert status == 413 and b"at most 2 MB" in body
    huge = jpeg(np.zeros((1200, 2400, 3), np.uint8))
    assert post(url + "frame?session=tab-00000001", huge)[0] == 413
    assert post(url + "nowhere?session=tab-00000001", frame)[0] == 404

    assert post(url + "frame?session=tab-00000002", frame)[0] == 200
    assert post(url + "frame?session=tab-00000002", frame)[0] == 429  # faster than MAX_RATE
    clock.now += 1
    session = sessions.sessions["tab-00000002"]
    with session.busy:  # a frame of this tab still in progress: the next is refused
        assert post(url + "frame?session=tab-00000002", frame)[0] == 429
    assert post(url + "frame?session=tab-00000002", frame)[0] == 200
    assert sessions.sessions["tab-00000002"].frames == 2


def test_sessions_are_independent_bounded_and_freed(served):
    url, sessions, clock = served
    frame = jpeg(astronaut_frame())
    for tab in range(browser.MAX_SESSIONS):
        assert post(url + f"frame?session=tab-{tab:08d}", frame)[0] == 200
    ids = {s.locator.tracker.active()[0][0] for s in sessions.sessions.values()}
    assert len(ids) == browser.MAX_SESSIONS  # one face per tab, each its own identity
    status, body = post(url + "frame?session=one-too-many", frame)
    assert status == 429 and b"sessions are open" in body
    assert post(url + "close?session=tab-00000000", b"")[0] == 200  # a tab closed
    assert post(url + "frame?session=one-too-many", frame)[0] == 200
    clock.now += browser.SESSION_TIMEOUT_S + 1  # every tab silent for too long
    assert post(url + "frame?session=latecomer", frame)[0] == 200
    assert list(sessions.sessions) == ["latecomer"]


def test_memory_stays_flat_over_a_long_session(served):
    import tracemalloc

    url, sessions, clock = served
    frames = [jpeg(np.roll(astronaut_frame(), 4 * i, axis=1)) for i in range(10)]

    def send(count: int) -> None:
        for i in range(count):
            clock.now += 0.1
            assert post(url + "frame?session=long-session", frames[i % 10])[0] == 200

    tracemalloc.start()  # before the first frame: buffers replaced later are traced both times
    send(30)
    before = tracemalloc.take_snapshot()
    send(150)
    growth = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert growth < 512 * 1024, f"{growth / 1024:.0f} kB more after 150 frames"
    assert len(sessions.sessions["long-session"].locator.tracker.tracks) <= 2


def _fake_camera_clip(source: Path, target: Path) -> Path:
    """A clip as Chromium's fake camera: 640×360 frames in a .y4m file."""
    from ferbench.utils.opencv import cv2

    capture, frames = cv2.VideoCapture(str(source)), []
    while len(frames) < 48:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA))
    capture.release()
    return write_y4m(frames, target)


def _wait_for_line(process, needle: str, lines: list[str]) -> str:
    while True:
        line = process.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        if needle in line:
            return line


def _frames_with_faces(log: Path) -> int:
    if not log.exists():
        return 0
    with open(log, newline="") as handle:
        return len({row["frame"] for row in csv.DictReader(handle)})


CLIPS = {
    "astronaut": None,  # the conftest clip, always there
    "crowd": "media/crowd_1080p.mp4",  # real people, from the shared data when present
}


@pytest.mark.parametrize(
    ("clip", "host"),
    [("astronaut", "127.0.0.1"), ("crowd", "127.0.0.1"), ("astronaut", "0.0.0.0")],
    ids=["astronaut", "crowd", "astronaut-token"],
)
def test_browser_camera_end_to_end_in_headless_chromium(
    clip, host, tmp_path, checkpoint, astronaut_video, shared_data_optional
):
    """Chromium's fake camera plays a 640×360 clip into the page; the page sends its frames;
    faces reach the log and the page draws them; Ctrl-C stops the server within 10 s.  Bound
    beyond localhost, the printed URL's token becomes a cookie that the page's POSTs carry."""
    binary = find_chromium()
    if binary is None:
        pytest.skip("no headless browser: apt-get install chromium")
    if CLIPS[clip] is None:
        source = astronaut_video[0]
    elif shared_data_optional is None:
        pytest.skip("../shared/data is not present")
    else:
        source = shared_data_optional / CLIPS[clip]
    camera = _fake_camera_clip(source, tmp_path / "camera.y4m")
    log = tmp_path / "faces.csv"
    command = [
        sys.executable, "-m", "ferbench.cli", "live", "--checkpoint", str(checkpoint),
        "--source", "browser", "--serve", "0", "--log", str(log), "--backend", "torch",
        "--output", str(tmp_path / "browser.mp4"), "--host", host,
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    chromium, lines = None, []
    try:
        line = _wait_for_line(server, "in the browser whose camera to use", lines)
        url = line.split("open ")[1].split()[0]
        if host == "0.0.0.0":  # a token; the camera wants a secure origin: 127.0.0.1 is one
            assert "/?token=" in url and url.startswith("http://0.0.0.0:")
            url = url.replace("0.0.0.0", "127.0.0.1")
        else:
            assert url.startswith("http://127.0.0.1:") and "token" not in url  # local only
        # the rest of the output is read on a thread, so the server never blocks on its pipe
        reader = threading.Thread(target=lambda: lines.extend(server.stdout), daemon=True)
        reader.start()
        chromium = Chromium(
            binary,
            tmp_path / "profile",
            [
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={camera}",
            ],
        )
        chromium.open(url)
        deadline = time.time() + 150
        while _frames_with_faces(log) < 20 and time.time() < deadline:
            time.sleep(0.5)
        status = chromium.evaluate("document.getElementById('status').textContent")
        fps = chromium.evaluate("document.getElementById('fps').textContent")
        assert _frames_with_faces(log) >= 20, f"page status {status!r}, {fps!r}, {''.join(lines)}"
        assert "frames/s end to end" in fps and "ms a frame on the server" in fps
        shot = chromium.screenshot(tmp_path / "page.png")
        from PIL import Image
        from test_watch import overlay_pixels

        assert overlay_pixels(np.asarray(Image.open(shot).convert("RGB"))) > 200, "no overlay"
    finally:
        if chromium is not None:
            chromium.close()
        server.send_signal(signal.SIGINT)  # Ctrl-C
        stop_started = time.time()
        server.wait(30)
        stopped_in = time.time() - stop_started
    output = "".join(lines)
    assert server.returncode == 0, output
    assert stopped_in < 10, f"stopped {stopped_in:.1f} s after Ctrl-C"
    assert "stopped" in output and "face log:" in output
    sent = int(output.split(" frames in ")[0].split()[-1])
    assert sent >= 20 and _frames_with_faces(log) <= sent
    print(f"{clip}: the browser sent {sent} frames, faces on {_frames_with_faces(log)} "
          f"(page: {fps}); stopped {stopped_in:.1f} s after Ctrl-C")  # fmt: skip
    from ferbench.utils.opencv import cv2

    video = cv2.VideoCapture(str(tmp_path / "browser.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == sent  # --output: every browser frame
