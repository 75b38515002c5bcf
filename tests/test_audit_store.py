"""The audit store against real SQLite files and a real PostgreSQL server.

Tampering is done the way an insider would: plain SQL against the tables, after dropping
the append-only trigger, and verify() must name the record that was touched.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import sqlite3
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from baton.audit.anchor import Tombstone
from baton.audit.events import (
    Actor,
    AuditEvent,
    AuditRecord,
    canonical_json,
    fold,
    format_timestamp,
    jsonable,
    record_hash,
    redact,
    seal,
    sealed,
)
from baton.audit.export import export_jsonl
from baton.audit.sink import AuditSettings
from baton.audit.store import (
    AuditConflict,
    AuditStore,
    PostgresAuditStore,
    RetentionError,
    SqliteAuditStore,
    open_store,
)
from baton.audit.store_compact import Compact
from baton.audit.store_layout import decode_event_id, encode_event_id, stored_forms, to_digests
from baton.audit.store_schema import _PG_SCHEMA as PG_SCHEMA
from baton.audit.store_schema import _SQLITE_SCHEMA as SQLITE_SCHEMA
from baton.audit.store_schema import GUARDS
from baton.audit.store_schema_v3 import pg_legacy_schema, sqlite_legacy_schema
from baton.audit.verify import COLUMNS, ChainHead, StoredRow, verify_chain
from baton.client import decide_in_turn
from baton.gates import Decision
from tests.conftest import SAMPLES
from tests.helpers import settled, start_intake

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
GUARD_TABLES = [
    (guard, "audit_" + guard.removeprefix("audit_").split("_")[0])
    for guard in (*GUARDS, "audit_records_no_truncate")
]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class FakeClock:
    """The store's notion of now, so retention can be tested without waiting months."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Backend:
    name: str
    store: SqliteAuditStore | PostgresAuditStore
    clock: FakeClock
    make: Callable[[], SqliteAuditStore | PostgresAuditStore]
    sql: Callable[[str, Sequence[object]], list[tuple[Any, ...]]]

    def tamper(self, statement: str, params: Sequence[object] = ()) -> None:
        """Raw SQL as a careful insider would run it: the guards dropped first and put
        back afterwards, so that only the chains can tell."""
        self.drop_guards()
        self.sql(statement, params)
        self.restore_guards()

    def drop_guards(self) -> None:
        tables = dict(GUARD_TABLES)
        for guard in GUARDS:
            drop = f"DROP TRIGGER IF EXISTS {guard}"
            self.sql(drop if self.name == "sqlite" else f"{drop} ON {tables[guard]}", ())

    def restore_guards(self) -> None:
        for statement in SQLITE_SCHEMA if self.name == "sqlite" else PG_SCHEMA:
            if "TRIGGER" in statement or "FUNCTION" in statement:
                self.sql(statement, ())


def chain(workflow_id: str) -> str:
    """SQL for a chain's key: version 4's records name their chain by the id of its first
    run in audit_runs (baton.audit.store_layout)."""
    return f"(SELECT MIN(id) FROM audit_runs WHERE workflow_id = '{workflow_id}')"


def name_id(name: str) -> str:
    """SQL for the row id of a name (event type, node, actor, stamp) in audit_names."""
    return f"(SELECT id FROM audit_names WHERE name = '{name}')"


def insert_record(backend: Backend, record: AuditRecord) -> None:
    """A record written into version 4's tables as a forger with the code would write it:
    past the store's checks and the chain head (inserting is what the guards allow)."""
    event = AuditEvent.model_validate(record.model_dump(include=set(AuditEvent.model_fields)))
    again = sealed(
        event,
        seq=record.seq,
        prev_hash=record.prev_hash,
        recorded_at=record.recorded_at,
        retain_until=record.retain_until,
    )
    assert again.record.record_hash == record.record_hash
    store = backend.make()
    with store._transaction(write=True) as tx:
        store._write(tx, Compact(tx), [again])


