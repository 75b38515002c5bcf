"""Settings from the environment: a bad value names the variable and the fix.

Temporal is reached as the envconfig profile (TEMPORAL_CONFIG_FILE,
TEMPORAL_PROFILE) and the TEMPORAL_* variables say, like the `temporal` CLI.
conftest's no_personal_temporal_profile starts each test with none of them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.service import TLSConfig

from baton.client import connect
from baton.config import ConfigError, Settings
from baton.server import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent
PROFILES = """
[profile.default]
address = "default.example:7233"

[profile.cloud]
address = "us-east-1.aws.api.temporal.io:7233"
namespace = "acme.a1b2c"
api_key = "key-from-file"
"""
# Nothing listens on port 1: a connection made through this fails.
UNREACHABLE = "127.0.0.1:1"


def _config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "temporal.toml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(path))
    return path


def _pem_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name in ("client.pem", "client.key", "ca.pem"):
        files[name] = tmp_path / name
        files[name].write_text(f"-----BEGIN {name}-----\n", encoding="utf-8")
    return files


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


def test_with_nothing_configured_baton_connects_in_plain_text_to_localhost() -> None:
    settings = Settings.from_env()

    assert settings.client_connect_config() == {
        "target_host": "localhost:7233",
        "namespace": "default",
    }


def test_temporal_profile_selects_a_profile_of_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config_file(tmp_path, monkeypatch, PROFILES)
    assert Settings.from_env().address == "default.example:7233"

    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    settings = Settings.from_env()

    assert settings.address == "us-east-1.aws.api.temporal.io:7233"
    assert settings.namespace == "acme.a1b2c"
    assert settings.run_url("run-1").endswith("/namespaces/acme.a1b2c/workflows/run-1")
    assert settings.client_connect_config() == {
        "target_host": "us-east-1.aws.api.temporal.io:7233",
        "namespace": "acme.a1b2c",
        "api_key": "key-from-file",
        "tls": True,
    }


def test_temporal_variables_override_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config_file(tmp_path, monkeypatch, PROFILES)
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "eu-west-1.aws.api.temporal.io:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "acme.eu")

    config = Settings.from_env().client_connect_config()

    assert config["target_host"] == "eu-west-1.aws.api.temporal.io:7233"
    assert config["namespace"] == "acme.eu"
    assert config.get("api_key") == "key-from-file"


def test_an_api_key_turns_tls_on_and_stays_out_of_the_settings_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEMPORAL_API_KEY", "secret-key")

    settings = Settings.from_env()

    assert settings.client_connect_config().get("tls") is True
    assert settings.client_connect_config().get("api_key") == "secret-key"
    assert "secret-key" not in repr(settings)


def test_client_certificate_variables_become_the_tls_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = _pem_files(tmp_path)
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(pem["client.pem"]))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(pem["client.key"]))
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(pem["ca.pem"]))
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "temporal.internal")

    tls = Settings.from_env().client_connect_config().get("tls")

    assert tls == TLSConfig(
        domain="temporal.internal",
        server_root_ca_cert=pem["ca.pem"].read_bytes(),
        client_cert=pem["client.pem"].read_bytes(),
        client_private_key=pem["client.key"].read_bytes(),
    )


def test_client_certificate_paths_of_a_profile_become_the_tls_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = _pem_files(tmp_path)
    _config_file(
        tmp_path,
        monkeypatch,
        f"""
