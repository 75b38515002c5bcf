"""Encrypted payloads: the codec, its keys and `baton payload-keys`, and the
codec server, against the real dev server, the real `temporal` CLI and the
inbox app served by uvicorn."""

from __future__ import annotations

import asyncio
import base64
import http.cookiejar
import json
import os
import re
import secrets
import signal
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from playwright.async_api import async_playwright
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.failure.v1 import Failure
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from baton.cli import main
from baton.codec import (
    KEY_FILE_NAME,
    KEYS_ENV,
    EncryptionCodec,
    MissingPayloadKeys,
    PayloadDecryptionError,
    PayloadKeys,
    create_payload_key,
    encrypted_data_converter,
    ensure_payload_key,
    parse_keys_env,
    read_key_file,
)
from baton.config import ConfigError, Settings
from baton.server import (
    EmbeddedServer,
    free_port,
    port_is_open,
    temporal_binary,
    ui_codec_endpoint,
)
from baton.web.app import create_app
from baton.web.codec import (
    TOKEN_ENV,
    CodecConfig,
    codec_origins,
    codec_roles,
    codec_token,
    instructions,
)
from docs.screenshot import launch_chromium, serving
from tests.conftest import ROOT
from tests.helpers import eventually

# What a payload may hold that history must not show: a vendor and an IBAN.
MARKER = "Acme Corp DE89370400440532013000"
TOKEN = secrets.token_urlsafe(32)
UI = "http://localhost:8233"


def key_b64() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def keys(tmp_path: Path) -> PayloadKeys:
    path = tmp_path / "keys" / KEY_FILE_NAME
    create_payload_key(path)
    return read_key_file(path)


async def plain_payloads(value: Any) -> list[Payload]:
    return await pydantic_data_converter.encode([value])


# -- the codec ---------------------------------------------------------------


async def test_a_payload_round_trips_and_its_ciphertext_holds_no_plaintext(
    keys: PayloadKeys,
) -> None:
    converter = encrypted_data_converter(keys)
    value = {"vendor": MARKER, "total": "1250.00"}
    [encrypted] = await converter.encode([value])
    assert dict(encrypted.metadata) == {
        "encoding": b"binary/encrypted",
        "encryption-key-id": keys.current.encode(),
    }
    # Neither the value nor its type (the metadata inside) shows.
    serialized = encrypted.SerializeToString()
    assert MARKER.encode() not in serialized
    assert b"json/plain" not in serialized
    assert await converter.decode([encrypted], [dict]) == [value]

    # A fresh nonce each time: equal payloads do not look equal.
    [again] = await converter.encode([value])
    assert again.data != encrypted.data


async def test_failure_messages_and_stack_traces_are_encrypted_too(keys: PayloadKeys) -> None:
    converter = encrypted_data_converter(keys)
    try:
        raise ApplicationError(f"vendor {MARKER} is unknown to the ERP")
    except ApplicationError as err:
        failure = Failure()
        await converter.encode_failure(err, failure)
    assert MARKER.encode() not in failure.SerializeToString()
    assert (failure.message, failure.stack_trace) == ("Encoded failure", "")
    decoded = await converter.decode_failure(failure)
    assert MARKER in str(decoded)


async def test_old_payloads_still_decode_after_rotation_and_new_ones_use_the_new_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / KEY_FILE_NAME
    first = create_payload_key(path)
    old = await encrypted_data_converter(read_key_file(path)).encode([MARKER])

    second = create_payload_key(path, rotate=True)
    assert second != first
    rotated = read_key_file(path)
    assert (rotated.current, set(rotated.keys)) == (second, {first, second})
    assert path.stat().st_mode & 0o777 == 0o600
    converter = encrypted_data_converter(rotated)
    assert await converter.decode(old, [str]) == [MARKER]
    [new] = await converter.encode([MARKER])
    assert new.metadata["encryption-key-id"] == second.encode()


