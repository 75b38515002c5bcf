"""`baton audit ...`: verify, checkpoint, export, report, purge, retention
override, hold, release and reconcile the audit trail."""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
)

from baton.audit.anchoring import verify_export
from baton.audit.reports import describe, select_runs, write_report
from baton.audit.retention import DEFAULT_RETENTION_DAYS, OVERRIDE_ROLE, signed_override
from baton.audit.sink import AuditSettings
from baton.audit.store import AuditStore, open_store
from baton.client import connect
from baton.config import Settings, directory_path, read_directory
from baton.keys import Signer


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `audit` command and its subcommands."""
    audit = commands.add_parser("audit", help="the audit trail: verify, export, purge")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="check the hash chains and the store against the signed checkpoints"
    )
    verify.add_argument("workflow_id", nargs="?", help="one run (default: every run)")
    verify.add_argument(
        "--file",
        type=Path,
        help="check a JSONL export on its own, offline: chains and their signed anchors",
    )
    audit_commands.add_parser(
        "checkpoint", help="sign a checkpoint of the chain heads now (workers do it as they write)"
    )
    export = audit_commands.add_parser("export", help="write JSONL or a self-contained HTML report")
    export.add_argument("workflow_id", nargs="?", help="one run (or use --process / --since)")
    export.add_argument("--format", choices=("jsonl", "html"), default="html")
    export.add_argument("--process")
    export.add_argument("--since", type=_date, help="runs recorded since this date (YYYY-MM-DD)")
    export.add_argument("--out", type=Path, help="output file (default: under <data dir>/reports)")
    period = audit_commands.add_parser(
        "report",
        help="the period report of a process: one HTML file with volume, human review, "
        "time to decision, SLA, models, per-run checks and chain verification",
    )
    period.add_argument("--process", required=True, help="e.g. document_intake")
    period.add_argument(
        "--since", type=_date, required=True, help="first day (YYYY-MM-DD): runs started since"
    )
    period.add_argument("--until", type=_date, help="last day, included (default: up to now)")
    period.add_argument(
        "--fast-seconds",
        type=float,
        help="a decision sooner than this after its gate opened counts as fast (default: 10)",
    )
    period.add_argument("--out", type=Path, help="output file (default: under <data dir>/reports)")
    purge = audit_commands.add_parser(
        "purge", help="delete runs older than a date, leaving signed tombstones"
    )
    purge.add_argument("--before", type=_date, required=True, help="YYYY-MM-DD")
    purge.add_argument("--reason", required=True, help="why: recorded in each tombstone")
    purge.add_argument("--as", dest="user", default=getpass.getuser(), help="who purges")
    override = audit_commands.add_parser(
        "retention-override",
        help=f"let [audit] retention go below {DEFAULT_RETENTION_DAYS} days: an act of a user "
        f"with the {OVERRIDE_ROLE} role, signed with their key and recorded in the audit store",
    )
    override.add_argument(
        "--days", type=int, required=True, help="the least number of days records are then kept"
    )
    override.add_argument(
        "--reason", required=True, help="why: kept with the override, shown in the reports"
    )
    override.add_argument(
        "--as", dest="user", required=True, help=f"who signs it (role {OVERRIDE_ROLE})"
    )
    hold = audit_commands.add_parser("hold", help="keep a run's records from any purge")
    hold.add_argument("workflow_id")
    hold.add_argument("--reason", required=True, help="the matter they are kept for")
    hold.add_argument("--as", dest="user", default=getpass.getuser(), help="who holds them")
    release = audit_commands.add_parser("release", help="end a run's legal hold")
    release.add_argument("workflow_id")
    reconcile = audit_commands.add_parser(
        "reconcile", help="compare each run's trail with its Temporal history"
    )
    reconcile.add_argument("workflow_id", nargs="?", help="one run (default: every run)")
    reconcile.add_argument("--since", type=_date, help="runs since this date (YYYY-MM-DD)")
    reconcile.add_argument(
        "--schedule",
        type=_duration,
        metavar="EVERY",
        help="instead, have a Temporal Schedule reconcile every EVERY (e.g. 6h, 1d) the runs "
        "of the last --window-days; keep it well inside the namespace's retention",
    )
    reconcile.add_argument("--window-days", type=int, default=7)


async def dispatch(settings: Settings, args: argparse.Namespace) -> int:
    if args.audit_command == "reconcile":
        return await _reconcile(settings, args)
    return _audit(settings, args)


def _date(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date like 2026-05-31") from None


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    # Verify must run to find a lost override, and an override is recorded while the
    # file may already ask for less: neither needs the retention to be allowed.
    floor_free = args.audit_command in ("verify", "retention-override")
    audit = AuditSettings.from_env(settings, enforce_floor=not floor_free)
    store = open_store(audit.url)
    now = datetime.now(UTC)
    if args.audit_command == "retention-override":
        return _retention_override(audit, store, args, now)
    if args.audit_command == "verify":
        anchors = audit.anchors(write=False)
        assert anchors is not None
        if args.file is not None:
            report = verify_export(args.file, anchors.public, anchors.timestamps)
            print(f"{args.file}: {describe(report)}")
            return 0 if report.ok else 1
        anchored = anchors.verify(store, args.workflow_id)
        print(describe(anchored))
        if anchored.not_timestamped:
            numbers = ", ".join(str(n) for n in anchored.not_timestamped)
            print(
                f"{len(anchored.not_timestamped)} checkpoint(s) not yet timestamped ({numbers}): "
                "the TSA could not be reached yet; the next checkpoint fetches their tokens"
            )
        return 0 if anchored.ok else 1
    if args.audit_command == "checkpoint":
        writer = audit.anchors(write=True)
        assert writer is not None
        made = writer.checkpoint(store, now=now, stamp=False)
        print(
            f"checkpoint {made.number}: {len(made.heads)} chain head(s) signed, in "
            f"{writer.log.folder}"
            if made
            else "no chain moved since the last checkpoint"
        )
        if writer.timestamps is not None and writer.timestamps.url:
            waiting = writer.stamp_missing()
            print(
                f"{len(waiting)} checkpoint(s) not yet timestamped: the TSA at "
                f"{writer.timestamps.url} could not be reached or refused (see the warning)"
                if waiting
                else f"no checkpoint is waiting for its token from {writer.timestamps.url}"
            )
        return 0
    if args.audit_command == "purge":
        writer = audit.anchors(write=True)
        assert writer is not None
        stones, tombstone = writer.tombstone_maker(by=args.user, reason=args.reason, now=now)
        removed = store.purge(
            args.before,
            min_retention_days=audit.min_retention_days,
            now=now,
            tombstone=tombstone,
        )
        print(
            f"purged {removed} records of {len(stones)} run(s) that ended before "
            f"{args.before:%Y-%m-%d}; their signed tombstones are in {writer.log.folder}"
        )
        return 0
    if args.audit_command == "hold":
        store.hold(args.workflow_id, by=args.user, reason=args.reason, now=now)
        print(f"{args.workflow_id} is under legal hold: no purge deletes it until released")
        return 0
    if args.audit_command == "release":
        released = store.release(args.workflow_id)
        print(f"{args.workflow_id}: " + ("hold released" if released else "was not held"))
        return 0
    if args.audit_command == "report":
        return _period_report(settings, audit, store, args)
    from workflows import PROCESSES

    runs = select_runs(store, args.workflow_id, process=args.process, since=args.since)
    # Anchored up to now, so that the export's proofs cover every record in it.
    writer = audit.anchors(write=True)
    assert writer is not None
    writer.checkpoint(store, now=now)
    name = args.workflow_id or args.process or "runs"
    out = args.out or settings.data_dir / "reports" / f"{name}.{args.format}"
    report = write_report(
        store,
        runs,
        out,
        fmt=args.format,
        mermaid_for=lambda p: PROCESSES[p].graph.mermaid() if p in PROCESSES else None,
        min_retention_days=audit.min_retention_days,
        retention_override=audit.retention_override,
        anchors=writer,
    )
    print(f"wrote {out} ({len(runs)} run(s)); {describe(report)}")
    return 0 if report.ok else 1


def _retention_override(
    audit: AuditSettings, store: AuditStore, args: argparse.Namespace, now: datetime
) -> int:
    writer = audit.anchors(write=True)
    assert writer is not None
    override = signed_override(Signer.load(args.user), days=args.days, reason=args.reason)
    kept = writer.record_retention_override(
        store, override, read_directory(directory_path()), now=now
    )
    print(
        f"recorded retention override {kept.override_id}: {kept.describe()}, because "
        f"{kept.reason!r}\n[audit] retention_days and min_retention_days may now be as low as "
        f"{kept.days}; it is kept in the audit store and in {writer.log.folder}"
    )
    return 0


def _period_report(
    settings: Settings, audit: AuditSettings, store: AuditStore, args: argparse.Namespace
) -> int:
    # Imported here: matplotlib takes a while to load, and only this command draws.
    from baton.audit.period import write_period_report
    from baton.audit.period_stats import DEFAULT_FAST_SECONDS

    until = args.until + timedelta(days=1) if args.until else None
    out = args.out or settings.data_dir / "reports" / f"{args.process}-{args.since:%Y-%m-%d}.html"
    stats = write_period_report(
        store,
        out,
        process=args.process,
        since=args.since,
        until=until,
        fast_seconds=DEFAULT_FAST_SECONDS if args.fast_seconds is None else args.fast_seconds,
        min_retention_days=audit.min_retention_days,
        retention_override=audit.retention_override,
    )
    print(
        f"wrote {out}: {stats.runs} run(s) of {args.process} started from "
        f"{stats.since:%Y-%m-%d} to {stats.until - timedelta(microseconds=1):%Y-%m-%d}"
    )
    flagged = [r.reviewer for r in stats.reviewers if r.flagged]
    if flagged:
        print(f"automation-bias signal (fast decisions) for: {', '.join(flagged)}")
    differing = [d.workflow_id for d in stats.reconcile_differs]
    more = f" and {len(differing) - 10} more" if differing[10:] else ""
    named = ", ".join(differing[:10]) + more
    print(
        f"reconciled with Temporal: {stats.reconcile_agrees} agree, {len(differing)} differ"
        + (f" ({named})" if differing else "")
        + f", {stats.not_reconciled} not reconciled yet"
    )
    if stats.verified:
        print(f"chain ok: {stats.chains_verified} run(s) verified")
        return 1 if differing else 0
    broken = f"CHAIN BROKEN in {len(stats.chain_findings)} run(s)"
    if stats.store_problems:
        broken += f"; {len(stats.store_problems)} finding(s) about the store"
    print(f"{broken}; the report names them")
    return 1


async def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from baton.audit.reconcile import reconcile, record_findings
    from workflows import PROCESSES

    client = await connect(settings)
    if args.schedule is not None:
        return await _schedule_reconcile(client, settings, args.schedule, args.window_days)
    audit = AuditSettings.from_env(settings)
    store = open_store(audit.url)
    now = datetime.now(UTC)
    results = await reconcile(
        client, store, since=args.since, workflow_id=args.workflow_id, processes=list(PROCESSES)
    )
    recorded = record_findings(
        store,
        results,
        pass_id=f"cli-{now:%Y%m%dT%H%M%S%fZ}",
        at=now,
        retention_days=audit.retention_days,
        anchors=audit.anchors(write=True),
    )
    for result in results:
        if result.differences or result.notes:
            print(f"{result.workflow_id}: {'DIFFERS' if result.differences else 'ok'}")
            for line in [*result.differences, *result.notes]:
                print(f"  {line}")
    differing = [r for r in results if r.differences]
    print(
        f"reconciled {len(results)} run(s) with Temporal's history: "
        + (f"{len(differing)} differ" if differing else "the trail agrees")
        + f"; {len(recorded)} new finding(s) recorded for the audit reports"
    )
    return 1 if differing else 0


async def _schedule_reconcile(
    client: Client, settings: Settings, every: timedelta, window_days: int
) -> int:
    from baton.audit.reconcile import (
        RECONCILE_WORKFLOW,
        SCHEDULE_ID,
        ReconcileRequest,
    )

    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            RECONCILE_WORKFLOW,
            ReconcileRequest(window_days=window_days),
            id=SCHEDULE_ID,
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A pass still going when the next is due: skip the next, never pile them up.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(SCHEDULE_ID, schedule)
        verb = "created"
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(SCHEDULE_ID)
        await handle.update(lambda _: ScheduleUpdate(schedule=schedule))
        verb = "updated"
    print(
        f"{verb} Temporal Schedule '{SCHEDULE_ID}': every {every}, the runs of the last "
        f"{window_days} day(s); differences are errors in the worker's log, and every run's "
        "result is recorded in the audit trail, where the reports show it"
    )
    return 0


def _duration(text: str) -> timedelta:
    units = {"m": "minutes", "h": "hours", "d": "days"}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration like 30m, 6h or 1d")
    return timedelta(**{units[unit]: int(number)})