[profile.mtls]
address = "temporal.internal:7233"
[profile.mtls.tls]
client_cert_path = "{pem["client.pem"]}"
client_key_path = "{pem["client.key"]}"
""",
    )
    monkeypatch.setenv("TEMPORAL_PROFILE", "mtls")

    tls = Settings.from_env().client_connect_config().get("tls")

    assert tls == TLSConfig(
        client_cert=pem["client.pem"].read_bytes(),
        client_private_key=pem["client.key"].read_bytes(),
    )


def test_a_missing_client_certificate_is_named_with_the_variable_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = _pem_files(tmp_path)
    missing = tmp_path / "gone.pem"
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(missing))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(pem["client.key"]))

    with pytest.raises(ConfigError) as raised:
        Settings.from_env()

    assert f"the TLS client certificate {missing} is not a readable file" in str(raised.value)
    assert "point TEMPORAL_TLS_CLIENT_CERT_PATH, or client_cert_path under" in str(raised.value)


def test_a_missing_key_file_of_a_profile_is_named_with_the_profile_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config_file(
        tmp_path,
        monkeypatch,
        f'[profile.mtls.tls]\nclient_key_path = "{tmp_path / "gone.key"}"\n',
    )
    monkeypatch.setenv("TEMPORAL_PROFILE", "mtls")

    with pytest.raises(ConfigError) as raised:
        Settings.from_env()

    assert f"the TLS client key {tmp_path / 'gone.key'} is not a readable file" in str(raised.value)
    assert f"client_key_path under [profile.mtls.tls] in {path}" in str(raised.value)


def test_a_config_file_that_is_not_toml_is_named_with_the_parse_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config_file(tmp_path, monkeypatch, "[profile.default\naddress = ")

    with pytest.raises(ConfigError) as raised:
        Settings.from_env()

    assert f"cannot load Temporal profile 'default' from {path}; fix the file" in str(raised.value)
    assert "TOML parse error at line 1" in str(raised.value)


def test_a_profile_the_file_does_not_have_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config_file(tmp_path, monkeypatch, PROFILES)
    monkeypatch.setenv("TEMPORAL_PROFILE", "staging")

    with pytest.raises(ConfigError, match=re.escape(f"profile 'staging' from {path}; fix the")):
        Settings.from_env()


def test_a_config_file_named_but_not_there_is_refused_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK alone would connect to localhost as if no file had been named.
    typo = tmp_path / "typo.toml"
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(typo))

    with pytest.raises(
        ConfigError, match=re.escape(f"TEMPORAL_CONFIG_FILE='{typo}' is not a file")
    ):
        Settings.from_env()


def test_the_cli_reports_a_broken_config_file_in_one_message(tmp_path: Path) -> None:
    path = tmp_path / "temporal.toml"
    path.write_text("[profile.default\n", encoding="utf-8")

    out = subprocess.run(
        [sys.executable, "-m", "baton.cli", "status", "some-run"],
        cwd=ROOT,
        env=dict(os.environ, TEMPORAL_CONFIG_FILE=str(path)),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert out.returncode == 2
    assert out.stderr.startswith(f"baton: cannot load Temporal profile 'default' from {path}")
    assert "Traceback" not in out.stderr


async def test_connect_reaches_the_server_temporal_address_names(
    dev_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_server.address)

    client = await connect()

    assert await client.service_client.check_health()
    assert client.namespace == "default"
    # Baton's payloads are pydantic models, and a started run is one trace.
    assert client.data_converter.payload_converter_class is PydanticPayloadConverter
    assert any(isinstance(i, TracingInterceptor) for i in client.config()["interceptors"])


async def test_connect_reaches_the_server_a_profile_names(
    dev_server: EmbeddedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config_file(
        tmp_path,
        monkeypatch,
        f"""
[profile.default]
address = "{UNREACHABLE}"

[profile.dev]
address = "{dev_server.address}"
namespace = "default"
""",
    )
    monkeypatch.setenv("TEMPORAL_PROFILE", "dev")

    client = await connect(Settings.from_env())

    assert await client.service_client.check_health()


async def test_an_api_key_makes_connect_speak_tls_which_a_plain_server_refuses(
    dev_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_server.address)
    monkeypatch.setenv("TEMPORAL_API_KEY", "secret-key")

    with pytest.raises(ConnectionError, match=f"cannot reach Temporal at {dev_server.address}"):
        await connect()
