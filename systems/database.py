"""What the SQLite systems of record share: where their file lives and how a
connection is opened."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path


def data_file(env_var: str, name: str) -> Path:
    """``env_var`` if set, else ``name`` in the data dir (BATON_DATA_DIR)."""
    explicit = os.environ.get(env_var)
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("BATON_DATA_DIR", ".baton")) / name


class SqliteSystem:
    """A system on one SQLite file in WAL mode, its schema created on first use."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(schema)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db
