"""Where Baton connects, and the run configuration it snapshots into each run.

Connection settings come from the environment (the same variables in a shell,
a container or CI). How to reach Temporal is read as Temporal's SDKs and the
`temporal` CLI read it (temporalio.envconfig): a profile of the TOML file at
TEMPORAL_CONFIG_FILE or the default path, overridden by TEMPORAL_* variables,
so one profile serves the CLI and Baton alike.

The run configuration (thresholds, provider, directory of users and roles)
comes from a TOML file and is copied into every run when it starts, so
editing the file never changes, or breaks the replay of, a run that is
already going.

Users live in their own file, which baton.toml names in `[directory] file`,
because that file also holds password hashes: a run copies each user's name
and roles from it, never the hash, since the copy is in Temporal history.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig

from baton.gates import Directory, User
from baton.routing import RoutingConfig
from baton.signing import ED25519_PREFIX, Passkey

CONFIG_ENV = "BATON_CONFIG"
ROUTING_ENV = "BATON_ROUTING"
DIRECTORY_ENV = "BATON_DIRECTORY"
DEFAULT_CONFIG_NAME = "baton.toml"
# User names go into update ids, URLs and TOML table headers: keep them plain.
USER_NAME = re.compile(r"[A-Za-z0-9_-]+")
CONFIG_HINT = f"run from the repository root, or set {CONFIG_ENV} to the path of a baton.toml"
DEFAULT_TEMPORAL_ADDRESS = "localhost:7233"
DEFAULT_TEMPORAL_NAMESPACE = "default"
# Files a profile's TLS settings may name: the ClientConfigTLS attribute, what
# it is, its variable and its key under [profile.<name>.tls].
TLS_FILES = (
    ("client_cert", "TLS client certificate", "TEMPORAL_TLS_CLIENT_CERT_PATH", "client_cert_path"),
    ("client_private_key", "TLS client key", "TEMPORAL_TLS_CLIENT_KEY_PATH", "client_key_path"),
    (
        "server_root_ca_cert",
        "server CA certificate",
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
        "server_ca_cert_path",
    ),
)


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and how to fix it."""


@dataclass(frozen=True)
class Settings:
    """How to reach Temporal and where local state lives."""

    address: str = DEFAULT_TEMPORAL_ADDRESS
    namespace: str = DEFAULT_TEMPORAL_NAMESPACE
    task_queue: str = "baton"
    data_dir: Path = field(default_factory=lambda: Path(".baton"))
    ui_url: str = "http://localhost:8233"
    # Runs a worker keeps in memory between their steps (Temporal's sticky
    # cache), about 0.25 MiB each; an evicted run is replayed from history
    # when it next has work.
    worker_cache: int = 1000
    # The rest of the profile's arguments for Client.connect (API key, TLS
    # with its files already read, gRPC metadata); address and namespace are
    # the fields above. Out of repr: it can hold an API key and a private key.
    temporal: ClientConnectConfig = field(default_factory=ClientConnectConfig, repr=False)

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        temporal = _temporal_connect_config(env)
        return cls(
            # An empty TEMPORAL_ADDRESS or TEMPORAL_NAMESPACE counts as unset
            # rather than naming an address nothing listens on.
            address=temporal.pop("target_host", "") or DEFAULT_TEMPORAL_ADDRESS,
            namespace=temporal.pop("namespace", "") or DEFAULT_TEMPORAL_NAMESPACE,
            temporal=temporal,
            task_queue=env.get("BATON_TASK_QUEUE", cls.task_queue),
            data_dir=Path(env.get("BATON_DATA_DIR", ".baton")),
            ui_url=env.get("BATON_UI_URL", cls.ui_url).rstrip("/"),
            worker_cache=_positive_int(env, "BATON_WORKER_CACHE", cls.worker_cache),
        )

    def run_url(self, workflow_id: str) -> str:
        return f"{self.ui_url}/namespaces/{self.namespace}/workflows/{workflow_id}"

    def client_connect_config(self) -> ClientConnectConfig:
        """The keyword arguments of Client.connect that say where and how to connect."""
        return {**self.temporal, "target_host": self.address, "namespace": self.namespace}


def _temporal_config_file(env: Mapping[str, str]) -> str:
    """The Temporal config file as a person would look for it, for messages."""
    explicit = env.get("TEMPORAL_CONFIG_FILE")
    if explicit:
        return explicit
    return "the default Temporal config file (~/.config/temporalio/temporal.toml on Linux)"


def _temporal_connect_config(env: Mapping[str, str]) -> ClientConnectConfig:
    """Client.connect's arguments from the envconfig profile and TEMPORAL_* variables."""
    explicit = env.get("TEMPORAL_CONFIG_FILE")
    # The SDK reads a missing file as an empty one, which would quietly
    # connect to localhost; a file someone named should be there.
    if explicit and not Path(explicit).is_file():
        raise ConfigError(
            f"TEMPORAL_CONFIG_FILE={explicit!r} is not a file: point it at a Temporal "
            "config TOML file, or unset it"
        )
    profile_name = env.get("TEMPORAL_PROFILE") or "default"
    try:
        # A copy: the SDK accepts a dict, not os.environ itself.
        profile = ClientConfigProfile.load(override_env_vars=dict(env))
    except RuntimeError as err:  # the SDK's ConfigError: not TOML, no such profile
        raise ConfigError(
            f"cannot load Temporal profile '{profile_name}' from {_temporal_config_file(env)}; "
            f"fix the file, or set TEMPORAL_PROFILE to a [profile.<name>] it has:\n"
            f"{str(err).strip()}"
        ) from None
    _check_tls_files(profile, profile_name, env)
    return profile.to_client_connect_config()


