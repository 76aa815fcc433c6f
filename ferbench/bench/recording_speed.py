"""Recordings: `predict` on a video beside the live loop (`live --no-window --log`) on the same
file, back to back: frames/s, CPU use (cores busy) and peak memory.  Each runs in its own
process, so that its peak resident memory is its own.

    python -m ferbench.bench.recording_speed VIDEO [CHECKPOINT]   # prints both rows as JSON
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ferbench.errors import FerbenchError


def _measure(mode: str, video: str, checkpoint: str, backend: str, out: str) -> dict:
    """In the child: one run of `mode` (live or predict), timed from its first frame."""
    from ferbench.infer.backend import predictor_for

    predictor, _ = predictor_for(Path(checkpoint), backend)
    wall, cpu = time.perf_counter(), time.process_time()
    if mode == "live":
        from ferbench.faces.detect import make_detector
        from ferbench.infer.live import run_live

        stats = run_live(
            predictor, video, make_detector("mtcnn"), show=False, log=Path(out) / "live.csv"
        )
        frames, faces = stats.frames, stats.faces
    else:
        from ferbench.infer.recordings import Settings, analyse_video

        result = analyse_video(
            Path(video), Path(out) / "predict.csv", Settings(checkpoint, backend=backend)
        )
        frames, faces = result["frames"], result["faces"]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "loop": "live --no-window --log" if mode == "live" else "predict VIDEO --out",
        "frames": frames,
        "faces": faces,
        "fps": round(frames / wall, 2),
        "cpu_cores": round(cpu / wall, 2),  # includes loading nothing: models are loaded before
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def bench_recording(video: Path, checkpoint: str, backend: str = "auto") -> list[dict]:
    """Live's loop, then the recording path, on `video`, each in a fresh process; the two face
    tables are compared (the same faces are found)."""
    from ferbench.infer.backend import concrete_backend, predictor_for

    predictor, _ = predictor_for(Path(checkpoint), backend)  # measured once, here
    backend = concrete_backend(Path(checkpoint), predictor, backend)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ferbench-rec-") as tmp:
        for mode in ("live", "predict"):
            args = [sys.executable, "-m", "ferbench.bench.recording_speed", "--child", mode]
            args += [str(video), checkpoint, backend, tmp]
            done = subprocess.run(args, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise FerbenchError(f"the {mode} measurement failed: {tail}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        same = (Path(tmp) / "live.csv").read_bytes() == (Path(tmp) / "predict.csv").read_bytes()
    rows[1]["vs_live"] = round(rows[1]["fps"] / max(rows[0]["fps"], 1e-9), 2)
    rows[1]["same_table_as_live"] = same
    return rows


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        print(json.dumps(_measure(*sys.argv[2:7])))
    else:
        from ferbench.infer.predictor import resolve_source

        ckpt = sys.argv[2] if len(sys.argv) > 2 else str(resolve_source(None, None, "results"))
        print(json.dumps(bench_recording(Path(sys.argv[1]), ckpt), indent=1))
