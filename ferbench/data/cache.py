"""On-disk cache of decoded arrays: decode once, load in well under a second afterwards.

Entries are keyed on the source path, the size and mtime of every file under it, the reader
options and a format version; they are written to a temporary file and renamed into place, so two
processes filling the cache at once both end with a complete entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from ferbench.data.arrays import FaceArrays
from ferbench.utils.fileio import atomic_path, cache_dir

CACHE_VERSION = 2  # 2: CK+ and JAFFE faces found on a second look


def source_signature(path: Path | None) -> list:
    """Size and mtime of the path and, for folders, of every file under it."""
    if path is None:
        return []
    stat = path.stat()
    if path.is_file():
        return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    digest = hashlib.blake2b(digest_size=16)
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            st = os.stat(os.path.join(folder, name))
            digest.update(f"{folder}/{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return [str(path.resolve()), digest.hexdigest()]


def cache_key(paths: list[Path | None], options: dict) -> str:
    payload = json.dumps(
        [CACHE_VERSION, [source_signature(p) for p in paths], options], sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def cached(
    paths: list[Path | None], options: dict, build: Callable[[], FaceArrays], enabled: bool = True
) -> FaceArrays:
    """Return the cached arrays for these sources and options, building them on a miss."""
    if not enabled:
        return build()
    file = cache_dir() / f"{options.get('kind', 'data')}-{cache_key(paths, options)}.npz"
    if file.exists():
        try:
            return _load(file)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            # a truncated or damaged entry (a full disk, a copy cut short) is rebuilt, never
            # trusted, and said so: the rebuild takes as long as the first decode
            why = type(exc).__name__
            sys.stderr.write(f"note: rebuilding the damaged data cache entry {file} ({why})\n")
            file.unlink(missing_ok=True)
    data = build()
    try:
        _save(file, data)
    except OSError:
        pass  # a read-only or full cache folder must not stop training
    return data


def _save(file: Path, data: FaceArrays) -> None:
    meta = {
        "class_names": data.class_names,
        "source": data.source,
        "notes": data.notes,
        "problems": data.problems,
    }
    with atomic_path(file) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                images=data.images,
                labels=data.labels,
                splits=data.splits,
                meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                **{f"extra_{name}": values for name, values in data.extras.items()},
            )


def _load(file: Path) -> FaceArrays:
    with np.load(file) as entry:
        meta = json.loads(entry["meta"].tobytes().decode())
        return FaceArrays(
            entry["images"],
            entry["labels"],
            entry["splits"],
            meta["class_names"],
            meta["source"],
            meta["notes"],
            meta["problems"],
            {k[len("extra_") :]: entry[k] for k in entry.files if k.startswith("extra_")},
        )
