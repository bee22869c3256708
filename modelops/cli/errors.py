"""Errors the command line prints as one line (problem and fix) instead of a traceback."""


class UserError(RuntimeError):
    """Something the user can fix: the message names the problem and the fix."""