def _check_tls_files(
    profile: ClientConfigProfile, profile_name: str, env: Mapping[str, str]
) -> None:
    """A TLS file that cannot be read is named with the setting that names it
    (the SDK would raise a bare FileNotFoundError)."""
    if profile.tls is None:
        return
    for attr, what, variable, key in TLS_FILES:
        source = getattr(profile.tls, attr)
        if isinstance(source, Path) and not (source.is_file() and os.access(source, os.R_OK)):
            raise ConfigError(
                f"the {what} {source} is not a readable file: point {variable}, or {key} "
                f"under [profile.{profile_name}.tls] in {_temporal_config_file(env)}, at the "
                "PEM file"
            )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{name}={text!r} is not a whole number of at least 1")
    return int(text)


class ContinueAsNew(BaseModel):
    """When a run starts a fresh history (``[continue_as_new]`` in
    baton.toml): at this many history events or updates in the current one,
    or when the server suggests it, as soon as every running node is parked
    (waiting for a person, an event or a timer). Temporal refuses updates
    past 2,000 per history (refused decisions count) and warns past 10,240
    events, so both defaults stay well under."""

    model_config = ConfigDict(extra="forbid")

    after_events: int = Field(default=5_000, ge=20)
    after_updates: int = Field(default=500, ge=2, le=1_900)


class RunConfig(BaseModel):
    """The configuration one run steers by, frozen at its start."""

    source: str = "defaults"
    digest: str = ""
    thresholds: dict[str, float] = Field(default_factory=dict)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    directory: Directory = Field(default_factory=Directory)
    policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="The [policies.<name>] tables: a process's own rules (the AP approval "
        "matrix), checked by the loader the process's graph declares",
    )
    continue_as_new: ContinueAsNew = Field(default_factory=ContinueAsNew)

    def threshold(self, name: str, default: float) -> float:
        return self.thresholds.get(name, default)


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    return Path.cwd() / DEFAULT_CONFIG_NAME


