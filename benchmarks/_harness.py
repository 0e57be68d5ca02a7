"""Shared benchmark plumbing: run a case in a fresh process, time it, read its peak memory,
and format a RESULTS.md row with the machine and the date."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "RESULTS.md"
WORK_DIR = BENCH_DIR / "_work"  # git-ignored scratch space for generated inputs
# The real VNC ssTEM data: ../shared/data/vnc beside the project, or NAPARI_CEM_VNC (a copy
# carried to another machine).
VNC_DIR = Path(os.environ.get("NAPARI_CEM_VNC") or BENCH_DIR.parents[1] / "shared" / "data" / "vnc")


def machine() -> str:
    info = _cpuinfo()
    cpu = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    # what decides the CPU figures: native bf16 (AMX / AVX-512 BF16) or not
    if "amx_bf16" in flags:
        cpu += " (AMX bf16)"
    elif "avx512_bf16" in flags:
        cpu += " (AVX-512 bf16)"
    elif "avx2" in flags:
        cpu += " (AVX2, no bf16)"
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = 0
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", " + torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{os.cpu_count()} cores {cpu}, {mem:.0f} GiB RAM{gpu}"


def _cpuinfo() -> dict[str, str]:
    """The first CPU's fields of /proc/cpuinfo (empty off Linux)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(module: str, case: str, *args: str) -> dict:
    """Run ``python -m benchmarks.<module> --case CASE`` in a new process; it prints one JSON line."""
    cmd = [sys.executable, str(BENCH_DIR / f"{module}.py"), "--case", case, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def emit(result: dict) -> None:
    """Called by a case's process: print its result as one JSON line."""
    result.setdefault("peak_rss_mib", round(peak_rss_mib(), 1))
    print(json.dumps(result))


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def row(benchmark: str, figure: str) -> str:
    today = _dt.date.today().isoformat()
    return f"| {benchmark} | {figure} | {machine()} | {today} |"


def record(rows: list[str]) -> None:
    """Append rows to RESULTS.md under its table."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if not text.endswith("\n"):
        text += "\n"
    RESULTS.write_text(text + "\n".join(rows) + "\n")


def noted(figure: str, note: str = "") -> str:
    """A figure with the run's free-text note (machine load, data caveats) appended."""
    return figure + (f" ({note})" if note else "")


def publish(rows: list[str], write: bool) -> None:
    """Print the rows, and append them to RESULTS.md when *write* (``--rows``)."""
    print("\n".join(rows))
    if write:
        record(rows)


def bench_parser(doc: str):
    """An argument parser with the options every benchmark takes: --rows, --note."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", action="store_true", help="append the rows to RESULTS.md")
    p.add_argument("--note", default="", help="free text for the rows (machine load, data caveats)")
    return p


def vnc_missing() -> bool:
    """True (and says so) when the VNC data a benchmark needs are not there."""
    if (VNC_DIR / "stack1_image.tif").is_file():
        return False
    print(f"skipped: the VNC data are not in {VNC_DIR}")
    return True
