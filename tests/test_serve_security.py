"""The two web servers (`--serve`, `--source browser`) against other web pages and bad requests.

Real servers on this machine, real HTTP: a foreign Host (DNS rebinding), a cross-origin POST, the
token beyond localhost, a 15000×15000 JPEG of 1.3 MB with the server's memory measured, malformed
headers, /stream on close, publish beside an encoder, and a capture freed only after its read."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from test_browser import astronaut_frame, jpeg

from ferbench.infer import browser
from ferbench.infer.http_guard import Refused, jpeg_size
from ferbench.infer.serve import FrameServer
from ferbench.utils.opencv import cv2

SESSION = "tab-00000001"


def request(
    port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None
) -> tuple[int, dict, bytes]:
    """One request with exactly these headers (Host included: http.client adds none)."""
    headers = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers.items():
        if value is not None:
            connection.putheader(name, value)
    if body is not None:
        connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    answer = connection.getresponse()
    result = answer.status, dict(answer.getheaders()), answer.read()
    connection.close()
    return result


def post_frame(port: int, body: bytes, headers: dict | None = None, path: str = "/frame"):
    headers = {"Content-Type": "image/jpeg", **(headers or {})}
    return request(port, "POST", f"{path}?session={SESSION}", headers, body)


def port_of(server: FrameServer) -> int:
    return server._http.server_address[1]


@pytest.fixture
def stream_server():
    """`--serve` alone, on 127.0.0.1, with a frame published."""
    server = FrameServer("127.0.0.1", 0, ["happy", "sad"]).start()
    server.publish(astronaut_frame(), [], 10.0)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def browser_server(checkpoint, tmp_path):
    """Make `--source browser` servers (real cnn5 checkpoint, Haar detector) on a host."""
    from ferbench.faces.detect import make_detector
    from ferbench.infer.live import Annotator, FaceLocator
    from ferbench.infer.predictor import Predictor

    predictor, detector, made = Predictor(checkpoint), make_detector("haar"), []

    def make(host: str = "127.0.0.1", token: bool = True):
        annotate = Annotator(predictor, log=tmp_path / f"faces-{len(made)}.csv")
        sessions = browser.BrowserSessions(annotate, lambda ids: FaceLocator(detector, ids=ids))
        options = {} if token else {"token": False}  # today's main, too, runs these tests
        server = FrameServer(host, 0, predictor.class_names, sessions, **options).start()
        annotate.server = server
        made.append((server, sessions))
        return server, sessions

    yield make
    for server, sessions in made:
        server.close()
        sessions.finish()


def test_a_foreign_host_is_refused_on_both_servers(stream_server, browser_server):
    """DNS rebinding: a page of evil.example rebinds its name to 127.0.0.1; the browser then
    sends `Host: evil.example:PORT`, and neither the camera nor the page may answer."""
    port = port_of(stream_server)
    foreign = {"Host": f"evil.example:{port}"}
    for path in ("/", "/frame.jpg", "/stream", "/stats.json"):
        status, _, body = request(port, "GET", path, foreign)
        assert status == 403 and b"is not this server's address" in body, (path, status)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        status, headers, body = request(port, "GET", "/frame.jpg", {"Host": host})
        assert status == 200 and body[:2] == b"\xff\xd8", host
    assert request(port, "GET", "/", {"Host": None})[0] == 400  # no Host: not a browser

    server, sessions = browser_server()
    port = port_of(server)
    status, _, body = post_frame(port, jpeg(astronaut_frame()), {"Host": f"evil.example:{port}"})
    assert status == 403 and not sessions.sessions  # refused before any session
    assert request(port, "GET", "/", {"Host": f"evil.example:{port}"})[0] == 403
    assert post_frame(port, jpeg(astronaut_frame()), {"Host": f"localhost:{port}"})[0] == 200


def test_a_cross_origin_post_is_refused(browser_server):
    server, sessions = browser_server()
    port, frame = port_of(server), jpeg(astronaut_frame())
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null"):
        status, _, body = post_frame(port, frame, {"Origin": origin})
        assert status == 403 and b"is refused" in body, origin
    assert not sessions.sessions and sessions.annotate.stats.frames == 0  # nothing processed
    assert post_frame(port, frame, {"Origin": f"http://127.0.0.1:{port}"})[0] == 200  # the page
    assert post_frame(port, b"", {"Origin": "http://evil.example"}, "/close")[0] == 403
    assert SESSION in sessions.sessions  # a foreign page cannot close a tab either
    assert post_frame(port, b"", {}, "/close")[0] == 200  # curl and friends send no Origin


def test_beyond_localhost_a_token_is_required(stream_server, browser_server):
    server = FrameServer("0.0.0.0", 0, ["happy", "sad"]).start()
    try:
        server.publish(astronaut_frame(), [], 10.0)
        port = port_of(server)
        for path in ("/", "/frame.jpg", "/stream", "/stats.json", "/?token=wrong"):
            status, _, body = request(port, "GET", path)
            assert status == 403 and b"token is required" in body, path
        token = server.guard.token
        assert token and len(token) >= 32 and server.link.endswith(f"/?token={token}")
        assert stream_server.link == stream_server.url  # localhost: no token
        status, headers, _ = request(port, "GET", f"/?token={token}")
        assert status == 200
        cookie = headers["Set-Cookie"].split(";")[0]
        assert cookie == f"ferbench-token-{port}={token}" and "HttpOnly" in headers["Set-Cookie"]
        assert request(port, "GET", "/frame.jpg", {"Cookie": f"a=b; {cookie}"})[0] == 200
        assert request(port, "GET", "/stats.json", {"Authorization": f"token {token}"})[0] == 200
        rebound = {"Host": f"evil.example:{port}", "Cookie": cookie}
        assert request(port, "GET", "/frame.jpg", rebound)[0] == 403  # the token is not enough
        assert request(port, "GET", "/stats.json", {"Host": f"{socket.gethostname()}:{port}",
                                                     "Cookie": cookie})[0] == 200  # fmt: skip
    finally:
        server.close()
    open_server = FrameServer("0.0.0.0", 0, ["happy"], token=False).start()  # --no-token
    try:
        assert open_server.guard.token is None
        assert request(port_of(open_server), "GET", "/stats.json")[0] == 200
    finally:
        open_server.close()

    server, sessions = browser_server("0.0.0.0")
    port, frame = port_of(server), jpeg(astronaut_frame())
    assert post_frame(port, frame)[0] == 403 and not sessions.sessions
    cookie = f"ferbench-token-{port}={server.guard.token}"
    assert post_frame(port, frame, {"Cookie": cookie})[0] == 200


def test_jpeg_size_is_read_from_the_header():
    frame = np.zeros((37, 91, 3), np.uint8)
    for params in ([], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_OPTIMIZE, 1]):
        assert jpeg_size(cv2.imencode(".jpg", frame, params)[1].tobytes()) == (91, 37)
    assert jpeg_size(cv2.imencode(".jpg", frame[:, :, 0])[1].tobytes()) == (91, 37)
    encoded = cv2.imencode(".jpg", frame)[1].tobytes()
    for broken in (encoded[:20], b"\xff\xd8\xff" + b"x" * 500):
        with pytest.raises(Refused, match="no readable frame header"):
            jpeg_size(broken)
    png = cv2.imencode(".png", frame)[1].tobytes()
    with pytest.raises(Refused, match="must be a JPEG"):  # a PNG is never decoded either
        jpeg_size(png)


def _memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def _start_cli(args: list[str]) -> tuple[subprocess.Popen, list[str], str]:
    """`ferbench live ...` serving; answers the process, its output so far and the URL line."""
    command = [sys.executable, "-m", "ferbench.cli", "live", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    while True:
        line = process.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        if "in the browser whose camera to use" in line:
            threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
            return process, lines, line


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(30)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_a_jpeg_bomb_is_refused_undecoded_with_the_servers_memory_measured(checkpoint):
    """A uniform 15000×15000 JPEG is 1.3 MB (under the 2 MB limit) and 675 MB decoded; the
    server (`ferbench live --source browser --host 0.0.0.0`, its own process) refuses it with
    its peak memory (VmHWM, reset just before) under 50 MB above its memory before."""
    bomb = cv2.imencode(
        ".jpg", np.full((15000, 15000, 3), 128, np.uint8), [cv2.IMWRITE_JPEG_OPTIMIZE, 1]
    )[1].tobytes()
    assert len(bomb) < browser.MAX_BYTES and jpeg_size(bomb) == (15000, 15000)
    process, lines, announced = _start_cli(
        ["--checkpoint", str(checkpoint), "--source", "browser", "--serve", "0",
         "--host", "0.0.0.0", "--backend", "torch", "--detector", "haar"]
    )  # fmt: skip
    try:
        link = urlsplit(announced.split("open ")[1].split()[0])
        token = parse_qs(link.query).get("token", [""])[0]
        path = f"/frame?session={SESSION}&token={token}"
        warm = request(
            link.port, "POST", path, {"Content-Type": "image/jpeg"}, jpeg(astronaut_frame())
        )
        assert warm[0] == 200, warm  # the model and detector have run once
        time.sleep(0.5)
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _memory_kb(process.pid)
        status, _, body = request(link.port, "POST", path, {"Content-Type": "image/jpeg"}, bomb)
        after = _memory_kb(process.pid)
        growth_mb = (after["VmHWM"] - before["VmRSS"]) / 1024
        print(f"server RSS {before['VmRSS'] / 1024:.0f} MB; peak during the bomb "
              f"{after['VmHWM'] / 1024:.0f} MB: +{growth_mb:.1f} MB")  # fmt: skip
        assert status == 413 and b"1920 pixels" in body, body
        assert growth_mb < 50, f"the server grew by {growth_mb:.0f} MB for one 1.3 MB JPEG"
        assert token and link.hostname == "0.0.0.0"  # beyond localhost, the token is printed
        assert f"http://localhost:{link.port}/?token={token}" in announced  # the tunnel's URL too
        assert request(link.port, "GET", "/")[0] == 403  # and without it, no page
    finally:
        _stop(process)


def test_no_token_beyond_localhost_warns(checkpoint):
    process, lines, announced = _start_cli(
        ["--checkpoint", str(checkpoint), "--source", "browser", "--serve", "0",
         "--host", "0.0.0.0", "--no-token", "--backend", "torch", "--detector", "haar"]
    )  # fmt: skip
    try:
        output = "".join(lines)
        assert "warning: --no-token with --host 0.0.0.0: anyone who reaches" in output
        link = announced.split("open ")[1].split()[0]
        assert "token" not in link
        assert request(urlsplit(link).port, "GET", "/")[0] == 200
    finally:
        _stop(process)


def test_a_malformed_content_length_gets_400(browser_server):
    """'²' (0xB2 in a latin-1 header) passes str.isdigit() and raised in int()."""
    server, sessions = browser_server()
    for length in (b"\xb2", b"-5", b"12abc", b"1" * 40):
        with socket.create_connection(("127.0.0.1", port_of(server)), timeout=30) as raw:
            raw.sendall(
                f"POST /frame?session={SESSION} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
                + b"Content-Type: image/jpeg\r\nContent-Length: "
                + length
                + b"\r\n\r\n"
            )
            answer = raw.makefile("rb").readline()
        assert answer.split()[1:2] == [b"400"], (length, answer)
    assert post_frame(port_of(server), jpeg(astronaut_frame()))[0] == 200  # still serving


def test_stream_viewers_end_when_the_server_closes():
    server = FrameServer("127.0.0.1", 0, ["happy"]).start()
    server.publish(astronaut_frame(), [], 10.0)
    raw = socket.create_connection(("127.0.0.1", port_of(server)), timeout=10)
    raw.sendall(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
    received = b""
    while b"--frame" not in received:
        received += raw.recv(1 << 16)
    started = time.monotonic()
    server.close()
    while raw.recv(1 << 16):  # the viewer sees the stream end, not a silent socket
        assert time.monotonic() - started < 5
    assert time.monotonic() - started < 3
    raw.close()


def test_publish_never_waits_for_a_jpeg_encoder():
    """A viewer's JPEG of a large frame is encoded outside the lock the live loop publishes
    under: the next frame goes out at once instead of after the encoding."""
    server = FrameServer("127.0.0.1", 0, ["happy"]).start()
    try:
        large = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), np.uint8)
        started = time.perf_counter()
        cv2.imencode(".jpg", large, [cv2.IMWRITE_JPEG_QUALITY, 80])
        encode_s = time.perf_counter() - started
        server.publish(large, [], 1.0)
        viewer = threading.Thread(target=server.jpeg)
        viewer.start()
        time.sleep(encode_s / 4)  # the viewer is encoding now
        started = time.perf_counter()
        server.publish(np.zeros((8, 8, 3), np.uint8), [], 1.0)
        publish_s = time.perf_counter() - started
        viewer.join()
        assert publish_s < encode_s / 4, f"publish waited {publish_s:.3f} s ({encode_s:.3f})"
        sequence, body = server.jpeg()
        assert sequence == 2 and cv2.imdecode(np.frombuffer(body, np.uint8), 1).shape == (8, 8, 3)
    finally:
        server.close()


def test_the_capture_is_released_only_after_its_last_read():
    """A camera whose read() hangs past close()'s wait: the capture is released by the reader
    once read() returns, never while it is inside it (OpenCV would crash or hang)."""
    from ferbench.infer.ahead import RunAhead

    class HangingCamera:  # a stand-in: a real camera cannot be made to hang on cue
        def __init__(self) -> None:
            self.reading, self.go_on, self.inside = threading.Event(), threading.Event(), False
            self.released = threading.Event()
            self.released_inside_read = False

        def read(self):
            self.inside = True
            self.reading.set()
            self.go_on.wait(10)
            self.inside = False
            return True, np.zeros((4, 4, 3), np.uint8)

        def release(self) -> None:
            self.released_inside_read |= self.inside
            self.released.set()

    camera = HangingCamera()

    def frames():
        while True:
            yield camera.read()[1]

    located = RunAhead(frames(), depth=1, release=camera.release)
    assert camera.reading.wait(5)
    assert located.close(timeout=0.2) is False  # still inside read()
    assert not camera.released.is_set()
    camera.go_on.set()
    assert camera.released.wait(5) and not camera.released_inside_read