def _sqlite_backend(tmp_path: Path) -> Iterator[Backend]:
    path = tmp_path / "audit.db"
    clock = FakeClock(T0)

    def sql(statement: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            return conn.execute(statement, params).fetchall()
        finally:
            conn.close()

    yield Backend(
        "sqlite",
        SqliteAuditStore(path, clock=clock),
        clock,
        lambda: SqliteAuditStore(path, clock=clock),
        sql,
    )


def _postgres_backend() -> Iterator[Backend]:
    schema = f"audit_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_BASE, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL must run on 127.0.0.1:5432 (user postgres, db test): {exc}")
    admin.execute(f"CREATE SCHEMA {schema}")
    dsn = f"{PG_BASE}?options=-csearch_path%3D{schema}"
    clock = FakeClock(T0)

    def sql(statement: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cur = conn.execute(statement.replace("?", "%s"), params or None)
            return cur.fetchall() if cur.description else []

    try:
        yield Backend(
            "postgres",
            PostgresAuditStore(dsn, clock=clock),
            clock,
            lambda: PostgresAuditStore(dsn, clock=clock),
            sql,
        )
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield from _sqlite_backend(tmp_path)
    else:
        yield from _postgres_backend()


def make_events(
    workflow_id: str,
    count: int,
    *,
    prefix: str = "",
    start: int = 0,
    at: datetime = T0,
    process: str = "invoice",
) -> list[AuditEvent]:
    return [
        AuditEvent(
            event_id=f"{prefix or workflow_id}:{i}",
            workflow_id=workflow_id,
            run_id="run-1",
            process=process,
            event_type="node.finished",
            occurred_at=at + timedelta(seconds=i),
            node=f"step{i}",
            actor=Actor(type="service", id="worker"),
            data={"i": i, "amount": 100 + i, "nested": {"at": at, "list": [1, 2.5, None]}},
        )
        for i in range(start, start + count)
    ]


# -- appending ---------------------------------------------------------------------------------


def test_append_is_idempotent_by_event_id(backend: Backend) -> None:
    events = make_events("wf-1", 5)
    assert backend.store.append(events, retention_days=200) == 5
    assert backend.store.append(events, retention_days=200) == 0
    # Same ids with other content: two writers disagree; the whole batch is refused.
    changed = [e.model_copy(update={"data": {"tampered": True}}) for e in events]
    with pytest.raises(AuditConflict, match="wf-1:0 is stored already with other content"):
        backend.store.append(changed + make_events("wf-1", 1, start=5), retention_days=200)
    records = backend.store.records("wf-1")
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert all("tampered" not in r.data for r in records)


def test_duplicates_inside_one_batch_count_once(backend: Backend) -> None:
    event = make_events("wf-1", 1)[0]
    assert backend.store.append([event, event, event], retention_days=30) == 1
    assert [r.seq for r in backend.store.records("wf-1")] == [1]


def test_event_ids_are_unique_across_workflows(backend: Backend) -> None:
    backend.store.append(make_events("wf-a", 2, prefix="same"), retention_days=30)
    with pytest.raises(AuditConflict):
        backend.store.append(make_events("wf-b", 2, prefix="same"), retention_days=30)
    assert backend.store.records("wf-b") == []
    assert backend.store.verify().ok


def test_two_writers_racing_one_event_id_into_two_chains_store_it_once(backend: Backend) -> None:
    """Two writers append the same event id at the same moment, each to another run's
    chain: each holds only its own chain's head, so the check that the id is new must not
    race the other's insert. Once stored in one of the chains, the other is refused. The
    ids take both forms: relative to the first writer's run, and whole."""
    rounds = 40
    barrier = threading.Barrier(2)
    outcomes: dict[int, list[str]] = {0: [], 1: []}

    def race(writer: int) -> None:
        store = backend.make()
        for n in range(rounds):
            prefix = f"wf-a{n}/run-1/w/node.finished/step0/v1" if n % 2 else f"race-{n}"
            (event,) = make_events(f"wf-{'ab'[writer]}{n}", 1, prefix=prefix)
            barrier.wait(timeout=60)
            try:
                store.append([event], retention_days=30)
            except AuditConflict:
                outcomes[writer].append("refused")
            else:
                outcomes[writer].append("stored")

    threads = [threading.Thread(target=race, args=(w,)) for w in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    both = [n for n in range(rounds) if outcomes[0][n] == outcomes[1][n] == "stored"]
    assert both == [], f"rounds {both} stored one event id in two chains"
    assert all(
        sorted((outcomes[0][n], outcomes[1][n])) == ["refused", "stored"] for n in range(rounds)
    )
    assert backend.store.verify().ok


def test_an_event_id_is_unique_in_whichever_form_it_is_stored(backend: Backend) -> None:
    """Version 4 stores a run's own ids relative to their run (store_layout): an id stored
    that way under one run is still found when another workflow sends it whole."""
    (mine,) = make_events("wf-a", 1, prefix="wf-a/run-1/w/node.finished/step0/v1")
    backend.store.append([mine], retention_days=30)
    (stored,) = backend.sql("SELECT event FROM audit_records", ())
    assert stored == ("*/v1:0",)  # make_events adds ":<i>"
    (theirs,) = make_events("wf-b", 1, prefix="wf-a/run-1/w/node.finished/step0/v1")
    with pytest.raises(AuditConflict):
        backend.store.append([theirs], retention_days=30)
    (whole,) = make_events("wf-c", 1, prefix="wf-d/run-1/x")
    backend.store.append([whole], retention_days=30)
    (again,) = make_events("wf-d", 1, prefix="wf-d/run-1/x")
    with pytest.raises(AuditConflict):
        backend.store.append([again], retention_days=30)
    assert backend.store.verify().ok


@pytest.mark.parametrize(
    ("event_id", "node", "stored"),
    [
        ("wf/r/w/run.ended", None, "*"),
        ("wf/r/w/node.started/load/v1", "load", "*/v1"),
        ("wf/r/w/node.started/load/v1", "other", "w/node.started/load/v1"),
        ("wf/r/w/node.started/a/b/v1", "a/b", "*/v1"),
        ("wf/r/a/load#1/1/start", "load", "a/load#1/1/start"),
        ("wf/r/*odd", None, "/wf/r/*odd"),
        ("wf/r//odd", None, "/wf/r//odd"),
        ("elsewhere:1", None, "/elsewhere:1"),
    ],
)
def test_event_ids_are_stored_relative_to_their_run(
    event_id: str, node: str | None, stored: str
) -> None:
    event_type = "run.ended" if node is None else "node.started"
    assert encode_event_id(event_id, "wf", "r", event_type, node) == stored
    assert decode_event_id(stored, "wf", "r", event_type, node) == event_id
    assert stored in stored_forms(event_id, "wf", "r")


def test_seq_is_gap_free_per_workflow_and_chained(backend: Backend) -> None:
    batch = [*make_events("wf-a", 3), *make_events("wf-b", 2), *make_events("wf-a", 2, start=3)]
    assert backend.store.append(batch, retention_days=200) == 7
    backend.store.append(make_events("wf-b", 2, start=2), retention_days=200)
    for workflow_id, count in (("wf-a", 5), ("wf-b", 4)):
        records = backend.store.records(workflow_id)
        assert [r.seq for r in records] == list(range(1, count + 1))
        assert records[0].prev_hash == ""
        for before, after in itertools.pairwise(records):
            assert after.prev_hash == before.record_hash
        assert all(r.record_hash == record_hash(r) for r in records)


def test_record_fields_and_retention(backend: Backend) -> None:
    backend.clock.now = T0 + timedelta(minutes=5)
    backend.store.append(make_events("wf-1", 1), retention_days=183)
    (record,) = backend.store.records("wf-1")
    assert record.schema_version == 4
    assert record.recorded_at == T0 + timedelta(minutes=5)
    assert record.retain_until == record.recorded_at + timedelta(days=183)
    assert record.occurred_at == T0
    assert record.data["nested"]["list"] == [1, 2.5, None]
    expected = hashlib.sha256(
        canonical_json(record.model_dump(exclude={"record_hash"})).encode()
    ).hexdigest()
    assert record.record_hash == expected


def test_update_is_refused_by_the_database(backend: Backend) -> None:
    backend.store.append(make_events("wf-1", 2), retention_days=30)
    with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
        backend.sql("UPDATE audit_records SET node = 0 WHERE seq = 1", ())


def test_workflow_ids_filter_by_process_and_since(backend: Backend) -> None:
    backend.store.append(make_events("wf-old", 2, at=T0 - timedelta(days=10)), retention_days=30)
    backend.store.append(make_events("wf-new", 2), retention_days=30)
    backend.store.append(make_events("wf-hr", 1, process="hiring"), retention_days=30)
    assert backend.store.workflow_ids() == ["wf-old", "wf-hr", "wf-new"]
    assert backend.store.workflow_ids(process="hiring") == ["wf-hr"]
    assert backend.store.workflow_ids(since=T0 - timedelta(days=1)) == ["wf-hr", "wf-new"]
    assert backend.store.workflow_ids(process="invoice", since=T0) == ["wf-new"]


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        AuditEvent(
            event_id="e", workflow_id="w", event_type="stop", occurred_at=datetime(2026, 1, 1)
        )


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///rel/audit.db")
    absolute = open_store(f"sqlite:///{tmp_path}/abs/audit.db")
    assert isinstance(relative, SqliteAuditStore)
    assert isinstance(absolute, SqliteAuditStore)
    assert relative.path == Path("rel/audit.db")
    assert absolute.path == tmp_path / "abs" / "audit.db"
    relative.append(make_events("wf", 1), retention_days=1)
    assert (tmp_path / "rel" / "audit.db").exists()
    assert isinstance(open_store(PG_BASE), PostgresAuditStore)
    with pytest.raises(ValueError, match="unsupported"):
        open_store("mysql://localhost/x")


# -- verification ------------------------------------------------------------------------------


def test_verify_ok(backend: Backend) -> None:
    backend.store.append(make_events("wf-a", 6) + make_events("wf-b", 3), retention_days=30)
    report = backend.store.verify()
    assert report.ok, report.problems
    assert (report.chains, report.records) == (2, 9)
    assert backend.store.verify("wf-b").records == 3


def _one(store: AuditStore, workflow_id: str = "wf-1") -> list[tuple[int, str, str]]:
    report = store.verify(workflow_id)
    assert not report.ok
    return [(p.seq, p.event_id, p.kind) for p in report.problems]


def test_verify_names_a_record_whose_json_was_edited(backend: Backend) -> None:
    backend.store.append(make_events("wf-1", 6), retention_days=30)
    (stored,) = backend.sql("SELECT record_json FROM audit_records WHERE seq = 3", ())
    doc = json.loads(stored[0])  # the record's data
    doc["amount"] = 1  # the classic: quietly lower an invoice amount
    backend.tamper("UPDATE audit_records SET record_json = ? WHERE seq = 3", (json.dumps(doc),))
    assert _one(backend.store) == [(3, "wf-1:2", "edited")]
    assert backend.store.verify("wf-1").problems[0].detail.startswith("content no longer")


def test_verify_names_a_record_whose_column_was_edited(backend: Backend) -> None:
    backend.store.append(make_events("wf-1", 4), retention_days=30)
    backend.tamper(f"UPDATE audit_records SET node = {name_id('step3')} WHERE seq = 2")
    (problem,) = backend.store.verify().problems
    assert (problem.seq, problem.event_id, problem.kind) == (2, "wf-1:1", "edited")
    # The column is the record's one copy of its node: the hash no longer holds.
    assert problem.detail == "content no longer matches its record_hash"


def test_verify_names_a_deleted_record(backend: Backend) -> None:
    backend.store.append(make_events("wf-1", 6), retention_days=30)
    backend.tamper("DELETE FROM audit_records WHERE seq = 3")
    (problem,) = backend.store.verify().problems
    # seq names the hole; event_id the first record after it (the deleted id went with it).
    assert (problem.seq, problem.event_id, problem.kind) == (3, "wf-1:3", "missing")
    assert "seq 3 missing before seq 4" in problem.detail


def test_verify_notices_a_truncated_tail(backend: Backend) -> None:
    backend.store.append(make_events("wf-1", 6), retention_days=30)
    backend.tamper("DELETE FROM audit_records WHERE seq >= 5")
    (problem,) = backend.store.verify().problems
    assert (problem.seq, problem.kind) == (5, "missing")
    assert "seq 5-6" in problem.detail


def test_verify_names_a_reordered_pair(backend: Backend) -> None:
    backend.store.append(make_events("wf-1", 6), retention_days=30)
    backend.tamper("UPDATE audit_records SET seq = -1 WHERE seq = 3")
    backend.tamper("UPDATE audit_records SET seq = 3 WHERE seq = 4")
    backend.tamper("UPDATE audit_records SET seq = 4 WHERE seq = -1")
    assert _one(backend.store) == [(3, "wf-1:3", "reordered"), (4, "wf-1:2", "reordered")]


def test_verify_names_a_prev_hash_that_does_not_match(backend: Backend) -> None:
    backend.store.append(make_events("wf-1", 5), retention_days=30)
    # A careful forger rewrites a record and recomputes its hash; the chain still shows it.
    forged = backend.store.records("wf-1")[2].model_copy(update={"prev_hash": "0" * 64})
    forged = forged.model_copy(update={"record_hash": record_hash(forged)})
    backend.tamper(
        "UPDATE audit_records SET prev_hash = ?, record_hash = ? WHERE seq = 3",
        (bytes.fromhex(forged.prev_hash), bytes.fromhex(forged.record_hash)),
    )
    assert _one(backend.store) == [(3, "wf-1:2", "broken_link"), (4, "wf-1:3", "broken_link")]


def test_verify_names_a_record_whose_json_is_unreadable(backend: Backend) -> None:
    backend.store.append(make_events("wf-1", 3), retention_days=30)
    backend.tamper("UPDATE audit_records SET record_json = '{\"oops' WHERE seq = 2")
    (problem,) = backend.store.verify().problems
    assert (problem.seq, problem.event_id, problem.kind) == (2, "wf-1:1", "edited")
    assert "not a valid record" in problem.detail


def test_verify_notices_a_forged_last_record_through_the_chain_head(backend: Backend) -> None:
    backend.store.append(make_events("wf-1", 4), retention_days=30)
    last = backend.store.records("wf-1")[-1]
    forged = last.model_copy(update={"data": {**last.data, "amount": 1}})
    forged = forged.model_copy(update={"record_hash": record_hash(forged)})
    backend.tamper(
        "UPDATE audit_records SET record_json = ?, record_hash = ? WHERE seq = 4",
        (canonical_json(forged.data), bytes.fromhex(forged.record_hash)),
    )
    assert _one(backend.store) == [(4, "wf-1:3", "broken_link")]


def test_verify_all_chains_reports_only_the_damaged_one(backend: Backend) -> None:
    backend.store.append(make_events("wf-a", 3) + make_events("wf-b", 3), retention_days=30)
    backend.tamper(f"DELETE FROM audit_records WHERE workflow_id = {chain('wf-b')} AND seq = 2")
    report = backend.store.verify()
    assert (report.ok, report.chains, report.records) == (False, 2, 5)
    assert {p.workflow_id for p in report.problems} == {"wf-b"}


# -- concurrency -------------------------------------------------------------------------------


def _appender(store: AuditStore, worker: int, barrier: Any) -> int:
    """Own events plus a shared set every worker also sends, in small interleaving batches."""
    own = make_events("shared", 12, prefix=f"w{worker}")
    common = make_events("shared", 6, prefix="common")
    events = [*own[:6], *common, *own[6:]]
    barrier.wait()
    return sum(store.append(events[i : i + 3], retention_days=30) for i in range(0, 18, 3))


def _assert_one_valid_chain(store: AuditStore, workers: int, added: int) -> None:
    records = store.records("shared")
    expected = workers * 12 + 6
    assert added == expected
    assert [r.seq for r in records] == list(range(1, expected + 1))
    assert len({r.event_id for r in records}) == expected
    report = store.verify()
    assert report.ok, report.problems


def test_concurrent_threads_build_one_chain(backend: Backend) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[int | str] = []
    lock = threading.Lock()

    def run(worker: int) -> None:
        # Each thread has its own store object, so first-use schema creation races too.
        try:
            outcome: int | str = _appender(backend.make(), worker, barrier)
        except Exception:
            outcome = traceback.format_exc()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    counts = _counts(outcomes, 8)
    _assert_one_valid_chain(backend.store, 8, sum(counts))


def _counts(outcomes: Sequence[int | str], workers: int) -> list[int]:
    errors = [o for o in outcomes if isinstance(o, str)]
    assert not errors, errors[0]
    assert len(outcomes) == workers
    return [o for o in outcomes if isinstance(o, int)]


def _process_worker(path: str, worker: int, barrier: Any, results: Any) -> None:
    try:
        results.put(_appender(SqliteAuditStore(path), worker, barrier))
    except Exception:
        results.put(traceback.format_exc())


def test_concurrent_processes_build_one_sqlite_chain(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.db")  # a new file: switching it to WAL races as well
    ctx = multiprocessing.get_context("spawn")  # no inherited locks or connections
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(target=_process_worker, args=(path, w, barrier, results)) for w in range(3)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    counts = _counts(outcomes, 3)
    _assert_one_valid_chain(SqliteAuditStore(path), 3, sum(counts))


# -- retention ---------------------------------------------------------------------------------


def stone(workflow_id: str, head: ChainHead) -> Tombstone:
    return Tombstone(
        workflow_id=workflow_id,
        head_seq=head.seq,
        head_hash=head.hash,
        purged_at=T0.isoformat(),
        purged_by="ada",
        reason="retention over",
    )


def test_purge_refuses_inside_the_retention_period(backend: Backend) -> None:
    backend.store.append(make_events("wf-1", 2), retention_days=30)
    now = T0 + timedelta(days=200)
    with pytest.raises(RetentionError) as caught:
        backend.store.purge(
            now - timedelta(days=10), min_retention_days=183, now=now, tombstone=stone
        )
    message = str(caught.value)
    assert "2026-03-19T09:00:00.000000+00:00" in message  # now - 183 days
    assert "183 days" in message
    assert len(backend.store.records("wf-1")) == 2


def test_purge_removes_whole_old_chains_only(backend: Backend) -> None:
    old = T0 - timedelta(days=400)
    backend.clock.now = old
    backend.store.append(make_events("old", 3, at=old), retention_days=183)
    backend.store.append(make_events("promised", 2, at=old), retention_days=3650)
    backend.store.append(make_events("spanning", 2, at=old), retention_days=183)
    backend.clock.now = T0
    backend.store.append(make_events("spanning", 1, start=2), retention_days=183)
    backend.store.append(make_events("new", 2), retention_days=183)

    removed = backend.store.purge(
        T0 - timedelta(days=200), min_retention_days=183, now=T0, tombstone=stone
    )

    assert removed == 3
    assert backend.store.records("old") == []
    # A longer retention promised at append time wins; a chain is never cut in the middle.
    assert len(backend.store.records("promised")) == 2
    assert [r.seq for r in backend.store.records("spanning")] == [1, 2, 3]
    report = backend.store.verify()
    assert report.ok and report.chains == 3, report.problems


# -- redaction ---------------------------------------------------------------------------------


def test_redaction_hashes_nested_fields_and_records_the_policy(backend: Backend) -> None:
    salt = "tenant-salt-7f3a"
    data: dict[str, Any] = {
        "vendor": {"name": "ACME", "iban": "DE89370400440532013000"},
        "lines": [{"iban": "FR7630006000011234567890189"}, {"amount": 5}],
        "iban": {"kept": "whole value hashed"},
        "payee_iban": "not listed, kept",
    }
    redacted, policy = redact(data, ["iban"], salt)

    def expected(value: object) -> str:
        return "sha256:" + hashlib.sha256((salt + canonical_json(value)).encode()).hexdigest()

    assert redacted["vendor"] == {"name": "ACME", "iban": expected("DE89370400440532013000")}
    assert redacted["lines"] == [{"iban": expected("FR7630006000011234567890189")}, {"amount": 5}]
    assert redacted["iban"] == expected({"kept": "whole value hashed"})
    assert redacted["payee_iban"] == "not listed, kept"
    assert data["vendor"]["iban"] == "DE89370400440532013000"  # the input is left alone
    assert redact(data, ["iban"], salt)[0] == redacted  # deterministic, so joinable
    assert redact(data, ["iban"], "other-salt")[0]["vendor"] != redacted["vendor"]
    assert policy.fields == ["iban"]
    assert policy.salt_id == hashlib.sha256(salt.encode()).hexdigest()[:12]
    assert salt not in policy.model_dump_json()
    with pytest.raises(ValueError, match="salt"):
        redact(data, ["iban"], "")

    event = AuditEvent(
        event_id="r1",
        workflow_id="wf-r",
        event_type="ai.inference",
        occurred_at=T0,
        data={**redacted, "redaction": policy.model_dump()},
    )
    backend.store.append([event], retention_days=30)
    (stored,) = backend.store.records("wf-r")
    assert stored.data["redaction"]["salt_id"] == policy.salt_id
    assert "DE89370400440532013000" not in stored.model_dump_json()
    assert backend.store.verify().ok


def test_records_round_trip_as_models(backend: Backend) -> None:
    events = make_events("wf-1", 3)
    backend.store.append(events, retention_days=30)
    records = backend.store.records("wf-1")
    assert all(isinstance(r, AuditRecord) for r in records)
    assert [r.model_dump(include=set(AuditEvent.model_fields)) for r in records] == [
        AuditEvent.model_validate_json(e.model_dump_json()).model_dump() for e in events
    ]


def test_a_sealed_hash_is_the_hash_verify_recomputes() -> None:
    """seal() hashes the data's text as encoded once; verification hashes the
    whole record again. Both must agree whatever the data holds."""
    awkward: dict[str, Any] = {
        "text": 'Zoë "quoted" \\ back\nslash € 4.434,05',
        "nested": {"b": [1, 2.5, None, True], "a": {"zz": "", "aa": -0.0}},
        "actor": "a key sorting before 'data' in the envelope",
        "when": T0,
        "empty": {},
    }
    for actor in (None, Actor(type="human", id="rita", role="reviewer")):
        event = AuditEvent(
            event_id="e-1",
            workflow_id="wf",
            event_type="node.finished",
            occurred_at=T0,
            actor=actor,
            data=awkward,
        )
        record = seal(event, seq=1, prev_hash="", recorded_at=T0, retain_until=T0)
        assert record.record_hash == record_hash(record)
        assert record.data == jsonable(awkward)


def test_redaction_finds_a_listed_key_however_deep_and_leaves_lookalike_values() -> None:
    salt = "s"
    lookalike = {"note": 'the text says "iban": here', "deep": [[{"x": {"iban": "NL91"}}]]}
    redacted, _ = redact(lookalike, ["iban"], salt)
    assert redacted["note"] == 'the text says "iban": here'
    assert redacted["deep"][0][0]["x"]["iban"].startswith("sha256:")
    untouched = {"note": 'only a value mentions "iban": here'}
    assert redact(untouched, ["iban"], salt)[0] == untouched


def test_a_conflicting_event_stops_the_audit_writer(tmp_path: Path) -> None:
    from baton.audit.sink import AuditSettings, AuditSink

    sink = AuditSink(AuditSettings(url=f"sqlite:///{tmp_path / 'audit.db'}", salt="pepper"))
    (event,) = make_events("wf-1", 1)
    sink.write([event])
    sink.write([event])  # the same event again: a harmless retry
    assert len(sink.store.records("wf-1")) == 1

    with pytest.raises(AuditConflict, match="stored already with other content"):
        sink.write([event.model_copy(update={"data": {"amount": 1}})])
    with pytest.raises(AuditConflict, match="the audit writer stopped"):
        sink.write(make_events("wf-2", 1))
    assert [r.data["amount"] for r in sink.store.records("wf-1")] == [100]
    assert sink.store.records("wf-2") == []


# -- values stored once ------------------------------------------------------------------------

PROPOSAL = {
    "number": "INV-1043",
    "party": "Acme Industrial Supplies GmbH",
    "line_items": [{"description": f"item {i}", "amount": 100 + i} for i in range(8)],
}


def proposal_events(workflow_id: str, *, at: datetime = T0) -> list[AuditEvent]:
    """One proposal as a run's trail repeats it: the AI's answer, the node's output, what
    the reviewer was shown (nested in more), and the reviewer's decision over it."""
    shown = {"subject": {"output": PROPOSAL, "model": "m"}, "why": ["total missing"]}
    kinds = [
        ("ai.inference", {"output": PROPOSAL, "unique": unique_text(workflow_id)}),
        ("node.finished", {"output": PROPOSAL}),
        ("gate.opened", {"shown": shown}),
        ("gate.decided", {"shown": shown, "outcome": "approve"}),
    ]
    return [
        AuditEvent(
            event_id=f"{workflow_id}:{i}",
            workflow_id=workflow_id,
            run_id="run-1",
            process="invoice",
            event_type=kind,
            occurred_at=at + timedelta(seconds=i),
            data=data,
        )
        for i, (kind, data) in enumerate(kinds)
    ]


def unique_text(workflow_id: str) -> str:
    return f"{workflow_id} alone says this. " * 8


def key_of(value: Any) -> str:
    """The SHA-256 a value is stored under (of its text, the large values in it referred to)."""
    return str(json.loads(fold({"v": value}).text)["v"]["$value"])


def stored_values(backend: Backend) -> dict[str, str]:
    """Each value's text as the store keeps it (references by row id), by SHA-256."""
    found = backend.sql("SELECT sha256, value_json FROM audit_values", ())
    return {bytes(k).hex(): v for k, v in found}


def hashed_values(backend: Backend) -> dict[str, str]:
    """Each value's text as hashed (references by SHA-256), by SHA-256."""
    found = backend.sql("SELECT id, sha256, value_json FROM audit_values", ())
    digests = {int(i): bytes(k).hex() for i, k, _ in found}
    return {bytes(k).hex(): to_digests(v, digests) for _, k, v in found}


def test_a_value_is_stored_once_for_every_record_and_run_that_holds_it(backend: Backend) -> None:
    backend.store.append(proposal_events("wf-1") + proposal_events("wf-2"), retention_days=30)

    stored = [str(row[0]) for row in backend.sql("SELECT record_json FROM audit_records", ())]
    stored += stored_values(backend).values()
    # Eight records over two runs, one copy of the proposal, referred to by its row id.
    for part in ("Acme Industrial Supplies GmbH", '"item 3"', "total missing"):
        assert sum(text.count(part) for text in stored) == 1, part
    for key, text in hashed_values(backend).items():
        assert hashlib.sha256(text.encode()).hexdigest() == key
    # Readers see every record as it was appended.
    for workflow_id in ("wf-1", "wf-2"):
        records = backend.store.records(workflow_id)
        assert [r.data for r in records] == [e.data for e in proposal_events(workflow_id)]
        assert all(r.record_hash == record_hash(r) for r in records)
    assert backend.store.verify().ok


POLICY = {
    "algorithm": "sha256(salt + canonical JSON of value)",
    "detectors": ["iban", "card", "sort_code", "bank_account"],
    "fields": ["iban"],
    "salt_id": "bca02b0ebc17",
}


def stamped_events(workflow_id: str, count: int, context: Any, start: int = 0) -> list[AuditEvent]:
    """Events as the audit sink hands them over: each stamped with where it was written and
    the redaction policy (the policy a value of its own, being long)."""
    return [
        event.model_copy(
            update={
                "data": {
                    **event.data,
                    "context": context(event) if callable(context) else context,
                    "redaction": POLICY,
                }
            }
        )
        for event in make_events(workflow_id, count, start=start)
    ]


def test_a_stamp_is_kept_once_and_a_retry_from_another_worker_is_harmless(
    backend: Backend,
) -> None:
    events = stamped_events("wf-1", 3, {"worker": "1@a"})
    assert backend.store.append(events, retention_days=30) == 3
    # The stamp (context and policy) is a name, once; each record's JSON holds the rest.
    assert backend.sql("SELECT COUNT(DISTINCT stamp) FROM audit_records WHERE stamp <> 0", ()) == [
        (1,)
    ]
    assert all(
        '"context"' not in row[0]
        for row in backend.sql("SELECT record_json FROM audit_records", ())
    )
    # The same event re-sent from another worker (a retry): its context differs, nothing else.
    again = stamped_events("wf-1", 1, {"worker": "2@b"})
    assert backend.store.append(again, retention_days=30) == 0
    records = backend.store.records("wf-1")
    assert [r.data for r in records] == [jsonable(e.data) for e in events]
    assert all(r.record_hash == record_hash(r) for r in records)
    assert backend.store.verify().ok

    backend.tamper("UPDATE audit_names SET name = replace(name, '1@a', '9@z')")
    found = [(p.seq, p.kind) for p in backend.store.verify().problems]
    assert found == [(1, "edited"), (2, "edited"), (3, "edited")]


def test_a_traced_context_is_kept_with_its_record(backend: Backend) -> None:
    """A traced record's context names its span: it never recurs, so it is not a name."""
    for i in range(3):
        events = stamped_events("wf-1", 1, {"worker": "1@a", "span_id": f"{i:016x}"}, start=i)
        backend.store.append(events, retention_days=30)
    stored = [row[0] for row in backend.sql("SELECT record_json FROM audit_records", ())]
    assert all('"span_id"' in text and '"redaction"' not in text for text in stored[1:])
    assert backend.sql("SELECT COUNT(*) FROM audit_names WHERE name LIKE '%span_id%'", ()) == [(0,)]
    assert [r.data["context"]["span_id"] for r in backend.store.records("wf-1")] == [
        f"{i:016x}" for i in range(3)
    ]
    assert backend.store.verify().ok


def test_data_that_looks_like_a_reference_stays_what_it_was(backend: Backend) -> None:
    backend.store.append(proposal_events("wf-1"), retention_days=30)
    other_runs_value = key_of(PROPOSAL)
    hostile: dict[str, Any] = {
        "output": {"$value": other_runs_value},
        "nested": [{"$literal": ["$value", other_runs_value]}, {"$value": 1}],
        "long": {"$value": "x" * 300},
    }
    event = AuditEvent(
        event_id="h-1", workflow_id="wf-h", event_type="node.finished", occurred_at=T0, data=hostile
    )
    backend.store.append([event], retention_days=30)

    (record,) = backend.store.records("wf-h")
    assert record.data == hostile  # not the other run's proposal
    assert backend.store.verify().ok


def test_verify_names_a_value_that_was_altered(backend: Backend) -> None:
    backend.store.append(proposal_events("wf-1") + proposal_events("wf-2"), retention_days=30)
    digest = key_of(PROPOSAL)
    lowered = stored_values(backend)[digest].replace("INV-1043", "INV-9999")
    backend.tamper(
        "UPDATE audit_values SET value_json = ? WHERE sha256 = ?", (lowered, bytes.fromhex(digest))
    )

    report = backend.store.verify()
    found = {(p.workflow_id, p.seq, p.event_id, p.kind) for p in report.problems}
    # Every record that shows the proposal, in both runs, directly or inside what was shown.
    assert found == {
        (w, seq, f"{w}:{seq - 1}", "value_edited") for w in ("wf-1", "wf-2") for seq in (1, 2, 3, 4)
    }
    shown = next(p for p in report.problems if p.seq == 3)
    assert "data.shown.subject.output" in shown.detail and digest[:12] in shown.detail


def test_verify_names_a_value_that_was_deleted(backend: Backend) -> None:
    backend.store.append(proposal_events("wf-1"), retention_days=30)
    digest = key_of(PROPOSAL)
    backend.tamper("DELETE FROM audit_values WHERE sha256 = ?", (bytes.fromhex(digest),))

    report = backend.store.verify("wf-1")
    assert [(p.seq, p.event_id, p.kind) for p in report.problems] == [
        (seq, f"wf-1:{seq - 1}", "value_missing") for seq in (1, 2, 3, 4)
    ]
    assert "data.output" in report.problems[0].detail
    # The record still reads, the missing value left as its reference (by row id: the
    # row that said which SHA-256 it was is what is gone).
    assert set(backend.store.records("wf-1")[0].data["output"]) == {"$value"}


def test_the_database_refuses_to_change_or_drop_a_referenced_value(backend: Backend) -> None:
    backend.store.append(proposal_events("wf-1"), retention_days=30)
    key = bytes.fromhex(key_of(PROPOSAL))
    for statement in (
        "UPDATE audit_values SET value_json = '{}' WHERE sha256 = ?",
        "DELETE FROM audit_values WHERE sha256 = ?",
        "DELETE FROM audit_refs WHERE value = (SELECT id FROM audit_values WHERE sha256 = ?)",
    ):
        with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match=r"append-only|refers"):
            backend.sql(statement, (key,))


def test_purge_removes_the_values_no_remaining_run_refers_to(backend: Backend) -> None:
    old = T0 - timedelta(days=400)
    backend.clock.now = old
    backend.store.append(proposal_events("old", at=old), retention_days=183)
    backend.store.append(proposal_events("held", at=old), retention_days=183)
    backend.store.hold("held", by="ada", reason="matter 7", now=old)
    backend.clock.now = T0
    backend.store.append(proposal_events("new")[:2], retention_days=183)
    unique = {run: key_of(unique_text(run)) for run in ("old", "held", "new")}
    shared = key_of(PROPOSAL)
    assert set(unique.values()) | {shared} <= set(stored_values(backend))

    backend.store.purge(T0 - timedelta(days=200), min_retention_days=183, now=T0, tombstone=stone)
    assert backend.store.records("old") == []
    left = set(stored_values(backend))
    assert unique["old"] not in left
    assert {unique["held"], unique["new"], shared} <= left

    backend.store.release("held")
    backend.store.purge(T0 - timedelta(days=200), min_retention_days=183, now=T0, tombstone=stone)
    left = set(stored_values(backend))
    assert unique["held"] not in left
    # What was shown at the held run's gate went with it; the proposal stays for "new".
    assert shared in left and unique["new"] in left
    referred = backend.sql(
        "SELECT DISTINCT v.sha256 FROM audit_refs r JOIN audit_values v ON v.id = r.value", ()
    )
    assert len(left) == len(referred)
    assert backend.store.verify().ok


# -- stores of version 3 and before --------------------------------------------------------

V4_ONLY = ("audit_runs", "audit_names", "audit_records", "audit_values", "audit_refs")


def make_v3_store(backend: Backend) -> None:
    """The tables and guards of a store of version 3, as its writers made them."""
    schema = SQLITE_SCHEMA if backend.name == "sqlite" else PG_SCHEMA
    shared = [s for s in schema if not any(table in s for table in V4_ONLY)]
    legacy = sqlite_legacy_schema("") if backend.name == "sqlite" else pg_legacy_schema("")
    for statement in (*shared, *legacy):
        backend.sql(statement, ())


def insert_v3(
    backend: Backend, event: AuditEvent, *, version: int, seq: int, prev: str, at: datetime = T0
) -> str:
    """``event`` appended as a writer of ``version`` (2 or 3) did: the whole record as JSON
    beside the columns, or (3) seq, actor and data with its large values apart."""
    record = AuditRecord(
        **event.model_dump(),
        schema_version=version,
        seq=seq,
        prev_hash=prev,
        record_hash="",
        recorded_at=at,
        retain_until=at + timedelta(days=30),
    )
    record = record.model_copy(update={"record_hash": record_hash(record)})
    text = record.model_dump_json()
    if version == 3:
        folded = fold(record.data)
        actor = record.actor.model_dump(mode="json") if record.actor else None
        text = canonical_json(
            {"actor": actor, "data": json.loads(folded.text), "schema_version": 3, "seq": seq}
        )
        for digest, value in folded.values.items():
            backend.sql(
                "INSERT INTO audit_values (sha256, value_json) VALUES (?, ?)"
                " ON CONFLICT (sha256) DO NOTHING",
                (bytes.fromhex(digest), value),
            )
            backend.sql(
                "INSERT INTO audit_refs (sha256, workflow_id) VALUES (?, ?)"
                " ON CONFLICT (sha256, workflow_id) DO NOTHING",
                (bytes.fromhex(digest), record.workflow_id),
            )
    stamps = (record.occurred_at, record.recorded_at, record.retain_until)
    times: list[object] = (
        [format_timestamp(t) for t in stamps] if backend.name == "sqlite" else list(stamps)
    )
    backend.sql(
        "INSERT INTO audit_records (seq, event_id, workflow_id, run_id, process, event_type,"
        " node, occurred_at, recorded_at, retain_until, prev_hash, record_hash, record_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            seq,
            record.event_id,
            record.workflow_id,
            record.run_id,
            record.process,
            record.event_type,
            record.node,
            *times,
            prev,
            record.record_hash,
            text,
        ),
    )
    backend.sql(
        "INSERT INTO audit_chains VALUES (?, 0, '') ON CONFLICT (workflow_id) DO NOTHING",
        (record.workflow_id,),
    )
    backend.sql(
        "UPDATE audit_chains SET head_seq = ?, head_hash = ? WHERE workflow_id = ?",
        (seq, record.record_hash, record.workflow_id),
    )
    return record.record_hash


def v3_chain(backend: Backend, workflow_id: str, *, at: datetime = T0) -> list[AuditEvent]:
    """A chain begun in a store of version 3: two records of version 2, then one of 3."""
    events = proposal_events(workflow_id, at=at)
    prev = ""
    for seq, (event, version) in enumerate(zip(events[:3], (2, 2, 3), strict=False), start=1):
        prev = insert_v3(backend, event, version=version, seq=seq, prev=prev, at=at)
    return events


def test_a_store_of_version_3_reads_and_verifies_before_any_write(backend: Backend) -> None:
    make_v3_store(backend)
    events = v3_chain(backend, "wf-1")
    store = backend.make()
    tables = {"audit_records", "audit_chains", "audit_values", "audit_refs"}
    report = store.verify()
    assert report.ok and (report.chains, report.records) == (1, 3), report.problems
    assert [r.data for r in store.records("wf-1")] == [e.data for e in events[:3]]
    assert store.workflow_ids(process="invoice") == ["wf-1"]
    assert sorted(store.chains()["wf-1"].hashes) == [1, 2, 3]
    names = {str(row[0]) for row in backend.sql(_TABLES_SQL[backend.name], ())}
    assert tables <= names and "audit_runs" not in names, "a reader changed nothing"


_TABLES_SQL = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
    "postgres": "SELECT table_name FROM information_schema.tables"
    " WHERE table_schema = current_schema()",
}


