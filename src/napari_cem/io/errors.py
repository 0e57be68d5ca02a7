"""The one exception the io layer raises on purpose.

Its message is written for the biologist at the microscope, not for a programmer: the
viewer and the CLI show it as is, without a traceback, so it has to say what is wrong
with the file and what to do about it. A message that asks for a choice (a channel, a
time point) writes the option as ``{channel}`` or ``{timepoint}``, so that each caller
can name its own: ``channel=`` in Python (the default), ``--channel``
on the command line, the *Channel* field in the widget (``VolumeError.message``).
"""

from __future__ import annotations

__all__ = ["OPTION_NAMES", "VolumeError"]

#: How the options are written in Python; callers pass their own spelling to ``message``.
OPTION_NAMES = {"channel": "channel=", "timepoint": "timepoint="}


class VolumeError(ValueError):
    """A file or folder that cannot be turned into an EM volume, explained in plain words."""

    def __init__(self, template: str):
        self.template = str(template)
        super().__init__(self.message())

    def message(self, names: dict[str, str] | None = None) -> str:
        """The message with ``{channel}`` / ``{timepoint}`` written as *names* spells them."""
        text = self.template
        for option, default in OPTION_NAMES.items():
            text = text.replace("{" + option + "}", (names or {}).get(option, default))
        return text

    def __str__(self) -> str:
        return self.message()
