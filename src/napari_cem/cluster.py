"""Segmentation spread over a dask.distributed cluster: the slabs of a volume go to the
workers, each worker loads the model once and predicts the slabs it is given, and this
process (the client) reads the input, writes the results and keeps the books.

The client alone touches the zarr store: a slab is written and marked done only once its
result has arrived, so a worker that dies mid-slab leaves nothing half-written (dask gives
the slab to another worker), and an interrupted run resumes like a one-process
``segment(out=...)`` run (the same store, fingerprint and list of finished slabs). The
first slab is predicted here, which fixes the reduced precision for every worker, so that
the labels are those of the one-process run.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["cluster_client", "parse_devices", "segment_on_cluster", "start_local_cluster"]

_WORKER_MODELS: dict = {}  # on a worker: (bundle hash, predictor options) -> _Predictor
_IN_FLIGHT_PER_WORKER = 2  # slabs queued per worker: it never waits, the client holds few


def start_local_cluster(workers: int | None = None, devices=None):
    """A cluster on this machine and its client: *workers* processes (one torch thread each),
    or one process per entry of *devices* (``cuda:0``, ``cuda:1`` ...: each worker sees only
    its own GPU; ``cpu`` entries are plain CPU workers)."""
    from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster

    if not devices:
        cluster = LocalCluster(n_workers=int(workers or 1), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster)
    specs = {}
    for i, device in enumerate(parse_devices(devices)):
        env = {"CUDA_VISIBLE_DEVICES": device.split(":")[1]} if device.startswith("cuda") else \
            {"CUDA_VISIBLE_DEVICES": ""}
        specs[f"{device}-{i}"] = {"cls": Nanny, "options": {"nthreads": 1, "env": env}}
    cluster = SpecCluster(scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
                          workers=specs)
    return Client(cluster)


def parse_devices(devices) -> list[str]:
    """``"cuda:0,cuda:1"`` (or a list) as device names; all GPUs or all CPUs, each GPU once."""
    names = [d.strip().lower() for d in (devices.split(",") if isinstance(devices, str) else devices) if d.strip()]
    if not names:
        raise ValueError("Give at least one device, e.g. --devices cuda:0,cuda:1.")
    for name in names:
        if name != "cpu" and not (name.startswith("cuda:") and name[5:].isdigit()):
            raise ValueError(f"Unknown device {name!r}: use cuda:N (one per GPU) or cpu.")
    if len({n.startswith("cuda") for n in names}) > 1:
        raise ValueError("Use GPU workers or CPU workers, not both in one run.")
    gpus = [n for n in names if n != "cpu"]
    if len(set(gpus)) != len(gpus):
        raise ValueError("Each GPU takes one worker: a cuda:N is listed twice.")
    return names


@contextmanager
def cluster_client(scheduler: str | None = None, workers: int | None = None, devices=None):
    """A client of the cluster at *scheduler*, or of one made here (*workers* processes, or
    one per device of *devices*; closed on the way out); ConnectionError when no scheduler
    answers."""
    if scheduler:
        from distributed import Client

        try:
            client = Client(scheduler, timeout=30)
        except OSError as exc:
            raise ConnectionError(f"no dask scheduler answers at {scheduler}: {exc}") from None
        cluster = None
    else:
        client = start_local_cluster(workers, devices)
        cluster = client.cluster
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _worker_predictor(key: str, payload: bytes, options: dict):
    """The worker's predictor for this bundle and options, built the first time."""
    from .infer import _Predictor
    from .model import load_bundle

    cache_key = (key, tuple(sorted(options.items())))
    predictor = _WORKER_MODELS.get(cache_key)
    if predictor is None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "bundle.pt"
            path.write_bytes(payload)
            bundle = load_bundle(path)
        _WORKER_MODELS.clear()  # one model per worker: a new run replaces the last one
        predictor = _Predictor(bundle, **options)
        _WORKER_MODELS[cache_key] = predictor
    return predictor


