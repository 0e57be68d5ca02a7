"""Curate many files at once: one source per input, in parallel processes or on a dask cluster.

Each source is read, hashed, grouped and exported by ``curate_file`` in a worker; only the
parent rebuilds manifest.csv, so parallel workers never race on it. A source already
exported with the same request and the same input file is skipped, which makes an
interrupted run resumable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["CurateRequest", "curate_file", "curate_files", "source_names"]

_DOUBLE_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".nii.gz")


@dataclass(frozen=True)
class CurateRequest:
    """What the user asked for; stored with each finished source to decide what to skip."""

    patch_size: int = 224
    cutoff: int = 12
    planes: str = "auto"  # auto | xy | all
    grouping: str = "greedy"  # greedy | components
    seed: int = 0
    tolerance: float = 0.2
    min_fraction: float = 0.5
    channel: int | None = None  # for inputs with a channel / time axis
    timepoint: int | None = None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _DOUBLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.suffix else name


def source_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """A unique, readable source name per input (file stem; parent folder added on clashes)."""
    paths = [Path(p) for p in paths]
    stems = [_stem(p) for p in paths]
    names = [f"{p.parent.name}-{s}" if stems.count(s) > 1 and p.parent.name else s
             for p, s in zip(paths, stems)]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):  # still clashing (same folder name too): number them
        if name in seen or names.count(name) > 1:
            seen[name] = seen.get(name, 0) + 1
            names[i] = f"{name}-{seen[name]}"
        else:
            seen[name] = 0
    return names


def _fingerprint(path: Path, request: CurateRequest) -> dict:
    """Identifies the input and the request: a changed file or option is curated again."""
    try:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
        if path.is_dir():  # folder of images or Zarr store: its newest entry
            mtimes = [e.stat().st_mtime_ns for e in path.iterdir()]
            size, mtime = len(mtimes), max(mtimes, default=mtime)
    except OSError:
        size, mtime = None, None
    return {"path": str(path.resolve()), "size": size, "mtime_ns": mtime, "request": asdict(request)}


def curate_file(path, out_dir, source: str, request: CurateRequest, *, progress=None,
                should_stop=None, update_manifest: bool = False) -> dict:
    """Read, hash, group and export one input; returns a summary dict (runs in a worker)."""
    from .curate import find_near_duplicates
    from .export import export_curated, is_source_done
    from .io import read_volume

    start = time.perf_counter()
    path = Path(path)
    fingerprint = _fingerprint(path, request)
    if is_source_done(out_dir, source, None, fingerprint):
        return {"source": source, "skipped": True, "seconds": 0.0}
    volume, meta = read_volume(path, channel=request.channel, timepoint=request.timepoint)
    result = find_near_duplicates(
        volume, source=source, voxel_size=meta.voxel_size, planes=request.planes,
        patch_size=request.patch_size, cutoff=request.cutoff, grouping=request.grouping,
        seed=request.seed, tolerance=request.tolerance, min_fraction=request.min_fraction,
        progress=progress, should_stop=should_stop)
    summary = export_curated(result, volume, out_dir, fingerprint=fingerprint, progress=progress,
                             should_stop=should_stop, skip_done=False,
                             update_manifest=update_manifest)
    summary.update(seconds=time.perf_counter() - start, planes=result.params["planes"],
                   n_groups=result.n_groups, shape=list(result.shape))
    return summary


def _error_text(exc: BaseException, option_names: dict | None) -> str:
    """A source's error for the user, naming the caller's options when it asks for a choice."""
    from .io import VolumeError

    return exc.message(option_names) if isinstance(exc, VolumeError) else str(exc)


def _curate_file_safe(path, out_dir, source, request, option_names=None) -> dict:
    """curate_file for a worker: a user error comes back as a message, not a crash.

    An OSError (disk full, read-only output) is not caught: it ends the whole run, since
    every later source would hit it too.
    """
    from .io import VolumeError

    try:
        return curate_file(path, out_dir, source, request)
    except (VolumeError, ValueError, TypeError) as exc:
        return {"source": source, "error": _error_text(exc, option_names)}
    except MemoryError:
        return {"source": source, "error": "not enough memory to curate this input; "
                                           "convert it to OME-Zarr so it is read lazily"}


def curate_files(inputs: Sequence[str | os.PathLike], out_dir, request: CurateRequest = CurateRequest(),
                 *, workers: int = 1, scheduler: str | None = None,
                 on_done: Callable[[dict, int, int], None] | None = None,
                 progress=None, option_names: dict | None = None) -> list[dict]:
    """Curate every input into *out_dir*; returns one summary per input (in input order).

    workers > 1 uses that many processes; ``scheduler`` (a dask.distributed address such as
    ``tcp://host:8786``) sends the sources to that cluster instead; the workers must see
    the same file system. ``on_done(summary, n_done, n_total)`` is called as sources finish;
    ``progress(done, total, stage)`` reports inside a source when it runs in this process.
    ``option_names`` spells the channel / time-point options in a source's error (see
    ``VolumeError.message``).
    """
    from .export import rebuild_manifest

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = [Path(p) for p in inputs]
    names = source_names(inputs)
    results: list[dict | None] = [None] * len(inputs)

    def finished(i: int, summary: dict, n_done: int) -> None:
        results[i] = summary
        if not summary.get("skipped") and "error" not in summary:
            rebuild_manifest(out_dir)
        if on_done is not None:
            on_done(summary, n_done, len(inputs))

    if scheduler:
        _run_distributed(scheduler, inputs, names, out_dir, request, finished, option_names)
    elif workers > 1 and len(inputs) > 1:
        _run_processes(workers, inputs, names, out_dir, request, finished, option_names)
    else:
        from .io import VolumeError

        for i, (path, name) in enumerate(zip(inputs, names)):
            try:
                summary = curate_file(path, out_dir, name, request, progress=progress)
            except (VolumeError, ValueError, TypeError) as exc:
                summary = {"source": name, "error": _error_text(exc, option_names)}
            finished(i, summary, i + 1)
    rebuild_manifest(out_dir)
    return [r for r in results if r is not None]


def _run_processes(workers, inputs, names, out_dir, request, finished, option_names=None) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: the workers start clean (no inherited threads from numba/dask/Qt)
    with ProcessPoolExecutor(max_workers=min(workers, len(inputs)),
                             mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_curate_file_safe, str(p), str(out_dir), n, request, option_names): i
                   for i, (p, n) in enumerate(zip(inputs, names))}
        for n_done, fut in enumerate(as_completed(futures), 1):
            finished(futures[fut], fut.result(), n_done)


def _run_distributed(address, inputs, names, out_dir, request, finished, option_names=None) -> None:
    from distributed import as_completed

    from .cluster import cluster_client

    with cluster_client(address) as client:
        futures = [client.submit(_curate_file_safe, str(p.resolve()), str(Path(out_dir).resolve()), n,
                                 request, option_names, pure=False, key=f"napari-cem-curate-{i}-{n}")
                   for i, (p, n) in enumerate(zip(inputs, names))]
        index = {f.key: i for i, f in enumerate(futures)}
        for n_done, fut in enumerate(as_completed(futures), 1):
            finished(index[fut.key], fut.result(), n_done)