def test_records_stored_before_version_4_still_read_and_verify(backend: Backend) -> None:
    """A writer of version 4 moves version 3's tables aside, rows untouched; a chain begun
    there (records of versions 2 and 3) goes on in version 4's tables."""
    make_v3_store(backend)
    events = v3_chain(backend, "wf-1")
    backend.store.append(events[3:], retention_days=30)

    records = backend.store.records("wf-1")
    assert [r.schema_version for r in records] == [2, 2, 3, 4]
    assert [r.data for r in records] == [e.data for e in events]
    assert all(r.record_hash == record_hash(r) for r in records)
    report = backend.store.verify()
    assert report.ok and report.records == 4, report.problems
    names = {str(row[0]) for row in backend.sql(_TABLES_SQL[backend.name], ())}
    assert {"audit_records_v3", "audit_values_v3", "audit_refs_v3", "audit_runs"} <= names
    moved = ("audit_records_v3", "audit_values_v3", "audit_refs_v3")
    for table in moved:  # the guards moved with their tables
        with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
            backend.sql(f"UPDATE {table} SET sha256 = sha256", ()) if "values" in table else (
                backend.sql(f"UPDATE {table} SET workflow_id = workflow_id", ())
            )

    def tamper_v3(statement: str) -> None:
        guards = [f"{t}_{g}" for t in moved for g in ("no_update", "no_delete")]
        for guard in guards:
            on = "" if backend.name == "sqlite" else f" ON {guard.rsplit('_no_', 1)[0]}"
            backend.sql(f"DROP TRIGGER {guard}{on}", ())
        backend.sql(statement, ())
        legacy = sqlite_legacy_schema if backend.name == "sqlite" else pg_legacy_schema
        for restore in legacy("_v3"):
            backend.sql(restore, ())

    tamper_v3("UPDATE audit_records_v3 SET node = 'approve' WHERE seq = 2")
    (problem,) = backend.store.verify().problems
    assert (problem.seq, problem.kind) == (2, "edited") and "column node" in problem.detail
    tamper_v3("UPDATE audit_records_v3 SET node = NULL WHERE seq = 2")

    (row,) = backend.sql("SELECT record_json FROM audit_records_v3 WHERE seq = 3", ())
    doc = json.loads(row[0])
    doc["approved_by_board"] = True  # not hashed by the model: it could say anything
    tamper_v3(f"UPDATE audit_records_v3 SET record_json = '{json.dumps(doc)}' WHERE seq = 3")
    (problem,) = backend.store.verify().problems
    assert problem.seq == 3 and "fields no record has: approved_by_board" in problem.detail
    tamper_v3(f"UPDATE audit_records_v3 SET record_json = '{row[0]}' WHERE seq = 3")

    digest = key_of(PROPOSAL)
    tamper_v3(
        f"UPDATE audit_values_v3 SET value_json = '{{}}' WHERE sha256 = {_blob(backend, digest)}"
    )
    # Version 2 kept its values in the record; version 4 keeps its own copy of a value.
    found = [(p.seq, p.kind) for p in backend.store.verify().problems]
    assert found == [(3, "value_edited")]