def predict_remote(key: str, payload: bytes, options: dict, block_options: dict, block: np.ndarray):
    """A worker's task: the outputs of one slab (see ``infer.predict_block``)."""
    from .infer import predict_block

    return predict_block(_worker_predictor(key, payload, options), block, **block_options)


def segment_on_cluster(volume, bundle_path, out, client, *, mode: str = "stack", threshold: float = 0.5,
                       tile: int = 1024, overlap: int = 64, batch_size: int | None = None, device="auto",
                       keep_probabilities: bool = False, keep_uncertainty: bool = False, voxel_size=None,
                       precision: str = "auto", slab: int | None = None, tta: str = "none",
                       engine: str = "auto", progress=None):
    """:func:`napari_cem.infer.segment` with a zarr *out*, the slabs predicted by the workers of
    *client* (a ``distributed.Client``); returns the same Segmentation."""
    from distributed import as_completed

    from .infer import (
        _PLANE_AXIS,
        _average_planes,
        _Count,
        _plan,
        _read,
        block_options,
        plane_blocks,
        predict_block,
        store_block,
    )
    from .model import load_bundle

    t0 = time.perf_counter()
    payload = Path(bundle_path).read_bytes()
    key = hashlib.sha1(payload).hexdigest()
    plan = _plan(volume, load_bundle(bundle_path), mode=mode, threshold=threshold, tile=tile, overlap=overlap,
                 batch_size=batch_size, device=device, out=out, keep_probabilities=keep_probabilities,
                 keep_uncertainty=keep_uncertainty, voxel_size=voxel_size, isotropy_tolerance=0.2,
                 precision=precision, slab=slab, tta=tta, engine=engine)
    store, opts = plan.store, block_options(plan)
    count = _Count(plan.total, progress)
    todo = []
    for plane in plan.planes:
        for b, start, stop in plane_blocks(plan, plane):
            if store.is_done(plane, b):
                count.add(stop - start, plan.stage(plane))
            else:
                todo.append((plane, b, start, stop))
    if todo:  # the first slab here: it settles the precision every worker then uses
        plane, b, start, stop = todo.pop(0)
        outputs = predict_block(plan.predictor, _read(plan.vol, _PLANE_AXIS[plane], start, stop), **opts)
        store_block(plan, plane, start, stop, *outputs)
        store.mark_done(plane, b)
        count.add(stop - start, plan.stage(plane))
    pr = plan.predictor
    if pr.engine == "openvino":  # OpenVINO settles its own precision; float32 when asked
        engine, settled = "openvino", "float32" if pr.precision == "openvino-float32" else "auto"
    else:
        engine, settled = "torch", pr.precision
    options = {"device": device, "tile": pr.tile, "overlap": pr.overlap, "batch_size": batch_size,
               "precision": settled, "tta": pr.tta, "engine": engine}
    shared = client.scatter(payload, broadcast=True, hash=False)
    limit = max(1, _IN_FLIGHT_PER_WORKER * max(1, len(client.scheduler_info()["workers"])))
    pending, queue = {}, list(todo)
    finished = as_completed()

    def submit_next():
        plane, b, start, stop = queue.pop(0)
        block = np.ascontiguousarray(_read(plan.vol, _PLANE_AXIS[plane], start, stop))
        future = client.submit(predict_remote, key, shared, options, opts, block, pure=False)
        pending[future] = (plane, b, start, stop)
        finished.add(future)

    while queue and len(pending) < limit:
        submit_next()
    for future in finished:
        plane, b, start, stop = pending.pop(future)
        store_block(plan, plane, start, stop, *future.result())
        store.mark_done(plane, b)
        count.add(stop - start, plan.stage(plane))
        future.release()
        if queue:
            submit_next()
    if plan.mode == "orthoplane":
        _average_planes(plan, count, None)
    metadata = plan.metadata(time.perf_counter() - t0)
    metadata["workers"] = len(client.scheduler_info()["workers"])
    return store.finish(metadata, plan.was_2d)

