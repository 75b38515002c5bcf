"""Settings from the environment: a bad value names the variable and the fix."""

from __future__ import annotations

import pytest

from baton.config import ConfigError, Settings


def test_the_worker_cache_size_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().worker_cache == 1000
    monkeypatch.setenv("BATON_WORKER_CACHE", "250")
    assert Settings.from_env().worker_cache == 250


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_a_worker_cache_that_is_not_a_positive_number_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("BATON_WORKER_CACHE", value)
    with pytest.raises(ConfigError, match=f"BATON_WORKER_CACHE='{value}' is not a whole number"):
        Settings.from_env()