def _blob(backend: Backend, digest: str) -> str:
    return f"x'{digest}'" if backend.name == "sqlite" else f"'\\x{digest}'::bytea"


def test_a_purge_takes_a_chain_from_both_versions_tables(backend: Backend) -> None:
    old = T0 - timedelta(days=400)
    make_v3_store(backend)
    events = v3_chain(backend, "old", at=old)
    backend.clock.now = old
    backend.store.append(events[3:], retention_days=30)
    backend.clock.now = T0
    backend.store.append(proposal_events("new")[:2], retention_days=183)

    removed = backend.store.purge(
        T0 - timedelta(days=200), min_retention_days=183, now=T0, tombstone=stone
    )
    assert removed == 4
    assert backend.store.records("old") == []
    assert backend.sql("SELECT COUNT(*) FROM audit_values_v3", ()) == [(0,)]
    assert backend.sql("SELECT COUNT(*) FROM audit_refs_v3", ()) == [(0,)]
    assert set(hashed_values(backend)) == {key_of(PROPOSAL), *_inner(PROPOSAL)} | {
        key_of(unique_text("new"))
    }
    report = backend.store.verify()
    assert report.ok and report.chains == 1, report.problems


def _inner(value: Any) -> set[str]:
    return {d for d in fold({"v": value}).values if d != key_of(value)}


