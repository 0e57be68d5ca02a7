"""The refinement loop against training from scratch, as a scripted user on VNC stack1.

Mitochondria of VNC stack1; one half of the slices is painted (the ground truth stands in for
the user's paint), the other half is scored (IoU of "mito"). CPU, batch 8, crop 256, no
pre-trained weights, as in issue 16:

* ``scratch``: every training slice painted, one run of 300 iterations;
* ``loop``: round 0 paints one slice and trains 100 iterations; each next round segments the
  training slices with the uncertainty, paints the most uncertain unpainted slice and
  continues 50 iterations from the current model (``FinetuneConfig.init``); 6 rounds;
* ``spread``: the same, the uncertainty discounted near painted slices (``next_slices``);
* ``random``: the same with the next slice drawn at random.

Each checkpoint reports the IoU on the scored slices against the cumulative wall time the
user waited (training + segmenting the training slices; the scoring is not counted).
``--split reverse`` trains on slices 10-19 and scores 0-9. ``--quick`` is a smoke run of a few
iterations (its figures mean nothing and are not recorded).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _harness import VNC_DIR, WORK_DIR, emit, row  # noqa: E402


def _data(split: str, source: str = "vnc"):
    if source == "synthetic":  # the anisotropic napari sample's kind of volume, 20 sections
        from napari_cem.synthetic import make_em_volume

        vol = make_em_volume((20, 384, 384), isotropic=False, seed=0)
        image = vol.image
        mito = (vol.labels == vol.class_names.index("mitochondria")).astype(np.uint8)
    else:
        import tifffile

        image = tifffile.imread(VNC_DIR / "stack1_image.tif")
        mito = (tifffile.imread(VNC_DIR / "stack1_mito.tif") > 0).astype(np.uint8)
    first, second = list(range(0, 10)), list(range(10, 20))
    train, score = (first, second) if split == "forward" else (second, first)
    return image, mito, train, score


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    inter = np.logical_and(pred == 1, gt == 1).sum()
    union = np.logical_or(pred == 1, gt == 1).sum()
    return float(inter / union) if union else float("nan")


class _User:
    """Trains and segments as the widgets do, keeping the time a user waits."""

    def __init__(self, image, mito, train, score, args):
        self.image, self.mito, self.train, self.score, self.args = image, mito, train, score, args
        self.paint = np.zeros(image[train].shape, np.uint8)  # painted values: 1 = mito
        self.waited = 0.0
        self.bundle = None
        self.schedule = (None, None)  # (peak lr, warm-up share) of continued rounds; None: the default

    def paint_slice(self, k: int) -> None:
        self.paint[k] = self.mito[self.train[k]]

    def fit(self, iterations: int) -> None:
        from napari_cem.train import FinetuneConfig, run_finetune

        lr, warmup = self.schedule if self.bundle is not None else (None, None)
        config = FinetuneConfig(iterations=iterations, batch_size=self.args.batch, crop_size=self.args.crop,
                                device="cpu", seed=self.args.seed, init=self.bundle, lr=lr, warmup=warmup)
        t0 = time.perf_counter()
        self.bundle = run_finetune(self.image[self.train], self._painted_only(), config,
                                   classes=["mito"], complete_slices=True)
        self.waited += time.perf_counter() - t0

    def _painted_only(self) -> np.ndarray:
        """Complete slices: only the slices painted so far hold paint (0 elsewhere)."""
        return self.paint

    def uncertain_slices(self) -> list[float]:
        from napari_cem.infer import segment

        t0 = time.perf_counter()
        res = segment(self.image[self.train], self.bundle, device="cpu", keep_uncertainty=True)
        self.waited += time.perf_counter() - t0
        return res.metadata["slice_uncertainty"]

    def scored(self) -> float:
        from napari_cem.infer import segment

        res = segment(self.image[self.score], self.bundle, device="cpu")
        return _iou(np.asarray(res.labels), self.mito[self.score])


def run_scratch(image, mito, train, score, args) -> list[dict]:
    user = _User(image, mito, train, score, args)
    for k in range(len(train)):
        user.paint_slice(k)
    user.fit(args.scratch_iterations)
    if not args.quick:  # kept for the benchmarks that segment with a trained model (bench_tta)
        from napari_cem.model import save_bundle

        WORK_DIR.mkdir(exist_ok=True)
        save_bundle(user.bundle, WORK_DIR / f"loop_scratch_{args.data}_{args.split}_seed{args.seed}.pt")
    return [{"round": 0, "painted": len(train), "waited_s": user.waited, "iou": user.scored()}]


def run_loop(image, mito, train, score, args, choose: str) -> list[dict]:
    rng = np.random.default_rng(args.seed)
    user = _User(image, mito, train, score, args)
    painted = [0]
    user.paint_slice(0)
    user.fit(args.first_iterations)
    out = [{"round": 0, "painted": 1, "waited_s": user.waited, "iou": user.scored()}]
    for r in range(1, args.rounds):
        free = [k for k in range(len(train)) if k not in painted]
        if not free:
            break
        if choose == "uncertainty":
            scores = user.uncertain_slices()
            k = max(free, key=lambda i: scores[i])
        elif choose == "spread":  # the uncertainty, discounted near the painted slices
            from napari_cem.uncertainty import next_slices

            k = next_slices(user.uncertain_slices(), painted, z_spacing_nm=args.z_nm)[0]
        else:
            k = int(rng.choice(free))
        painted.append(k)
        user.paint_slice(k)
        user.fit(args.round_iterations)
        out.append({"round": r, "painted": len(painted), "slice": int(train[k]), "waited_s": user.waited,
                    "iou": user.scored()})
    return out


def run_rounds(image, mito, train, score, args) -> list[dict]:
    """The same paint (every training slice), one first run, then continued rounds: does
    each restart of the round's schedule keep improving, or collapse?"""
    user = _User(image, mito, train, score, args)
    for k in range(len(train)):
        user.paint_slice(k)
    user.fit(args.first_iterations)
    out = [{"round": 0, "iterations": args.first_iterations, "waited_s": user.waited, "iou": user.scored()}]
    for r in range(1, args.rounds):
        user.fit(args.round_iterations)
        out.append({"round": r, "iterations": args.first_iterations + r * args.round_iterations,
                    "waited_s": user.waited, "iou": user.scored()})
    return out


