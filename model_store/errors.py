"""The model store's errors. They are defined with every other error of Vigil in
``service/errors.py`` (one hierarchy, one file); this module names the ones the store raises."""

from __future__ import annotations

from service.errors import (
    IntegrityError,
    ModelNotFoundError,
    ParityError,
    RegistrationError,
    RolloutConflictError,
    RolloutInvalidError,
    RolloutNotFoundError,
    StoreError,
    StoreReadOnlyError,
    VersionNotFoundError,
)

__all__ = [
    "IntegrityError",
    "ModelNotFoundError",
    "ParityError",
    "RegistrationError",
    "RolloutConflictError",
    "RolloutInvalidError",
    "RolloutNotFoundError",
    "StoreError",
    "StoreReadOnlyError",
    "VersionNotFoundError",
]