async def test_a_reviewed_runs_store_holds_one_copy_of_the_proposal(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    """The AI's answer is in its attempt, in ai.inference, in what the reviewer was shown
    at the gate and in the decision; the validated proposal in the node's output, in what
    was shown, and in the input of the activities after it. The store keeps each once."""
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, SAMPLES / "invoice-missing-total.txt")
    await settled(client, handle.id)
    await decide_in_turn(
        client, handle.id, [Decision(gate="review", user="rita", outcome="approve")]
    )
    assert (await handle.result()).outcome == "completed"

    store = open_store(AuditSettings.from_env().url)
    assert isinstance(store, SqliteAuditStore)
    records = store.records(handle.id)
    (inference,) = [r for r in records if r.event_type == "ai.inference"]
    (opened,) = [r for r in records if r.event_type == "gate.opened"]
    (decided,) = [r for r in records if r.event_type == "gate.decided"]
    proposal = next(r for r in records if r.event_type == "node.finished" and r.node == "extract")
    shown = opened.data["shown"]["subject"]
    assert shown["attempts"][0]["output"] == inference.data["output"]
    assert shown["output"] == proposal.data["output"] == decided.data["shown"]["subject"]["output"]

    with sqlite3.connect(store.path) as conn:
        values = conn.execute("SELECT id, sha256, value_json FROM audit_values").fetchall()
        digests = {int(i): bytes(k).hex() for i, k, _ in values}
        kept = [
            to_digests(str(row[0]), digests)
            for row in conn.execute("SELECT record_json FROM audit_records")
        ]
        kept += [to_digests(str(v), digests) for _, _, v in values]
    for answer in (inference.data["output"], proposal.data["output"]):
        key = key_of(answer)
        assert sum(text.count(key) for text in kept) >= 3, "referred to from several places"
        assert sum(text.count(stored_text(answer)) for text in kept) == 1
    assert store.verify(handle.id).ok


