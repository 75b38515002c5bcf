"""A scripted fake LLM HTTP server speaking the OpenAI and Anthropic wire formats.

Tests drive the real SDKs against it over TCP, so the SDKs' own parsing, error mapping,
retry and timeout logic run unmodified, and a client in another process (a Temporal worker
subprocess) can use it too: hand that process `openai_base_url` / `anthropic_base_url`.

    with ScriptedLLMServer() as server:
        server.script("gpt-x", Fault(429, headers={"retry-after": "2"}), Reply({"a": 1}))
        client = OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Api = Literal["openai", "anthropic"]

# The error `type` (and OpenAI `code`) each provider really sends for a status. The SDKs pick
# the exception class from the status alone, but callers may log or branch on these.
_OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Reply:
    """A well-formed success; a str `output` is sent verbatim so malformed JSON can be scripted."""

    output: dict[str, Any] | str
    input_tokens: int = 100
    output_tokens: int = 50
    logprobs: list[float] | None = None


@dataclass(frozen=True)
class Fault:
    """An error response in the provider's error-body shape, with extra response headers."""

    status: int
    message: str = "scripted fault"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delay:
    """Answer with `then` only after `seconds`, to push a client past its timeout."""

    seconds: float
    then: Reply | Fault


Step = Reply | Fault | Delay


@dataclass(frozen=True)
class RecordedRequest:
    api: Api
    model: str
    body: dict[str, Any]
    headers: dict[str, str]


class ScriptedLLMServer(ThreadingHTTPServer):
    """Answers each request with the next scripted step for the request's model (FIFO)."""

    daemon_threads = True

    def __init__(self) -> None:
        # Port 0: the OS picks a free port, so parallel test sessions never collide.
        super().__init__(("127.0.0.1", 0), _Handler)
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Step]] = {}
        self._requests: list[RecordedRequest] = []
        # Set on stop so a handler sleeping in a Delay does not outlive the server.
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        # The Anthropic SDK's paths already start with /v1.
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ScriptedLLMServer:
        if self._thread is None:
            # A short poll interval keeps stop() fast; the default 0.5s adds up across tests.
            self._thread = threading.Thread(
                target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def script(self, model: str, *steps: Step) -> None:
        """Queue steps for `model`; "*" is the fallback queue for models with nothing queued."""
        for step in steps:
            if not isinstance(step, Reply | Fault | Delay):
                raise TypeError(f"not a script step: {step!r}")
        with self._lock:
            self._scripts.setdefault(model, deque()).extend(steps)

    def pending(self, model: str | None = None) -> int:
        """Steps not yet consumed, for `model` or in total; lets a test assert all were used."""
        with self._lock:
            if model is not None:
                return len(self._scripts.get(model, ()))
            return sum(len(queue) for queue in self._scripts.values())

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.model == model]

    def count(self, model: str) -> int:
        return len(self.requests_for(model))

    def _record_and_pop(self, request: RecordedRequest) -> Step | None:
        # One critical section, so arrival order in `requests` matches the order steps are used.
        with self._lock:
            self._requests.append(request)
            for key in (request.model, "*"):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
            return None


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps the SDKs' pooled connections alive, as a real provider does.
    protocol_version = "HTTP/1.1"
    server: ScriptedLLMServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # per-request access lines would drown pytest's captured output

    def do_POST(self) -> None:
        api: Api
        if self.path.split("?")[0] == "/v1/chat/completions":
            api = "openai"
        elif self.path.split("?")[0] == "/v1/messages":
            api = "anthropic"
        else:
            self._send(404, _error_body("openai", 404, f"no route for POST {self.path}"))
            return
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send(400, _error_body(api, 400, "request body is not JSON"))
            return
        if not isinstance(body, dict):
            self._send(400, _error_body(api, 400, "request body is not a JSON object"))
            return
        model = str(body.get("model", ""))
        headers = {k.lower(): v for k, v in self.headers.items()}
        step = self.server._record_and_pop(RecordedRequest(api, model, body, headers))

        if isinstance(step, Delay):
            if self.server._stopping.wait(step.seconds):
                self.close_connection = True
                return
            step = step.then
        if step is None:
            # x-should-retry: false stops the SDKs' own retries, so a missing script fails at
            # once instead of after several backoff sleeps.
            message = f"no scripted response left for model {model}"
            self._send(500, _error_body(api, 500, message), {"x-should-retry": "false"})
        elif isinstance(step, Fault):
            self._send(step.status, _error_body(api, step.status, step.message), step.headers)
        elif api == "openai":
            self._send(200, _openai_completion(model, step))
        else:
            try:
                self._send(200, _anthropic_message(model, step, body))
            except ValueError as exc:
                self._send(500, _error_body(api, 500, str(exc)), {"x-should-retry": "false"})

    def _send(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            # OpenAI reads x-request-id, Anthropic request-id, into the errors' request_id.
            request_id = f"req_{uuid.uuid4().hex[:24]}"
            self.send_header("x-request-id", request_id)
            self.send_header("request-id", request_id)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. timed out during a Delay); nobody is left to answer.
            self.close_connection = True


def _error_body(api: Api, status: int, message: str) -> dict[str, Any]:
    if api == "openai":
        fallback = ("server_error" if status >= 500 else "invalid_request_error", None)
        error_type, code = _OPENAI_ERRORS.get(status, fallback)
        return {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    error_type = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": f"req_{uuid.uuid4().hex[:24]}",
    }


def _as_text(output: dict[str, Any] | str) -> str:
    return output if isinstance(output, str) else json.dumps(output)


def _openai_completion(model: str, reply: Reply) -> dict[str, Any]:
    logprobs = None
    if reply.logprobs is not None:
        tokens = [f"tok{i}" for i in range(len(reply.logprobs))]
        logprobs = {
            "content": [
                {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                for t, lp in zip(tokens, reply.logprobs, strict=True)
            ],
            "refusal": None,
        }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": _as_text(reply.output),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": logprobs,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fake_llm",
    }


def _anthropic_message(model: str, reply: Reply, request: dict[str, Any]) -> dict[str, Any]:
    tools = request.get("tools") or []
    content: dict[str, Any]
    if tools:
        if not isinstance(reply.output, dict):
            # A forced tool call always carries a JSON object, so a str cannot be faithful here.
            raise ValueError(f"Reply.output must be a dict for an Anthropic tool call ({model})")
        choice = request.get("tool_choice") or {}
        name = choice.get("name") if choice.get("type") == "tool" else tools[0].get("name")
        content = {
            "type": "tool_use",
            "id": f"toolu_{uuid.uuid4().hex[:24]}",
            "name": name,
            "input": reply.output,
        }
        stop_reason = "tool_use"
    else:
        content = {"type": "text", "text": _as_text(reply.output), "citations": None}
        stop_reason = "end_turn"
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [content],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard",
        },
    }
