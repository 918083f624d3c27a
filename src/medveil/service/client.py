"""The owner's and key holder's side of the wire: push releases, run jobs, pull results.

Everything the service returns is checked as an adversary's: results arrive as a
tar of flat bundle files only, are verified against their manifest before they
appear at ``--out``, and ``decode`` then checks them against the owner state as
for results carried by hand.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medveil.atomic import atomic_directory, check_output
from medveil.errors import ConfigError, IntegrityError, MedveilError, MissingDependencyError
from medveil.limits import ID_PATTERN
from medveil.service.transfer import (
    DEFAULT_MAX_BYTES,
    BundleTooLargeError,
    archive_bound,
    extract_bundle,
    tar_size,
    tar_stream,
)


class RemoteError(MedveilError):
    """The service refused a request or could not be reached."""


def read_token(path: str | os.PathLike[str]) -> str:
    """A bearer token from its file (owner-only, like a key)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"token file {path} does not exist; ask the service's operator for "
                          "one (`medveil serve token add CENTRE --out FILE`)")
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"token file {path} can be read by other users; `chmod 600 {path}`")
    token = path.read_text(encoding="utf-8").strip()
    if not token or len(token) > 200 or any(c.isspace() for c in token):
        raise ConfigError(f"token file {path} does not hold a token")
    return token


class Remote:
    """A session with one service, as one centre."""

    def __init__(self, server: str, token_file: str | os.PathLike[str], *,
                 timeout_s: float = 600.0) -> None:
        try:
            import httpx
        except ImportError:
            raise MissingDependencyError("the client needs httpx: pip install "
                                         "'medveil[service]'") from None
        if not server.startswith(("http://", "https://")):
            raise ConfigError(f"--server {server[:60]!r} must be a URL such as "
                              "http://127.0.0.1:8000")
        self.server = server.rstrip("/")
        self._client = httpx.Client(base_url=self.server, timeout=timeout_s, headers={
            "authorization": f"Bearer {read_token(token_file)}"})

    def _call(self, method: str, path: str, **kwargs: Any):
        import httpx

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach {self.server} ({type(exc).__name__}); check "
                              "--server and that `medveil serve` runs there") from None
        if response.status_code >= 400:
            raise RemoteError(f"{self.server} answered {response.status_code}: "
                              f"{_error_of(response)}")
        return response

    def push(self, release: str | os.PathLike[str], *, pooling: bool = False) -> dict[str, Any]:
        """Upload a release folder (verified locally first, streamed)."""
        from medveil.store import open_store

        open_store(release)
        response = self._call("POST", "/releases", params={"pooling": str(pooling).lower()},
                              content=tar_stream(release), headers={
                                  "content-type": "application/x-tar",
                                  "content-length": str(tar_size(release))})
        return response.json()

    def submit(self, spec: dict[str, Any]) -> str:
        return str(self._call("POST", "/jobs", json=spec).json()["id"])

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Remove a queued job, or stop a running one (its outputs are not kept)."""
        return self._call("DELETE", f"/jobs/{job_id}").json()

    def status(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}").json()

    def wait(self, job_id: str, *, poll_s: float = 0.3, timeout_s: float = 24 * 3600,
             on_status: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job ends; a failed job is an error with the server's reason.
        ``on_status`` sees every answer (a progress display)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(job_id)
            if on_status is not None:
                on_status(status)
            if status["status"] == "done":
                return status
            if status["status"] in ("failed", "cancelled"):
                raise RemoteError(f"job {job_id} {status['status']} on the server: "
                                  f"{status['error']}")
            if time.monotonic() > deadline:
                raise RemoteError(f"job {job_id} did not finish within {timeout_s:.0f} s")
            time.sleep(poll_s)

    def pull(self, result_id: str, out: str | os.PathLike[str], *, force: bool = False,
             max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
        """Download a results set into ``out``, verified before it appears there.

        The processor is an adversary here: the download stops past what ``max_bytes``
        of files take on the wire, and the tar's files are bounded by ``max_bytes`` in
        sum (declared and written), so a small hostile tar cannot fill the disk."""
        from medveil.store import RESULTS_FORMAT, open_store

        check_output(out, force=force)
        if not isinstance(result_id, str) or not ID_PATTERN.fullmatch(result_id) \
                or not result_id.startswith("results-"):
            raise IntegrityError(f"{self.server} named results {str(result_id)[:40]!r}, not an "
                                 "id it gives; check --server")
        what = f"results {result_id} from {self.server}"
        wire = archive_bound(max_bytes)
        with tempfile.TemporaryDirectory(prefix="medveil-pull-") as scratch:
            archive = Path(scratch) / "results.tar"
            fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle, self._client.stream(
                    "GET", f"/results/{result_id}") as response:
                if response.status_code >= 400:
                    response.read()
                    raise RemoteError(f"{self.server} answered {response.status_code}: "
                                      f"{_error_of(response)}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > wire:
                    raise _too_large(what, max_bytes)
                received = 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > wire:
                        raise _too_large(what, max_bytes)
                    handle.write(chunk)
            with atomic_directory(out, force=force) as tmp:
                extract_bundle(archive, tmp, what=what, max_bytes=max_bytes)
                open_store(tmp, fmt=RESULTS_FORMAT)
        return Path(out)


def _error_of(response) -> str:
    try:
        answer = response.json()
        return str(answer.get("error") or answer.get("detail"))[:200]
    except (ValueError, AttributeError):
        return response.text[:200]


def _too_large(what: str, max_bytes: int) -> BundleTooLargeError:
    return BundleTooLargeError(f"{what} is over {max_bytes // 2**20} MiB "
                               "(--max-download-mb); nothing was kept")


def wait_with_progress(remote: Remote, job_id: str, *, show: bool = True) -> dict[str, Any]:
    """``remote.wait`` with a one-line live status on stderr (queue position, state)."""
    if not show:
        return remote.wait(job_id)
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"job {job_id}: submitted")

        def show_status(status: dict[str, Any]) -> None:
            where = (f"queued, {status['queued_ahead']} ahead" if status["status"] == "queued"
                     else status["status"])
            progress.update(task, description=f"{status['kind']} job {job_id}: {where}")

        return remote.wait(job_id, on_status=show_status)
