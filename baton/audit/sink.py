"""Where audit events are written from the worker side: redaction applied,
the policy that applied recorded with each event, then the store."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from baton.audit.events import AuditEvent, redact
from baton.audit.store import AuditStore, open_store
from baton.config import Settings, config_path, read_toml

DEFAULT_RETENTION_DAYS = 183  # the AI Act's six months (Art. 19, 26(6))


@dataclass(frozen=True)
class AuditSettings:
    """The `[audit]` table of baton.toml plus the store URL and salt."""

    url: str
    salt: str
    redact_fields: tuple[str, ...] = ()
    retention_days: int = DEFAULT_RETENTION_DAYS
    min_retention_days: int = DEFAULT_RETENTION_DAYS

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> AuditSettings:
        settings = settings or Settings.from_env()
        path = config_path()
        table = read_toml(path, "").get("audit", {}) if path.exists() else {}
        url = os.environ.get("BATON_AUDIT_URL") or (
            f"sqlite:///{(settings.data_dir / 'audit.db').resolve()}"
        )
        return cls(
            url=url,
            salt=os.environ.get("BATON_AUDIT_SALT") or _local_salt(settings.data_dir),
            redact_fields=tuple(table.get("redact", ())),
            retention_days=int(table.get("retention_days", DEFAULT_RETENTION_DAYS)),
            min_retention_days=int(table.get("min_retention_days", DEFAULT_RETENTION_DAYS)),
        )


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
    def __init__(self, settings: AuditSettings, store: AuditStore | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(settings.url)

    def write(self, events: Sequence[AuditEvent]) -> int:
        redacted = []
        for event in events:
            data, policy = redact(event.data, self.settings.redact_fields, self.settings.salt)
            data["redaction"] = policy.model_dump(mode="json")
            redacted.append(event.model_copy(update={"data": data}))
        return self.store.append(redacted, retention_days=self.settings.retention_days)
