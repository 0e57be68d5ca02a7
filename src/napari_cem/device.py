"""Pick the compute device: CUDA, then Apple MPS, then CPU, overridable by the user.

torch is imported inside the functions so that napari starts fast with the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


@dataclass(frozen=True)
class DeviceInfo:
    """What the UI and ``napari-cem info`` show about a device."""

    kind: str  # "cuda" | "mps" | "cpu"
    name: str  # e.g. "NVIDIA H100 80GB HBM3" or "CPU (2 threads)"
    memory_gib: float | None
    bf16: bool  # whether bf16 autocast is worth using there

    def __str__(self) -> str:
        mem = f", {self.memory_gib:.0f} GiB" if self.memory_gib else ""
        return f"{self.kind}: {self.name}{mem}"


def _mps_available(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(preference: str = "auto"):
    """Return a ``torch.device`` for *preference*, failing clearly if it is absent."""
    import torch

    preference = (preference or "auto").lower()
    if preference not in DEVICE_CHOICES and not preference.startswith("cuda:"):
        raise ValueError(f"Unknown device {preference!r}; choose one of {', '.join(DEVICE_CHOICES)}.")
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available(torch):
            return torch.device("mps")
        return torch.device("cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("A CUDA GPU was requested but none is available; use device 'auto' or 'cpu'.")
    if preference == "mps" and not _mps_available(torch):
        raise ValueError("Apple MPS was requested but is not available; use device 'auto' or 'cpu'.")
    return torch.device(preference)


def describe_device(device=None) -> DeviceInfo:
    """Human-readable facts about *device* (default: the automatic choice)."""
    import torch

    device = select_device("auto") if device is None else torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return DeviceInfo("cuda", props.name, props.total_memory / 2**30, torch.cuda.is_bf16_supported())
    if device.type == "mps":
        return DeviceInfo("mps", "Apple GPU (Metal)", None, False)
    return DeviceInfo("cpu", f"CPU ({torch.get_num_threads()} threads)", None, _cpu_has_bf16())


def _cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 / AMX), where autocast pays."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


PRECISIONS = ("float32", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    """The mixed-precision choice for one job on one device: "float32", "bf16" or "fp16"."""

    name: str

    @property
    def enabled(self) -> bool:
        return self.name != "float32"

    @property
    def dtype(self):
        import torch

        return {"float32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    def autocast(self, device_type: str):
        """``torch.autocast`` for this choice (a no-op context for float32)."""
        import torch

        return torch.autocast(device_type, dtype=self.dtype, enabled=self.enabled)


def autocast_policy(device, request="auto", purpose: str = "inference",
                    info: DeviceInfo | None = None) -> Precision:
    """The one rule for reduced precision, for every job (segment, preview, features, training).

    *request*: "auto"; "on"/True or "off"/False; or a precision by name ("float32", "bf16",
    "fp16"), kept as asked on CUDA and CPU. "auto" (and "on") mean:

    * CPU: bf16 when the CPU has native bf16 (AVX512-BF16 / AMX); elsewhere bf16 is
      emulated and slower than float32, so float32 ("on" asks for bf16 anyway).
    * CUDA, *purpose* "inference": fp16, which keeps 3 more mantissa bits than bf16 (on an
      H100 it matched float32 labels far better at the same speed; callers check a first
      batch against float32). *purpose* "training": bf16 where the GPU has it (no loss
      scaling needed), else fp16 (with a GradScaler).
    * Apple MPS and anything else: float32.
    """
    import torch

    if purpose not in ("inference", "training"):
        raise ValueError(f"Unknown purpose {purpose!r}; 'inference' or 'training'.")
    kind = torch.device(device).type
    text = {True: "on", False: "off"}.get(request, request)
    text = str(text or "auto").strip().lower()
    if text in ("off", "none", "float32", "fp32"):
        return Precision("float32")
    if text in ("bf16", "fp16"):
        return Precision(text if kind in ("cuda", "cpu") else "float32")
    if text not in ("auto", "on"):
        raise ValueError(f"Unknown precision {request!r}; choose auto, on, off, float32, bf16 or fp16.")
    if kind not in ("cuda", "cpu"):
        return Precision("float32")
    info = describe_device(device) if info is None else info
    if kind == "cpu":
        return Precision("bf16" if info.bf16 or text == "on" else "float32")
    if purpose == "inference":
        return Precision("fp16")
    return Precision("bf16" if info.bf16 else "fp16")


def available_memory() -> int | None:
    """Bytes of RAM this process can still use (free plus reclaimable), or None if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported: ask the OS
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
