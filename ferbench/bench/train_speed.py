"""`ferbench bench`: measured speed of ferbench against the compute bound and a reference pipeline.

Per model, three training figures on the same data and optimizer:
- *compute bound*: the model stepping on one batch of tensors already in memory;
- *ferbench*: the engine's path (uint8 in memory, batched augmentation, normalisation);
- *reference*: torchvision ``ImageFolder`` + PIL transforms + ``DataLoader(num_workers=2)``
  reading PNG files, fp32 and NCHW, as the reference tutorials do;
plus inference images/s at a large batch, batch-1 latency and peak memory.
"""

from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ferbench.config import AugmentConfig, TrainConfig
from ferbench.data.arrays import FaceArrays
from ferbench.device import Runtime, resolve_runtime, select_device
from ferbench.errors import FerbenchError
from ferbench.infer.batched import measure_speed
from ferbench.models.preprocess import Preprocess
from ferbench.train.engine import SplitTensors, Trainer

DEFAULT_AUGMENT = AugmentConfig()


@dataclass
class BenchConfig:
    batch_size: int = 128
    steps: int = 10
    warmup: int = 2
    optimizer: str = "sgd"
    lr: float = 0.01
    reference: bool = True
    compile: bool = False
    amp: str = "auto"  # ferbench path and bound; auto = what `ferbench run` would use
    channels_last: str = "auto"
    jobs: int = 1  # > 1: also the total bound of that many trials at once (CPU)

    def runtime(self, device: torch.device) -> Runtime:
        return resolve_runtime(device, self.amp, self.channels_last)

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr, epochs=1
        )


def reference_runtime(device: torch.device) -> Runtime:
    """fp32, NCHW, data in host memory: the reference tutorials' setting."""
    return Runtime(device, amp="off", channels_last=False, data_on_device=False)


def _build(name: str, num_classes: int, size: int, device: torch.device, channels_last: bool):
    from ferbench.models import create_model, model_card

    card = model_card(name)
    model = create_model(name, num_classes=num_classes, in_chans=card.in_chans, input_size=size)
    fmt = torch.channels_last if channels_last else torch.preserve_format
    return model.to(device, memory_format=fmt), Preprocess.for_model(card, size, channels_last)


def compute_bound(
    name: str, data: FaceArrays, size: int, cfg: BenchConfig, device: torch.device
) -> float:
    """Images/s of forward+backward+step on one batch that is already a normalised tensor."""
    from ferbench.train.budget import compute_bound as bound

    runtime = cfg.runtime(device)
    return bound(name, len(data.class_names), size, runtime, cfg.batch_size, cfg.steps, cfg.warmup)


