"""`ferbench live --source browser`: the camera of the browser that opens the page.

For ferbench on a remote machine, in a container or a hosted notebook, where the camera is on
the user's laptop.  The page (`PAGE`, served by `FrameServer`) asks for the camera with
getUserMedia, sends downscaled JPEG frames to `POST /frame?session=ID` with one request in
flight at a time (a slow server never builds a queue), and draws the faces it gets back over
the video.  Each browser tab is a session with its own face locator and smoother; every
session shares the classifier and the outputs (`--log`, `--output`, `--summary`).

Bounded: a body that is not a JPEG of sane size (its dimensions are read from its header: a
1.3 MB JPEG can hold 15000×15000 pixels, refused undecoded), a request of a session that is
still busy or comes faster than MAX_RATE, and sessions beyond MAX_SESSIONS get a 4xx; a tab
silent for SESSION_TIMEOUT_S is forgotten.  Nothing grows with the length of a session.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ferbench.faces.defaults import COAST, DETECT_EVERY, FER_MARGIN
from ferbench.infer.http_guard import Refused, jpeg_size
from ferbench.infer.live import Annotator, FaceLocator, LiveStats
from ferbench.infer.overlay import PALETTE
from ferbench.infer.serve import FrameServer, sigterm_as_ctrl_c
from ferbench.infer.tracking import ProbabilitySmoother
from ferbench.utils.opencv import cv2

MAX_BYTES = 2 << 20  # a 1280×720 JPEG at the page's quality is about 150 kB
MAX_SIDE = 1920
MAX_RATE = 60.0  # frames/s per session; the page sends at most SEND_RATE
SEND_RATE = 15.0  # the page's cap, and the frame rate of an --output video of the browser
MAX_SESSIONS = 16
SESSION_TIMEOUT_S = 30.0
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


@dataclass
class Session:
    locator: FaceLocator
    smoother: ProbabilitySmoother
    started: float
    last_seen: float = 0.0
    frames: int = 0
    busy: threading.Lock = field(default_factory=threading.Lock)


class BrowserSessions:
    """Turns each browser frame into its faces: one session per tab, one classifier for all.
    `make_locator(ids)` makes a tab's FaceLocator; `ids`, shared by all tabs, keeps every face's
    identity unique across them (the log and the smoothing go by it)."""

    max_bytes = MAX_BYTES

    def __init__(
        self,
        annotate: Annotator,
        make_locator: Callable[[Iterator[int]], FaceLocator],
        smooth: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.annotate, self.make_locator, self.smooth = annotate, make_locator, smooth
        self.clock = clock
        self._ids = itertools.count()
        self.sessions: dict[str, Session] = {}
        self._sessions_lock = threading.Lock()
        self._pipeline_lock = threading.Lock()  # one classifier, one log, one video
        self._first: float | None = None
        self.closed = False
        self.page = browser_page(annotate.predictor.class_names)

    def frame(self, session_id: str, body: bytes) -> dict:
        """The faces of one JPEG frame of `session_id`; raises Refused for a bad request."""
        if not SESSION_ID.fullmatch(session_id or ""):
            raise Refused(400, "a session id of 8-64 letters, digits, - or _ is required")
        if max(jpeg_size(body)) > MAX_SIDE:  # refused undecoded: 1.3 MB can hold 15000×15000
            raise Refused(413, f"frames may be at most {MAX_SIDE} pixels on a side")
        session = self._session(session_id)
        if not session.busy.acquire(blocking=False):
            raise Refused(429, "this session's previous frame is still being processed")
        try:
            frame = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
            if frame is None:
                raise Refused(400, "the JPEG could not be decoded")
            if max(frame.shape[:2]) > MAX_SIDE:
                raise Refused(413, f"frames may be at most {MAX_SIDE} pixels on a side")
            return self._process(session, frame)
        finally:
            session.last_seen = self.clock()
            session.busy.release()

    def finish(self) -> None:
        """After the server stops: wait for a frame in progress, then close the outputs."""
        with self._pipeline_lock:
            self.closed = True
            self.annotate.close()

    def close(self, session_id: str) -> bool:
        """Forget a session at once (the page says so when its tab closes)."""
        with self._sessions_lock:
            return self.sessions.pop(session_id, None) is not None

    def _session(self, session_id: str) -> Session:
        now = self.clock()
        with self._sessions_lock:
            for key, old in list(self.sessions.items()):
                if now - old.last_seen > SESSION_TIMEOUT_S and not old.busy.locked():
                    del self.sessions[key]
            session = self.sessions.get(session_id)
            if session is None:
                if len(self.sessions) >= MAX_SESSIONS:
                    raise Refused(429, f"{MAX_SESSIONS} sessions are open; close a tab")
                session = Session(
                    self.make_locator(self._ids),
                    ProbabilitySmoother(self.smooth),
                    now,
                    last_seen=now,
                )
                self.sessions[session_id] = session
            elif session.frames and now - session.last_seen < 1 / MAX_RATE:
                raise Refused(429, f"more than {MAX_RATE:.0f} frames/s")
            return session

    def _process(self, session: Session, frame: np.ndarray) -> dict:
        with self._pipeline_lock:
            if self.closed:
                raise Refused(503, "ferbench is stopping")
            t0 = time.perf_counter()
            now = self.clock()
            if self._first is None:
                self._first = now
            ids, boxes = session.locator(frame)
            faces = self.annotate(frame, ids, boxes, session.smoother, now - session.started)
            self.annotate.stats.seconds = now - self._first
            session.frames += 1
            return {
                "frame": session.frames - 1,
                "width": frame.shape[1],
                "height": frame.shape[0],
                "faces": faces,
                "server_ms": round(1000 * (time.perf_counter() - t0), 1),
            }


def serve_browser(
    predictor,
    detector,
    host: str = "127.0.0.1",
    port: int = 8000,
    output=None,
    log=None,
    detect_every: int = DETECT_EVERY,
    coast: int = COAST,
    verify: bool = True,
    smooth: float = 0.0,
    margin: float = FER_MARGIN,
    align: bool = True,
    max_frames: int | None = None,
    announce: Callable[[str], None] = print,
    token: bool = True,
) -> LiveStats:
    """Serve the camera page until Ctrl-C (or `max_frames` frames from all browsers), running
    the live pipeline on each frame the browsers send; `announce` gets the page's URL (with its
    token beyond localhost; `token=False`: none, --no-token)."""
    stats = LiveStats()
    annotate = Annotator(predictor, margin, output, log, SEND_RATE, None, stats, align)
    sessions = BrowserSessions(
        annotate,
        lambda ids: FaceLocator(detector, detect_every, coast, verify, stats, ids),
        smooth,
    )
    server = FrameServer(host, port, predictor.class_names, sessions, token)
    annotate.server = server  # /stream and /frame.jpg show the latest browser frame too
    server.start()
    announce(server.link)
    try:
        with sigterm_as_ctrl_c():
            while max_frames is None or stats.frames < max_frames:
                time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        sessions.finish()
    return stats


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>ferbench live: your camera</title>
<style>body{font-family:system-ui,sans-serif;background:#111;color:#eee;margin:1em}
#view{position:relative;display:inline-block}video{display:block;max-width:100%;background:#000}
canvas#overlay{position:absolute;left:0;top:0;pointer-events:none}
table{border-collapse:collapse;margin-top:.5em}
td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #333}#status{color:#fb4}</style>
</head><body>
<h1>ferbench live <small id="fps"></small></h1>
<p id="status">asking for the camera&hellip;</p>
<div id="view"><video id="video" autoplay muted playsinline></video>
<canvas id="overlay"></canvas></div>
<table id="faces"></table>
<script>
const CLASSES = __CLASSES__, COLOURS = __COLOURS__, SEND_WIDTH = 640;
const MIN_GAP_MS = 1000 / __SEND_RATE__;
const session = Array.from(crypto.getRandomValues(new Uint8Array(12)),
  b => b.toString(16).padStart(2, "0")).join("");
const video = document.getElementById("video"), overlay = document.getElementById("overlay");
const grab = document.createElement("canvas"), status = document.getElementById("status");
const sleep = ms => new Promise(r => setTimeout(r, ms));
let done = [], serverMs = 0;

function draw(reply) {
  overlay.width = video.clientWidth; overlay.height = video.clientHeight;
  const ctx = overlay.getContext("2d"), s = overlay.width / reply.width;
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  ctx.font = "bold 14px system-ui,sans-serif"; ctx.lineWidth = 3;
  for (const f of reply.faces) {
    const [x, y, w, h] = f.box.map(v => v * s);
    const top = f.probabilities.indexOf(Math.max(...f.probabilities));
    ctx.strokeStyle = ctx.fillStyle = COLOURS[top % COLOURS.length];
    ctx.strokeRect(x, y, w, h);
    const label = f.label + " " + Math.round(100 * f.probabilities[top]) + "%";
    const ty = y > 24 ? y - 22 : y + h + 2, tw = ctx.measureText(label).width + 8;
    ctx.fillRect(x, ty, tw, 20);
    f.probabilities.forEach((p, i) => {  // one bar per class beside the face
      ctx.fillStyle = COLOURS[i % COLOURS.length];
      ctx.fillRect(x + w + 4, y + i * 12, Math.max(1, 60 * p), 9);
    });
    ctx.fillStyle = "#fff"; ctx.fillText(label, x + 4, ty + 15);
  }
}

function table(reply) {
  let rows = "<tr><th>face</th><th>label</th>" + CLASSES.map(n => "<th>" + n + "</th>").join("");
  for (const f of reply.faces) {
    rows += "<tr><td>" + f.id + "</td><td>" + f.label + "</td>" +
      f.probabilities.map(p => "<td>" + (100 * p).toFixed(0) + "%</td>").join("") + "</tr>";
  }
  document.getElementById("faces").innerHTML = rows;
}

async function send() {
  const w = Math.min(SEND_WIDTH, video.videoWidth);
  grab.width = w; grab.height = Math.round(video.videoHeight * w / video.videoWidth);
  grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
  const jpeg = await new Promise(r => grab.toBlob(r, "image/jpeg", 0.8));
  const answer = await fetch("/frame?session=" + session,
    {method: "POST", headers: {"Content-Type": "image/jpeg"}, body: jpeg});
  if (!answer.ok) throw new Error(answer.status + " " + (await answer.text()).trim());
  return answer.json();
}

async function loop() {
  while (true) {
    const t0 = performance.now();
    if (video.readyState < 2 || !video.videoWidth) { await sleep(50); continue; }
    try {
      const reply = await send();  // one frame in flight: the next waits for this answer
      draw(reply); table(reply); status.textContent = "";
      done.push(performance.now()); done = done.filter(t => t > performance.now() - 2000);
      serverMs = 0.8 * serverMs + 0.2 * reply.server_ms;
      const span = (done[done.length - 1] - done[0]) / 1000;
      const fps = done.length > 1 ? (done.length - 1) / span : 0;
      document.getElementById("fps").textContent = fps.toFixed(1) + " frames/s end to end, " +
        serverMs.toFixed(0) + " ms a frame on the server";
    } catch (e) {
      status.textContent = "ferbench: " + e.message; await sleep(500);
    }
    const gap = MIN_GAP_MS - (performance.now() - t0);
    if (gap > 0) await sleep(gap);
  }
}

async function start() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    status.textContent = "The camera needs a secure origin: open this page as " +
      "http://localhost:" + location.port + "/ (from another machine: " +
      "ssh -L " + location.port + ":127.0.0.1:" + location.port + " HOST).";
    return;
  }
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia(
      {video: {width: {ideal: 640}, height: {ideal: 360}}, audio: false});
    await video.play();
  } catch (e) { status.textContent = "no camera: " + e.message; return; }
  status.textContent = "";
  loop();
}
addEventListener("pagehide", () => navigator.sendBeacon("/close?session=" + session));
start();
</script></body></html>
"""


def browser_page(class_names: list[str]) -> str:
    """The camera page, with the classes and the overlay's colours (RGB of overlay.PALETTE)."""
    colours = [f"rgb({r},{g},{b})" for b, g, r in PALETTE]
    return (
        PAGE.replace("__CLASSES__", json.dumps(list(class_names)))
        .replace("__COLOURS__", json.dumps(colours))
        .replace("__SEND_RATE__", str(SEND_RATE))
    )
