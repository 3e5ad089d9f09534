"""The exit codes scripts can rely on, and the one exception that carries them to ``main``.

Every failure ends as :class:`CommandError`: one line on stderr and its code, never a traceback.
"""

from __future__ import annotations

OK = 0
REFUSED = 1
"""The API refused the request (400, 409, 413, 422...): its ``error`` and ``field`` printed."""
USAGE = 2
"""A mistake on this side, nothing sent: a flag, a file, no API or a broken kubeconfig."""
FORBIDDEN = 3
"""401 or 403: no token, a token the API does not accept, or RBAC lacks the verb."""
NOT_FOUND = 4
"""404: no such Task, run or Executor."""
UNAVAILABLE = 5
"""The API could not be reached, timed out, failed TLS, or answered 5xx."""
TIMED_OUT = 6
"""What a command waited for did not come in time (``runs follow --count``, a 202 trigger)."""
INTERRUPTED = 130
"""Ctrl-C during a command other than ``runs follow`` (whose normal end it is)."""


class CommandError(Exception):
    """A command ends with ``code`` after printing ``message`` (one line) on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def usage(message: str) -> CommandError:
    return CommandError(USAGE, message)