async def test_an_unknown_key_or_altered_ciphertext_is_a_clear_error(
    keys: PayloadKeys, tmp_path: Path
) -> None:
    [sealed] = await EncryptionCodec(keys).encode(await plain_payloads(MARKER))

    other_path = tmp_path / "other.toml"
    create_payload_key(other_path)
    other = read_key_file(other_path)
    with pytest.raises(PayloadDecryptionError) as lacking:
        await EncryptionCodec(other).decode([sealed])
    assert str(lacking.value) == (
        f"a payload is encrypted with key '{keys.current}', which {other_path} lacks (it holds "
        f"{other.current}): the key was rotated out, or the payload comes from another "
        "deployment; add that key back to read it"
    )

    altered = Payload()
    altered.CopyFrom(sealed)
    altered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.data = b"short"
    for bad in (altered, relabelled):
        with pytest.raises(PayloadDecryptionError, match="it was altered after encryption"):
            await EncryptionCodec(keys).decode([bad])


async def test_payloads_that_are_not_encrypted_pass_through(keys: PayloadKeys) -> None:
    """What the temporal CLI or the Web UI sends (see baton.codec on why)."""
    plain = await plain_payloads({"note": "sent from the CLI"})
    assert await EncryptionCodec(keys).decode(plain) == plain


# -- the keys ----------------------------------------------------------------


def test_a_new_key_file_is_private_explains_itself_and_is_not_overwritten(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fresh" / KEY_FILE_NAME
    key_id = create_payload_key(path)
    assert re.fullmatch(r"k\d{8}-[0-9a-f]{4}", key_id)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    text = path.read_text()
    assert text.startswith("# Baton's payload keys")
    assert f'current = "{key_id}"' in text
    with pytest.raises(FileExistsError, match=r"payload-keys new --rotate"):
        create_payload_key(path)
    assert path.read_text() == text


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    create_payload_key(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=re.escape(f"`chmod 600 {path}`")):
        PayloadKeys.from_env({}, tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("current = [", "is not valid TOML"),
        ('current = "a"\n', "is not a payload key file"),
        ('current = "a"\n[keys]\na = 1\n', "is not a payload key file"),
        (f'current = "b"\n[keys]\na = "{key_b64()}"\n', "the current key 'b' is not among"),
        ('current = "a"\n[keys]\na = "c2hvcnQ="\n', "key 'a' is 5 bytes; AES-256 needs 32"),
        ('current = "a"\n[keys]\na = "not base64!"\n', "key 'a' is not base64"),
        (f'current = "a b"\n[keys]\n"a b" = "{key_b64()}"\n', "key id 'a b' may hold only"),
    ],
    # Named, not derived from the random keys: pytest-xdist's workers must
    # collect the same test ids.
    ids=["not-toml", "no-keys", "key-not-text", "current-unknown", "short", "not-base64", "bad-id"],
)
def test_a_malformed_key_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=re.escape(message)):
        PayloadKeys.from_env({}, tmp_path)


def test_keys_in_the_environment_come_first_and_the_first_is_current(tmp_path: Path) -> None:
    create_payload_key(tmp_path / KEY_FILE_NAME)
    old, new = key_b64(), key_b64()
    keys = PayloadKeys.from_env({"BATON_PAYLOAD_KEYS": f"new:{new}, old:{old}"}, tmp_path)
    assert keys.current == "new"
    assert {k: base64.b64encode(v).decode() for k, v in keys.keys.items()} == {
        "new": new,
        "old": old,
    }
    assert new not in repr(keys)

    for value, message in [
        (f"{new}", "entry 1 is not <id>:<base64 key>"),
        (f"a:{new},:{old}", "entry 2 is not <id>:<base64 key>"),
        (f"a:{new},a:{old}", "key id 'a' is listed twice"),
        ("a:c2hvcnQ=", "key 'a' is 5 bytes; AES-256 needs 32"),
        ("a:***", "key 'a' is not base64"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)) as refused:
            parse_keys_env(value)
        assert new not in str(refused.value) and old not in str(refused.value)


