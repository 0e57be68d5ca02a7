"""Dock widget "Load EM volume": any EM file or folder, standardised to uint8, with its voxel size."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, PushButton, SpinBox

from ._common import ProgressRow, notify_error, notify_info, notify_warning, scroll_inside
from ._jobs import JobRunner, JobWidget

_FILE_FILTER = (
    "EM volumes (*.tif *.tiff *.mrc *.rec *.mrcs *.st *.ali *.map *.nii *.nii.gz *.zarr "
    "*.png *.jpg *.jpeg *.bmp *.avi *.mp4);;All files (*)"
)


class LoadVolumeWidget(JobWidget):
    """Open a file or folder through ``napari_cem.io.read_volume`` and add it as an Image layer."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer

        self.source_kind = ComboBox(label="Open", choices=["file", "folder of 2D images"], value="file")
        self.path = FileEdit(label="Path", mode="r", filter=_FILE_FILTER)
        self.mode = ComboBox(
            label="Standardise",
            choices=["percentile", "dtype-max", "none"],
            value="percentile",
            tooltip="percentile: clip to the low/high percentiles and stretch to 0-255 (best for "
            "16-bit, signed and float data). dtype-max: divide by the type's maximum, as the "
            "original CEM500K code did. none: keep the raw values.",
        )
        self.low = FloatSpinBox(label="Low percentile", value=0.5, min=0.0, max=50.0, step=0.1)
        self.high = FloatSpinBox(label="High percentile", value=99.5, min=50.0, max=100.0, step=0.1)
        self.invert = CheckBox(label="Invert contrast", value=False,
                               tooltip="For data with bright membranes (e.g. some public FIB-SEM sets).")
        self.override_voxel = CheckBox(label="Override voxel size", value=False)
        self.voxel_z = FloatSpinBox(label="z (nm)", value=1.0, min=0.01, max=1e6, step=0.25, visible=False)
        self.voxel_y = FloatSpinBox(label="y (nm)", value=1.0, min=0.01, max=1e6, step=0.25, visible=False)
        self.voxel_x = FloatSpinBox(label="x (nm)", value=1.0, min=0.01, max=1e6, step=0.25, visible=False)
        # -1 means "none" (magicgui's spin box cannot show a word for it, hence the label)
        self.timepoint = SpinBox(label="Time point (-1: none)", value=-1, min=-1, max=100000,
                                 tooltip="Only for files with a time axis: the one to load.")
        self.channel = SpinBox(label="Channel (-1: none)", value=-1, min=-1, max=1000,
                               tooltip="Only for files with a channel axis: the one to load.")
        self.level = SpinBox(label="Zarr level", value=0, min=0, max=20,
                             tooltip="Multiscale level of an OME-Zarr (0 = full resolution).")
        self.load_button = PushButton(text="Load")
        self.progress = ProgressRow()
        super().__init__(
            widgets=[
                self.source_kind, self.path, self.mode, self.low, self.high, self.invert,
                self.override_voxel, self.voxel_z, self.voxel_y, self.voxel_x,
                self.timepoint, self.channel, self.level, self.load_button, self.progress,
            ]
        )
        scroll_inside(self)
        self.source_kind.changed.connect(self._on_kind)
        self.mode.changed.connect(self._on_mode)
        self.override_voxel.changed.connect(self._on_override)
        self.load_button.changed.connect(lambda: self.load())
        self.jobs = JobRunner(self.progress, name="Loading",
                              on_running=lambda running: setattr(self.load_button, "enabled", not running))

    # -- UI state -------------------------------------------------------------------------
    def _on_kind(self, value: str) -> None:
        self.path.mode = "d" if value.startswith("folder") else "r"

    def _on_mode(self, value: str) -> None:
        self.low.enabled = self.high.enabled = value == "percentile"

    def _on_override(self, value: bool) -> None:
        for w in (self.voxel_z, self.voxel_y, self.voxel_x):
            w.visible = bool(value)

    def read_options(self) -> dict:
        """The keyword arguments for ``read_volume`` that the form describes."""
        return {
            "standardize_mode": self.mode.value,
            "percentiles": (float(self.low.value), float(self.high.value)),
            "invert": bool(self.invert.value),
            "voxel_size": (
                (float(self.voxel_z.value), float(self.voxel_y.value), float(self.voxel_x.value))
                if self.override_voxel.value
                else None
            ),
            "timepoint": None if self.timepoint.value < 0 else int(self.timepoint.value),
            "channel": None if self.channel.value < 0 else int(self.channel.value),
            "level": int(self.level.value),
        }

    # -- work -----------------------------------------------------------------------------
    def load(self, path: str | Path | None = None):
        """Start loading in a thread worker; returns the worker (tests wait on it)."""
        if path is None:
            text = str(self.path.line_edit.value).strip()
            if text in ("", "."):
                notify_error("Choose a file or folder to load first.")
                return None
            path = text
        path = Path(path)
        return self.jobs.start(_read_job, path, self.read_options(), message=f"Reading {path.name} ...",
                               on_result=self._on_loaded, on_error=_explain,
                               cancelled="Cancelled; nothing was added.",
                               abandon=True)  # a read cannot stop itself: its late result is dropped

    def _on_loaded(self, result) -> None:
        from napari.layers import Layer

        from .._reader import layer_data_from_volume

        data, meta = result
        layer = Layer.create(*layer_data_from_volume(data, meta))
        self.viewer.add_layer(layer)
        for message in meta.warnings:
            notify_warning(message)
        if meta.likely_inverted and not meta.inverted:
            notify_info(
                f"'{meta.source}' looks like it has inverted contrast (bright membranes). "
                "Tick 'Invert contrast' and load again if membranes should be dark."
            )
        size = " x ".join(str(s) for s in data.shape)
        vs = "unknown voxel size" if meta.voxel_size is None else (
            "voxel " + " x ".join(f"{v:g}" for v in meta.voxel_size) + " nm")
        self.progress.finish(f"Loaded {meta.source}: {size}, {vs}.")



def _explain(exc: BaseException) -> str:
    """A reading error in the widget's words (its option names, not the CLI's)."""
    from .._reader import WIDGET_OPTION_NAMES
    from ..io import VolumeError
    from ._jobs import describe_user_error

    if isinstance(exc, VolumeError):
        return exc.message(WIDGET_OPTION_NAMES)
    return f"Could not load the file: {describe_user_error(exc)}"


def _read_job(path: Path, options: dict, progress):
    """Runs in the worker thread: read and standardise, nothing touches the viewer here."""
    from ..io import read_volume

    progress(0, 0, f"reading and standardising {path.name}")
    return read_volume(path, **options)
