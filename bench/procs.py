"""Child processes: started in their own session, logged to files, never left behind.

Three layers keep orphans away: every child is registered and ``stop_all`` (called from the
orchestrator's ``finally``) terminates it; each child asks the kernel for SIGTERM when the
orchestrator dies (PR_SET_PDEATHSIG), which covers a SIGKILL of the orchestrator; and children
run in their own session, so a Ctrl-C reaches only the orchestrator, which then stops them in
order instead of all at once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Final

import anyio
import attrs

PR_SET_PDEATHSIG: Final = 1
_running: list[Child] = []


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@attrs.define
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Synchronous on purpose: it must also
        work from a ``finally`` after the event loop is gone."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        if self in _running:
            _running.remove(self)
        return self.process.returncode


def spawn(name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path) -> Child:
    """Start ``argv`` with stdout and stderr to ``log_path``. Must be called from the main
    thread: PDEATHSIG fires when the *thread* that forked exits."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    process = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    child = Child(name, process, log_path, log)
    _running.append(child)
    return child


def stop_all(timeout_s: float = 15.0) -> None:
    """Stop every child still registered, newest first (the subject before its venue)."""
    for child in reversed(list(_running)):
        child.stop(timeout_s)


async def wait_for_line(child: Child, text: str, timeout_s: float) -> None:
    """Poll the child's log for ``text``; fail early if the child exits."""
    deadline = time.monotonic() + timeout_s
    offset = 0
    seen = b""
    needle = text.encode()
    while time.monotonic() < deadline:
        with child.log_path.open("rb") as f:
            f.seek(offset)
            chunk = f.read()
        offset += len(chunk)
        seen = seen[-len(needle) :] + chunk
        if needle in seen:
            return
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.process.returncode} before {text!r}; "
                               f"see {child.log_path}")  # fmt: skip
        await anyio.sleep(0.1)
    raise TimeoutError(f"{child.name} did not log {text!r} within {timeout_s:.0f} s; see {child.log_path}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def clean_env(base: Mapping[str, str], keep_prefixes: Sequence[str] = ()) -> dict[str, str]:
    """The inherited environment without the service's own variables, so a developer's shell
    (or a .env exported into it) cannot change what the bench measures."""
    drop = ("ORDER_MANAGER_", "ORDERMANAGER_", "BYBIT_", "POSTGRES_", "RABBITMQ_", "WS_GATEWAY_")
    return {k: v for k, v in base.items() if not k.startswith(drop) or k.startswith(tuple(keep_prefixes))}


def python_env(repo: Path, extra: Mapping[str, str]) -> dict[str, str]:
    env = clean_env(os.environ)
    env["PYTHONPATH"] = str(repo)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
