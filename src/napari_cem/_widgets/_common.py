"""Small pieces every dock widget shares: notifications and a progress row with Cancel."""

from __future__ import annotations

from magicgui.widgets import Container, Label, ProgressBar, PushButton


def text_label(value: str = "") -> Label:
    """A Label that wraps long messages (file paths, results) instead of widening the dock."""
    label = Label(value=value)
    label.native.setWordWrap(True)
    return label


def notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def notify_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


class ProgressRow(Container):
    """A determinate progress bar, a status line and a Cancel button."""

    def __init__(self):
        self.bar = ProgressBar(value=0, min=0, max=1, visible=False)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        super().__init__(widgets=[self.bar, self.cancel_button, self.status], labels=False)

    def start(self, total: int, message: str = "") -> None:
        self.bar.max = max(int(total), 1)
        self.bar.value = 0
        self.bar.visible = True
        self.cancel_button.enabled = True
        self.status.value = message

    def step(self, value: int, message: str | None = None) -> None:
        self.bar.value = min(int(value), self.bar.max)
        if message is not None:
            self.status.value = message

    def finish(self, message: str = "") -> None:
        self.bar.value = self.bar.max
        self.bar.visible = False
        self.cancel_button.enabled = False
        self.status.value = message