def ferbench_training(
    name: str,
    data: FaceArrays,
    size: int,
    cfg: BenchConfig,
    device: torch.device,
    compile: bool = False,
) -> tuple[float, float]:
    """Images/s of the engine's own epoch loop (uint8 in memory, batched augmentation), eager or
    through torch.compile, and the seconds of the warm-up steps (compilation included)."""
    runtime = cfg.runtime(device)
    model, preprocess = _build(name, len(data.class_names), size, device, runtime.channels_last)
    storage = device if runtime.data_on_device else torch.device("cpu")
    train = SplitTensors.from_arrays(data, "train", storage)
    needed = (cfg.steps + cfg.warmup) * cfg.batch_size
    if len(train) < needed:
        reps = -(-needed // len(train))
        train = SplitTensors(train.images.repeat(reps, 1, 1, 1), train.labels.repeat(reps))
    warm = SplitTensors(
        train.images[: cfg.warmup * cfg.batch_size], train.labels[: cfg.warmup * cfg.batch_size]
    )
    timed = SplitTensors(
        train.images[: cfg.steps * cfg.batch_size], train.labels[: cfg.steps * cfg.batch_size]
    )
    net = torch.compile(model) if compile else model
    trainer = Trainer(net, preprocess, cfg.train_config(), runtime)
    start = time.perf_counter()
    trainer.train_epoch(warm, 0)
    warmup_s = time.perf_counter() - start
    stats = trainer.train_epoch(timed, 1)
    return stats.images / stats.seconds, warmup_s


def reference_training(
    name: str, data: FaceArrays, size: int, cfg: BenchConfig, device: torch.device, folder: Path
) -> float:
    """Images/s of ImageFolder + PIL transforms + DataLoader(num_workers=2) on PNG files."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from ferbench.models import model_card

    card = model_card(name)
    transform = transforms.Compose(
        [
            transforms.Grayscale(),
            transforms.Resize((size, size)),
            transforms.RandomCrop(size, padding=DEFAULT_AUGMENT.crop_padding),
            transforms.RandomHorizontalFlip(),
            transforms.RandomRotation(DEFAULT_AUGMENT.rotate),
            transforms.ToTensor(),
            transforms.Normalize(card.mean, card.std),
        ]
    )
    dataset = datasets.ImageFolder(str(folder / "train"), transform=transform)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=2,
        drop_last=True,
        persistent_workers=False,
    )
    model, preprocess = _build(name, len(data.class_names), size, device, False)
    runtime = reference_runtime(device)
    trainer = Trainer(model, preprocess, cfg.train_config(), runtime)
    model.train()
    seen, start, step = 0, None, 0
    while step < cfg.steps + cfg.warmup:
        for x, y in loader:
            if step == cfg.warmup:
                runtime.synchronize()
                start = time.perf_counter()
            x, y = x.to(device), y.to(device)
            with runtime.autocast():
                loss = trainer.loss_fn(model(x).float(), y)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
            if step >= cfg.warmup:
                seen += len(y)
            step += 1
            if step >= cfg.steps + cfg.warmup:
                break
    runtime.synchronize()
    return seen / (time.perf_counter() - start)


def parallel_bound(
    name: str, num_classes: int, size: int, cfg: BenchConfig, device: torch.device
) -> float:
    """Total compute-bound images/s of `cfg.jobs` processes stepping `name` at the same time,
    each with its share of the threads: what `ferbench run --jobs N` trains per second, to set
    against one trial with every thread (which wins depends on the model and the CPU)."""
    import multiprocessing as mp

    from ferbench.train.runner import default_threads

    context = mp.get_context("spawn")  # never fork a process that holds torch threads
    barrier, rates = context.Barrier(cfg.jobs), context.Queue()
    args = (barrier, rates, name, num_classes, size, cfg.runtime(device), cfg.batch_size)
    workers = [
        context.Process(target=_timed_bound, args=(*args, cfg.steps, default_threads(cfg.jobs)))
        for _ in range(cfg.jobs)
    ]
    for worker in workers:
        worker.start()
    try:
        measured = [rates.get(timeout=600) for _ in workers]
        failed = [m for m in measured if isinstance(m, str)]
        if failed:
            raise FerbenchError(f"--jobs {cfg.jobs}: a timed process failed: {failed[0]}")
        return sum(measured)
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()


def _timed_bound(barrier, rates, name, num_classes, size, runtime, batch_size, steps, threads):
    """One of `parallel_bound`'s processes: its threads, a warm-up, then steps timed together."""
    from ferbench.train.budget import compute_bound as bound

    torch.set_num_threads(threads)
    try:
        rates.put(bound(name, num_classes, size, runtime, batch_size, steps, ready=barrier.wait))
    except Exception as exc:  # said in the parent, not a wait for a rate that never comes
        barrier.abort()
        rates.put(f"{type(exc).__name__}: {exc}")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_models(
    models: list[str], data: FaceArrays, cfg: BenchConfig, device_name: str = "auto", progress=None
) -> list[dict]:
    from ferbench.data.export import write_folders
    from ferbench.data.images import resize_all
    from ferbench.models import model_card

    device = select_device(device_name)
    runtime = cfg.runtime(device)
    precision = runtime.amp if runtime.amp != "off" else "fp32"
    precision += ", channels_last" if runtime.channels_last else ""
    rows = []
    with tempfile.TemporaryDirectory(prefix="ferbench-bench-") as tmp:
        folder = None
        if cfg.reference:
            folder = write_folders(data, Path(tmp) / "images")
        for name in models:
            size = model_card(name).input_size
            sized = FaceArrays(
                resize_all(data.images, size), data.labels, data.splits, data.class_names
            )
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            if progress:
                progress(f"{name}: compute bound")
            bound = compute_bound(name, sized, size, cfg, device)
            jobs_bound = None
            if cfg.jobs > 1 and device.type == "cpu":
                if progress:
                    progress(f"{name}: compute bound of {cfg.jobs} trials at once")
                jobs_bound = parallel_bound(name, len(data.class_names), size, cfg, device)
            if progress:
                progress(f"{name}: ferbench training")
            ours, _ = ferbench_training(name, sized, size, cfg, device)
            compiled, compile_s = None, None
            if cfg.compile:
                if progress:
                    progress(f"{name}: ferbench training, torch.compile")
                compiled, compile_s = ferbench_training(name, sized, size, cfg, device, True)
            reference = None
            if folder is not None:
                if progress:
                    progress(f"{name}: reference pipeline")
                reference = reference_training(name, sized, size, cfg, device, folder)
            model, preprocess = _build(
                name, len(data.class_names), size, device, runtime.channels_last
            )
            speed = measure_speed(model, preprocess, runtime)
            rows.append(
                {
                    "model": name,
                    "device": device.type,
                    "precision": precision,
                    "input": size,
                    "batch_size": cfg.batch_size,
                    "train_img_s": ours,
                    "compiled_img_s": compiled,
                    "compile_speedup": compiled / ours if compiled else None,
                    "compile_warmup_s": compile_s,
                    "compute_bound_img_s": bound,
                    "ferbench_vs_bound": ours / bound,
                    "jobs": cfg.jobs,
                    "jobs_bound_img_s": jobs_bound,
                    "jobs_vs_one": jobs_bound / bound if jobs_bound else None,
                    "reference_img_s": reference,
                    "speedup_vs_reference": ours / reference if reference else None,
                    "inference_img_s": speed["inference_images_per_s"],
                    "latency_batch1_ms": speed["latency_batch1_ms"],
                    "peak_memory_mb": peak_memory_mb(device),
                }
            )
    return rows
