"""`baton`: run the embedded server and a worker, start runs, inspect them,
decide gates, draw processes."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError
from temporalio.service import RPCError

from baton import cli_audit
from baton import codec as payload_codec
from baton.accounts import add_key, add_passkey, set_password
from baton.audit.store import RetentionError
from baton.client import (
    DecisionRefused,
    NoWorkerError,
    StartError,
    build_input,
    connect,
    decide,
    inbox,
    put_document,
    run_status,
    send_event,
    start_run,
    stop_run,
)
from baton.config import (
    ConfigError,
    DirectoryEntry,
    Settings,
    directory_path,
    load_run_config,
)
from baton.document_store import DocumentRef, decode_text, document_store
from baton.gates import Decision, Outcome, StopRequest
from baton.keys import MissingKey, new_key
from baton.outside import ExternalEvent
from baton.routing import routing_table
from baton.server import CODEC_ENDPOINT_ENV, EmbeddedServer, stop_requested, ui_codec_endpoint
from baton.signing import Passkey
from baton.status_text import format_status

# (command, decision outcome, help)
VERBS: tuple[tuple[str, Outcome, str], ...] = (
    ("approve", "approve", "approve (or, with --output, override and approve)"),
    ("reject", "reject", "reject"),
    ("changes", "request_changes", "request changes"),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="baton", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    server = commands.add_parser("server", help="run the embedded Temporal server")
    server.add_argument("--port", type=int, default=7233)
    server.add_argument("--ui-port", type=int, default=8233)
    server.add_argument("--db", type=Path, help="SQLite file (default: <data dir>/temporal.db)")

    commands.add_parser("worker", help="run a worker for every process")

    start = commands.add_parser("start", help="start a run")
    start.add_argument("process")
    start.add_argument("args", nargs="*", help="the process's input fields, in order")
    start.add_argument("--as", dest="user", default=getpass.getuser(), help="who requests it")
    start.add_argument("--id", dest="workflow_id", help="workflow id (default: generated)")

    documents = commands.add_parser(
        "documents", help="the document store runs read their documents from"
    )
    documents_commands = documents.add_subparsers(dest="documents_command", required=True)
    put = documents_commands.add_parser(
        "put", help="store a file; prints the reference a run's input carries"
    )
    put.add_argument("file", type=Path)
    show = documents_commands.add_parser("show", help="print a stored document")
    show.add_argument("sha256")

    status = commands.add_parser("status", help="where a run is and what it has done")
    status.add_argument("workflow_id")
    status.add_argument("--json", action="store_true")

    box = commands.add_parser(
        "inbox", help="runs waiting for a human decision; `inbox serve` runs the web inbox"
    )
    box.add_argument("--role")
    box.add_argument("--json", action="store_true")
    box_commands = box.add_subparsers(dest="inbox_command")
    serve = box_commands.add_parser("serve", help="serve the reviewer inbox web app")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8200)
    serve.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="serve HTTPS: certificate (PEM)"
    )
    serve.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key (PEM)")
    serve.add_argument(
        "--behind-https-proxy",
        nargs="?",
        const="127.0.0.1",
        metavar="PROXY_IPS",
        help="behind a proxy that serves HTTPS: trust its X-Forwarded-Proto/-For headers "
        "(from PROXY_IPS, comma-separated; default 127.0.0.1) and send cookies over HTTPS only",
    )

    users = commands.add_parser("users", help="the users of the directory file")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    set_password = users_commands.add_parser(
        "set-password", help="set a user's password for the reviewer inbox"
    )
    set_password.add_argument("user")
    set_password.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add_key = users_commands.add_parser(
        "add-key",
        help="let a user's key sign their acts: an Ed25519 public key (`baton keys new` prints "
        "it) or a passkey's JSON (the inbox shows it after registration)",
    )
    add_key.add_argument("user")
    add_key.add_argument("key", help="ed25519:<base64>, or the passkey JSON in quotes")

    keys = commands.add_parser("keys", help="your signing keys on this machine")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    new_key = keys_commands.add_parser(
        "new", help="make a user's private key (mode 0600) and print its public key"
    )
    new_key.add_argument("--as", dest="user", required=True, help="whose key")
    new_key.add_argument(
        "--replace", action="store_true", help="replace the user's existing key on this machine"
    )

    payload_keys = commands.add_parser(
        "payload-keys", help="the AES-256 keys that encrypt payloads in Temporal history"
    )
    payload_keys_commands = payload_keys.add_subparsers(dest="payload_keys_command", required=True)
    new_payload_key = payload_keys_commands.add_parser(
        "new",
        help="write a key file (BATON_PAYLOAD_KEY_FILE, else <data dir>/payload-keys.toml)",
    )
    new_payload_key.add_argument(
        "--rotate",
        action="store_true",
        help="add a new current key to the existing file; the old keys stay to read old history",
    )

    for verb_name, outcome, what in VERBS:
        verb = commands.add_parser(verb_name, help=f"{what} at a gate of a run")
        verb.add_argument("workflow_id")
        verb.add_argument("--gate", required=True)
        verb.add_argument("--as", dest="user", required=True, help="the deciding user")
        verb.add_argument("--comment", default="", required=outcome == "request_changes")
        if outcome == "approve":
            verb.add_argument(
                "--output",
                type=Path,
                help="a JSON file with the corrected output (an override; --comment says why)",
            )

    stop = commands.add_parser("stop", help="stop a run; it undoes what it declared compensable")
    stop.add_argument("workflow_id")
    stop.add_argument("--as", dest="user", required=True, help="a user with a stop role")
    stop.add_argument("--reason", required=True)

    event = commands.add_parser(
        "event", help="send a run news it awaits (a goods receipt was booked), signed"
    )
    event.add_argument("workflow_id")
    event.add_argument("name", help="the event, as the process's Await node names it")
    event.add_argument("--as", dest="user", required=True, help="the sending user or service")
    event.add_argument("--key", default="", help="what it is about (a PO number)")
    event.add_argument("--data", type=Path, help="a JSON file with the event's data (small)")

    commands.add_parser("routes", help="print the effective model routing table")

    cli_audit.add_parser(commands)

    graph = commands.add_parser("graph", help="print a process as a Mermaid diagram")
    graph.add_argument("process")

    demo = commands.add_parser("demo", help="run every process over its samples")
    demo.add_argument(
        "--samples",
        type=Path,
        default=Path("samples/documents"),
        help="the documents for document intake",
    )
    demo.add_argument(
        "--keep-running", action="store_true", help="leave the server and worker running"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Baton's files hold documents, decisions, keys and the Temporal history:
    # everything it and the server it starts create is for this user alone.
    os.umask(0o077)
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_dispatch(args))
    except (
        ConnectionError,
        StartError,
        LookupError,
        ValueError,
        NoWorkerError,
        ConfigError,
        RetentionError,
        MissingKey,
        FileExistsError,
        PermissionError,
    ) as err:
        message = err.args[0] if isinstance(err, KeyError) else str(err)
        print(f"baton: {message}", file=sys.stderr)
        return 2
    except RPCError as err:
        # Temporal's own refusals (a run whose workflow task is failing cannot
        # answer a query, say): one line with its words, not a traceback.
        print(
            f"baton: Temporal refused the call ({err.status.name}): {err.message}", file=sys.stderr
        )
        return 2
    except DecisionRefused as err:
        print(f"refused: {err.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _documents(args: argparse.Namespace) -> int:
    store = document_store()
    if args.documents_command == "put":
        print(put_document(args.file, store).model_dump_json(indent=2))
        return 0
    prefix = args.sha256.strip().lower()
    is_hash = re.fullmatch(r"[0-9a-f]{8,64}", prefix) is not None
    found = sorted(store.root.glob(f"{prefix[:2]}/{prefix}*")) if is_hash else []
    if len(found) != 1:
        raise LookupError(
            f"{'more than one' if found else 'no'} stored document starts with '{prefix}': "
            "give at least 8 characters of a hash `baton documents put` printed"
        )
    ref = DocumentRef(sha256=found[0].name, name=found[0].name, size=found[0].stat().st_size)
    text, problem = decode_text(store.read(ref))
    if problem:
        raise ValueError(f"document {ref.sha256} cannot be shown as text: {problem}")
    sys.stdout.write(text)
    return 0


async def _dispatch(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.command == "server":
        return await _serve(settings, args)
    if args.command == "worker":
        from worker import main as worker_main

        await worker_main()
        return 0
    if args.command == "audit":
        return await cli_audit.dispatch(settings, args)
    if args.command == "users" and args.users_command == "add-key":
        return _add_key(args.user, args.key)
    if args.command == "users":
        return _set_password(args.user, from_stdin=args.password_stdin)
    if args.command == "keys":
        path, public_key = new_key(args.user, replace=args.replace)
        print(
            f"wrote {args.user}'s private key to {path} (mode 0600; keep it to yourself)\n"
            f"public key: {public_key}\n"
            f"an administrator adds it to the directory with:\n"
            f"  baton users add-key {args.user} {public_key}"
        )
        return 0
    if args.command == "payload-keys":
        return _new_payload_key(settings, rotate=args.rotate)
    if args.command == "inbox" and args.inbox_command == "serve":
        from baton.web.app import serve

        await serve(
            settings,
            host=args.host,
            port=args.port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            proxy=args.behind_https_proxy,
        )
        return 0
    if args.command == "routes":
        print(routing_table(load_run_config().routing))
        return 0
    if args.command == "graph":
        from workflows import process

        print(process(args.process).graph.mermaid())
        return 0
    if args.command == "demo":
        from baton.demo import run_demo

        return await run_demo(settings, samples=args.samples, keep_running=args.keep_running)
    if args.command == "documents":
        return _documents(args)
    if args.command == "start":
        from workflows import process

        workflow_cls = process(args.process).workflow
        request = build_input(workflow_cls, args.args, requested_by=args.user)
        client = await connect(settings)
        handle = await start_run(
            client,
            workflow_cls,
            request,
            task_queue=settings.task_queue,
            workflow_id=args.workflow_id,
        )
        print(f"started {handle.id}\n{settings.run_url(handle.id)}")
        return 0
    client = await connect(settings)
    if args.command == "status":
        status = await run_status(client, args.workflow_id)
        print(status.model_dump_json(indent=2) if args.json else format_status(status))
        return 0
    if args.command == "inbox":
        items = await inbox(client, args.role)
        if args.json:
            print(json.dumps([i.model_dump(mode="json") for i in items], indent=2))
        elif not items:
            print("nothing is waiting" + (f" for {args.role}" if args.role else ""))
        for item in items:
            due = item.due_at.isoformat(timespec="minutes") if item.due_at else "no deadline"
            print(
                f"{item.workflow_id}  {item.process}  gate {item.node}  "
                f"roles {','.join(item.roles)}  due {due}"
            )
        return 0
    if args.command == "stop":
        stopped = await stop_run(
            client, args.workflow_id, StopRequest(user=args.user, reason=args.reason)
        )
        print(f"stopping {args.workflow_id} as {stopped.user} ({stopped.role}): {stopped.reason}")
        return 0
    if args.command == "event":
        data = _read_json_object(args.data, "--data") if args.data else {}
        news = ExternalEvent(event=args.name, user=args.user, key=args.key, data=data)
        received = await send_event(client, args.workflow_id, news)
        print(
            f"{args.workflow_id} took {received.event} from {received.user} ({received.role}); "
            "its Await node acts on it when the run gets there"
        )
        return 0
    outcome = next(o for verb, o, _ in VERBS if verb == args.command)
    output = _read_json_object(args.output, "--output") if getattr(args, "output", None) else None
    decision = Decision(
        gate=args.gate, user=args.user, outcome=outcome, comment=args.comment, output=output
    )
    accepted = await decide(client, args.workflow_id, decision)
    done = {"approve": "approved", "reject": "rejected", "request_changes": "requested changes at"}
    print(
        f"{done[accepted.outcome]} gate {args.gate} of {args.workflow_id} as {accepted.user} "
        f"({accepted.role})"
        + (
            f"; {accepted.awaiting} more approval(s) needed (four-eyes)"
            if accepted.awaiting
            else ""
        )
    )
    return 0


def _read_json_object(path: Path, option: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no file at {path}: {option} takes a JSON file") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object ({option})")
    return value


def _add_key(user: str, key: str) -> int:
    path = directory_path()
    if key.lstrip().startswith("{"):
        try:
            passkey = Passkey.model_validate_json(key)
        except ValidationError as err:
            raise ValueError(
                f"not a passkey: {err.errors()[0]['msg']}; paste the JSON the inbox showed "
                "after registration"
            ) from None
        added = add_passkey(path, user, passkey)
        what = f"passkey {passkey.id}"
    else:
        try:
            DirectoryEntry(keys=[key])
        except ValidationError as err:
            raise ValueError(err.errors()[0]["msg"].removeprefix("Value error, ")) from None
        added = add_key(path, user, key)
        what = f"key {key}"
    print(
        f"added {what} to {user} in {path}; runs started from now on accept it"
        if added
        else f"{user} has {what} already in {path}"
    )
    return 0


def _new_payload_key(settings: Settings, *, rotate: bool) -> int:
    if os.environ.get(payload_codec.KEYS_ENV):
        raise ConfigError(
            f"{payload_codec.KEYS_ENV} is set: the payload keys are in the environment, not in "
            "a file. Put a new key first in that variable (`openssl rand -base64 32` makes "
            "one), or unset it to use a key file"
        )
    path = payload_codec.key_file_path(data_dir=settings.data_dir)
    key_id = payload_codec.create_payload_key(path, rotate=rotate)
    done = "added a new current key to" if rotate else "wrote a new payload key file"
    print(
        f"{done} {path} (mode 0600): key {key_id}\n"
        f"workers, clients and the inbox need this same file ({payload_codec.KEY_FILE_ENV}) or "
        f"its keys in {payload_codec.KEYS_ENV}; restart them to use it"
        + ("; keep the older keys for as long as history encrypted with them" if rotate else "")
    )
    return 0


def _set_password(user: str, *, from_stdin: bool) -> int:
    path = directory_path()
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"new password for {user}: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ; nothing changed")
    set_password(path, user, password)
    print(f"set the password of {user} in {path}")
    return 0


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    stop = stop_requested()
    server = EmbeddedServer(
        db_file=args.db or settings.data_dir / "temporal.db",
        port=args.port,
        ui_port=args.ui_port,
        codec_endpoint=ui_codec_endpoint(),
    )
    await server.start()
    print(f"Temporal server on {server.address}, Web UI {server.ui_url}, data {server.db_file}")
    if server.codec_endpoint:
        print(
            f"the Web UI decrypts payloads through the codec server at {server.codec_endpoint} "
            f"(`baton inbox serve`; {CODEC_ENDPOINT_ENV} changes it, empty turns it off)"
        )
    print("Ctrl-C stops it", flush=True)
    try:
        await stop.wait()
    finally:
        server.stop()
    return 0


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point. Leaves through os._exit: Temporal's native client
    threads can abort CPython's interpreter shutdown of a short-lived process
    (temporalio/sdk-python issue 300), which would turn success into SIGABRT."""
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