def read_toml(path: Path, hint: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"no file at {path}: {hint}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None


def load_routing(path: Path) -> RoutingConfig:
    """Read a routing file and check that every provider a task may use has
    its API key in the environment: a missing key is a start-up error, not a
    failure in the middle of a run."""
    data = read_toml(path, f"set {ROUTING_ENV} or [llm] routing in baton.toml to a routing file")
    budget = data.get("budget", {}).get("per_run_usd")
    try:
        routing = RoutingConfig.model_validate(
            {
                "source": str(path.resolve()),
                "budget_usd_per_run": budget,
                **{k: data.get(k, {}) for k in ("providers", "tiers", "data_classes", "tasks")},
            }
        )
    except ValidationError as err:
        raise ConfigError(f"{path} has invalid routing: {err}") from None
    for name in sorted(routing.providers_in_use()):
        key_env = routing.providers[name].api_key_env
        if key_env and not os.environ.get(key_env):
            raise ConfigError(
                f"provider '{name}' in {path} needs an API key in the environment variable "
                f"{key_env}; export it, or remove '{name}' from the tiers your tasks use"
            )
    return routing


class DirectoryEntry(BaseModel):
    """One user as the directory file holds them."""

    # A misspelt key (`role = ...`) would otherwise silently drop a user's roles.
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    kind: Literal["person", "service"] = "person"
    roles: list[str] = Field(default_factory=list)
    password_hash: str | None = Field(
        default=None, description="argon2 hash; a user without one cannot sign in to the inbox"
    )
    keys: list[str] = Field(
        default_factory=list, description="Ed25519 public keys (ed25519:<base64>) to sign acts"
    )
    passkeys: list[Passkey] = Field(
        default_factory=list, description="WebAuthn credentials registered in the inbox"
    )

    @field_validator("keys")
    @classmethod
    def _ed25519_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            try:
                raw = base64.b64decode(key.removeprefix(ED25519_PREFIX), validate=True)
            except ValueError:
                raw = b""
            if not key.startswith(ED25519_PREFIX) or len(raw) != 32:
                raise ValueError(
                    f"'{key}' is not an Ed25519 public key: `baton keys new --as <user>` "
                    "prints one (ed25519:<base64 of 32 bytes>)"
                )
        return keys


class DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: dict[str, DirectoryEntry] = Field(default_factory=dict)


def directory_file(config: Path, data: dict[str, Any]) -> Path | None:
    """The directory file: BATON_DIRECTORY, else the one the baton.toml at
    ``config`` (already read into ``data``) names, relative to that
    baton.toml; None if it names none."""
    explicit = os.environ.get(DIRECTORY_ENV)
    if explicit:
        return Path(explicit)
    table = data.get("directory", {})
    if "users" in table:
        raise ConfigError(
            f"{config} lists users under [directory.users]; they now live in their own file: "
            "move them to directory.toml as [users.<name>] tables and set [directory] file = "
            '"directory.toml"'
        )
    name = table.get("file")
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise ConfigError(f'{config}: [directory] file must be a path like "directory.toml"')
    return config.parent / name


def directory_path(config: Path | None = None) -> Path:
    """The directory file of the baton.toml at ``config`` (default: BATON_CONFIG
    or ./baton.toml); an error when it names none."""
    config = config or config_path()
    found = directory_file(config, read_toml(config, CONFIG_HINT))
    if found is None:
        raise ConfigError(
            f'{config} names no directory of users: add [directory] file = "directory.toml"'
        )
    return found


def read_directory(path: Path) -> dict[str, DirectoryEntry]:
    """Every user of the directory file at ``path``, password hashes included:
    for the inbox's sign-in, never for a run's snapshot."""
    data = read_toml(
        path,
        "create it with one [users.<name>] table per user (name, roles), or point "
        "[directory] file in baton.toml at the right file",
    )
    return directory_users(data, path)


def directory_users(data: dict[str, Any], source: Path) -> dict[str, DirectoryEntry]:
    """The users of a directory file already read into ``data``."""
    try:
        users = DirectoryFile.model_validate(data).users
    except ValidationError as err:
        raise ConfigError(
            f"{source} is not a valid directory of users ([users.<name>] tables with name, "
            f"kind, roles, password_hash, keys and passkeys only): {err}"
        ) from None
    for name in users:
        if not USER_NAME.fullmatch(name):
            raise ConfigError(
                f"{source}: user name '{name}' may hold only letters, digits, '-' and '_'; "
                "rename its [users.<name>] table"
            )
    return users


def load_run_config(path: Path | None = None) -> RunConfig:
    return _read_run_config(path or config_path()).config


@dataclass(frozen=True)
class _ReadConfig:
    config: RunConfig
    files: tuple[Path, ...]
    stamps: tuple[tuple[int, int, int], ...]
    key_envs: tuple[str, ...]

    def still_current(self) -> bool:
        """Whether reading again would give the same: the files are as they were
        when read and the API keys the routing checked are still set."""
        return self.stamps == _stamps(self.files) and all(os.environ.get(k) for k in self.key_envs)


def _stamps(files: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...]:
    """Inode (an editor saving by rename), mtime and size of each file."""
    stamps = []
    for file in files:
        try:
            stat = file.stat()
        except FileNotFoundError:
            stamps.append((-1, -1, -1))
        else:
            stamps.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def _read_run_config(path: Path) -> _ReadConfig:
    data = read_toml(path, CONFIG_HINT)
    users_file = directory_file(path, data)
    users = read_directory(users_file) if users_file else {}
    routing_file = os.environ.get(ROUTING_ENV) or data.get("llm", {}).get("routing")
    routing_path = path.parent / routing_file if routing_file else None
    routing = load_routing(routing_path) if routing_path else RoutingConfig()
    try:
        config = RunConfig(
            source=str(path.resolve()),
            thresholds=data.get("thresholds", {}),
            policies=data.get("policies", {}),
            continue_as_new=data.get("continue_as_new", {}),
            routing=routing,
            # No password hashes: the snapshot is in Temporal history. Public
            # keys are public, and the run needs them to verify every act.
            directory=Directory(
                users={
                    key: User(
                        name=u.name, kind=u.kind, roles=u.roles, keys=u.keys, passkeys=u.passkeys
                    )
                    for key, u in users.items()
                }
            ),
        )
    except ValidationError as err:
        raise ConfigError(f"{path} has invalid settings: {err}") from None
    digest = hashlib.sha256(
        json.dumps(config.model_dump(exclude={"source"}), sort_keys=True).encode()
    ).hexdigest()
    files = tuple(f for f in (path, users_file, routing_path) if f is not None)
    return _ReadConfig(
        config=config.model_copy(update={"digest": digest}),
        files=files,
        # Taken after reading: a file edited while it was read is read again
        # next time only if edited again (mtime has nanoseconds; edits are rare).
        stamps=_stamps(files),
        key_envs=tuple(
            key
            for name in sorted(routing.providers_in_use())
            if (key := routing.providers[name].api_key_env)
        ),
    )


class RunConfigCache:
    """load_run_config for a worker, which snapshots the configuration at the
    start of every run: the files are read again only when one of them, or
    the routing file named in the environment, changed (parsing three TOML
    files per run was 3% of a worker's time under load)."""

    def __init__(self) -> None:
        self._read: dict[tuple[Path, str | None, str | None], _ReadConfig] = {}

    def load(self, path: Path | None = None) -> RunConfig:
        path = path or config_path()
        key = (path, os.environ.get(ROUTING_ENV), os.environ.get(DIRECTORY_ENV))
        read = self._read.get(key)
        if read is None or not read.still_current():
            read = self._read[key] = _read_run_config(path)
        return read.config
