"""One long-running background process of the stack: start, probe, stop.

The process runs in its own session (process group), so stopping it also
stops whatever it spawned (Flink's Python workers). Its PID is kept in a
pid file together with a marker that must appear in its command line or environment, so a
recycled PID is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.errors import StackError

#: Environment variable carrying a process's marker; it survives ``exec`` from a launcher script.
MARKER_VARIABLE = "METERING_PROCESS_MARKER"


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def has_listener(port: int) -> bool:
    """True when a socket listens on ``port`` (any address), from /proc/net/tcp{,6}; True where that is unreadable."""
    found_table = False
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        found_table = True
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return not found_table


TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def port_users(port: int) -> str:
    """Who holds local ``port``: each socket's state and owning process (from /proc; best effort), for error messages."""
    sockets: dict[str, str] = {}  # inode -> state
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                sockets[fields[9]] = TCP_STATES.get(fields[3], f"state {fields[3]}")
    if not sockets:
        return "no socket found"
    owners: dict[str, str] = {}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in sockets:
                    cmdline = (fd_dir.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    owners[target[8:-1]] = f"pid {fd_dir.parent.name}: {cmdline[:120]}"
        except OSError:
            continue
    return "; ".join(f"{state} ({owners.get(inode, 'no process: kernel-held')})" for inode, state in sockets.items())


def wait_until_port_is_free(host: str, port: int, timeout_s: float = 75.0, listener_grace_s: float = 5.0) -> bool:
    """True once ``port`` can be bound; False if a process keeps listening on it, or after ``timeout_s``.

    A port nobody listens on can still be taken for a moment as the local end of a client's
    connection: ports in the kernel's ephemeral range (32768-60999 on Linux, which holds e.g. the
    spare test ports 39092-39095) are handed out to outgoing connections, and a client retrying a
    just-killed broker can even be connected to itself on the broker's port. That use passes, at
    the latest when the closed connection's TIME_WAIT ends (60 s on Linux), so restarting a killed
    process waits it out instead of failing (seen in the kill soak: "port 127.0.0.1:39092 is
    already in use" right after the broker was killed).

    A listener fails after ``listener_grace_s``: a just-killed JVM's threads may still be closing
    its sockets for a moment after its main thread is gone (seen: a listener, then only TIME_WAIT).
    """
    started = time.monotonic()
    while not port_is_free(host, port):
        waited = time.monotonic() - started
        if waited > timeout_s or (waited > listener_grace_s and has_listener(port)):
            return False
        time.sleep(0.2)
    return True


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file (Java stack frames skipped), or a note that it is empty or absent."""
    if not path.exists():
        return "(no log written)"
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 16384))
        text = handle.read().decode("utf-8", errors="replace")
    kept = [line for line in text.splitlines() if not line.lstrip().startswith(("at ", "... "))]
    return "\n".join(kept[-lines:]) or "(log is empty)"


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return not stat.rsplit(") ", 1)[-1].startswith("Z")


@dataclass
class ManagedProcess:
    """A background process identified by a pid file and a command-line marker."""

    name: str
    pid_file: Path
    log_file: Path
    marker: str

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def pid(self) -> int | None:
        """The PID of our running process, or None."""
        pid = self._recorded_pid()
        if pid is None or not _alive(pid):
            return None
        for _ in range(5):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                return None
            if cmdline or environ:
                break
            # Both read empty while a launcher script execs into the JVM; a kernel thread that
            # recycled the PID stays empty and is rejected below.
            time.sleep(0.02)
        marker = self.marker.encode()
        if marker not in cmdline and f"{MARKER_VARIABLE}=".encode() + marker not in environ.split(b"\0"):
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> int:
        """Start the process detached from us, output appended to its log."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n===== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} starting {self.name}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**env, MARKER_VARIABLE: self.marker},
                    cwd=cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StackError(f"could not start {self.name}: {exc}", log=self.log_file) from exc
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def wait_ready(self, probe: Callable[[], str | None], timeout_s: float, what: str) -> None:
        """Poll ``probe`` (None = ready, else the reason) until ready, the process dies, or timeout."""
        deadline = time.monotonic() + timeout_s
        reason: str | None = "not probed yet"
        delay = 0.2
        started_pid = self._recorded_pid()  # written by start(), or verified by the caller
        while time.monotonic() < deadline:
            # Liveness of the pid we found, not the marker: while a launcher script execs into the
            # JVM, /proc/<pid>/environ and cmdline can read empty for an instant, and the marker
            # check then took a live JobManager for one that had exited (seen once in CI).
            if started_pid is None or not _alive(started_pid):
                raise StackError(
                    f"{self.name} exited during start-up; last log lines:\n{tail(self.log_file)}",
                    log=self.log_file,
                )
            reason = probe()
            if reason is None:
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)
        raise StackError(
            f"{self.name} did not become ready within {timeout_s:.0f}s ({what}: {reason})",
            log=self.log_file,
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the whole process group: SIGTERM, then SIGKILL. True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._group_alive(pid):
            time.sleep(0.2)
        if self._group_alive(pid):
            self._signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self._group_alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL the main process only (fault tests: a crash, not a shutdown); returns once it is gone.

        Returning before the kernel has delivered the signal let a restart see the old process as
        still running and do nothing (seen in the TaskManager fault test).
        """
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        # Wait on the pid itself: while a killed process tears down, /proc shows it running with an
        # empty command line and environment, which pid()'s marker check reads as "not ours".
        while _alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            if time.monotonic() > deadline:
                raise StackError(f"{self.name} (pid {pid}) survived SIGKILL for {timeout_s:.0f}s", log=self.log_file)
            time.sleep(0.05)

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            fields = stat.rsplit(") ", 1)[-1].split()
            # fields: state ppid pgrp ...
            if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                return True
        return False
