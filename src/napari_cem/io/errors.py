"""The one exception the io layer raises on purpose.

Its message is written for the biologist at the microscope, not for a programmer: the
viewer and the CLI show it as is, without a traceback, so it has to say what is wrong
with the file and what to do about it.
"""

from __future__ import annotations


class VolumeError(ValueError):
    """A file or folder that cannot be turned into an EM volume, explained in plain words."""
