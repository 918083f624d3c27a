"""The server's job workers, supervised: a worker that dies is reported and replaced.

The server starts each worker (``medveil.service.worker``) with a pipe on which it
says "ready" once it can run a job. The server's event loop calls :meth:`WorkerPool.reap`
and :meth:`WorkerPool.restart_due` a few times a second: a worker that has died
(SIGKILL from the operator or the kernel's out-of-memory killer, a crash) has the
job it was running marked failed with the reason ("the worker died (signal 9);
submit the job again") and what that job had written removed, and a new worker is
started in its place (at once; after a worker that dies before it is ready, again
after 1, 2, 4 ... 30 s). ``GET /health`` answers from :meth:`WorkerPool.health`:
``ok`` only while every worker is up and ready.

Workers are started from the event loop's thread, which lives as long as the server:
a worker's ``PR_SET_PDEATHSIG`` fires when the thread that started it ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from medveil.service.db import ServiceDB

#: The longest wait before starting again a worker that keeps dying before it is ready.
MAX_RESTART_DELAY_S = 30.0
#: A worker ended by SIGTERM or SIGINT is most often the server being stopped (the signal
#: sent to its process group: `kill -TERM -PGID`, Ctrl-C): its death is acted on only
#: this long after it is seen, so that a stopping server neither starts a worker nor
#: fails the job (the next start reports it interrupted).
STOP_SIGNAL_GRACE_S = 3.0


@dataclass
class Slot:
    """One worker's place: the process now in it, whether it said ready, its history."""

    index: int
    proc: subprocess.Popen | None = None
    ready_fd: int | None = None
    ready: bool = False
    restarts: int = 0
    early_deaths: int = 0  # deaths in a row before the worker was ready
    seen_dead: float | None = None  # when a stop signal's death was first seen
    restart_at: float = 0.0
    last_death: str | None = None


def death_reason(returncode: int) -> str:
    """How a worker ended, as a job's error names it."""
    return f"signal {-returncode}" if returncode < 0 else f"exit status {returncode}"


class WorkerPool:
    """``workers`` job processes over ``db``, each job stopped past ``max_job_s``."""

    def __init__(self, db: ServiceDB, *, workers: int = 1, max_job_s: float) -> None:
        self.db = db
        self.max_job_s = float(max_job_s)
        self.slots = [Slot(i) for i in range(max(1, int(workers)))]
        self.env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}

    # -- processes ----------------------------------------------------------------------
    def _start(self, slot: Slot) -> None:
        read, write = os.pipe()
        try:
            slot.proc = subprocess.Popen(
                [sys.executable, "-m", "medveil.service.worker", "--data-dir", str(self.db.dir),
                 "--max-job-s", str(self.max_job_s), "--ready-fd", str(write)],
                env=self.env, pass_fds=(write,))
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        os.set_blocking(read, False)
        slot.ready_fd, slot.ready = read, False

    def start(self) -> None:
        for slot in self.slots:
            self._start(slot)

    def _close_pipe(self, slot: Slot) -> None:
        if slot.ready_fd is not None:
            os.close(slot.ready_fd)
            slot.ready_fd = None

    def _check_ready(self, slot: Slot) -> None:
        if slot.ready or slot.ready_fd is None:
            return
        try:
            said = os.read(slot.ready_fd, 64)
        except BlockingIOError:
            return
        if said:  # "ready"; an empty read is the pipe closed by a worker that is ending
            slot.ready, slot.early_deaths = True, 0
            self._close_pipe(slot)

    def reap(self) -> list[tuple[Slot, int, str]]:
        """Workers that have died since the last call: (slot, pid, reason), each slot left
        empty with its restart scheduled. Never blocks."""
        dead = []
        for slot in self.slots:
            if slot.proc is None:
                continue
            self._check_ready(slot)
            code = slot.proc.poll()
            if code is None:
                continue
            if code in (-signal.SIGTERM, -signal.SIGINT):
                slot.seen_dead = slot.seen_dead or time.monotonic()
                if time.monotonic() - slot.seen_dead < STOP_SIGNAL_GRACE_S:
                    continue
            slot.seen_dead = None
            pid, reason = slot.proc.pid, death_reason(code)
            if not slot.ready:
                slot.early_deaths += 1
            self._close_pipe(slot)
            slot.proc, slot.ready, slot.last_death = None, False, f"worker {pid} died ({reason})"
            delay = 0.0 if slot.early_deaths == 0 else min(MAX_RESTART_DELAY_S,
                                                           2.0 ** (slot.early_deaths - 1))
            slot.restart_at = time.monotonic() + delay
            dead.append((slot, pid, reason))
        return dead

    def fail_jobs_of(self, pid: int, reason: str) -> int:
        """The jobs the dead worker ``pid`` was running: failed with the reason, their
        files removed (its job's child died with it: ``PR_SET_PDEATHSIG``); how many."""
        from medveil.service.worker import remove_output

        outputs = self.db.fail_running_jobs(f"the worker died ({reason}); submit the job "
                                            "again", worker_pid=pid)
        for output in outputs:
            remove_output(self.db, output)
        return len(outputs)

    def restart_due(self) -> None:
        """Start a worker in every empty slot whose restart time has come."""
        for slot in self.slots:
            if slot.proc is None and time.monotonic() >= slot.restart_at:
                self._start(slot)
                slot.restarts += 1

    def stop(self) -> None:
        procs = [s.proc for s in self.slots if s.proc is not None]
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for slot in self.slots:
            self._close_pipe(slot)
            slot.proc = None

    # -- what /health says --------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``status`` ok when every worker is up and ready, else degraded with the reason
        (``error``); each worker's pid (for the operator), state, restarts and last death."""
        workers, reasons = [], []
        for slot in self.slots:
            proc = slot.proc
            if proc is not None:
                self._check_ready(slot)
            code = None if proc is None else proc.poll()
            if proc is not None and code is None:
                state = "ready" if slot.ready else "starting"
                if not slot.ready:
                    reasons.append(f"worker {proc.pid} is starting" + (
                        f" (after {slot.last_death})" if slot.last_death else ""))
            else:
                state = "down"
                reasons.append(f"worker {proc.pid} died ({death_reason(code)})"
                               if proc is not None else f"{slot.last_death}; a new one starts "
                                                        "soon")
            workers.append({"pid": proc.pid if state != "down" else None, "state": state,
                            "restarts": slot.restarts, "last_death": slot.last_death})
        answer: dict[str, Any] = {"status": "ok", "workers": workers}
        if reasons:
            answer.update(status="degraded", error=(
                f"{len(reasons)} of {len(workers)} job workers not ready: {'; '.join(reasons)}"
                "; queued jobs wait until one is"))
        return answer
