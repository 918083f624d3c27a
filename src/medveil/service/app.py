"""``medveil serve``: the processor's side of every protocol, over HTTP.

A FastAPI application (OpenAPI page at ``/docs``) that holds no key and no owner
state, ever. Centres authenticate with bearer tokens (only their SHA-256 is
stored); a centre sees only its own releases, the models trained on them (pooled
models: every contributing centre) and its own results. Uploads are streamed to
disk under a size limit, extracted as flat bundle files only (the expanded bytes
bounded by the same limit), verified against their manifest and only then listed.
Training and prediction are jobs, checked against ``medveil.limits`` (the command
line's bounds) before they are stored, run by a worker process
(``medveil.service.worker``), never in a request handler, taken round-robin by
centre (one centre's queue cannot hold the workers); a centre may cancel its own
job, and a job past the wall-time limit is stopped. The server supervises its
workers (``medveil.service.pool``): one that dies fails the job it ran, with the
reason, and is replaced; ``/health`` answers 503 ``degraded`` until it is back.

This module imports FastAPI at once: only `medveil serve` imports it (install with
``pip install 'medveil[service]'``).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import socket
import sys
import traceback
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from medveil.errors import ConfigError, IntegrityError, MedveilError
from medveil.limits import MAX_JOB_BODY_BYTES, MAX_JOB_WALL_S, budget_names, check_job_spec
from medveil.service.db import ServiceDB, is_service_id, new_id, now
from medveil.service.pool import WorkerPool
from medveil.service.transfer import BundleTooLargeError, extract_bundle, tar_size, tar_stream

DEFAULT_MAX_UPLOAD_MB = 2048
#: After the limit, this much more of a body is read and discarded (not stored), so that a
#: client that sent no length still reads the 413 instead of a broken connection.
DRAIN_BYTES = 64 * 2**20
#: How often the server looks at its workers (a dead one is seen within this).
SUPERVISE_S = 0.25


class ServiceError(Exception):
    """An error with its HTTP status; the body is ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _clean_start(db: ServiceDB) -> None:
    """What a killed server left: partial uploads and unlisted folders go, running jobs fail
    (what they had written goes with them).

    Only what this service names (its ids, under its own marked folder) is removed: an
    entry it cannot prove it wrote is left where it is."""
    for entry in (db.dir / "incoming").iterdir():
        if is_service_id(entry.name.removesuffix(".tar"), "release"):
            _remove(entry)
    listed = {r["id"] for r in db.rows("releases")}
    for entry in (db.dir / "releases").iterdir():
        if is_service_id(entry.name, "release") and entry.name not in listed:
            _remove(entry)
    from medveil.service.worker import remove_output

    for output in db.fail_interrupted_jobs():
        remove_output(db, output)


def _printable(message: str) -> str:
    """A message any JSON encoder can send (a lone surrogate a client sent is escaped)."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def _remove(entry) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


async def _read_body(request: Request, limit: int, *, what: str) -> bytes:
    """The request's body, at most ``limit`` bytes (Content-Length and the bytes read
    both count); past it a 413, after draining a little so the client reads it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + DRAIN_BYTES:
        raise ServiceError(413, f"{what} is {int(declared)} bytes, over this service's limit "
                                f"of {limit} bytes")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit + DRAIN_BYTES:
            break
        if received <= limit:
            chunks.append(chunk)
    if received > limit:
        raise ServiceError(413, f"{what} is over this service's limit of {limit} bytes; "
                                "nothing was kept")
    return b"".join(chunks)


