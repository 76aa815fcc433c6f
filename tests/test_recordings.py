"""Videos → face tables: equal to live's log, resumable, a bad video skipped, Parquet, Ray."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.infer.recording_jobs import read_manifest, run_videos
from ferbench.infer.recordings import Settings, analyse_video, part_dir

runner = CliRunner()


@pytest.fixture
def folder(tmp_path, astronaut_video):
    """Two good videos (one in a subfolder) and a corrupt one."""
    root = tmp_path / "sessions"
    (root / "day2").mkdir(parents=True)
    shutil.copy(astronaut_video[0], root / "a.mp4")
    shutil.copy(astronaut_video[0], root / "day2" / "b.mp4")
    (root / "broken.mp4").write_bytes(b"\x00not a video" * 500)
    return root


def settings(checkpoint, **kw) -> Settings:
    return Settings(checkpoint=str(checkpoint), backend="torch", chunk_frames=5, **kw)


def test_video_table_equals_live_log(tmp_path, checkpoint, astronaut_video):
    video, frames = astronaut_video
    common = ["--checkpoint", str(checkpoint), "--backend", "torch"]
    log = tmp_path / "live.csv"
    result = runner.invoke(
        app, ["live", *common, "--source", str(video), "--no-window", "--log", str(log)]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", str(video), *common, "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    table = tmp_path / "t" / "astronaut.csv"
    assert table.read_bytes() == log.read_bytes()  # same rows, same bytes
    rows = pd.read_csv(table)
    assert rows["frame"].nunique() >= 0.8 * frames and rows["landmarks"].notna().any()
    people = pd.read_csv(tmp_path / "t" / "astronaut.people.csv")
    assert people["frames"].sum() == len(rows)


def test_folder_resume_skip_and_a_corrupt_video(tmp_path, checkpoint, folder):
    out, reference = tmp_path / "out", tmp_path / "reference"
    jobs = run_videos([folder], reference, settings(checkpoint))
    status = {j.rel.as_posix(): j.status for j in jobs}
    assert status == {"a.mp4": "done", "day2/b.mp4": "done", "broken.mp4": "failed"}
    assert "cannot open video" in next(j.error for j in jobs if j.status == "failed")
    assert set(read_manifest(reference)) == {"a.mp4", "day2/b.mp4"}

    # interrupted in the middle of b.mp4, after a.mp4 finished
    class Killed(Exception):
        pass

    seen = []

    def kill_after_12(frames):
        seen.append(frames)
        if sum(seen) >= 12:
            raise Killed

    table = out / "day2" / "b.csv"
    run_videos([folder / "a.mp4"], out, settings(checkpoint))
    with pytest.raises(Killed):
        analyse_video(folder / "day2" / "b.mp4", table, settings(checkpoint), kill_after_12)
    state = json.loads((part_dir(table) / "state.json").read_text())
    assert state["next_frame"] == 10 and not table.exists()
    a_before = (out / "a.csv").stat().st_mtime_ns
    jobs = run_videos([folder], out, settings(checkpoint))
    by_rel = {j.rel.as_posix(): j for j in jobs}
    assert by_rel["a.mp4"].status == "skipped" and by_rel["broken.mp4"].status == "failed"
    assert by_rel["day2/b.mp4"].result["resumed_at"] == 10
    assert (out / "a.csv").stat().st_mtime_ns == a_before
    for rel in ("a.csv", "day2/b.csv", "day2/b.people.csv"):
        assert (out / rel).read_bytes() == (reference / rel).read_bytes(), rel
    frames = pd.read_csv(table)["frame"]
    assert not part_dir(table).exists() and frames.is_monotonic_increasing

    # --fresh redoes all; a changed video is redone
    jobs = run_videos([folder / "a.mp4"], out, settings(checkpoint), fresh=True)
    assert jobs[0].status == "done"


def test_sampling_parquet_and_timeline(tmp_path, checkpoint, astronaut_video):
    pytest.importorskip("pyarrow")
    video = astronaut_video[0]
    csv_jobs = run_videos([video], tmp_path / "c", settings(checkpoint, every=2))
    pq_jobs = run_videos([video], tmp_path / "p", settings(checkpoint, every=2, format="parquet"))
    assert csv_jobs[0].status == pq_jobs[0].status == "done"
    as_csv = pd.read_csv(tmp_path / "c" / "astronaut.csv")
    as_parquet = pd.read_parquet(tmp_path / "p" / "astronaut.parquet")
    assert (as_csv["frame"] % 2 == 0).all()
    columns = ["frame", "face", "x", "label"]
    pd.testing.assert_frame_equal(as_csv[columns], as_parquet[columns], check_dtype=False)
    assert (as_csv["probability"] - as_parquet["probability"]).abs().max() < 1e-4
    run_videos([video], tmp_path / "s", settings(checkpoint, plot=True))
    assert (tmp_path / "s" / "astronaut.timeline.png").stat().st_size > 1000


def test_cli_needs_out_and_reports_bad_video(tmp_path, checkpoint, folder):
    result = runner.invoke(app, ["predict", str(folder), "--checkpoint", str(checkpoint)])
    assert result.exit_code == 1 and "--out" in result.output


@pytest.mark.ray
def test_ray_tables_equal_local(tmp_path, checkpoint, folder):
    pytest.importorskip("ray")
    import ray

    local = run_videos([folder], tmp_path / "local", settings(checkpoint))
    try:
        on_ray = run_videos([folder], tmp_path / "ray", settings(checkpoint), ray_address="local")
    finally:
        ray.shutdown()
    assert [j.status for j in on_ray] == [j.status for j in local]
    for job in local:
        if job.status == "done":
            rel = job.table.relative_to(tmp_path / "local")
            assert (tmp_path / "ray" / rel).read_bytes() == job.table.read_bytes()


@pytest.mark.slow  # two fresh processes load torch: minutes on a busy machine
def test_bench_recording_beside_live(checkpoint, astronaut_video):
    from ferbench.bench.recording_speed import bench_recording

    live, predict = bench_recording(astronaut_video[0], str(checkpoint), backend="torch")
    assert live["frames"] == predict["frames"] == astronaut_video[1]
    assert predict["same_table_as_live"] and predict["peak_rss_mb"] > 0 and predict["fps"] > 0
