"""A lazy window onto a chunked store that reads only the pixels asked for.

Why not dask for this: computing even one value of a dask array walks every chunk key of
its graph (dask culls the graph by listing all keys), so a Zarr declared 100000^3 with
(1, 1024, 1024) chunks, ~10^9 chunks, takes hours before the first byte is read. The
few reads napari-cem needs to describe a lazy volume (a sample of chunks for the
percentiles, three central windows for the contrast guess) go through ``SourceView``
instead: indexing composes offsets and drops axes without reading, ``transpose`` reorders
axes, and ``np.asarray(view)`` reads exactly the view's box from the store (a zarr array
reads only the chunks it touches).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SourceView"]


class SourceView:
    """Basic indexing (ints and step-1 slices) and transposes over *array*, read on demand."""

    def __init__(self, array, box=None, order=None):
        self.array = array
        # one entry per axis of *array*: an int (axis dropped) or a (start, stop) range
        self.box = list(box) if box is not None else [(0, int(n)) for n in array.shape]
        kept = [i for i, b in enumerate(self.box) if not isinstance(b, int)]
        self.order = list(order) if order is not None else kept  # source axes, in view order
        self.dtype = np.dtype(array.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.box[i][1] - self.box[i][0] for i in self.order)

    @property
    def ndim(self) -> int:
        return len(self.order)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __getitem__(self, key) -> SourceView:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis or k is None for k in key) or len(key) > self.ndim:
            raise IndexError("SourceView takes ints and slices, at most one per axis")
        box, order = list(self.box), []
        for pos, src in enumerate(self.order):
            start, stop = self.box[src]
            k = key[pos] if pos < len(key) else slice(None)
            if isinstance(k, (int, np.integer)):
                i = int(k) + (stop - start if k < 0 else 0)
                if not 0 <= i < stop - start:
                    raise IndexError(f"index {int(k)} is out of range for an axis of {stop - start}")
                box[src] = start + i
                continue
            if not isinstance(k, slice) or k.step not in (None, 1):
                raise IndexError("SourceView takes ints and step-1 slices only")
            a, b, _ = k.indices(stop - start)
            box[src] = (start + a, start + max(a, b))
            order.append(src)
        return SourceView(self.array, box, order)

    def transpose(self, order) -> SourceView:
        order = [int(o) for o in order]
        if sorted(order) != list(range(self.ndim)):
            raise ValueError(f"{order} is not an axis order for {self.ndim} axes")
        return SourceView(self.array, self.box, [self.order[o] for o in order])

    def __array__(self, dtype=None, copy=None):
        index = tuple(b if isinstance(b, int) else slice(*b) for b in self.box)
        block = np.asarray(self.array[index])
        kept = [i for i, b in enumerate(self.box) if not isinstance(b, int)]  # block's axes
        block = np.transpose(block, [kept.index(src) for src in self.order])
        return block if dtype is None else block.astype(dtype, copy=False)
