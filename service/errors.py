"""Typed domain errors. Each carries its HTTP status; one handler in the app maps them."""

from __future__ import annotations


class VigilError(Exception):
    """Base of every error Vigil reports to a client."""

    status_code = 500
    kind = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(VigilError):
    status_code = 400
    kind = "bad_request"


class InvalidInput(VigilError):
    """Well-formed request whose content is not acceptable (schema, values)."""

    status_code = 422
    kind = "invalid_input"


class NotFound(VigilError):
    status_code = 404
    kind = "not_found"


class ModelNotFound(NotFound):
    kind = "model_not_found"


class VersionNotFound(NotFound):
    kind = "version_not_found"


class PayloadTooLarge(VigilError):
    status_code = 413
    kind = "payload_too_large"


class UnsupportedMediaType(VigilError):
    status_code = 415
    kind = "unsupported_media_type"


class Unauthorized(VigilError):
    status_code = 401
    kind = "unauthorized"


class Forbidden(VigilError):
    status_code = 403
    kind = "forbidden"


class Unavailable(VigilError):
    status_code = 503
    kind = "unavailable"


class ModelNotReady(Unavailable):
    kind = "model_not_ready"


class LogUnavailable(Unavailable):
    kind = "log_unavailable"


class Conflict(VigilError):
    status_code = 409
    kind = "conflict"


class LogStoreError(Unavailable):
    """The I/O log store cannot be opened; the message shows its URL with the password masked."""

    kind = "log_store"
