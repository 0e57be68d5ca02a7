"""The one job runner of the dock widgets: results, progress, records, Cancel, and the error
policy (a user error is one plain message; a bug shows its traceback; Cancel is no error)."""

from __future__ import annotations

import threading
import time

import pytest

from napari_cem._cancel import Cancelled
from napari_cem._widgets import _jobs
from napari_cem._widgets._common import ProgressRow
from napari_cem._widgets._jobs import JobRunner


@pytest.fixture()
def shown(monkeypatch, qapp):
    """What the runner shows: plain error messages and bug notifications (message, exception)."""
    seen = {"errors": [], "bugs": []}
    monkeypatch.setattr(_jobs, "notify_error", seen["errors"].append)
    monkeypatch.setattr(_jobs, "notify_bug", lambda message, exc: seen["bugs"].append((message, exc)))
    return seen


def _runner(**kwargs):
    row = ProgressRow()
    states = []
    runner = JobRunner(row, name="Testing", on_running=states.append, **kwargs)
    return runner, row, states


def _wait(qtbot, runner):
    qtbot.waitUntil(lambda: not runner.running, timeout=20_000)


def test_result_progress_and_records_reach_the_ui_thread(qtbot, shown):
    runner, row, states = _runner()
    main = threading.get_ident()
    seen = {"records": [], "threads": set(), "result": None}

    def work(n, progress, should_stop):
        for i in range(n):
            progress(i + 1, n, "counting")
            yield i * 10
        return "done"

    def on_record(record):
        seen["records"].append(record)
        seen["threads"].add(threading.get_ident())

    runner.start(work, 3, message="Starting ...", on_record=on_record,
                 on_result=lambda r: seen.update(result=r))
    assert states == [True] and row.cancel_button.enabled and row.status.value == "Starting ..."
    _wait(qtbot, runner)
    assert seen["records"] == [0, 10, 20] and seen["threads"] == {main}
    assert seen["result"] == "done" and states == [True, False]
    assert row.bar.max == 3 and row.status.value == "Counting: 3 / 3"  # the last count is never dropped
    assert not row.cancel_button.enabled and not shown["errors"] and not shown["bugs"]


def test_a_user_error_is_one_plain_message(qtbot, shown):
    from napari.utils.notifications import notification_manager

    runner, row, _states = _runner()
    before = len(notification_manager.records)

    def work():
        raise ValueError("The labels layer is empty.")

    runner.start(work)
    _wait(qtbot, runner)
    assert shown["errors"] == ["The labels layer is empty."] and not shown["bugs"]
    assert row.status.value == "Failed: The labels layer is empty."
    assert len(notification_manager.records) == before  # napari's own worker hook stayed silent


def test_an_os_error_names_the_file_without_errno_noise(qtbot, shown):
    runner, row, _states = _runner()

    def work():
        open("/nonexistent-folder/x.tif")  # noqa: SIM115

    runner.start(work)
    _wait(qtbot, runner)
    assert shown["errors"] == ["/nonexistent-folder/x.tif: No such file or directory"]


def test_a_bug_shows_its_traceback_behind_details(qtbot, monkeypatch, qapp):
    from napari.utils.notifications import ErrorNotification, notification_manager

    monkeypatch.setattr(_jobs, "notify_error", lambda m: pytest.fail(f"plain message for a bug: {m}"))
    runner, row, _states = _runner()
    before = len(notification_manager.records)

    def work():
        return {}["missing"]

    runner.start(work)
    _wait(qtbot, runner)
    new = notification_manager.records[before:]
    assert len(new) == 1 and isinstance(new[0], ErrorNotification)
    assert new[0].message == "Testing failed: KeyError: 'missing'"
    assert isinstance(new[0].exception, KeyError) and "work" in new[0].as_text()  # the traceback
    assert row.status.value == "Failed: Testing failed: KeyError: 'missing'"


