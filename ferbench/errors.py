"""The one exception type the CLI turns into a single red line (exit code 1)."""


class FerbenchError(Exception):
    """A problem the user can fix: bad input, missing file, unknown name."""
