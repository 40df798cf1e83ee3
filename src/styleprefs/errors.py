"""The two kinds of error a user can meet; the CLI turns them into one line and an exit status."""


class StyleprefsError(Exception):
    """Something went wrong while working (exit status 1)."""

    exit_code = 1


class BadInput(StyleprefsError):
    """Bad usage or bad input: a missing file, an index out of range, an unusable image (exit status 2)."""

    exit_code = 2
