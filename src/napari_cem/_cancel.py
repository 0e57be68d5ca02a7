"""The one exception every long core job raises when the user presses Stop, and the hooks
that let Stop interrupt a forward pass of a network."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager


class Cancelled(Exception):
    """The user stopped the job."""


def check_stop(should_stop: Callable[[], bool] | None) -> None:
    """Raise Cancelled when *should_stop* (a job's Stop flag, or None) says so."""
    if should_stop is not None and should_stop():
        raise Cancelled()


@contextmanager
def stoppable(model, should_stop: Callable[[], bool] | None, depth: int = 3):
    """While inside, every module of *model* down to *depth* names deep (down to the ResNet
    bottlenecks and U-Net decoder blocks) checks *should_stop* before it runs and raises Cancelled.

    One 1024 x 1024 slice (or one training batch) is a single forward of several seconds on
    a CPU: checking only between batches left Stop waiting that long. The hooks are removed
    on the way out, so a model saved or shown elsewhere never carries them.
    """
    if should_stop is None:
        yield
        return

    def check(_module, _inputs):
        if should_stop():
            raise Cancelled("stopped inside a forward pass")

    handles = [module.register_forward_pre_hook(check)
               for name, module in model.named_modules() if name and name.count(".") < depth]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
