"""The one job runner of the dock widgets.

Every long piece of work a widget starts (reading a volume, hashing, exporting, features,
training, segmenting, downloading) goes through :class:`JobRunner`: it runs the Qt-free
core in a napari thread worker, hands it ``progress(done, total, stage)`` and
``should_stop()`` when the core function takes them, carries progress and yielded records
to the UI thread through a Qt signal (no helper thread), and ends every run the same way:

* a result goes to the widget's ``on_result`` (on the UI thread);
* Cancel / Stop is never an error: the core raises ``Cancelled``, the runner shows the
  widget's "cancelled" line; nothing reaches napari's own worker error hook;
* a user error (bad input, a file that cannot be written, out of memory: the
  ``user_errors`` types) is one plain message, in the status line and a notification;
* anything else is a bug: "<job> failed: Type: message", with the traceback behind the
  notification's details button.

A widget only reads its inputs, calls :meth:`JobRunner.start` and shows the result.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

from magicgui.widgets import Container

from .._progress import Throttled
from ._common import notify_error

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, MemoryError)


class _Outcome:
    """What a worker's body returns: never raises, so napari never reports the job itself."""

    def __init__(self, value: Any = None, error: BaseException | None = None,
                 cancelled: bool = False):
        self.value, self.error, self.cancelled = value, error, cancelled


def _accepts(fn, name: str) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _drain(generator, emit_record):
    """Run a generator to its end, sending each yielded record to the UI; its return value."""
    while True:
        try:
            record = next(generator)
        except StopIteration as stop:
            return stop.value
        emit_record(record)


def describe_user_error(exc: BaseException) -> str:
    """The message a user sees for an expected failure."""
    from .._outputs import describe_os_error

    if isinstance(exc, MemoryError):
        return "Not enough memory for this job: close other programs, or use a smaller input."
    if isinstance(exc, OSError) and (exc.errno or exc.filename):
        return describe_os_error(exc)
    return str(exc) or type(exc).__name__


def notify_bug(message: str, exc: BaseException) -> None:
    """An error notification whose details button shows the traceback of *exc*."""
    from napari.utils.notifications import ErrorNotification, notification_manager

    note = ErrorNotification(exc)
    note.message = message
    notification_manager.dispatch(note)


class _Run:
    """One started job: its worker, stop flag and how to show its end."""

    def __init__(self, options: dict):
        self.options = options
        self.stop = threading.Event()
        self.outcome: _Outcome | None = None
        self.worker = None