def create_app(data_dir: str | os.PathLike[str], *, max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
               workers: int = 1, max_job_s: float = MAX_JOB_WALL_S):
    """The application over ``data_dir``; ``workers`` job processes (CPU-bound: 1), each
    job stopped past ``max_job_s`` seconds."""
    db = ServiceDB(data_dir)
    limit = int(max_upload_mb) * 1024 * 1024

    pool = WorkerPool(db, workers=workers, max_job_s=max_job_s)

    async def supervise() -> None:
        """Every SUPERVISE_S: a dead worker's job failed, a new worker started (from this,
        the event loop's thread, so that PR_SET_PDEATHSIG ties it to the server)."""
        while True:
            try:
                for _slot, pid, reason in pool.reap():
                    failed = await run_in_threadpool(pool.fail_jobs_of, pid, reason)
                    print(f"medveil serve: job worker {pid} died ({reason}); {failed} running "
                          "job(s) marked failed; starting a new worker", file=sys.stderr,
                          flush=True)
                pool.restart_due()
            except Exception:  # noqa: BLE001 - the supervisor must outlive one bad turn
                traceback.print_exc(file=sys.stderr)
            await asyncio.sleep(SUPERVISE_S)

    @asynccontextmanager
    async def lifespan(app):
        _clean_start(db)
        await run_in_threadpool(budget_names)  # loads torch once, not in a job's request
        pool.start()
        watcher = asyncio.create_task(supervise())
        try:
            yield
        finally:
            watcher.cancel()
            try:
                await watcher
            except asyncio.CancelledError:
                pass
            pool.stop()

    app = FastAPI(title="medveil processor service", lifespan=lifespan,
                  description="The processor's side of every medveil protocol: no key, no "
                              "owner state. Authenticate with `Authorization: Bearer TOKEN`.")

    @app.exception_handler(ServiceError)
    async def _service_error(request, exc: ServiceError):
        return JSONResponse({"error": _printable(str(exc))}, status_code=exc.status)

    @app.exception_handler(MedveilError)
    async def _medveil_error(request, exc: MedveilError):
        status = (413 if isinstance(exc, BundleTooLargeError) else
                  422 if isinstance(exc, IntegrityError) else 400)
        return JSONResponse({"error": _printable(" ".join(str(exc).split()))},
                            status_code=status)

    def centre(request: Request) -> str:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise ServiceError(401, "no bearer token; send `Authorization: Bearer TOKEN` "
                                    "(`medveil serve token add CENTRE` makes one)")
        name = db.centre_for(header[7:].strip())
        if name is None:
            raise ServiceError(401, "unknown token; ask the service's operator for yours")
        return name

    def own(table: str, row_id: str, who: str, *, what: str) -> dict[str, Any]:
        row = db.get(table, row_id)
        visible = row is not None and (
            who in json.loads(row["centres"]) if table == "models" else row["centre"] == who)
        if not visible:
            raise ServiceError(404, f"{what} {row_id} does not exist or is not yours")
        return row

    @app.get("/health")
    async def health():
        """``ok`` (200) while every job worker runs and is ready; ``degraded`` (503, with
        the reason) while one is down or starting. Each worker's pid is shown for the
        operator. Answered on the event loop, as the supervisor runs."""
        answer = pool.health()
        return JSONResponse(answer, status_code=200 if answer["status"] == "ok" else 503)

    @app.post("/releases", status_code=201)
    async def upload_release(request: Request, pooling: bool = False,
                             who: str = Depends(centre)) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ServiceError(413, f"the release is {int(declared) // 2**20} MiB, over this "
                                    f"service's limit of {limit // 2**20} MiB")
        release_id = new_id("release")
        archive = db.dir / "incoming" / f"{release_id}.tar"
        folder = db.dir / "incoming" / release_id
        received = 0
        try:
            fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > limit:  # stop writing; drain a little so the client
                        if received > limit + DRAIN_BYTES:  # reads the answer, then stop
                            break
                        continue
                    handle.write(chunk)
                if received <= limit:  # an upload over the limit is removed, never synced
                    handle.flush()
                    os.fsync(handle.fileno())
            if received > limit:
                raise ServiceError(413, f"the release is over this service's limit of "
                                        f"{limit // 2**20} MiB; nothing was kept")
            folder.mkdir(mode=0o700)
            await run_in_threadpool(lambda: extract_bundle(archive, folder, what="the upload",
                                                           max_bytes=limit))
            from medveil.store import open_store

            store = await run_in_threadpool(open_store, folder)
            target = db.dir / "releases" / release_id
            os.rename(folder, target)
            db.insert("releases", id=release_id, centre=who, protocol=store.protocol_name,
                      scheme=store.scheme_name, content_id=store.content_id,
                      pooling=int(pooling), bytes=received,
                      splits={s: v["count"] for s, v in store.manifest["splits"].items()},
                      created=now())
        finally:
            archive.unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
        return {"id": release_id, "protocol": store.protocol_name, "scheme": store.scheme_name,
                "content_id": store.content_id, "bytes": received}

    @app.get("/releases")
    def list_releases(who: str = Depends(centre)) -> list[dict[str, Any]]:
        return db.rows("releases", centre=who)

    @app.post("/jobs", status_code=202)
    async def submit(request: Request, who: str = Depends(centre)) -> dict[str, Any]:
        body = await _read_body(request, MAX_JOB_BODY_BYTES, what="the job")
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError):
            raise ServiceError(400, "the job must be a JSON object {\"kind\": \"train\" | "
                                    "\"predict\", ...}") from None
        spec = check_job_spec(raw)  # a ConfigError: 400, naming the field and its bound
        if spec.kind == "train":
            rows = [db.get("releases", n) for n in spec.releases]
            for name, row in zip(spec.releases, rows, strict=True):
                if row is None or (row["centre"] != who and not row["pooling"]):
                    raise ServiceError(404, f"release {name} does not exist, or is not yours "
                                            "and its centre did not allow pooling")
            if all(row["centre"] != who for row in rows):
                raise ServiceError(400, "a pooled model needs at least one of your releases")
            if len(rows) > 1 and not all(row["pooling"] for row in rows):
                raise ServiceError(409, "every release of a pooled model must allow pooling "
                                        "(push with --pooling)")
        else:
            own("releases", spec.release, who, what="release")
            if spec.model is not None:
                own("models", spec.model, who, what="model")
        job_id = new_id("job")
        db.insert("jobs", id=job_id, centre=who, kind=spec.kind, spec=spec.to_json(),
                  status="queued", created=now())
        return {"id": job_id, "status": "queued"}

    @app.get("/jobs/{job_id}")
    def job_status(job_id: str, who: str = Depends(centre)) -> dict[str, Any]:
        row = own("jobs", job_id, who, what="job")
        ahead = db.queued_ahead(job_id) if row["status"] == "queued" else None
        return {"id": row["id"], "kind": row["kind"], "status": row["status"],
                "error": row["error"],
                "output": row["output"] if row["status"] == "done" else None,
                "queued_ahead": ahead or 0,
                "created": row["created"], "started": row["started"],
                "finished": row["finished"]}

    @app.delete("/jobs/{job_id}")
    def cancel(job_id: str, who: str = Depends(centre)) -> dict[str, Any]:
        """A queued job is removed; a running one is marked cancelled and its worker kills
        it (what it wrote is removed). A job that has ended is left as it ended."""
        own("jobs", job_id, who, what="job")
        status = db.cancel_job(job_id)
        if status not in ("removed", "cancelled"):
            raise ServiceError(409, f"job {job_id} has already ended ({status}); there is "
                                    "nothing to cancel")
        return {"id": job_id, "status": status}

    @app.get("/models/{model_id}")
    def model_info(model_id: str, who: str = Depends(centre)) -> dict[str, Any]:
        row = own("models", model_id, who, what="model")
        return {"id": row["id"], "protocol": row["protocol"],
                "centres": json.loads(row["centres"]), "created": row["created"]}

    @app.get("/results/{result_id}")
    def download(result_id: str, who: str = Depends(centre)):
        own("results", result_id, who, what="results")
        folder = db.dir / "results" / result_id
        return StreamingResponse(tar_stream(folder), media_type="application/x-tar",
                                 headers={"content-length": str(tar_size(folder))})

    return app


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (``SO_REUSEADDR``, as uvicorn binds), for the server
    to listen on: an address in use or not this machine's is a one-line ConfigError, said
    before anything starts, and no other process can take the port meanwhile."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--host {host[:60]!r} is not an address of this machine "
                          f"({getattr(exc, 'strerror', None) or exc}); give one such as "
                          "127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use (another server?); pick "
                              "another --port") from None
        if exc.errno == errno.EACCES:
            raise ConfigError(f"port {port} on {host} needs privileges this user lacks; pick "
                              "a --port above 1023") from None
        raise ConfigError(f"cannot listen on {host} port {port} ({exc.strerror}); pick "
                          "another --host or --port") from None
    return sock


def run_server(data_dir: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 8000,
               max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB, workers: int = 1,
               max_job_s: float = MAX_JOB_WALL_S, sock: socket.socket | None = None) -> None:
    """Serve until stopped (Ctrl-C or SIGTERM), on ``sock`` where given (see
    :func:`listen_socket`, which binds one on ``host:port`` otherwise)."""
    import uvicorn

    if sock is None:
        sock = listen_socket(host, port)
    config = uvicorn.Config(create_app(data_dir, max_upload_mb=max_upload_mb, workers=workers,
                                       max_job_s=max_job_s), host=host, port=port,
                            log_level="warning")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, after a graceful stop (as uvicorn.run)
        pass
    finally:
        sock.close()
    if not server.started:  # the start-up failed and uvicorn logged why (as uvicorn.run)
        sys.exit(3)
