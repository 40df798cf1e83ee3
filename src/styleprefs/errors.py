"""The two kinds of error a user can meet; the CLI turns them into one line and an exit status."""


class StyleprefsError(Exception):
    """Something went wrong while working (exit status 1)."""

    exit_code = 1


class BadInput(StyleprefsError):
    """Bad usage or bad input: a missing file, an index out of range, an unusable image (exit status 2).

    ``option`` names the argument at fault as the Python API names it (``"n"``, ``"stroke_scale"``): the message
    speaks of values, and the command line adds the flag the user typed."""

    exit_code = 2

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option
