"""The service's record: an embedded SQLite database in the data folder.

Centres (a token's SHA-256, never the token), releases, models, jobs and results;
the bundles themselves are folders under the data folder. A row is written only
once its files are complete and verified, so what the database lists is always
whole: a restart loses nothing and shows nothing half-made.

The data folder is medveil's only if medveil made it: a marker file
(:data:`MARKER`) is written when the folder is created or found empty, and a
folder that holds anything without it is refused untouched (its files, its
mode). ``--data-dir ~/Documents`` must never have its files deleted or its mode
changed by a start-up cleanup.
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
from medveil.limits import ID_PATTERN

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
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created);
CREATE INDEX IF NOT EXISTS jobs_by_centre ON jobs (centre, started);
"""
#: The queued jobs in the order the workers take them: round-robin by centre. Each
#: centre's jobs oldest first (``turn`` 1, 2, ...); within a turn, the centre whose last
#: job started least recently first (a centre with none yet before any), then the
#: centre waiting longest. A centre that queues a hundred jobs takes every other start
#: while another centre waits, never the next hundred.
QUEUE = """
WITH queued AS (
    SELECT j.*, ROW_NUMBER() OVER (PARTITION BY j.centre ORDER BY j.created, j.id) AS turn,
           MIN(j.created) OVER (PARTITION BY j.centre) AS waiting,
           (SELECT MAX(s.started) FROM jobs s WHERE s.centre = j.centre) AS ran
    FROM jobs j WHERE j.status = 'queued')
SELECT *, ROW_NUMBER() OVER (ORDER BY turn, ran IS NOT NULL, ran, waiting, centre) - 1
       AS ahead
FROM queued"""
#: The file that says medveil made this folder (mode 0600, one JSON line).
MARKER = ".medveil-service"
MARKER_FORMAT = "medveil.service/1"
SUBFOLDERS = ("releases", "models", "results", "incoming")
CENTRE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def is_service_id(name: str, *kinds: str) -> bool:
    """Whether ``name`` is an id :func:`new_id` gave, of one of ``kinds``."""
    match = ID_PATTERN.fullmatch(name)
    return match is not None and match.group(1) in kinds


def _is_marker(path: Path) -> bool:
    """A regular file (not a link) holding the marker's JSON, or empty: one that another
    process (a concurrent `serve token add`) has made and is writing."""
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if not head:
        return True
    try:
        return json.loads(head).get("format") == MARKER_FORMAT
    except (ValueError, AttributeError):
        return False