def test_no_keys_anywhere_says_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(MissingPayloadKeys) as missing:
        PayloadKeys.from_env({}, tmp_path)
    assert isinstance(missing.value, ConfigError)
    assert "`baton payload-keys new`" in str(missing.value)
    assert "BATON_PAYLOAD_KEYS=<id>:<base64 of 32 random bytes>" in str(missing.value)
    named = tmp_path / "elsewhere.toml"
    with pytest.raises(MissingPayloadKeys, match=f"BATON_PAYLOAD_KEY_FILE={named} names no file"):
        PayloadKeys.from_env({"BATON_PAYLOAD_KEY_FILE": str(named)}, tmp_path)


def test_the_demo_makes_its_key_file_once(tmp_path: Path) -> None:
    first = ensure_payload_key(tmp_path, {})
    assert (tmp_path / KEY_FILE_NAME).exists()
    assert ensure_payload_key(tmp_path, {}) == first
    # A file someone named is theirs to make.
    with pytest.raises(MissingPayloadKeys):
        ensure_payload_key(tmp_path, {"BATON_PAYLOAD_KEY_FILE": str(tmp_path / "x.toml")})


def test_payload_keys_new_writes_rotates_and_refuses_to_overwrite(
    isolated_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEYS_ENV)  # the tests' own key (conftest)
    path = isolated_data / KEY_FILE_NAME
    assert main(["payload-keys", "new"]) == 0
    out = capsys.readouterr().out
    first = read_key_file(path).current
    assert out.startswith(f"wrote a new payload key file {path} (mode 0600): key {first}\n")
    assert "BATON_PAYLOAD_KEY_FILE" in out and "BATON_PAYLOAD_KEYS" in out

    assert main(["payload-keys", "new"]) == 2
    assert "exists already: `baton payload-keys new --rotate`" in capsys.readouterr().err
    assert read_key_file(path).current == first

    assert main(["payload-keys", "new", "--rotate"]) == 0
    rotated = read_key_file(path)
    assert rotated.current != first and first in rotated.keys
    assert f"added a new current key to {path} (mode 0600): key {rotated.current}" in (
        capsys.readouterr().out
    )

    named = isolated_data / "elsewhere" / "keys.toml"
    monkeypatch.setenv("BATON_PAYLOAD_KEY_FILE", str(named))
    assert main(["payload-keys", "new"]) == 0
    assert named.exists() and str(named) in capsys.readouterr().out

    monkeypatch.setenv("BATON_PAYLOAD_KEYS", f"env:{key_b64()}")
    assert main(["payload-keys", "new", "--rotate"]) == 2
    assert "BATON_PAYLOAD_KEYS is set: the payload keys are in the environment" in (
        capsys.readouterr().err
    )


# -- who the codec server answers ---------------------------------------------


def test_the_web_ui_origins_are_both_loopback_spellings_unless_listed() -> None:
    both = ("http://localhost:8233", "http://127.0.0.1:8233")
    assert codec_origins("http://localhost:8233", {}) == both
    assert codec_origins("http://127.0.0.1:8233/", {}) == both[::-1]
    assert codec_origins("https://temporal.example.com/ui", {}) == ("https://temporal.example.com",)
    listed = {"BATON_CODEC_ORIGINS": "https://ui.example.com, http://localhost:9000/"}
    assert codec_origins(UI, listed) == ("https://ui.example.com", "http://localhost:9000")
    with pytest.raises(ConfigError, match=re.escape("'https://ui.example.com/x' is not an origin")):
        codec_origins(UI, {"BATON_CODEC_ORIGINS": "https://ui.example.com/x"})
    assert codec_roles({}) == {"admin", "supervisor"}
    assert codec_roles({"BATON_CODEC_ROLES": "auditor, admin"}) == {"auditor", "admin"}


def test_the_codec_token_is_made_once_and_kept_private(tmp_path: Path) -> None:
    made = codec_token(tmp_path, {})
    assert codec_token(tmp_path, {}) == made
    assert (tmp_path / "codec-token").stat().st_mode & 0o777 == 0o600
    assert codec_token(tmp_path, {TOKEN_ENV: TOKEN}) == TOKEN
    with pytest.raises(ConfigError, match="BATON_CODEC_TOKEN is 6 characters"):
        codec_token(tmp_path, {TOKEN_ENV: "secret"})


