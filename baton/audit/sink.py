"""Where audit events are written from the worker side: redaction applied,
the policy that applied recorded with each event, then the store."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry import trace

from baton.audit.anchor import Checkpoint, log_path, signer_path
from baton.audit.anchoring import PUBLIC_KEY_ENV, Anchors
from baton.audit.detectors import Scrubber
from baton.audit.events import AuditEvent, RedactionPolicy, redact_values, salt_id
from baton.audit.retention import DEFAULT_RETENTION_DAYS, RetentionOverride, floor_refusal
from baton.audit.store import AuditConflict, AuditStore, open_store
from baton.audit.timestamping import CERT_ENV, URL_ENV, TimestampAuthority
from baton.config import ConfigError, Settings, config_path, read_toml

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditSettings:
    """The `[audit]` table of baton.toml plus the store URL and salt."""

    url: str
    salt: str
    redact_fields: tuple[str, ...] = ()
    retention_days: int = DEFAULT_RETENTION_DAYS
    min_retention_days: int = DEFAULT_RETENTION_DAYS
    # The checkpoint key and log, outside the store (baton.audit.anchor); None: unanchored.
    checkpoint_key: Path | None = None
    checkpoint_log: Path | None = None
    # The signed override that lets the retention above go below the floor, if one must.
    retention_override: RetentionOverride | None = None
    # The RFC 3161 Time-Stamp Authority that stamps each checkpoint (baton.audit.timestamping).
    timestamps: TimestampAuthority | None = None

    @classmethod
    def from_env(
        cls, settings: Settings | None = None, *, enforce_floor: bool = True
    ) -> AuditSettings:
        """Read the settings; a retention below the floor is refused unless a signed
        override in the store allows it. ``enforce_floor=False`` only where the floor does
        not matter and the command must run whatever the file asks: recording an override
        (the file may ask for less already) and verifying (which finds a lost override)."""
        settings = settings or Settings.from_env()
        path = config_path()
        table = read_toml(path, "").get("audit", {}) if path.exists() else {}
        url = os.environ.get("BATON_AUDIT_URL") or (
            f"sqlite:///{(settings.data_dir / 'audit.db').resolve()}"
        )
        audit = cls(
            url=url,
            salt=os.environ.get("BATON_AUDIT_SALT") or _local_salt(settings.data_dir),
            redact_fields=tuple(table.get("redact", ())),
            retention_days=int(table.get("retention_days", DEFAULT_RETENTION_DAYS)),
            min_retention_days=int(table.get("min_retention_days", DEFAULT_RETENTION_DAYS)),
            checkpoint_key=signer_path(settings.data_dir),
            checkpoint_log=log_path(settings.data_dir),
            timestamps=_timestamp_authority(table, path),
        )
        lowered = min(audit.retention_days, audit.min_retention_days) < DEFAULT_RETENTION_DAYS
        return audit._below_floor(path) if enforce_floor and lowered else audit

    def _below_floor(self, path: Path) -> AuditSettings:
        """These settings, with the override that allows their retention below the floor;
        ConfigError naming the fix when none does."""
        try:
            in_effect = self._override_in_effect()
        except ValueError as err:
            raise ConfigError(f"[audit] retention in {path} is below the floor; {err}") from None
        for name, days in (
            ("retention_days", self.retention_days),
            ("min_retention_days", self.min_retention_days),
        ):
            if days < DEFAULT_RETENTION_DAYS and (in_effect is None or days < in_effect.days):
                raise ConfigError(floor_refusal(name, days, str(path), in_effect))
        return replace(self, retention_override=in_effect)

    def _override_in_effect(self) -> RetentionOverride | None:
        try:
            anchors = self.anchors(write=False)
            return anchors.retention_override_in_effect(open_store(self.url)) if anchors else None
        except LookupError:
            # No checkpoint key or no store yet: nothing was ever recorded, no override either.
            return None

    def anchors(self, *, write: bool) -> Anchors | None:
        if self.checkpoint_key is None or self.checkpoint_log is None:
            return None
        if write:
            return Anchors.writer(self.checkpoint_key, self.checkpoint_log, self.timestamps)
        return Anchors.reader(
            self.checkpoint_key,
            self.checkpoint_log,
            os.environ.get(PUBLIC_KEY_ENV),
            self.timestamps,
        )


def _timestamp_authority(table: dict[str, object], path: Path) -> TimestampAuthority | None:
    """The TSA of `[audit] timestamp_url`, `timestamp_certificate` and `timestamp_ca` (paths
    relative to the config file), or of BATON_AUDIT_TIMESTAMP_URL and _CERT. A certificate
    alone is enough to check tokens (an auditor's verify); asking for them needs both."""
    url = os.environ.get(URL_ENV) or str(table.get("timestamp_url", ""))
    certificate = os.environ.get(CERT_ENV) or str(table.get("timestamp_certificate", ""))
    ca = str(table.get("timestamp_ca", ""))
    if not certificate:
        if url:
            raise ConfigError(
                f"[audit] timestamp_url is set (in {path} or {URL_ENV}) but not the TSA's "
                "certificate its tokens are checked with: set [audit] timestamp_certificate = "
                f'"path/to/tsa.pem" or {CERT_ENV}'
            )
        return None
    try:
        return TimestampAuthority.load(
            url, path.parent / certificate, path.parent / ca if ca else None
        )
    except ValueError as err:
        raise ConfigError(f"{err} (in {path} or {CERT_ENV})") from None


def _local_salt(data_dir: Path) -> str:
    """A salt kept beside the embedded store, made once. Production sets
    BATON_AUDIT_SALT from a secret store, the same on every worker."""
    path = data_dir / "audit.salt"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


class AuditSink:
    """Redacts and writes events with group commit: one writer thread appends
    whatever has queued up in one transaction, and each caller waits for the
    commit that holds its events. An activity therefore still completes only
    after its record is durable, while concurrent activities share the cost
    of a transaction (measured: the per-event transaction was a quarter of
    the worker's time at 100 concurrent runs)."""

    MAX_BATCH_EVENTS = 500
    # A checkpoint at most this often (seconds): at a run's end, and at the latest
    # CHECKPOINT_EVERY after anything else was written.
    CHECKPOINT_PAUSE = 1.0
    CHECKPOINT_EVERY = 60.0

    def __init__(self, settings: AuditSettings, store: AuditStore | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(settings.url)
        self._anchors = settings.anchors(write=True)
        # Checkpoints waiting for their time-stamp token, fetched by a thread of their own
        # so that a slow or unreachable TSA never holds up the writer.
        self._unstamped: queue.SimpleQueue[Checkpoint] = queue.SimpleQueue()
        self._stamper: threading.Thread | None = None
        self._checkpointed_at = 0.0
        # The chains appended to since the last checkpoint: only their heads are read.
        self._moved: set[str] = set()
        self._run_ended = False
        # Set by an AuditConflict: from then on every write fails, until a person looks.
        self._stopped: AuditConflict | None = None
        self._queue: queue.SimpleQueue[tuple[list[AuditEvent], Future[int]]] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._redact_names = frozenset(settings.redact_fields)
        self._policy = RedactionPolicy(
            fields=sorted(self._redact_names), salt_id=salt_id(settings.salt)
        ).model_dump(mode="json")
        self._scrubber = Scrubber(settings.salt) if settings.salt else None
        # As Temporal names a worker by default: process id at host.
        self._identity = f"{os.getpid()}@{socket.gethostname()}"

    def write(self, events: Sequence[AuditEvent]) -> int:
        return self.submit(events).result()

    async def write_async(self, events: Sequence[AuditEvent]) -> int:
        return await asyncio.wrap_future(self.submit(events))

    def submit(self, events: Sequence[AuditEvent]) -> Future[int]:
        done: Future[int] = Future()
        if self._stopped is not None:
            done.set_exception(self._stopped)
            return done
        self._queue.put(([self._redacted(e) for e in events], done))
        with self._start_lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_forever, daemon=True)
                self._writer.start()
        return done

    def _redacted(self, event: AuditEvent) -> AuditEvent:
        if self._scrubber is None:
            raise ValueError("redaction needs a non-empty salt")
        data = redact_values(event.data, self._redact_names, self.settings.salt)
        found: Counter[str] = Counter()
        data = self._scrubber.scrub(data, found)
        # The stamp says what this record had in clear before it was stored.
        policy = {**self._policy, "found": dict(sorted(found.items()))} if found else self._policy
        return event.model_copy(
            update={"data": {**data, "redaction": policy, "context": self._context()}}
        )

    def _context(self) -> dict[str, str]:
        """Where the record was written (NIST AU-3): the worker, and the trace and span
        of the work, so a record leads to its spans and back."""
        span = trace.get_current_span().get_span_context()
        context = {"worker": self._identity}
        if span.is_valid:
            context["trace_id"] = format(span.trace_id, "032x")
            context["span_id"] = format(span.span_id, "016x")
        return context

    def _write_forever(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._checkpoint_wait())
            except queue.Empty:
                self._checkpoint()
                continue
            batch = [first]
            size = len(batch[0][0])
            while size < self.MAX_BATCH_EVENTS:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                size += len(batch[-1][0])
            events = [event for pending, _ in batch for event in pending]
            # A caller cancelled while waiting (its activity was cancelled)
            # gets no answer, but its events are written all the same: the
            # store ignores the duplicates a retried flush would bring.
            waiting = [
                (len(pending), done)
                for pending, done in batch
                if done.set_running_or_notify_cancel()
            ]
            try:
                self.store.append(events, retention_days=self.settings.retention_days)
            except AuditConflict as err:
                # Two writers disagree about what happened: writing on would bury it.
                logger.critical("audit writer stopped: %s", err)
                self._stopped = AuditConflict(f"the audit writer stopped: {err}")
                for _, done in waiting:
                    done.set_exception(err)
            except Exception as err:
                for _, done in waiting:
                    done.set_exception(err)
            else:
                for count, done in waiting:
                    done.set_result(count)
                self._moved.update(e.workflow_id for e in events)
                self._run_ended |= any(e.event_type == "run.ended" for e in events)
                if self._checkpoint_wait() == 0:
                    self._checkpoint()

    def _checkpoint_wait(self) -> float | None:
        """Seconds until a checkpoint is due; None when none is."""
        if self._anchors is None or not self._moved:
            return None
        since = time.monotonic() - self._checkpointed_at
        due_in = (self.CHECKPOINT_PAUSE if self._run_ended else self.CHECKPOINT_EVERY) - since
        return max(0.0, due_in)

    def _checkpoint(self) -> None:
        assert self._anchors is not None
        self._checkpointed_at = time.monotonic()
        moved, self._moved, self._run_ended = self._moved, set(), False
        try:
            made = self._anchors.checkpoint(
                self.store, now=datetime.now(UTC), moved=moved, stamp=False
            )
        except Exception:
            self._moved |= moved
            # The records are stored; the next checkpoint covers them. Loud, since
            # until then they are anchored by nothing outside the database.
            logger.exception("audit checkpoint failed; the next one will cover these records")
            return
        if made is not None and made.tsa:
            self._unstamped.put(made)
            if self._stamper is None:
                self._stamper = threading.Thread(target=self._stamp_forever, daemon=True)
                self._stamper.start()

    def _stamp_forever(self) -> None:
        """Fetch the tokens of this writer's checkpoints, each new one together with those
        still lacking one (the TSA was down); the others' writers fetch theirs."""
        assert self._anchors is not None
        waiting: dict[int, Checkpoint] = {}
        while True:
            made = self._unstamped.get()
            waiting[made.number] = made
            while not self._unstamped.empty():
                made = self._unstamped.get()
                waiting[made.number] = made
            try:
                still = self._anchors.stamp_missing(list(waiting.values()))
            except Exception:
                logger.exception("time-stamping the audit checkpoints failed; trying again later")
                continue
            waiting = {c.number: c for c in still}