class JobRunner:
    """Runs one job at a time for a widget and shows it in the widget's progress row.

    *progress*: the widget's :class:`~._common.ProgressRow` (None for quick background jobs
    such as a regroup or a preview: errors are still reported). *on_running(bool)*: enable or
    disable the widget's buttons. *name*: the job, for the message of an unexpected error.
    """

    def __init__(self, progress=None, *, name: str = "The job",
                 on_running: Callable[[bool], None] | None = None,
                 user_errors: tuple[type[BaseException], ...] = USER_ERRORS):
        from qtpy.QtCore import QObject, Signal

        class _Relay(QObject):  # lives on the UI thread: emits from workers arrive there
            carried = Signal(object, str, object)

        self.progress = progress
        self.name = name
        self.on_running = on_running
        self.user_errors = user_errors
        self._run: _Run | None = None
        self._relay = _Relay()
        self._relay.carried.connect(self._on_carried)
        if progress is not None:
            progress.cancel_button.changed.connect(lambda _v=None: self.cancel())

    # -- state --------------------------------------------------------------------------
    @property
    def worker(self):
        """The worker of the running job, or None when idle (tests wait for None)."""
        return None if self._run is None else self._run.worker

    @property
    def running(self) -> bool:
        return self._run is not None

    def should_stop(self) -> bool:
        """True once Cancel / Stop was pressed for the running job."""
        return self._run is not None and self._run.stop.is_set()

    # -- start ----------------------------------------------------------------------------
    def start(self, work: Callable, *args, message: str = "", total: int = 0,
              on_result: Callable[[Any], None] | None = None,
              on_record: Callable[[Any], None] | None = None,
              on_progress: Callable[[int, int, str], None] | None = None,
              on_error: Callable[[BaseException], str | None] | None = None,
              then: Callable[[], None] | None = None,
              cancelled: str = "Cancelled; nothing changed.",
              stopping: str = "Cancelling ...",
              abandon: bool = False, **kwargs):
        """Run ``work(*args, **kwargs)`` in a thread worker; returns the worker, or None when a
        job of this runner is still running.

        ``progress=`` and ``should_stop=`` are passed to *work* when it takes them. A generator
        *work* is run to its end; each yielded record goes to *on_record*, its return value to
        *on_result*. *on_error(exc)* may give a user error's message in the widget's words
        (its own names for options; None keeps the plain one). *then()* runs after the job
        ended, whatever the outcome.
        *abandon*: Cancel ends the run at once and drops its late result (for work that
        cannot stop itself, such as reading a file).
        """
        from napari.qt.threading import create_worker

        if self._run is not None:
            return None
        run = _Run({"on_result": on_result, "on_record": on_record, "on_progress": on_progress,
                    "on_error": on_error, "then": then, "cancelled": cancelled,
                    "stopping": stopping, "abandon": abandon})
        relay = self._relay.carried
        if _accepts(work, "progress"):
            kwargs["progress"] = Throttled(lambda d, t, s: relay.emit(run, "progress", (d, t, s)))
        if _accepts(work, "should_stop"):
            kwargs["should_stop"] = run.stop.is_set

        def body():
            from .._cancel import Cancelled

            try:
                value = work(*args, **kwargs)
                if inspect.isgenerator(value):
                    value = _drain(value, lambda record: relay.emit(run, "record", record))
                return _Outcome(value)
            except Cancelled:
                return _Outcome(cancelled=True)
            except Exception as exc:  # noqa: BLE001 - shown by _finish on the UI thread
                return _Outcome(error=exc)

        self._run = run
        if self.on_running is not None:
            self.on_running(True)
        if self.progress is not None:
            self.progress.start(total, message)
        run.worker = create_worker(body, _progress=False, _start_thread=False)
        run.worker.returned.connect(lambda outcome: setattr(run, "outcome", outcome))
        run.worker.finished.connect(lambda: self._finish(run))
        run.worker.start()
        return run.worker

    # -- stop -----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the running job to stop (it ends at its next check); nothing when idle.
        Safe from any thread: what it shows is drawn on the UI thread."""
        run = self._run
        if run is None or run.stop.is_set():
            return
        run.stop.set()
        self._relay.carried.emit(run, "stopping", None)

    # -- on the UI thread -----------------------------------------------------------------
    def _on_carried(self, run: _Run, kind: str, payload) -> None:
        if run is not self._run:
            return  # a late message of an abandoned run
        if kind == "record":
            if run.options["on_record"] is not None:
                run.options["on_record"](payload)
            return
        if kind == "stopping":
            if run.options["abandon"]:
                run.worker.quit()
                self._end(run, run.options["cancelled"])
            elif self.progress is not None:
                self.progress.status.value = run.options["stopping"]
            return
        if run.options["on_progress"] is not None:
            run.options["on_progress"](*payload)
        elif self.progress is not None:
            self.progress.show(*payload)

    def _finish(self, run: _Run) -> None:
        if run is not self._run:
            return  # abandoned: already ended
        outcome = run.outcome or _Outcome(cancelled=True)
        status = ""
        try:
            if outcome.cancelled:
                status = run.options["cancelled"]
            elif outcome.error is not None:
                status = "Failed: " + self._report(run, outcome.error)
            elif run.options["on_result"] is not None:
                status = None  # the widget's result handler writes the status line
                run.options["on_result"](outcome.value)
        except Exception as exc:  # noqa: BLE001 - showing the result failed: same policy
            status = "Failed: " + self._report(run, exc)
        finally:
            self._end(run, status)

    def _end(self, run: _Run, status: str | None) -> None:
        self._run = None
        if self.progress is not None:
            if status is not None:
                self.progress.finish(status)
            else:
                self.progress.idle()
        if self.on_running is not None:
            self.on_running(False)
        if run.options["then"] is not None:
            run.options["then"]()

    def _report(self, run: _Run, exc: BaseException) -> str:
        if isinstance(exc, self.user_errors):
            explain = run.options["on_error"]
            message = (explain(exc) if explain is not None else None) or describe_user_error(exc)
            notify_error(message)
            return message
        message = f"{self.name} failed: {type(exc).__name__}: {exc}"
        notify_bug(message, exc)
        return message


class JobWidget(Container):
    """A dock widget whose long work runs through ``self.jobs`` (a :class:`JobRunner`)."""

    jobs: JobRunner

    @property
    def _worker(self):
        """The worker of the running job, or None when idle."""
        return self.jobs.worker

    def cancel(self) -> None:
        """Cancel / Stop the running job (the button does the same)."""
        self.jobs.cancel()
