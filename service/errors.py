"""Every error class of Vigil, in one hierarchy. Each carries its HTTP status; one handler in
the app (service/http/errors.py) turns any of them into ``{"error": "..."}``.

The model store's and the registry's errors are here too: each is a ``StoreError`` (so offline
tools can catch "anything the store refused") *and* the client-facing error it means, from which it
takes its status (``ModelNotFoundError`` is a ``ModelNotFound``: 404). ``model_store.errors``
re-exports them for the model store's modules."""

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


# -- the model store and the registry ---------------------------------------------------------
# StoreError sets no status or kind of its own: each subclass takes them from its second parent.


class StoreError(VigilError):
    """Base of every model-store and registry error."""


class ModelNotFoundError(StoreError, ModelNotFound):
    pass


class VersionNotFoundError(StoreError, VersionNotFound):
    pass


class IntegrityError(StoreError, Unavailable):
    """A model file does not match its manifest (sha256), or the manifest is unreadable."""


class ParityError(StoreError, InvalidInput):
    """The converted ONNX model does not agree with the original scikit-learn model."""


class RegistrationError(StoreError, Conflict):
    """A model cannot be registered as given (bad schema, bad file, bad arguments)."""


class StoreReadOnlyError(StoreError, Conflict):
    """The store cannot be written here (a read-only mount, as in the Kubernetes manifests)."""


class ModelNotReadyError(StoreError, ModelNotReady):
    """No version of the model could be loaded."""


class VersionLoadError(StoreError, Unavailable):
    """A version was refused at load (hash, onnxruntime, smoke prediction)."""


class VersionInUseError(StoreError, Conflict):
    """The version cannot be unloaded: it is served (aliased) or pinned."""


class RolloutNotFoundError(StoreError, NotFound):
    """No rollout is running for the model."""


class RolloutConflictError(StoreError, Conflict):
    """The change conflicts with the rollout state: one is already running, one is running and
    blocks a plain promote, or the state changed since the caller read it (stale revision)."""


class RolloutInvalidError(StoreError, InvalidInput):
    """A rollout parameter is out of range or inconsistent (percent, sample, gates, version)."""
