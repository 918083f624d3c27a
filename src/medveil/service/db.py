"""The service's record: an embedded SQLite database in the data folder.

Centres (a token's SHA-256, never the token), releases, models, jobs and results;
the bundles themselves are folders under the data folder. A row is written only
once its files are complete and verified, so what the database lists is always
whole: a restart loses nothing and shows nothing half-made.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medveil.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS centres (
    name TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    id TEXT PRIMARY KEY, centre TEXT NOT NULL, protocol TEXT NOT NULL, scheme TEXT NOT NULL,
    content_id TEXT NOT NULL, pooling INTEGER NOT NULL, bytes INTEGER NOT NULL,
    splits TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, protocol TEXT NOT NULL, centres TEXT NOT NULL, releases TEXT NOT NULL,
    created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, centre TEXT NOT NULL, kind TEXT NOT NULL, spec TEXT NOT NULL,
    status TEXT NOT NULL, error TEXT, worker_pid INTEGER, output TEXT,
    created TEXT NOT NULL, started TEXT, finished TEXT);
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY, centre TEXT NOT NULL, job TEXT NOT NULL, release TEXT NOT NULL,
    model TEXT, split TEXT NOT NULL, created TEXT NOT NULL);
"""
CENTRE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ServiceDB:
    """A thin, typed wrapper over the SQLite file ``DIR/medveil.sqlite3`` (0600)."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(data_dir)
        if not self.dir.is_dir():
            self.dir.mkdir(mode=0o700, parents=True)
        os.chmod(self.dir, 0o700)
        for sub in ("releases", "models", "results", "incoming"):
            (self.dir / sub).mkdir(mode=0o700, exist_ok=True)
            os.chmod(self.dir / sub, 0o700)
        self.path = self.dir / "medveil.sqlite3"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        with self.connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        try:
            yield db
        finally:  # SQLite gives its -wal / -shm files the database file's mode (0600)
            db.close()

    # -- centres ------------------------------------------------------------------------
    def add_centre(self, name: str) -> str:
        """A new bearer token for ``name`` (returned once; only its hash is stored)."""
        if not name or set(name) - CENTRE_NAME_CHARS or len(name) > 64:
            raise ConfigError(f"centre name {name[:40]!r} must be 1 to 64 letters, digits, "
                              "'-', '_' or '.'")
        token = secrets.token_urlsafe(32)
        with self.connect() as db:
            if db.execute("SELECT 1 FROM centres WHERE name=?", (name,)).fetchone():
                raise ConfigError(f"centre '{name}' already has a token; choose another name")
            db.execute("INSERT INTO centres VALUES (?, ?, ?)", (name, token_hash(token), now()))
        return token

    def centre_for(self, token: str) -> str | None:
        with self.connect() as db:
            row = db.execute("SELECT name FROM centres WHERE token_sha256=?",
                             (token_hash(token),)).fetchone()
        return None if row is None else str(row["name"])

    # -- rows ---------------------------------------------------------------------------
    def insert(self, table: str, **row: Any) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        values = [json.dumps(v) if isinstance(v, list | dict) else v for v in row.values()]
        with self.connect() as db:
            db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", values)  # noqa: S608

    def get(self, table: str, row_id: str) -> dict[str, Any] | None:
        with self.connect() as db:
            row = db.execute(f"SELECT * FROM {table} WHERE id=?", (row_id,)).fetchone()  # noqa: S608
        return None if row is None else dict(row)

    def rows(self, table: str, **where: Any) -> list[dict[str, Any]]:
        clause = " AND ".join(f"{k}=?" for k in where) or "1=1"
        with self.connect() as db:
            rows = db.execute(f"SELECT * FROM {table} WHERE {clause} ORDER BY created",  # noqa: S608
                              tuple(where.values())).fetchall()
        return [dict(r) for r in rows]

    def update_job(self, job_id: str, **fields: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.connect() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE id=?", (*fields.values(), job_id))  # noqa: S608

    def claim_job(self, pid: int) -> dict[str, Any] | None:
        """The oldest queued job, marked running by ``pid`` (one claimer wins)."""
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT * FROM jobs WHERE status='queued' ORDER BY created LIMIT 1"
                             ).fetchone()
            if row is None:
                db.execute("COMMIT")
                return None
            db.execute("UPDATE jobs SET status='running', worker_pid=?, started=? WHERE id=?",
                       (pid, now(), row["id"]))
            db.execute("COMMIT")
        return {**dict(row), "status": "running", "worker_pid": pid}

    def fail_interrupted_jobs(self) -> int:
        """At start-up: jobs a killed server left running are failed, with the reason."""
        with self.connect() as db:
            cursor = db.execute(
                "UPDATE jobs SET status='failed', finished=?, error=? WHERE status='running'",
                (now(), "interrupted: the server stopped while this job ran; submit it again"))
        return int(cursor.rowcount)