def test_the_instructions_never_print_the_token(tmp_path: Path, keys: PayloadKeys) -> None:
    config = CodecConfig.from_env(Settings(data_dir=tmp_path), keys=keys, env={})
    text = instructions(config, "http://localhost:8200")
    assert config.token not in text and config.token not in repr(config)
    assert (
        "temporal workflow show -w <workflow id> --codec-endpoint http://localhost:8200/codec "
        f'--codec-auth "Bearer $(cat {tmp_path}/codec-token)"'
    ) in text


# -- the Web UI of the embedded server ------------------------------------------


def test_baton_server_points_the_web_ui_at_the_inbox_codec_server(tmp_path: Path) -> None:
    assert ui_codec_endpoint({}) == "http://localhost:8200/codec"
    assert ui_codec_endpoint({"BATON_CODEC_ENDPOINT": "https://codec.example.com/codec"}) == (
        "https://codec.example.com/codec"
    )
    assert ui_codec_endpoint({"BATON_CODEC_ENDPOINT": ""}) is None
    server = EmbeddedServer(db_file=tmp_path / "t.db", codec_endpoint="http://x/codec")
    assert server.command()[-2:] == ["--ui-codec-endpoint", "http://x/codec"]
    # Headless, there is no UI to point anywhere.
    headless = EmbeddedServer(db_file=tmp_path / "t.db", ui_port=None, codec_endpoint="http://x")
    assert "--ui-codec-endpoint" not in headless.command()


# -- the codec server over HTTP ---------------------------------------------------


def lowered(headers: Message) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def fetch(
    url: str,
    *,
    method: str = "POST",
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    opener: urllib.request.OpenerDirector | None = None,
) -> Answer:
    """One HTTP request from a thread: the server under test runs in this
    event loop."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None and not request.has_header("Content-type"):
        request.add_header("Content-Type", "application/json")

    def call() -> Answer:
        try:
            with (opener or urllib.request.build_opener()).open(request, timeout=30) as response:
                return Answer(response.status, lowered(response.headers), response.read())
        except urllib.error.HTTPError as err:
            return Answer(err.code, lowered(err.headers), err.read())

    return await asyncio.to_thread(call)


def payloads_json(payloads: list[Payload]) -> dict[str, Any]:
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def from_json(body: Mapping[str, Any]) -> list[Payload]:
    return [json_format.ParseDict(p, Payload()) for p in body["payloads"]]


@pytest.fixture
async def codec_url(
    dev_server: EmbeddedServer, keys: PayloadKeys, isolated_data: Path
) -> AsyncIterator[str]:
    """The inbox app with its codec server, served by uvicorn."""
    client = await Client.connect(dev_server.address, data_converter=pydantic_data_converter)
    codec = CodecConfig.from_env(
        Settings(data_dir=isolated_data), keys=keys, env={TOKEN_ENV: TOKEN}
    )
    app = create_app(client=client, secret=secrets.token_urlsafe(32), codec=codec)
    async with serving(app, free_port()) as url:
        yield url


async def signed_in(url: str, user: str) -> urllib.request.OpenerDirector:
    """A cookie-keeping client signed in to the inbox as ``user``."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    page = await fetch(url + "/login", method="GET", opener=opener)
    found = re.search(r'name="csrf" value="([^"]+)"', page.body.decode())
    assert found
    form = f"csrf={found[1]}&user={user}&password={user}-demo&next=/".encode()

    def post() -> None:
        request = urllib.request.Request(url + "/login", data=form, method="POST")
        with opener.open(request, timeout=30) as response:
            assert response.url == url + "/"  # followed the sign-in's redirect

    await asyncio.to_thread(post)
    return opener


