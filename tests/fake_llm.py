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
    """A well-formed success; a str `output` is sent verbatim so malformed JSON can be scripted.

    `logprobs` gives one log-probability per token, the reply's text cut into that many
    pieces; `tokens` names the pieces themselves, which must join to the text.
    `finish_reason` replaces the usual one ("stop", or Anthropic's "tool_use"/"end_turn"),
    e.g. "length" or "max_tokens" for a reply cut at the token limit.
    `pace` is the seconds between the chunks of a streamed OpenAI reply: a reply slower
    than a client's whole-reply timeout whose every read is quick."""

    output: dict[str, Any] | str
    input_tokens: int = 100
    output_tokens: int = 50
    logprobs: list[float] | None = None
    tokens: list[tuple[str, float]] | None = None
    finish_reason: str | None = None
    pace: float = 0.0


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


@dataclass(frozen=True)
class ToolCalls:
    """A model turn that calls tools: (name, arguments) each, a str `arguments`
    sent verbatim so malformed JSON can be scripted. OpenAI gets `tool_calls`
    (finish_reason "tool_calls"), Anthropic `tool_use` blocks. Streamed, a
    call comes in fragments as OpenAI sends them, and `pace` is as a Reply's."""

    calls: list[tuple[str, dict[str, Any] | str]]
    text: str = ""
    input_tokens: int = 100
    output_tokens: int = 50
    pace: float = 0.0


@dataclass(frozen=True)
class BrokenStream:
    """A streamed OpenAI reply that begins with `reply`'s first `after` chunks, then
    fails with an error event, as a server that fails while it answers sends it."""

    reply: Reply
    message: str = "the model server failed while answering"
    after: int = 2


Step = Reply | Fault | Delay | ToolCalls | BrokenStream
# Characters per chunk of streamed text that names no tokens, and of streamed arguments.
_PIECE = 16


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
        self._in_flight = 0
        self.max_in_flight = 0
        # Streamed replies whose client went before the last chunk, as a server sees a
        # stop or timeout: llama.cpp ends the generation then.
        self.streams_cut = 0
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
            if not isinstance(step, Reply | Fault | Delay | ToolCalls | BrokenStream):
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
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
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
        try:
            self._answer(api, model, body, step)
        finally:
            with self.server._lock:
                self.server._in_flight -= 1

    def _answer(self, api: Api, model: str, body: dict[str, Any], step: Step | None) -> None:
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
        elif isinstance(step, BrokenStream):
            begun = _openai_chunks(model, step.reply, include_usage=False)[: step.after]
            error = {"error": {"message": step.message, "type": "server_error", "code": None}}
            self._send_events([*begun, error], 0.0)
        elif api == "openai" and body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._send_events(_openai_chunks(model, step, include_usage=include_usage), step.pace)
        elif isinstance(step, ToolCalls):
            self._send(200, _tool_calls(api, model, step))
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

    def _send_events(self, chunks: list[dict[str, Any]], pace: float) -> None:
        """Server-sent events, one chunk per event and each in an HTTP chunk of its own,
        sent as they are made, then OpenAI's `[DONE]`."""
        events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
        try:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
            self.end_headers()
            for i, event in enumerate(events):
                if i and pace and self.server._stopping.wait(pace):
                    self.close_connection = True
                    return
                self.wfile.write(b"%x\r\n%b\r\n" % (len(event), event))
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            with self.server._lock:
                self.server.streams_cut += 1


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


