"""The job client presents the cluster token itself, from the environment (asva_platform.submit.auth_headers)."""

from __future__ import annotations

import pytest

from asva_platform.errors import UserError
from asva_platform.submit import auth_headers

TOKEN = "f" * 64


@pytest.fixture
def env(monkeypatch, tmp_path):
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token of the machine's
    return monkeypatch


def test_token_auth_sends_the_token_file(env, tmp_path):
    path = tmp_path / "auth_token"
    path.write_text(TOKEN + "\n")
    env.setenv("RAY_AUTH_MODE", "token")
    env.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert auth_headers() == {"Authorization": f"Bearer {TOKEN}"}
    env.setenv("RAY_AUTH_TOKEN", "e" * 64)  # the variable wins over the file, as in Ray
    assert auth_headers() == {"Authorization": f"Bearer {'e' * 64}"}


def test_without_token_auth_no_header(env):
    assert auth_headers() == {}
    env.setenv("RAY_AUTH_MODE", "disabled")
    assert auth_headers() == {}


def test_token_auth_without_a_token_names_the_file_not_a_secret(env, tmp_path):
    env.setenv("RAY_AUTH_MODE", "token")
    env.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="RAY_AUTH_TOKEN_PATH") as err:
        auth_headers()
    assert str(tmp_path / "missing") in str(err.value)