async def test_decode_and_encode_answer_the_protocol_with_the_token(
    codec_url: str, keys: PayloadKeys
) -> None:
    converter = encrypted_data_converter(keys)
    sealed = await converter.encode([{"vendor": MARKER}, 42])
    bearer = {"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default"}
    for endpoint in ("/codec", "/codec/default"):
        answer = await fetch(
            codec_url + endpoint + "/decode", body=payloads_json(sealed), headers=bearer
        )
        assert answer.status == 200, answer.body
        assert answer.headers["cache-control"] == "no-store"
        assert from_json(answer.json()) == await plain_payloads({"vendor": MARKER}) + (
            await plain_payloads(42)
        )

    plain = await plain_payloads("from the Web UI")
    encoded = await fetch(codec_url + "/codec/encode", body=payloads_json(plain), headers=bearer)
    assert encoded.status == 200
    assert from_json(encoded.json())[0].metadata["encoding"] == b"binary/encrypted"
    assert await converter.decode(from_json(encoded.json()), [str]) == ["from the Web UI"]

    empty = await fetch(codec_url + "/codec/decode", body={"payloads": []}, headers=bearer)
    assert empty.json() == {"payloads": []}


async def test_the_codec_server_refuses_what_it_cannot_answer(
    codec_url: str, keys: PayloadKeys
) -> None:
    for path in ("/codec/decode", "/codec/default/encode"):
        assert (await fetch(codec_url + path, method="GET")).status == 405

    sealed = payloads_json(await encrypted_data_converter(keys).encode([MARKER]))
    nobody = await fetch(codec_url + "/codec/decode", body=sealed)
    assert nobody.status == 401
    assert "reading payloads needs the codec token" in nobody.json()["error"]
    wrong = await fetch(
        codec_url + "/codec/decode", body=sealed, headers={"Authorization": "Bearer guess"}
    )
    assert wrong.status == 401 and MARKER.encode() not in wrong.body

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    as_text = await fetch(
        codec_url + "/codec/decode", body=sealed, headers={**bearer, "Content-Type": "text/plain"}
    )
    assert as_text.status == 415
    malformed = await fetch(codec_url + "/codec/decode", body=[1, 2], headers=bearer)
    assert malformed.status == 400
    assert 'the body must be {"payloads": [...]}' in malformed.json()["error"]
    tampered = json.loads(json.dumps(sealed))
    tampered["payloads"][0]["data"] = base64.b64encode(b"x" * 40).decode()
    altered = await fetch(codec_url + "/codec/decode", body=tampered, headers=bearer)
    assert altered.status == 422
    assert "it was altered after encryption" in altered.json()["error"]


async def test_cors_answers_only_the_web_uis_origins(codec_url: str) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    for origin in ("http://localhost:8233", "http://127.0.0.1:8233"):
        answer = await fetch(
            codec_url + "/codec/decode", method="OPTIONS", headers={**preflight, "Origin": origin}
        )
        assert answer.status == 204
        assert answer.headers["access-control-allow-origin"] == origin
        assert answer.headers["access-control-allow-credentials"] == "true"
        assert answer.headers["access-control-allow-methods"] == "POST"
        assert answer.headers["access-control-allow-headers"] == (
            "content-type, x-namespace, authorization"
        )
        assert answer.headers["vary"] == "Origin"

    evil = await fetch(
        codec_url + "/codec/decode",
        method="OPTIONS",
        headers={**preflight, "Origin": "http://evil.example"},
    )
    assert not [h for h in evil.headers if h.startswith("access-control-")]

    # The answer itself carries them too: without, the browser hides it from the UI.
    answer = await fetch(
        codec_url + "/codec/decode",
        body={"payloads": []},
        headers={"Authorization": f"Bearer {TOKEN}", "Origin": UI},
    )
    assert answer.headers["access-control-allow-origin"] == UI


async def test_a_signed_in_payload_reader_may_decode_and_a_reviewer_may_not(
    codec_url: str, keys: PayloadKeys
) -> None:
    sealed = payloads_json(await encrypted_data_converter(keys).encode([MARKER]))
    decode = codec_url + "/codec/decode"

    ada = await signed_in(codec_url, "ada")
    answer = await fetch(decode, body=sealed, headers={"Origin": UI}, opener=ada)
    assert answer.status == 200, answer.body
    assert await pydantic_data_converter.decode(from_json(answer.json()), [str]) == [MARKER]
    # Her cookie does not make another site's page a reader.
    elsewhere = await fetch(
        decode, body=sealed, headers={"Origin": "http://evil.example"}, opener=ada
    )
    assert elsewhere.status == 401

    rita = await signed_in(codec_url, "rita")
    refused = await fetch(decode, body=sealed, headers={"Origin": UI}, opener=rita)
    assert refused.status == 403
    assert refused.json() == {
        "error": "rita holds reviewer; reading payloads needs the role admin or supervisor "
        "(BATON_CODEC_ROLES lists the roles)"
    }