def claim_data_dir(data_dir: str | os.PathLike[str]) -> Path:
    """``data_dir`` as a medveil service folder: made (0700, marked) where it is missing,
    marked where it is empty, reused where marked; anything else is refused untouched."""
    folder = Path(data_dir)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ConfigError(f"--data-dir {folder} is not a folder; give a new or empty folder")
    if not folder.exists():
        try:
            folder.mkdir(mode=0o700, parents=True)
        except FileExistsError:  # made meanwhile (another `serve token add`): judged below
            pass
    marker = folder / MARKER
    if not _is_marker(marker):
        if any(entry.name != MARKER for entry in folder.iterdir()) or marker.exists() \
                or marker.is_symlink():
            raise ConfigError(f"{folder} is not a medveil service folder (it holds files "
                              "medveil did not make, and no marker); give a new or empty "
                              "folder as --data-dir")
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:  # marked meanwhile by another process
            if not _is_marker(marker):
                raise ConfigError(f"{folder} is not a medveil service folder; give a new or "
                                  "empty folder as --data-dir") from None
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps({"format": MARKER_FORMAT, "created": now()}) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
    return folder


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ServiceDB:
    """A thin, typed wrapper over the SQLite file ``DIR/medveil.sqlite3`` (0600)."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = claim_data_dir(data_dir)
        os.chmod(self.dir, 0o700)  # medveil's own folder (marked), never a user's
        for sub in SUBFOLDERS:
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
        """The next queued job in :data:`QUEUE`'s order (round-robin by centre), marked
        running by worker ``pid`` with a fresh id for what it makes (``output``, shown
        only once the job is done); one claimer wins."""
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(f"{QUEUE} ORDER BY ahead LIMIT 1").fetchone()  # noqa: S608
            if row is None:
                db.execute("COMMIT")
                return None
            output = new_id("model" if row["kind"] == "train" else "results")
            db.execute("UPDATE jobs SET status='running', worker_pid=?, started=?, output=? "
                       "WHERE id=?", (pid, now(), output, row["id"]))
            db.execute("COMMIT")
        job = {k: row[k] for k in row.keys() if k not in ("turn", "waiting", "ran", "ahead")}
        return {**job, "status": "running", "worker_pid": pid, "output": output}

    def queued_ahead(self, job_id: str) -> int | None:
        """How many queued jobs run before ``job_id`` (None: it is not queued)."""
        with self.connect() as db:
            row = db.execute(f"SELECT ahead FROM ({QUEUE}) WHERE id=?",  # noqa: S608
                             (job_id,)).fetchone()
        return None if row is None else int(row["ahead"])

    def complete_job(self, job_id: str, *, output: str, table: str,
                     row: dict[str, Any]) -> bool:
        """Record what a job made and mark it done, in one transaction, only while it is
        still running (a job cancelled or timed out meanwhile lists nothing)."""
        values = {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()}
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            cursor = db.execute("UPDATE jobs SET status='done', output=?, finished=? "
                                "WHERE id=? AND status='running'", (output, now(), job_id))
            if cursor.rowcount != 1:
                db.execute("ROLLBACK")
                return False
            db.execute(f"INSERT INTO {table} ({', '.join(values)}) "  # noqa: S608
                       f"VALUES ({', '.join('?' for _ in values)})", tuple(values.values()))
            db.execute("COMMIT")
        return True

    def end_job(self, job_id: str, *, status: str, error: str) -> bool:
        """Mark a running job ``status`` (failed, cancelled) with the reason; False where it
        had already ended."""
        with self.connect() as db:
            cursor = db.execute("UPDATE jobs SET status=?, finished=?, error=? "
                                "WHERE id=? AND status='running'", (status, now(), error,
                                                                    job_id))
        return cursor.rowcount == 1

    def cancel_job(self, job_id: str) -> str:
        """A queued job removed ("removed"), a running one marked cancelled ("cancelled",
        its worker kills it); otherwise the status it already ended with."""
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
            status = None if row is None else str(row["status"])
            if status == "queued":
                db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
                status = "removed"
            elif status == "running":
                db.execute("UPDATE jobs SET status='cancelled', finished=?, error=? WHERE id=?",
                           (now(), "cancelled by its centre", job_id))
                status = "cancelled"
            db.execute("COMMIT")
        return str(status)

    def fail_running_jobs(self, error: str, *, worker_pid: int | None = None) -> list[str]:
        """Jobs left running (by a killed server, or by the worker ``worker_pid`` that
        died) marked failed with ``error``; returns the output ids they had been given, for
        the caller to remove what they wrote."""
        where = "status='running'" + ("" if worker_pid is None else " AND worker_pid=?")
        args = () if worker_pid is None else (worker_pid,)
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            outputs = [r["output"] for r in db.execute(
                f"SELECT output FROM jobs WHERE {where}", args)]  # noqa: S608
            db.execute(f"UPDATE jobs SET status='failed', finished=?, error=? WHERE {where}",  # noqa: S608
                       (now(), error, *args))
            db.execute("COMMIT")
        return [o for o in outputs if o]

    def fail_interrupted_jobs(self) -> list[str]:
        """At start-up: jobs a killed server left running are failed, with the reason."""
        return self.fail_running_jobs("interrupted: the server stopped while this job ran; "
                                      "submit it again")
