"""The one exception users see: a message naming the problem and the fix."""


class LmtuneError(Exception):
    """A problem with the user's input or environment; the CLI prints it without a traceback."""
