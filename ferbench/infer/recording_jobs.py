"""Folders of recordings → face tables: which videos, which are done, and where they run (this
process, `jobs` processes, or a Ray cluster), with one progress bar over all of them.

`OUT/manifest.json` records each finished table with its video's size and modification time
and the settings' hash: a video recorded there, with its table present, is skipped on the next
call; `fresh` redoes all.  Only this driver writes the manifest; workers write their own table
(a temporary name renamed into place) and its chunks, so a video retried on another worker
continues from its last complete chunk.  The output folder must be reachable from every Ray
node (the local disk for a one-machine cluster, NFS or similar otherwise).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ferbench.errors import FerbenchError
from ferbench.infer.recordings import (
    VIDEO_SUFFIXES,
    Settings,
    analyse_video,
    part_dir,
    video_identity,
)

MANIFEST = "manifest.json"
MAX_RETRIES = 2


@dataclass
class Job:
    video: Path
    rel: Path  # the video's path below the folder it was found in
    table: Path
    frames: int = 0  # expected analysed frames (from the container; for progress only)
    status: str = "pending"  # pending, skipped, done, failed
    result: dict | None = None
    error: str | None = None


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def has_videos(path: Path) -> bool:
    return path.is_dir() and any(is_video(p) for p in path.rglob("*") if p.is_file())


def find_videos(paths: list[Path], out: Path, fmt: str) -> list[Job]:
    """Each video (a file given, or found below a folder given), with its table's path in `out`
    mirroring its path below that folder."""
    jobs: list[Job] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_video(p))
            jobs += [Job(p, p.relative_to(path), Path()) for p in found]
        elif path.is_file():
            jobs.append(Job(path, Path(path.name), Path()))
        else:
            raise FerbenchError(f"no such video or folder: {path}")
    seen: dict[Path, Path] = {}
    for job in jobs:
        job.table = out / job.rel.with_suffix(f".{fmt}")
        if job.table in seen:
            raise FerbenchError(
                f"{job.video} and {seen[job.table]} would both write {job.table}; give them "
                "different names or analyse them in separate calls"
            )
        seen[job.table] = job.video
    return jobs


def read_manifest(out: Path) -> dict:
    try:
        return json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise FerbenchError(f"{out / MANIFEST} is not valid JSON; remove it or use --fresh")


def write_manifest(out: Path, manifest: dict) -> None:
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    tmp.replace(out / MANIFEST)


def expected_frames(video: Path, settings: Settings) -> int:
    from ferbench.utils.opencv import cv2

    capture = cv2.VideoCapture(str(video))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    finally:
        capture.release()
    return -(-max(count, 0) // settings.step(fps))


def run_videos(
    paths: list[Path],
    out: Path,
    settings: Settings,
    jobs: int = 1,
    ray_address: str | None = None,
    fresh: bool = False,
    console=None,
) -> list[Job]:
    """Analyse every video not already done; returns the jobs with their status and figures.
    A video that fails is reported and the others go on."""
    from rich.console import Console

    console = console or Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    todo = find_videos(paths, out, settings.format)
    manifest = {} if fresh else read_manifest(out)
    key = settings.key()
    for job in todo:
        entry = manifest.get(job.rel.as_posix())
        if fresh:
            shutil.rmtree(part_dir(job.table), ignore_errors=True)
        elif entry and entry.get("settings") == key and job.table.exists():
            if {k: entry.get(k) for k in ("size", "mtime_ns")} == video_identity(job.video):
                job.status, job.result = "skipped", entry
    pending = [j for j in todo if j.status == "pending"]
    for job in pending:
        job.frames = expected_frames(job.video, settings)

    def finished(job: Job) -> None:
        if job.status == "done":
            manifest[job.rel.as_posix()] = {
                **video_identity(job.video),
                "settings": key,
                "table": job.table.relative_to(out).as_posix(),
                **job.result,
            }
            write_manifest(out, manifest)
            r = job.result
            console.print(
                f"[green]done[/] {job.rel}: {r['frames']} frames, {r['faces']} faces, "
                f"{r['fps']:.1f} frames/s ({r['realtime']:.2f}x real time)"
                + (f", continued at frame {r['resumed_at']}" if r.get("resumed_at") else ""),
                highlight=False,
            )
        else:
            console.print(f"[red]failed[/] {job.rel}: {job.error}", highlight=False, soft_wrap=True)

    for job in todo:
        if job.status == "skipped":
            console.print(f"[dim]skipped[/] {job.rel}: done before (--fresh redoes it)")
    start = time.perf_counter()
    if pending:
        if ray_address is not None:
            _run_ray(pending, settings, ray_address, console, finished)
        elif jobs > 1 and len(pending) > 1:
            _run_processes(pending, replace(settings, pipeline=False), jobs, console, finished)
        else:
            _run_here(pending, settings, console, finished)
    seconds = time.perf_counter() - start
    done = [j for j in pending if j.status == "done"]
    if done:
        frames = sum(j.result["new_frames"] for j in done)
        video_s = sum(
            j.result["video_s"] * j.result["new_frames"] / j.result["frames"] for j in done
        )
        console.print(
            f"{len(done)} videos in {seconds:.1f} s: [bold]{frames / seconds:.1f} frames/s[/], "
            f"{video_s / seconds:.2f}x real time; tables in {out}",
            highlight=False,
        )
    return todo


def _progress(console, pending: list[Job], what: str):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("frames"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    total = sum(j.frames for j in pending) or None
    return progress, progress.add_task(f"{len(pending)} videos{what}", total=total)


def _fail(job: Job, error: BaseException) -> None:
    job.status = "failed"
    text = str(error).strip().splitlines()
    job.error = text[0][:300] if text else type(error).__name__


def _run_here(pending: list[Job], settings: Settings, console, finished) -> None:
    progress, bar = _progress(console, pending, "")
    with progress:
        for job in pending:
            before = progress.tasks[0].completed
            try:
                job.result = analyse_video(
                    job.video, job.table, settings, lambda n: progress.advance(bar, n)
                )
                job.status = "done"
            except Exception as error:  # noqa: BLE001 - one line per video; the others go on
                _fail(job, error)
            progress.update(bar, completed=before + job.frames)
            finished(job)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _worker(job: Job, settings: Settings, queue) -> tuple[Job, dict | None, str | None]:
    try:
        return job, analyse_video(job.video, job.table, settings, queue.put), None
    except Exception as error:  # noqa: BLE001 - reported by the driver in one line
        return job, None, str(error) or type(error).__name__


def _run_processes(pending, settings, jobs, console, finished) -> None:
    """One video per process, `jobs` at a time (each with one thread per operation)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = mp.get_context("spawn")  # torch and OpenCV threads do not survive a fork
    with context.Manager() as manager:
        queue = manager.Queue()
        progress, bar = _progress(console, pending, f", {jobs} at a time")
        with progress, ProcessPoolExecutor(jobs, context, initializer=_worker_init) as pool:
            futures = {pool.submit(_worker, job, settings, queue): job for job in pending}
            while futures:
                done, _ = wait(futures, timeout=0.2, return_when=FIRST_COMPLETED)
                while not queue.empty():
                    progress.advance(bar, queue.get())
                for future in done:
                    job = futures.pop(future)
                    try:
                        _, job.result, error = future.result()
                    except Exception as exc:  # the worker died (killed, out of memory)
                        job.result, error = None, f"worker failed: {exc}"
                    if error is None:
                        job.status = "done"
                    else:
                        job.status, job.error = "failed", error.splitlines()[0][:300]
                    finished(job)


