"""Managed background processes: pid files, markers, whole-group stop, port checks."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from infra.errors import StackError
from infra.process import ManagedProcess, port_is_free, wait_until_port_is_free

SPAWNS_CHILD = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"


def _process(tmp_path: Path, marker: str = "metering-test-proc") -> ManagedProcess:
    return ManagedProcess("test process", tmp_path / "p.pid", tmp_path / "p.log", marker)


def _group_members(pgid: int) -> int:
    return sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and ManagedProcess._group_alive(pgid))


def test_start_identify_and_stop_whole_group(tmp_path: Path) -> None:
    proc = _process(tmp_path)
    pid = proc.start([sys.executable, "-c", SPAWNS_CHILD], env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert proc.pid() == pid
    time.sleep(0.5)
    assert proc.stop(timeout_s=5)
    assert not ManagedProcess._group_alive(pid), "the child `sleep` must be stopped with its parent"
    assert not proc.pid_file.exists() and proc.pid() is None


def test_a_recycled_pid_without_our_marker_is_not_ours(tmp_path: Path) -> None:
    proc = _process(tmp_path)
    proc.pid_file.write_text("1\n")  # init: alive, but not ours
    assert proc.pid() is None
    assert proc.stop() is False


def test_exit_during_startup_reports_the_log_tail(tmp_path: Path) -> None:
    proc = _process(tmp_path)
    proc.start([sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"], env={}, cwd=tmp_path)
    with pytest.raises(StackError) as err:
        proc.wait_ready(lambda: "never ready", timeout_s=10, what="probe")
    assert "boom: bad config" in str(err.value) and str(proc.log_file) in str(err.value)


def test_readiness_timeout_names_what_was_probed(tmp_path: Path) -> None:
    proc = _process(tmp_path)
    proc.start([sys.executable, "-c", "import time; time.sleep(30)"], env={}, cwd=tmp_path)
    try:
        with pytest.raises(StackError, match=r"within 1s \(metadata request: still warming\)"):
            proc.wait_ready(lambda: "still warming", timeout_s=1, what="metadata request")
    finally:
        proc.stop(timeout_s=5)


def test_port_is_free_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
    assert port_is_free("127.0.0.1", port)


def test_a_port_held_by_a_client_connection_is_waited_out_a_listener_is_not() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        started = time.monotonic()
        assert not wait_until_port_is_free("127.0.0.1", port, timeout_s=10)
        assert time.monotonic() - started < 8  # a listener: only a short grace
        client = socket.socket()
        client.bind(("127.0.0.1", 0))
        client.connect(("127.0.0.1", port))
        held = client.getsockname()[1]  # the local end of a connection, as a client retrying a broker holds it
        accepted, _ = listener.accept()
        assert not port_is_free("127.0.0.1", held)

        def hang_up() -> None:  # the other end first: the client's end leaves no TIME_WAIT on its port
            accepted.close()
            time.sleep(0.1)
            client.close()

        threading.Timer(0.5, hang_up).start()
        assert wait_until_port_is_free("127.0.0.1", held, timeout_s=10)


def test_kill_returns_only_when_the_process_is_gone(tmp_path: Path) -> None:
    proc = _process(tmp_path)
    pid = proc.start([sys.executable, "-c", "import time; time.sleep(300)"], env={}, cwd=tmp_path)
    proc.kill()
    assert proc.pid() is None
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][0] == "Z"
