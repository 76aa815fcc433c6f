"""The live stream as a local web page, for machines with a camera or a video but no window.

Standard library only (``http.server`` in a thread).  Endpoints:
- ``/``: a page showing the stream, frames/s and every face's probabilities;
- ``/stream``: MJPEG (``multipart/x-mixed-replace``), for browsers, VLC or ffplay;
- ``/frame.jpg``: the latest annotated frame; ``/stats.json``: frames/s and faces.
With browser sessions (``--source browser``, see infer/browser.py) ``/`` is the camera page
instead, ``POST /frame?session=ID`` takes a JPEG and answers its faces as JSON, and
``POST /close?session=ID`` ends a session.
Binds to 127.0.0.1 unless told otherwise; every request passes http_guard.Guard first (this
server's own Host, same-origin POSTs, the token beyond localhost).  A JPEG is encoded only when
someone asks for a frame, and outside the lock that the live loop publishes under.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import numpy as np

from ferbench.errors import FerbenchError
from ferbench.infer.http_guard import Guard, Refused, content_length
from ferbench.utils.opencv import cv2

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>ferbench live</title>
<style>body{font-family:system-ui,sans-serif;background:#111;color:#eee;margin:1em}
img{max-width:100%;border:1px solid #444}table{border-collapse:collapse;margin-top:.5em}
td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #333}</style></head><body>
<h1>ferbench live <small id="fps"></small></h1>
<img id="frame" src="/frame.jpg" alt="annotated stream">
<table id="faces"></table>
<script>
const img = document.getElementById("frame");
function next() { img.src = "/frame.jpg?t=" + Date.now(); }
img.onload = () => setTimeout(next, 40);
img.onerror = () => setTimeout(next, 500);
async function stats() {
  try {
    const s = await (await fetch("/stats.json")).json();
    document.getElementById("fps").textContent = s.fps.toFixed(1) + " frames/s";
    const names = s.classes;
    let rows = "<tr><th>face</th><th>label</th>" + names.map(n => "<th>" + n + "</th>").join("");
    for (const f of s.faces) {
      rows += "<tr><td>" + f.id + "</td><td>" + f.label + "</td>" +
        f.probabilities.map(p => "<td>" + (100 * p).toFixed(0) + "%</td>").join("") + "</tr>";
    }
    document.getElementById("faces").innerHTML = rows;
  } catch (e) {}
  setTimeout(stats, 500);
}
stats();
</script></body></html>
"""


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (`docker stop`, a notebook's stop button) stops a server as Ctrl-C does."""

    def interrupt(*_) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class FrameServer:
    """Holds the latest annotated frame and serves it over HTTP."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        class_names=(),
        sessions=None,
        token: bool | str = True,
    ):
        """`sessions`: a BrowserSessions (infer/browser.py), whose browsers send the frames; its
        `page` is then the page, and its `frame` and `close` answer POST /frame and /close.
        `token`: beyond localhost, True requires a random token (`link` carries it), False
        none (--no-token), a string that one."""
        self.class_names = list(class_names)
        self.sessions = sessions
        self._lock = threading.Condition()
        self._encoding = threading.Lock()  # one encoder per frame, apart from publish's lock
        self._frame: np.ndarray | None = None
        self._sequence = 0
        self._jpeg: tuple[int, bytes] = (-1, b"")
        self._stats: dict = {"fps": 0.0, "faces": [], "classes": self.class_names}
        self._closed = threading.Event()
        self._streams: set[threading.Thread] = set()
        try:
            self._http = ThreadingHTTPServer((host, port), _handler(self))
        except OSError as exc:
            raise FerbenchError(
                f"--serve: cannot listen on {host}:{port} ({exc.strerror})"
            ) from None
        self._http.daemon_threads = True
        self.guard = Guard(host, self._http.server_address[1], token)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def link(self) -> str:
        """The URL to open: with `?token=...` when the server wants one."""
        return self.url + self.guard.query

    def start(self) -> "FrameServer":
        self._thread.start()
        return self

    def publish(self, frame: np.ndarray, faces: list[dict], fps: float) -> None:
        """Called by the live loop for every annotated frame (no copy of the caller's array is
        kept beyond the next call)."""
        with self._lock:
            self._frame = frame.copy()
            self._sequence += 1
            self._stats = {"fps": fps, "faces": faces, "classes": self.class_names}
            self._lock.notify_all()

    def jpeg(self, after: int = -1, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The latest frame as JPEG (encoded once per frame), waiting for one newer than
        `after`; None when none arrives in time."""
        with self._lock:
            ready = self._lock.wait_for(
                lambda: (
                    self._closed.is_set() or (self._frame is not None and self._sequence > after)
                ),
                timeout,
            )
            if not ready or self._closed.is_set():
                return None
            sequence, frame = self._sequence, self._frame  # publish replaces, never writes in
            if self._jpeg[0] == sequence:
                return self._jpeg
        with self._encoding:  # not under self._lock: publish never waits for an encoder
            if self._jpeg[0] >= sequence:  # another viewer encoded it (or a newer one) meanwhile
                return self._jpeg
            ok, buffer = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
            self._jpeg = (sequence, buffer.tobytes() if ok else b"")
            return self._jpeg

    def stats(self) -> dict:
        with self._lock:
            return dict(self._stats)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening and end every /stream (their viewers see the stream end)."""
        with self._lock:
            self._closed.set()
            self._lock.notify_all()
        if self._thread.is_alive():  # shutdown() would wait for good on a server never started
            self._http.shutdown()
        self._http.server_close()
        deadline = time.monotonic() + timeout
        for thread in list(self._streams):
            thread.join(max(0.0, deadline - time.monotonic()))


def _handler(server: FrameServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        _extra: list[tuple[str, str]] = []  # headers the guard adds (the token's cookie)

        def log_message(self, *args) -> None:  # keep the terminal for ferbench's own lines
            pass

        def _allowed(self) -> bool:
            """The guard's checks; False when the request was answered with its refusal."""
            try:
                self._extra = server.guard.check(self.command, self.path, self.headers)
                return True
            except Refused as refused:
                if self.command == "POST":
                    with contextlib.suppress(Refused):
                        self._drain(content_length(self.headers))
                self._send(f"{refused}\n".encode(), "text/plain; charset=utf-8", refused.status)
                return False

        def _send(self, body: bytes, content_type: str, status: int = 200) -> None:
            self.send_response(status)
            for header in self._extra:
                self.send_header(*header)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page went away before its answer

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if not self._allowed():
                return
            path = self.path.split("?", 1)[0]
            if path == "/":
                page = PAGE if server.sessions is None else server.sessions.page
                self._send(page.encode(), "text/html; charset=utf-8")
            elif path == "/stats.json":
                self._send(json.dumps(server.stats()).encode(), "application/json")
            elif path == "/frame.jpg":
                frame = server.jpeg()
                if frame is None:
                    self.send_error(503, "no frame yet")
                else:
                    self._send(frame[1], "image/jpeg")
            elif path == "/stream":
                self._stream()
            else:
                self.send_error(404)

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            if not self._allowed():
                return
            path, _, query = self.path.partition("?")
            session = parse_qs(query).get("session", [""])[0]
            if server.sessions is None or path not in ("/frame", "/close"):
                self.send_error(404)
                return
            try:
                body = self._body()
                if path == "/close":
                    server.sessions.close(session)
                    self._send(b"{}", "application/json")
                    return
                if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "image/jpeg":
                    raise Refused(415, "send the frame as Content-Type: image/jpeg")
                reply = server.sessions.frame(session, body)
            except Refused as refused:
                self._send(f"{refused}\n".encode(), "text/plain; charset=utf-8", refused.status)
                return
            self._send(json.dumps(reply).encode(), "application/json")

        def _body(self) -> bytes:
            """The request body, refused before it is read when missing or too large."""
            try:
                size, limit = content_length(self.headers), server.sessions.max_bytes
            except Refused:
                self.close_connection = True
                raise
            if size > limit:
                self._drain(size)
                raise Refused(413, f"frames may be at most {limit >> 20} MB")
            return self.rfile.read(size)

        def _drain(self, size: int) -> None:
            """Read a refused body (up to 16 MB) so the client sees the answer rather than a
            reset; the connection then closes: an unread body must not be parsed as a request."""
            left = size if size <= 16 << 20 else 0
            while left > 0 and (chunk := self.rfile.read(min(1 << 16, left))):
                left -= len(chunk)
            self.close_connection = True

        def _stream(self) -> None:
            """MJPEG until the viewer goes or the server closes."""
            server._streams.add(threading.current_thread())
            self.send_response(200)
            for header in self._extra:
                self.send_header(*header)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            sequence = -1
            try:
                while not server.closed:
                    frame = server.jpeg(after=sequence, timeout=1.0)
                    if frame is None:
                        continue
                    sequence, body = frame
                    self.wfile.write(
                        b"--frame\r\nContent-Type: image/jpeg\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                        + b"\r\n"
                    )
            except (BrokenPipeError, ConnectionResetError):
                pass  # the viewer went away
            finally:
                self.close_connection = True
                server._streams.discard(threading.current_thread())

    return Handler
