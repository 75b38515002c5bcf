"""Offline checks of docker-compose.yml.

No Docker engine is available in CI, so the stack is validated structurally:
against the vendored Compose Specification schema, and for the wiring between
services that Baton depends on at runtime.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# Vendored verbatim from compose-spec/compose-spec schema/compose-spec.json so
# the test needs no network access.
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"

TEMPORAL_SERVICE = "temporal"
TEMPORAL_FRONTEND_PORT = 7233

# Must stay in sync with the attributes Baton workflows upsert; an unregistered
# attribute makes the upsert fail at runtime.
BATON_SEARCH_ATTRIBUTES = {
    "BatonProcess": "Keyword",
    "BatonNode": "Keyword",
    "BatonStatus": "Keyword",
    "BatonPendingRoles": "KeywordList",
    "BatonGateDue": "Datetime",
    "BatonCostUsd": "Double",
    "BatonMinConfidence": "Double",
}

# ${NAME} or ${NAME:-default}, as Compose interpolates them.
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")
LOOPBACK = "127.0.0.1"

SEARCH_ATTRIBUTE_CREATE = re.compile(
    r"temporal operator search-attribute create"
    r"(?=[^\n]*--address\s+(?P<address>\S+))"
    r"(?=[^\n]*--name\s+(?P<name>\S+))"
    r"(?=[^\n]*--type\s+(?P<type>\S+))"
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # The schema declares draft-07 without the trailing "#", which automatic
    # dialect detection does not recognise, so pin the validator explicitly.
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose["services"]
    assert name in services, f"service {name!r} missing; have {sorted(services)}"
    service: dict[str, Any] = services[name]
    return service


def _environment(service: dict[str, Any]) -> dict[str, str]:
    # Compose accepts both the mapping and the KEY=VALUE list form.
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec["condition"] for name, spec in deps.items()}


def _container_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            # Short syntax: [[IP:]HOST:]CONTAINER[/PROTOCOL]
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def _interpolate(text: str, env: dict[str, str]) -> str:
    return INTERPOLATION.sub(lambda m: env.get(m["name"]) or m["default"] or "", text)


def _published(service: dict[str, Any], env: dict[str, str]) -> set[tuple[str, int, int]]:
    """(host IP, host port, container port) of each published port with
    ${...} taken from ``env``; an empty host IP means every interface, host
    port 0 one Docker picks."""
    published: set[tuple[str, int, int]] = set()
    for entry in service.get("ports", []):
        assert isinstance(entry, str), f"only the short port syntax is read here: {entry}"
        # Short syntax: [[IP:]HOST:]CONTAINER[/PROTOCOL]
        *host, target = _interpolate(entry, env).split("/")[0].rsplit(":", 2)
        host_ip, host_port = ["", "", *host][-2:]
        published.add((host_ip, int(host_port or 0), int(target)))
    return published


def _command_text(service: dict[str, Any]) -> str:
    command = service.get("command") or []
    return command if isinstance(command, str) else "\n".join(command)


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def test_vendored_schema_is_the_compose_specification() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))

    assert schema["title"] == "Compose Specification"
    assert {"service", "deployment", "healthcheck"} <= schema["definitions"].keys()


def test_compose_file_is_valid_against_compose_specification(
    compose: dict[str, Any], validator: Draft7Validator
) -> None:
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors
    )


@pytest.mark.parametrize(
    ("mutate", "expected_path"),
    [
        pytest.param(
            lambda c: c["services"]["worker"].__setitem__("ports", "abc"),
            ["services", "worker", "ports"],
            id="ports-not-a-list",
        ),
        pytest.param(
            lambda c: c.__setitem__("servics", {}),
            [],
            id="unknown-top-level-key",
        ),
        pytest.param(
            lambda c: c["services"]["worker"]["depends_on"]["temporal"].__setitem__(
                "condition", "service_ready"
            ),
            ["services", "worker", "depends_on"],
            id="unknown-depends-on-condition",
        ),
    ],
)
def test_schema_rejects_broken_compose_file(
    compose: dict[str, Any],
    validator: Draft7Validator,
    mutate: Callable[[dict[str, Any]], None],
    expected_path: list[str],
) -> None:
    broken = copy.deepcopy(compose)
    mutate(broken)

    error = best_match(validator.iter_errors(broken))

    assert error is not None, "schema accepted a deliberately broken compose file"
    assert list(error.absolute_path)[: len(expected_path)] == expected_path


def test_worker_reaches_temporal_by_service_name_and_frontend_port(compose: dict[str, Any]) -> None:
    worker_env = _environment(_service(compose, "worker"))

    host, port = _split_address(worker_env["TEMPORAL_ADDRESS"])

    assert host == TEMPORAL_SERVICE
    assert port == TEMPORAL_FRONTEND_PORT
    assert TEMPORAL_FRONTEND_PORT in _container_ports(_service(compose, TEMPORAL_SERVICE))


def test_worker_settings_match_baton_defaults(compose: dict[str, Any]) -> None:
    worker = _service(compose, "worker")
    env = _environment(worker)

    assert env["TEMPORAL_NAMESPACE"] == "default"
    assert env["BATON_TASK_QUEUE"] == "baton"
    assert env["BATON_DATA_DIR"] == "/data"
    assert env["BATON_UI_URL"] == "http://localhost:8233"


def test_worker_persists_data_dir_and_mounts_samples_read_only(compose: dict[str, Any]) -> None:
    worker = _service(compose, "worker")
    mounts = {m.split(":")[1]: m for m in worker["volumes"]}

    data_source = mounts["/data"].split(":")[0]
    assert data_source in compose["volumes"], "/data must be a named volume"
    assert mounts["/app/samples"] == "./samples:/app/samples:ro"


def test_worker_is_built_from_repo_dockerfile_and_runs_worker_entrypoint(
    compose: dict[str, Any],
) -> None:
    worker = _service(compose, "worker")

    assert (REPO_ROOT / worker["build"]["context"] / "Dockerfile").is_file()
    assert worker["command"] == ["python", "worker.py"]


def test_worker_replica_count_is_configurable(compose: dict[str, Any]) -> None:
    replicas = _service(compose, "worker")["deploy"]["replicas"]

    assert re.fullmatch(r"\$\{BATON_WORKERS(:-\d+)?\}", str(replicas))
    # Replicas share the host namespace; either of these would make scale-out fail.
    assert "container_name" not in _service(compose, "worker")
    assert not _service(compose, "worker").get("ports")


def test_worker_waits_for_temporal_and_search_attribute_registration(
    compose: dict[str, Any],
) -> None:
    deps = _depends_on(_service(compose, "worker"))

    assert TEMPORAL_SERVICE in deps
    assert deps["temporal-admin-tools"] == "service_completed_successfully"


def test_temporal_uses_postgresql_and_waits_for_it_to_be_healthy(compose: dict[str, Any]) -> None:
    temporal = _service(compose, TEMPORAL_SERVICE)
    env = _environment(temporal)

    assert _depends_on(temporal)["postgresql"] == "service_healthy"
    assert env["DB"] == "postgres12"
    assert env["DB_PORT"] == "5432"
    assert env["POSTGRES_SEEDS"] == "postgresql"
    assert env["POSTGRES_USER"] == "temporal"
    assert env["POSTGRES_PWD"] == "temporal"


def test_postgresql_credentials_match_temporal_and_data_is_persisted(
    compose: dict[str, Any],
) -> None:
    postgres = _service(compose, "postgresql")
    env = _environment(postgres)
    temporal_env = _environment(_service(compose, TEMPORAL_SERVICE))

    assert postgres["image"].startswith("postgres:")
    assert env["POSTGRES_USER"] == temporal_env["POSTGRES_USER"]
    assert env["POSTGRES_PASSWORD"] == temporal_env["POSTGRES_PWD"]
    assert any(
        v.split(":")[0] in compose["volumes"] and v.split(":")[1] == "/var/lib/postgresql/data"
        for v in postgres["volumes"]
    )


def test_postgresql_healthcheck_uses_pg_isready(compose: dict[str, Any]) -> None:
    # temporal's service_healthy dependency is meaningless without it.
    test = _service(compose, "postgresql")["healthcheck"]["test"]

    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))


def test_admin_tools_registers_every_baton_search_attribute(compose: dict[str, Any]) -> None:
    command = _command_text(_service(compose, "temporal-admin-tools"))

    registered = {m["name"]: m["type"] for m in SEARCH_ATTRIBUTE_CREATE.finditer(command)}

    assert registered == BATON_SEARCH_ATTRIBUTES


def test_admin_tools_registers_search_attributes_against_temporal(compose: dict[str, Any]) -> None:
    command = _command_text(_service(compose, "temporal-admin-tools"))

    addresses = {m["address"] for m in SEARCH_ATTRIBUTE_CREATE.finditer(command)}

    assert addresses == {f"{TEMPORAL_SERVICE}:{TEMPORAL_FRONTEND_PORT}"}


def test_admin_tools_tolerates_already_registered_attributes(compose: dict[str, Any]) -> None:
    # Without this, the second `docker compose up` fails and blocks the workers.
    command = _command_text(_service(compose, "temporal-admin-tools"))

    assert "already exists" in command
    for line in command.splitlines():
        if "search-attribute create" in line:
            assert line.strip().startswith("ok_if_exists "), line


def test_admin_tools_runs_once_after_temporal_starts(compose: dict[str, Any]) -> None:
    admin = _service(compose, "temporal-admin-tools")

    assert admin["image"].startswith("temporalio/admin-tools:")
    assert TEMPORAL_SERVICE in _depends_on(admin)
    assert admin.get("restart", "no") == "no"


def test_ui_points_at_temporal_and_is_published_on_8233(compose: dict[str, Any]) -> None:
    ui = _service(compose, "temporal-ui")
    host, port = _split_address(_environment(ui)["TEMPORAL_ADDRESS"])

    assert ui["image"].startswith("temporalio/ui:")
    assert (host, port) == (TEMPORAL_SERVICE, TEMPORAL_FRONTEND_PORT)
    assert _published(ui, {}) == {(LOOPBACK, 8233, 8080)}


def test_temporal_publishes_frontend_port_to_host(compose: dict[str, Any]) -> None:
    temporal = _service(compose, TEMPORAL_SERVICE)

    assert temporal["image"].startswith("temporalio/")
    assert _published(temporal, {}) == {(LOOPBACK, TEMPORAL_FRONTEND_PORT, TEMPORAL_FRONTEND_PORT)}


def test_every_published_port_is_on_loopback_unless_baton_bind_says_otherwise(
    compose: dict[str, Any],
) -> None:
    # Neither Temporal's frontend nor its UI asks who is calling in this stack.
    services = {name: s for name, s in compose["services"].items() if s.get("ports")}

    assert {TEMPORAL_SERVICE, "temporal-ui"} <= services.keys()
    for name, service in services.items():
        by_default = _published(service, {})
        opened = _published(service, {"BATON_BIND": "0.0.0.0"})
        assert {ip for ip, _, _ in by_default} == {LOOPBACK}, name
        assert {ip for ip, _, _ in opened} == {"0.0.0.0"}, name


def test_the_web_ui_cannot_signal_cancel_terminate_or_reset_runs(compose: dict[str, Any]) -> None:
    # Decisions go through the reviewer inbox, not around it from the Web UI.
    env = _environment(_service(compose, "temporal-ui"))

    assert env["TEMPORAL_DISABLE_WRITE_ACTIONS"] == "true"