# -- history on the real server, read with and without the codec ----------------


async def temporal_cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        temporal_binary(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


def shown_input(output: str) -> str:
    """The run's input as `temporal workflow show --output json` shows it:
    each payload's data (base64 in this replayable form), decoded."""
    event = json.loads(output)["events"][0]["workflowExecutionStartedEventAttributes"]
    return " ".join(
        base64.b64decode(p["data"]).decode(errors="replace") for p in event["input"]["payloads"]
    )


async def test_history_holds_ciphertext_that_the_cli_reads_only_through_the_codec_server(
    dev_server: EmbeddedServer, keys: PayloadKeys, codec_url: str
) -> None:
    client = await Client.connect(dev_server.address, data_converter=encrypted_data_converter(keys))
    workflow_id = f"codec-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(
        "nothing-serves-this",
        {"vendor": MARKER},
        id=workflow_id,
        task_queue=uuid.uuid4().hex,
    )
    try:
        # As stored: fetched without any codec.
        raw = await client.workflow_service.get_workflow_execution_history(
            GetWorkflowExecutionHistoryRequest(
                namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
            )
        )
        assert MARKER.encode() not in raw.SerializeToString()
        started = raw.history.events[0].workflow_execution_started_event_attributes
        assert await client.data_converter.decode(started.input.payloads) == [{"vendor": MARKER}]

        show = ("workflow", "show", "-w", workflow_id, "--address", dev_server.address)
        code, without = await temporal_cli(*show, "--output", "json")
        assert code == 0, without
        assert MARKER not in shown_input(without)
        endpoint = ("--codec-endpoint", f"{codec_url}/codec")
        code, decoded = await temporal_cli(
            *show, "--output", "json", *endpoint, "--codec-auth", f"Bearer {TOKEN}"
        )
        assert code == 0, decoded
        assert json.loads(shown_input(decoded)) == {"vendor": MARKER}
        # The endpoint templated with the namespace, as a CLI profile may have it.
        code, templated = await temporal_cli(
            *show,
            "--output",
            "json",
            "--codec-endpoint",
            f"{codec_url}/codec/{{namespace}}",
            "--codec-auth",
            f"Bearer {TOKEN}",
        )
        assert code == 0, templated
        assert MARKER in shown_input(templated)
        # Refused, the CLI retries until its deadline; a short one will do.
        code, refused = await temporal_cli(
            *show,
            "--output",
            "json",
            *endpoint,
            "--codec-auth",
            "Bearer guess",
            "--command-timeout",
            "2s",
        )
        assert code != 0 or MARKER not in shown_input(refused), refused
    finally:
        await handle.terminate(reason="test finished")


