"""Client mistakes the server answers with a 4xx status and ``{"error": "..."}``, like TF Serving."""

from __future__ import annotations


class ServingError(Exception):
    """A request the server refuses; ``status`` is the HTTP status, the message says what to fix."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0])


class BadRequest(ServingError):
    status = 400


class NotFound(ServingError):
    status = 404


class MethodNotAllowed(ServingError):
    status = 405

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class PayloadTooLarge(ServingError):
    status = 413
