"""The one exception every long core job raises when the user presses Stop."""


class Cancelled(Exception):
    """The user stopped the job."""
