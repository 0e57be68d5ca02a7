"""labels.csv: round trip, cycling, atomic saves, recovery after a crash mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from napari_cem.quality import INFORMATIVE, UNINFORMATIVE, LabelStore


def test_round_trip_with_who_and_when(tmp_path):
    store = LabelStore(tmp_path, who="alice")
    assert store.path == tmp_path / "labels.csv" and len(store) == 0
    store.set("p1", "informative")
    store.set("p2", "u")
    store.set("p3", UNINFORMATIVE)
    store.set("p3", None)  # unlabelled again: the row goes
    again = LabelStore(tmp_path)
    assert again.as_dict() == {"p1": INFORMATIVE, "p2": UNINFORMATIVE}
    rec = again.record("p1")
    assert rec["who"] == "alice" and rec["when"].startswith("20") and "T" in rec["when"]
    assert again.counts() == {INFORMATIVE: 1, UNINFORMATIVE: 1}
    assert (tmp_path / "labels.csv").read_text().splitlines()[0] == "patch_id,label,who,when"


def test_click_cycle_saves_every_step(tmp_path):
    store = LabelStore(tmp_path / "labels.csv")
    seen = []
    for _ in range(4):
        store.cycle("a")
        seen.append(LabelStore(tmp_path / "labels.csv").get("a"))
    assert seen == [INFORMATIVE, UNINFORMATIVE, None, INFORMATIVE]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    store = LabelStore(tmp_path)
    store.set_many({"a": "informative", "b": "uninformative"})
    before = store.path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk vanished")

    monkeypatch.setattr("napari_cem._atomic.os.replace", crash)
    with pytest.raises(OSError):
        store.set("c", "informative")
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels.csv"]
    assert LabelStore(tmp_path).as_dict() == {"a": INFORMATIVE, "b": UNINFORMATIVE}


def test_stale_temporary_and_truncated_line_are_recovered(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("patch_id,label,who,when\na,informative,x,t\nb,uninformative,x,t\nc,inform")
    (tmp_path / ".labels.csv.k2j3abcd.tmp").write_text("patch_id,label,who,when\na,unin")  # killed writer
    store = LabelStore(tmp_path)
    assert store.as_dict() == {"a": INFORMATIVE, "b": UNINFORMATIVE}
    assert len(store.problems) == 1 and "incomplete last line" in store.problems[0]
    assert not (tmp_path / ".labels.csv.k2j3abcd.tmp").exists()
    store.set("d", "informative")  # the next save writes a clean file
    assert path.read_text().endswith("\n") and LabelStore(tmp_path).problems == []


def test_killed_writer_never_leaves_a_damaged_file(tmp_path):
    """A process labelling as fast as it can is SIGKILLed; the file reads back cleanly."""
    script = textwrap.dedent(f"""
        from napari_cem.quality import LabelStore
        s = LabelStore({str(tmp_path)!r}, who="w")
        i = 0
        while True:
            s.set(f"p{{i % 500}}", "informative" if i % 3 else "uninformative")
            i += 1
            if i == 50:
                print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    store = LabelStore(tmp_path)
    assert store.problems == []
    assert len(store) >= 50
    assert set(store.as_dict().values()) == {INFORMATIVE, UNINFORMATIVE}


def test_bad_files_and_values(tmp_path):
    (tmp_path / "labels.csv").write_text("name,value\nx,1\n")
    with pytest.raises(ValueError, match="not a napari-cem labels file"):
        LabelStore(tmp_path)
    (tmp_path / "labels.csv").write_text("patch_id,label,who,when\na,maybe,x,t\nb,1,x,t\n")
    store = LabelStore(tmp_path)
    assert store.as_dict() == {"b": INFORMATIVE}
    assert "unknown label" in store.problems[0]
    with pytest.raises(ValueError, match="unknown label"):
        store.set("c", "perhaps")
    with pytest.raises(ValueError, match="not a napari-cem patch name"):
        store.set("a,b", "informative")
