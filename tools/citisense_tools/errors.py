"""Errors every subcommand may raise to stop with a plain-words message."""


class CommandError(Exception):
    """A failure to report to the user in plain words (no traceback), exit status 2."""