def stored_text(value: Any) -> str:
    """A value's text as the store keeps it: its large parts by reference."""
    folded = fold({"v": value})
    return folded.values[key_of(value)]


def test_an_export_holds_the_values_in_full_and_verifies_on_its_own(
    backend: Backend, tmp_path: Path
) -> None:
    """As `baton audit verify --file` checks a JSONL export: no store, no value table."""
    backend.store.append(proposal_events("wf-1"), retention_days=30)
    out = tmp_path / "wf-1.jsonl"
    export_jsonl(backend.store.records("wf-1"), out)
    lines = out.read_text().splitlines()
    assert '"$value"' not in out.read_text()
    assert all("Acme Industrial Supplies GmbH" in line for line in lines)

    def problems(lines: list[str]) -> list[tuple[int, str]]:
        records = [AuditRecord.model_validate_json(line) for line in lines]
        rows = [
            StoredRow(r.seq, {c: getattr(r, c) for c in COLUMNS}, line)
            for r, line in zip(records, lines, strict=True)
        ]
        head = ChainHead(records[-1].seq, records[-1].record_hash)
        return [(p.seq, p.kind) for p in verify_chain("wf-1", rows, head)]

    assert problems(lines) == []
    # The proposal as the reviewer was shown it, changed in the export only.
    lines[2] = lines[2].replace("INV-1043", "INV-9999")
    assert problems(lines) == [(3, "edited")]
