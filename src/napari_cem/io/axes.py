"""From whatever axes a file has to plain zyx (or yx).

EM files arrive as ImageJ hyperstacks (TZCYXS), OME (TCZYX), NIfTI (xyzt), videos
(frames x rows x cols x RGB) ... The pipeline only wants grey zyx, so here we pick the
time point and channel the user asked for, drop length-1 axes, and refuse, with a
message that says which index to choose, when a choice is needed and was not made.
A grey file whose only extra axis is a "channel" axis far longer than any real channel
count, with no z axis, is a z-stack saved without axis information (ImageJ does this):
it is read as zyx, with a note.
"""

from __future__ import annotations

from .errors import VolumeError

_KNOWN = "TCZYXS"
#: More "channels" than this, with no z axis, means the axis is really z.
MAX_CHANNELS = 8
_NAMES = {"T": "time", "C": "channel", "Z": "z", "Y": "y", "X": "x", "S": "colour"}


def describe_axes(axes: str, shape) -> str:
    """'time (5), channel (2), y (64), x (64)': axes in words for messages."""
    return ", ".join(f"{_NAMES.get(a, 'extra axis ' + a)} ({n})" for a, n in zip(axes, shape))


def select_axes(data, axes: str, *, channel=None, timepoint=None):
    """Return ``(data, axes, notes)`` with axes a subset of "ZYXS" in that order.

    Works on numpy, dask and ``SourceView`` alike (indexing and transposes only, nothing
    is read). ``notes`` are plain-language remarks on how the axes were read.
    """
    axes = axes.upper()
    if len(axes) != data.ndim:
        raise VolumeError(
            f"The file describes {len(axes)} axes ({axes}) but holds {data.ndim}-dimensional "
            "data; it may be damaged."
        )
    shape0 = tuple(data.shape)
    notes: list[str] = []

    if timepoint is not None:
        if "T" not in axes:
            raise VolumeError(
                f"{{timepoint}}{timepoint} was given, but this file has no time axis (it has "
                f"{describe_axes(axes, shape0)}). Leave it out."
            )
        data, axes = _take(data, axes, "T", timepoint, "timepoint", "time points")
    if channel is not None:
        if "C" in axes:
            data, axes = _take(data, axes, "C", channel, "channel", "channels")
        elif "S" in axes and data.shape[axes.index("S")] > 1:
            data, axes = _take(data, axes, "S", channel, "channel", "colour channels")
        else:
            raise VolumeError(
                f"{{channel}}{channel} was given, but this file has no channel axis (it has "
                f"{describe_axes(axes, shape0)}). Leave it out."
            )

    # Length-1 axes carry no choice; drop them (but keep rows and columns).
    keep = [i for i, (a, n) in enumerate(zip(axes, data.shape)) if n != 1 or a in "YX"]
    if len(keep) != len(axes):
        index = tuple(slice(None) if i in keep else 0 for i in range(len(axes)))
        data = data[index]
        axes = "".join(axes[i] for i in keep)

    if ("C" in axes and not set("TZS") & set(axes)
            and data.shape[axes.index("C")] > MAX_CHANNELS):
        n = data.shape[axes.index("C")]
        axes = axes.replace("C", "Z")
        notes.append(f"The file declares {n} channels and no z axis; that many are slices, so it "
                     f"was read as a z-stack of {n} slices (files saved without axis information "
                     "look like this). If they really are channels, choose one.")

    generic = [a for a in axes if a not in _KNOWN]
    if generic and "Z" not in axes:
        axes = axes.replace(generic[0], "Z", 1)
        generic = generic[1:]
    if generic:
        raise VolumeError(
            "This file has more dimensions than napari-cem can interpret "
            f"({describe_axes(axes, data.shape)}). Save the volume as a single z-stack "
            "(one channel, one time point) and open that."
        )

    need = []
    if "T" in axes:
        n = data.shape[axes.index("T")]
        need.append((f"a time axis of {n} points", f"{{timepoint}}T with T in 0-{n - 1}"))
    if "C" in axes:
        n = data.shape[axes.index("C")]
        need.append((f"a channel axis of {n}", f"{{channel}}C with C in 0-{n - 1}"))
    if need:
        raise VolumeError(
            "This file has " + " and ".join(w for w, _ in need)
            + "; choose " + " and ".join(c for _, c in need) + "."
        )
    if "Y" not in axes or "X" not in axes:
        raise VolumeError(
            f"This file does not hold an image (its data have {describe_axes(axes, data.shape)})."
        )
    order = [axes.index(a) for a in "ZYXS" if a in axes]
    if order != list(range(len(axes))):
        data = data.transpose(order)
        axes = "".join(axes[i] for i in order)
    return data, axes, notes


def _take(data, axes, letter, index, arg, noun):
    pos = axes.index(letter)
    n = data.shape[pos]
    try:
        index = int(index)
    except (TypeError, ValueError):
        raise VolumeError(f"{{{arg}}}{index!r} is not a whole number.") from None
    if not 0 <= index < n:
        raise VolumeError(
            f"{{{arg}}}{index} is out of range: this file has {n} {noun}, numbered 0-{n - 1}."
        )
    sl = tuple(index if i == pos else slice(None) for i in range(len(axes)))
    return data[sl], axes[:pos] + axes[pos + 1:]
