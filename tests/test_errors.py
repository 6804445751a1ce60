"""One error hierarchy: every error Vigil raises to a client is a VigilError with its status."""

from __future__ import annotations

import inspect

import pytest

from model_store import errors as store_errors
from service import errors

STORE_STATUS = {
    errors.ModelNotFoundError: 404,
    errors.VersionNotFoundError: 404,
    errors.IntegrityError: 503,
    errors.ParityError: 422,
    errors.RegistrationError: 409,
    errors.StoreReadOnlyError: 409,
    errors.ModelNotReadyError: 503,
    errors.VersionLoadError: 503,
    errors.VersionInUseError: 409,
}


def test_every_error_class_lives_in_one_file_under_one_base() -> None:
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
    ]
    assert all(issubclass(c, errors.VigilError) for c in classes)
    for name in store_errors.__all__:
        assert getattr(store_errors, name) is getattr(errors, name)


@pytest.mark.parametrize(("cls", "status"), STORE_STATUS.items())
def test_store_errors_carry_the_status_their_meaning_has(
    cls: type[errors.VigilError], status: int
) -> None:
    err = cls("x")
    assert isinstance(err, errors.StoreError)
    assert err.status_code == status and err.kind != "internal" and err.message == "x"


def test_an_unknown_model_is_a_404_body_through_the_one_handler(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/v2/models/no-such-model")
    assert r.status_code == 404 and "no-such-model" in r.json()["error"]
