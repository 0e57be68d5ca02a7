"""The labels file of an export folder: ``labels.csv`` (patch id, label, who, when).

One row per labelled patch; an unlabelled patch has no row. Every change rewrites the
file atomically (a temporary file beside it, then one rename), so a crash or a power cut
leaves either the old or the new file, never a half-written one. Reading is forgiving
anyway: a file damaged by another program (a truncated last line, a row with a label we do
not know) loses only the damaged rows, which are listed in ``LabelStore.problems``; stale
temporary files of an interrupted write are removed when the store is opened.

Patch id: the patch's file name in ``patches/`` without ``.tif`` (see
``napari_cem.export.patch_filename``), unique per source, plane, slice, y, x and size.
"""

from __future__ import annotations

import csv
import datetime as _dt
import getpass
import io
import os
from pathlib import Path

from .._atomic import remove_stale_temporaries, write_text_atomic
from .._names import check_patch_id

__all__ = ["INFORMATIVE", "LABELS", "LABELS_COLUMNS", "LABELS_FILE", "UNINFORMATIVE", "LabelStore"]

INFORMATIVE = "informative"
UNINFORMATIVE = "uninformative"
LABELS = (INFORMATIVE, UNINFORMATIVE)
LABELS_COLUMNS = ("patch_id", "label", "who", "when")
LABELS_FILE = "labels.csv"
_ALIASES = {"1": INFORMATIVE, "i": INFORMATIVE, "informative": INFORMATIVE, "true": INFORMATIVE,
            "0": UNINFORMATIVE, "u": UNINFORMATIVE, "uninformative": UNINFORMATIVE, "false": UNINFORMATIVE}


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):  # no user name in some containers
        return os.environ.get("USER", "unknown")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def normalise_label(value) -> str | None:
    """'informative' | 'uninformative' | None (unlabelled) from common spellings; else ValueError."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("", "none", "unlabelled", "unlabeled", "-"):
        return None
    if text not in _ALIASES:
        raise ValueError(f"unknown label {value!r}: use 'informative' or 'uninformative'")
    return _ALIASES[text]


class LabelStore:
    """The labels of one export folder (or any labels.csv path), saved on every change."""

    def __init__(self, path, who: str | None = None, autosave: bool = True):
        path = Path(path)
        self.path = path / LABELS_FILE if path.is_dir() else path
        self.who = who or _who()
        self.autosave = autosave
        self._rows: dict[str, tuple[str, str, str]] = {}  # patch id -> (label, who, when)
        self.problems: list[str] = []
        self.reload()

    # -- reading ------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the file again (a missing file is an empty store)."""
        self._rows = {}
        self.problems = []
        remove_stale_temporaries(self.path.parent, self.path.name)
        if not self.path.exists():
            return
        text = self.path.read_text(encoding="utf-8", errors="replace")
        complete = text.endswith("\n") or text == ""
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None:
            return
        if [h.strip() for h in header[:2]] != list(LABELS_COLUMNS[:2]):
            raise ValueError(f"{self.path} is not a napari-cem labels file (first line should be "
                             f"'{','.join(LABELS_COLUMNS)}', found '{','.join(header)}')")
        lines = list(reader)
        for n, row in enumerate(lines, start=2):
            last = n == len(lines) + 1
            if last and not complete:
                self.problems.append(f"line {n}: incomplete last line dropped ({','.join(row)!r})")
                continue
            if len(row) < 2 or not row[0].strip():
                self.problems.append(f"line {n}: not 'patch_id,label,...' ({','.join(row)!r})")
                continue
            try:
                check_patch_id(row[0].strip())
                label = normalise_label(row[1])
            except ValueError as exc:
                self.problems.append(f"line {n}: {exc}; ignored")
                continue
            if label is None:
                self._rows.pop(row[0].strip(), None)
                continue
            who = row[2] if len(row) > 2 else ""
            when = row[3] if len(row) > 3 else ""
            self._rows[row[0].strip()] = (label, who, when)

    # -- access -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, patch_id) -> bool:
        return str(patch_id) in self._rows

    def get(self, patch_id) -> str | None:
        row = self._rows.get(str(patch_id))
        return None if row is None else row[0]

    def items(self):
        """(patch id, label) pairs in the order they were first labelled."""
        return ((k, v[0]) for k, v in self._rows.items())

    def as_dict(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._rows.items()}

    def record(self, patch_id) -> dict | None:
        row = self._rows.get(str(patch_id))
        return None if row is None else {"patch_id": str(patch_id), "label": row[0], "who": row[1], "when": row[2]}

    def counts(self) -> dict[str, int]:
        out = {INFORMATIVE: 0, UNINFORMATIVE: 0}
        for label, _who_, _when in self._rows.values():
            out[label] += 1
        return out

    # -- changing -----------------------------------------------------------------------
    def set(self, patch_id, label) -> str | None:
        """Label *patch_id* (None or 'unlabelled' removes it); saved at once. Returns the label."""
        patch_id = check_patch_id(str(patch_id).strip())
        label = normalise_label(label)
        if label is None:
            self._rows.pop(patch_id, None)
        else:
            self._rows[patch_id] = (label, self.who, _now())
        if self.autosave:
            self.save()
        return label

    def set_many(self, labels: dict) -> None:
        """Several labels at once, saved in one write."""
        autosave, self.autosave = self.autosave, False
        try:
            for patch_id, label in labels.items():
                self.set(patch_id, label)
        finally:
            self.autosave = autosave
        if self.autosave:
            self.save()

    def cycle(self, patch_id) -> str | None:
        """unlabelled -> informative -> uninformative -> unlabelled (the mosaic's click)."""
        order = [None, INFORMATIVE, UNINFORMATIVE]
        current = self.get(patch_id)
        return self.set(patch_id, order[(order.index(current) + 1) % 3])

    def save(self) -> Path:
        """Write the whole file atomically."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(LABELS_COLUMNS)
        for patch_id, (label, who, when) in self._rows.items():
            writer.writerow((patch_id, label, who, when))
        write_text_atomic(self.path, buf.getvalue())
        return self.path