def test_cancel_is_never_an_error(qtbot, shown):
    from napari.utils.notifications import notification_manager

    runner, row, states = _runner()
    before = len(notification_manager.records)
    results = []

    def work(should_stop):
        while not should_stop():
            time.sleep(0.01)
        raise Cancelled("stopped")

    runner.start(work, on_result=results.append, cancelled="Cancelled; nothing changed.",
                 stopping="Stopping ...")
    runner.cancel()
    qtbot.waitUntil(lambda: row.status.value in ("Stopping ...", "Cancelled; nothing changed."))
    _wait(qtbot, runner)
    assert row.status.value == "Cancelled; nothing changed." and states == [True, False]
    assert not results and not shown["errors"] and not shown["bugs"]
    assert len(notification_manager.records) == before
    runner.cancel()  # idle: nothing happens, the status stays
    assert row.status.value == "Cancelled; nothing changed."


def test_cancel_from_the_worker_thread_is_safe(qtbot, shown):
    runner, row, _states = _runner()

    def work(should_stop):
        runner.cancel()  # a core callback may ask to stop, from the worker thread
        while not should_stop():
            time.sleep(0.01)
        raise Cancelled()

    runner.start(work, cancelled="Stopped.")
    _wait(qtbot, runner)
    assert row.status.value == "Stopped." and not shown["errors"]


def test_an_abandoned_job_ends_at_once_and_its_late_result_is_dropped(qtbot, shown):
    runner, row, states = _runner()
    release = threading.Event()
    results = []
    worker = runner.start(lambda: release.wait(10) and "late", on_result=results.append,
                          cancelled="Cancelled; nothing was added.", abandon=True)
    runner.cancel()
    qtbot.waitUntil(lambda: not runner.running, timeout=2_000)  # does not wait for the work
    assert row.status.value == "Cancelled; nothing was added." and states == [True, False]
    ended = []
    worker.finished.connect(lambda: ended.append(True))
    release.set()
    qtbot.waitUntil(lambda: bool(ended), timeout=10_000)
    qtbot.wait(50)
    assert results == [] and row.status.value == "Cancelled; nothing was added."


def test_one_job_at_a_time_and_then_runs_whatever_the_outcome(qtbot, shown):
    runner, _row, _states = _runner()
    after = []
    gate = threading.Event()
    assert runner.start(lambda: gate.wait(10), then=lambda: after.append("then")) is not None
    assert runner.start(lambda: None) is None  # busy: refused, not queued
    gate.set()
    _wait(qtbot, runner)
    runner.start(lambda: 1 / 0, then=lambda: after.append("then"))
    _wait(qtbot, runner)
    assert after == ["then", "then"] and len(shown["bugs"]) == 1


def test_a_failing_result_handler_is_reported_and_the_widget_is_released(qtbot, shown):
    runner, _row, states = _runner()
    runner.start(lambda: 1, on_result=lambda _r: {}["x"])
    _wait(qtbot, runner)
    assert states == [True, False] and shown["bugs"][0][0].startswith("Testing failed: KeyError")


def test_on_error_words_a_user_error_in_the_widgets_terms(qtbot, shown):
    runner, row, _states = _runner()

    def work():
        raise ValueError("--batch is too large")

    runner.start(work, on_error=lambda exc: str(exc).replace("--batch", "Batch size"))
    _wait(qtbot, runner)
    assert shown["errors"] == ["Batch size is too large"]


def test_the_bar_is_never_busy(qapp):
    """A busy bar animates (30 repaints a second of a window holding an OpenGL canvas): an
    unknown total shows an empty bar and the moving count in the text instead."""
    row = ProgressRow()
    row.start(0, "Reading ...")
    assert row.bar.max >= 1 and row.bar.value == 0
    row.show(3, 0, "loading PyTorch, seconds")
    assert row.bar.max >= 1 and row.status.value == "Loading PyTorch, seconds: 3"
    row.show(0, 0, "reading the model file")
    assert row.status.value == "Reading the model file ..."
    row.show(2, 4, "xy slices")
    assert (row.bar.value, row.bar.max) == (2, 4) and row.status.value == "Xy slices: 2 / 4"
