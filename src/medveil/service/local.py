"""`medveil serve` on a free port of 127.0.0.1, as a child process group.

For the demo, the load benchmark and the tests: start it, wait until it answers,
stop it (SIGTERM: the worker goes with it) or kill it (SIGKILL, a crash) and
start it again on the same port and data folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """`medveil serve --data-dir DATA_DIR` on 127.0.0.1 at a free port."""

    def __init__(self, data_dir: str | os.PathLike[str], *, cwd: str | os.PathLike[str] | None
                 = None, max_upload_mb: int | None = None, env: dict[str, str] | None = None,
                 quiet: bool = True, max_job_s: int | None = None) -> None:
        self.data_dir, self.cwd = Path(data_dir).resolve(), cwd  # not relative to cwd
        self.max_upload_mb, self.env, self.quiet = max_upload_mb, env, quiet
        self.max_job_s = max_job_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, *, timeout_s: float = 60.0) -> LocalServer:
        import httpx

        command = [sys.executable, "-m", "medveil.cli", "serve", "--data-dir",
                   str(self.data_dir), "--port", str(self.port)]
        if self.max_upload_mb is not None:
            command += ["--max-upload-mb", str(self.max_upload_mb)]
        if self.max_job_s is not None:
            command += ["--max-job-s", str(self.max_job_s)]
        quiet = subprocess.DEVNULL if self.quiet else None  # an unread pipe could fill
        self.process = subprocess.Popen(command, cwd=self.cwd, env=self.env,
                                        start_new_session=True, stdout=quiet, stderr=quiet)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"medveil serve did not start on {self.url} within {timeout_s:.0f} s "
                           "(run it by hand to see why)")

    def kill(self) -> None:
        """SIGKILL the server and its worker (a crash)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
