"""Errors of the model store; the service maps them to HTTP statuses in one place."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every model-store error."""


class ModelNotFoundError(StoreError):
    pass


class VersionNotFoundError(StoreError):
    pass


class IntegrityError(StoreError):
    """A model file does not match its manifest (sha256), or the manifest is unreadable."""


class ParityError(StoreError):
    """The converted ONNX model does not agree with the original scikit-learn model."""


class RegistrationError(StoreError):
    """A model cannot be registered as given (bad schema, bad file, bad arguments)."""


class StoreReadOnlyError(StoreError):
    """The store cannot be written here (a read-only mount, as in the Kubernetes manifests)."""


class RolloutNotFoundError(StoreError):
    """No rollout is running for the model."""


class RolloutConflictError(StoreError):
    """The change conflicts with the rollout state: one is already running, one is running and
    blocks a plain promote, or the state changed since the caller read it (stale revision)."""


class RolloutInvalidError(StoreError):
    """A rollout parameter is out of range or inconsistent (percent, sample, gates, version)."""