def _ray_task(video: str, table: str, settings: Settings) -> dict:
    import torch

    torch.set_num_threads(1)
    job = Job(Path(video), Path(video).name, Path(table))
    try:
        return {"result": analyse_video(job.video, job.table, settings)}
    except Exception as error:  # noqa: BLE001 - the video's own fault: no retry would help
        return {"error": str(error) or type(error).__name__}


def _run_ray(pending, settings, address, console, finished) -> None:
    """One task per video on a Ray cluster; a task whose worker dies is retried (and continues
    from the video's last complete chunk)."""
    try:
        import ray
    except ImportError:
        raise FerbenchError("--ray needs Ray: pip install 'ferbench[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(
                address=None if address == "local" else address,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise FerbenchError(
                f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0]}"
            ) from None
    task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_ray_task)
    refs = {
        task.remote(str(j.video.resolve()), str(j.table.resolve()), settings): j for j in pending
    }
    progress, bar = _progress(console, pending, " on Ray")
    with progress:
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            job = refs.pop(done[0])
            try:
                reply = ray.get(done[0])
                job.result, job.error = reply.get("result"), reply.get("error")
            except Exception as exc:  # retries exhausted: the worker kept dying
                job.result = None
                job.error = f"Ray task failed after {MAX_RETRIES} retries: {str(exc)[:200]}"
            job.status = "done" if job.result is not None else "failed"
            if job.error:
                job.error = job.error.splitlines()[0][:300]
            progress.advance(bar, job.frames)
            finished(job)
