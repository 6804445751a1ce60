"""The one settings class: secrets are held as SecretStr and never printed."""

from __future__ import annotations

import pydantic
import pytest

from service.settings import Settings

SECRETS = {
    "admin_token": "admin-secret-0123456789",
    "pii_secret": "pii-secret-0123456789",
    "feedback_token": "feedback-secret-0123456789",
}


def test_secrets_do_not_appear_in_repr_str_or_dumps() -> None:
    settings = Settings(**SECRETS)  # type: ignore[arg-type]
    shown = [repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())]
    for text in shown:
        for secret in SECRETS.values():
            assert secret not in text
    assert settings.admin_token.get_secret_value() == SECRETS["admin_token"]


@pytest.mark.parametrize("name", ["VIGIL_ADMIN_TOKEN", "VIGIL_FEEDBACK_TOKEN"])
def test_production_refuses_short_tokens(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("VIGIL_ENVIRONMENT", "production")
    monkeypatch.setenv("VIGIL_TRAIN_DEMO_IF_EMPTY", "false")
    monkeypatch.setenv(name, "short")
    with pytest.raises(pydantic.ValidationError, match=f"{name} must be at least 16 characters"):
        Settings()