async def test_baton_inbox_serve_is_the_codec_server_and_says_how_to_use_it(
    dev_server: EmbeddedServer, isolated_data: Path
) -> None:
    port = free_port()
    command = (sys.executable, "-m", "baton.cli", "inbox", "serve", "--port", str(port))
    env = dict(os.environ, TEMPORAL_ADDRESS=dev_server.address)
    env.pop(KEYS_ENV)  # the tests' own key (conftest)
    keyless = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(keyless.communicate(), timeout=60)
    assert keyless.returncode == 2
    assert "no payload keys" in stderr.decode() and "`baton payload-keys new`" in stderr.decode()

    create_payload_key(isolated_data / KEY_FILE_NAME)
    keys = read_key_file(isolated_data / KEY_FILE_NAME)
    inbox = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert inbox.stdout is not None
    try:
        lines = [
            (await asyncio.wait_for(inbox.stdout.readline(), timeout=60)).decode() for _ in range(6)
        ]
        endpoint = f"http://localhost:{port}/codec"
        assert lines[1] == (
            f"codec server on {endpoint}: it decrypts payloads for the Web UI and the "
            "temporal CLI\n"
        )
        assert lines[5].strip() == (
            f"CLI:    temporal workflow show -w <workflow id> --codec-endpoint {endpoint} "
            f'--codec-auth "Bearer $(cat {isolated_data}/codec-token)"'
        )
        token = (isolated_data / "codec-token").read_text()
        sealed = await encrypted_data_converter(keys).encode([MARKER])
        await eventually(lambda: asyncio.to_thread(port_is_open, "127.0.0.1", port), bool)
        answer = await fetch(
            f"http://127.0.0.1:{port}/codec/decode",
            body=payloads_json(sealed),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status == 200, answer.body
        assert await pydantic_data_converter.decode(from_json(answer.json()), [str]) == [MARKER]
    finally:
        inbox.send_signal(signal.SIGTERM)
        await asyncio.wait_for(inbox.wait(), timeout=60)


# -- the Web UI in a browser ------------------------------------------------------

# What the Web UI does with "Include cross-origin credentials" ticked
# (temporalio/ui, src/lib/services/data-encoder.ts).
UI_DECODE = """async ({endpoint, body}) => {
    try {
        const answer = await fetch(endpoint + "/decode", {
            method: "POST",
            credentials: "include",
            headers: {"Content-Type": "application/json", "X-Namespace": "default"},
            body: JSON.stringify(body),
        });
        return {status: answer.status, body: await answer.json()};
    } catch (err) {
        return {status: 0, body: String(err)};
    }
}"""


async def test_a_browser_signed_in_to_the_inbox_decodes_from_the_web_ui_page_only(
    dev_server: EmbeddedServer, keys: PayloadKeys, isolated_data: Path, tmp_path: Path
) -> None:
    ui_port = free_port()
    codec = CodecConfig.from_env(
        Settings(data_dir=isolated_data, ui_url=f"http://localhost:{ui_port}"),
        keys=keys,
        env={TOKEN_ENV: TOKEN},
    )
    client = await Client.connect(dev_server.address, data_converter=pydantic_data_converter)
    inbox = create_app(client=client, secret=secrets.token_urlsafe(32), codec=codec)
    elsewhere = Starlette(routes=[Route("/", lambda _: HTMLResponse("<p>another site</p>"))])
    sealed = payloads_json(await encrypted_data_converter(keys).encode([MARKER]))
    async with (
        serving(inbox, free_port()) as inbox_url,
        serving(elsewhere, free_port()) as elsewhere_url,
        EmbeddedServer(
            db_file=tmp_path / "t.db",
            port=free_port(),
            ui_port=ui_port,
            codec_endpoint=f"{inbox_url}/codec",
        ),
        async_playwright() as playwright,
    ):
        browser = await launch_chromium(playwright)
        context = await browser.new_context()
        settings = await context.request.get(f"http://localhost:{ui_port}/api/v1/settings")
        endpoint = (await settings.json())["Codec"]["Endpoint"]
        assert endpoint == f"{inbox_url}/codec"
        ui = await context.new_page()
        await ui.goto(f"http://localhost:{ui_port}/", wait_until="domcontentloaded")

        signed_out = await ui.evaluate(UI_DECODE, {"endpoint": endpoint, "body": sealed})
        assert signed_out["status"] == 401

        login = await context.request.get(inbox_url + "/login")
        found = re.search(r'name="csrf" value="([^"]+)"', await login.text())
        assert found
        await context.request.post(
            inbox_url + "/login",
            form={"csrf": found[1], "user": "ada", "password": "ada-demo"},
            max_redirects=0,
        )
        answer = await ui.evaluate(UI_DECODE, {"endpoint": endpoint, "body": sealed})
        assert answer["status"] == 200, answer
        assert await pydantic_data_converter.decode(from_json(answer["body"]), [str]) == [MARKER]

        # The same signed-in browser on another site's page reads nothing.
        other = await context.new_page()
        await other.goto(elsewhere_url)
        blocked = await other.evaluate(UI_DECODE, {"endpoint": endpoint, "body": sealed})
        assert blocked["status"] == 0 and MARKER not in json.dumps(blocked)
        await browser.close()