SCHEDULES = {  # continued-round OneCycle shapes compared by --strategy schedule: (peak lr, warm-up share)
    "restart": (3e-3, 0.3),  # a new model's shape, restarted every round
    "short warm-up": (3e-3, 0.05),
    "short warm-up, 1/3 peak": (1e-3, 0.05),
}


def run_schedule(image, mito, train, score, args) -> dict:
    """The continued round's schedule shapes side by side: one first round (slice 0, the new
    model's schedule), then, for each shape, rounds that each paint one more slice (the same
    spread order for every shape) and continue *round_iterations* from the model."""
    import copy

    first = _User(image, mito, train, score, args)
    first.paint_slice(0)
    first.fit(args.first_iterations)
    out = {"first": {"painted": 1, "waited_s": first.waited, "iou": first.scored()}}
    order = [len(train) // 2, len(train) - 1, len(train) // 4][: args.rounds - 1]
    for name, shape in SCHEDULES.items():
        user = copy.copy(first)
        user.paint, user.schedule = first.paint.copy(), shape
        steps = []
        for k in order:
            user.paint_slice(k)
            user.fit(args.round_iterations)
            steps.append({"painted": int((user.paint.reshape(len(train), -1).any(1)).sum()),
                          "waited_s": user.waited, "iou": user.scored()})
        out[name] = steps
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategy", choices=["scratch", "loop", "spread", "random", "rounds", "schedule", "all"],
                        default="all", help="loop: the most uncertain slice next; spread: the same, "
                        "discounted near painted slices (uncertainty.next_slices); rounds: the same "
                        "paint, continued rounds (the monotonic check); schedule: the continued "
                        "round's OneCycle shapes side by side")
    parser.add_argument("--z-nm", type=float, default=40.0, help="section thickness (VNC: 40 nm)")
    parser.add_argument("--split", choices=["forward", "reverse"], default="forward")
    parser.add_argument("--data", choices=["vnc", "synthetic"], default="vnc",
                        help="synthetic: a 20 x 384 x 384 anisotropic synthetic volume, its mitochondria")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--first-iterations", type=int, default=100)
    parser.add_argument("--round-iterations", type=int, default=50)
    parser.add_argument("--scratch-iterations", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds of 2 iterations")
    parser.add_argument("--rows", action="store_true", help="print RESULTS.md rows too")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.first_iterations, args.round_iterations, args.scratch_iterations = 2, 2, 2, 2
        args.batch, args.crop = 2, 64
    image, mito, train, score = _data(args.split, args.data)
    if args.quick:  # a corner of the slices: seconds, not minutes
        image, mito = image[:, :256, :256], mito[:, :256, :256]
    result = {"data": args.data, "split": args.split, "seed": args.seed}
    strategies = ["scratch", "loop", "spread", "random"] if args.strategy == "all" else [args.strategy]
    for name in strategies:
        if name == "scratch":
            result[name] = run_scratch(image, mito, train, score, args)
        elif name == "rounds":
            result[name] = run_rounds(image, mito, train, score, args)
        elif name == "schedule":
            result[name] = run_schedule(image, mito, train, score, args)
        else:
            result[name] = run_loop(image, mito, train, score, args, {"loop": "uncertainty"}.get(name, name))
    emit(result)
    if args.rows and not args.quick:
        where = ("VNC stack1 mito" if args.data == "vnc" else "synthetic 20x384x384 mito")
        for name in strategies:
            if name == "schedule":
                sched = result[name]
                steps = "; ".join(f"{k}: " + ", ".join(f"{c['painted']} slices IoU {c['iou']:.3f}" for c in v)
                                  for k, v in sched.items() if k != "first")
                print(row(f"loop: continued-round schedule, {where}, train {train[0]}-{train[-1]} score "
                          f"{score[0]}-{score[-1]}, CPU, batch {args.batch}, crop {args.crop}, seed {args.seed}; "
                          f"first round slice {train[0]}, {args.first_iterations} it (IoU {sched['first']['iou']:.3f}), "
                          f"then rounds of {args.round_iterations} it", steps))
                continue
            steps = "; ".join((f"{c['painted']} slices" if "painted" in c else f"{c['iterations']} it")
                              + (f" (+{c['slice']})" if "slice" in c else "")
                              + f": IoU {c['iou']:.3f} at {c['waited_s'] / 60:.1f} min" for c in result[name])
            print(row(f"loop: {name}, {where}, train {train[0]}-{train[-1]} score {score[0]}-{score[-1]}, "
                      f"CPU, batch {args.batch}, crop {args.crop}, seed {args.seed}", steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