def _tokens(reply: Reply) -> list[tuple[str, float]] | None:
    text = _as_text(reply.output)
    if reply.tokens is not None:
        if "".join(t for t, _ in reply.tokens) != text:
            raise ValueError("Reply.tokens must join to the reply's text")
        return reply.tokens
    if reply.logprobs is None:
        return None
    n = len(reply.logprobs)
    cuts = [len(text) * i // n for i in range(n + 1)]
    return [(text[cuts[i] : cuts[i + 1]], lp) for i, lp in enumerate(reply.logprobs)]


def _openai_completion(model: str, reply: Reply) -> dict[str, Any]:
    logprobs = None
    tokens = _tokens(reply)
    if tokens is not None:
        logprobs = {
            "content": [
                {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                for t, lp in tokens
            ],
            "refusal": None,
        }
    message = {
        "role": "assistant",
        "content": _as_text(reply.output),
        "refusal": None,
        "annotations": [],
    }
    return _chat_completion(
        model,
        message,
        logprobs=logprobs,
        finish_reason=reply.finish_reason or "stop",
        usage=(reply.input_tokens, reply.output_tokens),
    )


def _chat_completion(
    model: str,
    message: dict[str, Any],
    *,
    logprobs: dict[str, Any] | None,
    finish_reason: str,
    usage: tuple[int, int],
) -> dict[str, Any]:
    """A whole `chat.completion` carrying ``message``, as OpenAI sends one."""
    prompt, completion = usage
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fake_llm",
    }


def _openai_chunks(
    model: str, step: Reply | ToolCalls, *, include_usage: bool
) -> list[dict[str, Any]]:
    """The reply as `chat.completion.chunk`s: its deltas, the finish reason, and the
    usage in a last chunk without choices when the request asked for it."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_fake_llm",
    }
    if include_usage:
        base["usage"] = None
    if isinstance(step, ToolCalls):
        deltas, finish = _tool_call_deltas(step), "tool_calls"
    else:
        deltas, finish = _reply_deltas(step), step.finish_reason or "stop"
    deltas.append(({}, None))
    chunks = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": logprobs,
                    "finish_reason": finish if i == len(deltas) - 1 else None,
                }
            ],
        }
        for i, (delta, logprobs) in enumerate(deltas)
    ]
    if include_usage:
        usage = {
            "prompt_tokens": step.input_tokens,
            "completion_tokens": step.output_tokens,
            "total_tokens": step.input_tokens + step.output_tokens,
        }
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks


_Delta = tuple[dict[str, Any], dict[str, Any] | None]


def _reply_deltas(reply: Reply) -> list[_Delta]:
    """The role, then the text a token a delta (or in pieces without tokens) with each
    token's log-probability."""
    role: _Delta = ({"role": "assistant", "content": "", "refusal": None}, None)
    tokens = _tokens(reply)
    if tokens is None:
        return [role, *(({"content": p}, None) for p in _pieces(_as_text(reply.output)))]
    return [role, *(({"content": t}, _logprobs(t, lp)) for t, lp in tokens)]


def _logprobs(token: str, logprob: float) -> dict[str, Any]:
    entry = {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": []}
    return {"content": [entry], "refusal": None}


def _tool_call_deltas(turn: ToolCalls) -> list[_Delta]:
    """The role with the text, if any, then each call: its id, type and name with
    empty arguments, then the arguments in pieces under the same index."""
    deltas: list[_Delta] = [({"role": "assistant", "content": None, "refusal": None}, None)]
    deltas += [({"content": p}, None) for p in _pieces(turn.text)]
    for index, (name, arguments) in enumerate(turn.calls):
        first = {
            "index": index,
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        deltas.append(({"tool_calls": [first]}, None))
        deltas += [
            ({"tool_calls": [{"index": index, "function": {"arguments": p}}]}, None)
            for p in _pieces(_as_text(arguments))
        ]
    return deltas


def _pieces(text: str) -> list[str]:
    return [text[i : i + _PIECE] for i in range(0, len(text), _PIECE)]


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
        "stop_reason": reply.finish_reason or stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard",
        },
    }


def _tool_calls(api: Api, model: str, turn: ToolCalls) -> dict[str, Any]:
    ids = [f"call_{uuid.uuid4().hex[:24]}" for _ in turn.calls]
    usage = {"input_tokens": turn.input_tokens, "output_tokens": turn.output_tokens}
    if api == "anthropic":
        blocks: list[dict[str, Any]] = (
            [{"type": "text", "text": turn.text, "citations": None}] if turn.text else []
        )
        for id_, (name, arguments) in zip(ids, turn.calls, strict=True):
            if not isinstance(arguments, dict):
                raise ValueError("an Anthropic tool_use carries a JSON object, not a str")
            blocks.append({"type": "tool_use", "id": id_, "name": name, "input": arguments})
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks,
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": usage,
        }
    message = {
        "role": "assistant",
        "content": turn.text or None,
        "refusal": None,
        "tool_calls": [
            {
                "id": id_,
                "type": "function",
                "function": {"name": name, "arguments": _as_text(arguments)},
            }
            for id_, (name, arguments) in zip(ids, turn.calls, strict=True)
        ],
    }
    return _chat_completion(
        model,
        message,
        logprobs=None,
        finish_reason="tool_calls",
        usage=(turn.input_tokens, turn.output_tokens),
    )
