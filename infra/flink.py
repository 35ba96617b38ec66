"""A standalone Flink cluster (one JobManager, one TaskManager) from the PyFlink wheel.

PyFlink ships the full Flink distribution (``pyflink/bin``, ``lib``, ``opt``).
We do not modify the installed package: the stack assembles its own
``lib/`` folder of symlinks (PyFlink's jars, ``flink-python`` from ``opt/``
and the pinned Kafka connector) and its own ``conf/config.yaml``, and points
``FLINK_LIB_DIR`` / ``FLINK_CONF_DIR`` at them. Both processes run in the
foreground scripts (``jobmanager.sh start-foreground``), so the PID we hold
is the JVM's and ``kill -9`` of a TaskManager is a real crash.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.errors import StackError
from infra.jars import ensure_jars
from infra.java import find_java
from infra.process import ManagedProcess, port_users, wait_until_port_is_free
from infra.settings import LOOPBACK, PROJECT_ROOT, StackSettings

#: Bounded restarts with backoff, for the local cluster, every job and the deployment files: a
#: persistent failure ends the job with its cause instead of restarting forever.
RESTART_STRATEGY = {
    "restart-strategy.type": "exponential-delay",
    "restart-strategy.exponential-delay.initial-backoff": "1 s",
    "restart-strategy.exponential-delay.max-backoff": "30 s",
    "restart-strategy.exponential-delay.attempts-before-reset-backoff": "10",
}


#: ``--state-backend`` values (Flink's ``state.backend.type``).
STATE_BACKENDS = ("hashmap", "rocksdb")
#: Managed memory of the local MiniCluster's TaskManager when it runs RocksDB (Flink's local default
#: is 128 MiB; a cluster's TaskManagers size it from their own configuration).
MINI_CLUSTER_ROCKSDB_MANAGED_MEMORY = "1g"


def state_backend_settings(backend: str, *, mini_cluster: bool) -> dict[str, str]:
    """Flink configuration for ``--state-backend`` (``hashmap`` or ``rocksdb``).

    RocksDB: incremental checkpoints; Bloom filters, because most dedup lookups miss (a first
    occurrence is new by definition) and without them a miss reads every SST file's index; and on
    the MiniCluster enough managed memory for RocksDB's block cache and write buffers. Measured on
    a 1.5M-event backlog (docs/benchmarks.md, "RocksDB for large dedup state"): with Flink's defaults
    ~9k events/s falling to ~500/s; Bloom filters alone ~8k; both 25k, as fast as ``hashmap``.
    """
    if backend not in STATE_BACKENDS:
        raise ValueError(f"state backend {backend!r}: choose one of {', '.join(STATE_BACKENDS)}")
    settings = {"state.backend.type": backend}
    if backend == "rocksdb":
        settings["execution.checkpointing.incremental"] = "true"
        settings["state.backend.rocksdb.use-bloom-filter"] = "true"
        if mini_cluster:
            settings["taskmanager.memory.managed.size"] = MINI_CLUSTER_ROCKSDB_MANAGED_MEMORY
    return settings


def pyflink_home() -> Path:
    """The Flink distribution inside the installed PyFlink package."""
    try:
        import pyflink
    except ImportError as exc:
        raise StackError(
            "PyFlink is not installed in this Python environment",
            hint="install the project: `pip install -e .` (see README)",
        ) from exc
    home = Path(pyflink.__file__).resolve().parent
    if not (home / "bin" / "jobmanager.sh").exists():
        raise StackError(f"{home} has no bin/jobmanager.sh; the apache-flink install is incomplete")
    return home


def connector_jar(settings: StackSettings) -> Path:
    """The verified flink-sql-connector-kafka jar (fetched on first use)."""
    folder = ensure_jars(settings.jar_cache, "flink-connector", log=settings.logs / "jars.log")
    jars = sorted(folder.glob("flink-sql-connector-kafka-*.jar"))
    if len(jars) != 1:
        raise StackError(f"expected one flink-sql-connector-kafka jar in {folder}, found {len(jars)}")
    return jars[0]


def python_path(existing: str | None = None) -> str:
    """PYTHONPATH for Flink's Python workers: the project and this environment's site-packages.

    In ``python.execution-mode: thread`` the UDFs run in an interpreter embedded in the JVM
    (pemja), which starts from the base installation's prefix and does not see a virtualenv;
    it needs the venv's site-packages and the project root on its path explicitly.
    """
    import site

    parts = [str(PROJECT_ROOT), *site.getsitepackages()]
    if existing:
        parts.append(existing)
    return os.pathsep.join(dict.fromkeys(parts))


@dataclass
class FlinkCluster:
    """The local standalone session cluster: files under ``<home>/flink``."""

    settings: StackSettings

    def _process(self, role: str) -> ManagedProcess:
        return ManagedProcess(
            name=f"Flink {role}",
            pid_file=self.settings.run_dir / f"flink-{role}.pid",
            log_file=self.settings.logs / f"flink-{role}.out",
            marker=f"metering-flink-{role}-{self.settings.flink_rest_port}",
        )

    @property
    def jobmanager(self) -> ManagedProcess:
        return self._process("jobmanager")

    @property
    def taskmanager(self) -> ManagedProcess:
        return self._process("taskmanager")

    @property
    def conf_dir(self) -> Path:
        return self.settings.flink_dir / "conf"

    @property
    def lib_dir(self) -> Path:
        return self.settings.flink_dir / "lib"

    @property
    def log_dir(self) -> Path:
        return self.settings.logs / "flink"

    def configuration(self) -> dict[str, Any]:
        """The cluster's config.yaml (flat keys), everything bound to loopback."""
        s = self.settings
        default = yaml.safe_load((pyflink_home() / "conf" / "config.yaml").read_text()) or {}
        java_opts = default.get("env", {}).get("java", {}).get("opts", {}).get("all", "")
        return {
            "env.java.opts.all": java_opts,
            "jobmanager.rpc.address": LOOPBACK,
            "jobmanager.rpc.port": s.flink_rpc_port,
            "jobmanager.bind-host": LOOPBACK,
            "jobmanager.memory.process.size": "1024m",
            "jobmanager.execution.failover-strategy": "region",
            "taskmanager.bind-host": LOOPBACK,
            "taskmanager.host": LOOPBACK,
            "taskmanager.numberOfTaskSlots": s.taskmanager_slots,
            "taskmanager.memory.process.size": "3072m",
            "rest.address": LOOPBACK,
            "rest.bind-address": LOOPBACK,
            "rest.port": s.flink_rest_port,
            "blob.server.port": "0",
            "parallelism.default": 1,
            "state.backend.type": "hashmap",
            "execution.checkpointing.dir": f"file://{s.checkpoint_dir}",
            "execution.checkpointing.savepoint-dir": f"file://{s.savepoint_dir}",
            "execution.checkpointing.num-retained": 3,
            **RESTART_STRATEGY,
            "python.executable": s.python_executable,
            "python.client.executable": s.python_executable,
            # A killed TaskManager is noticed in seconds, not the default 50 s.
            "heartbeat.interval": 2000,
            "heartbeat.timeout": 10000,
            "web.submit.enable": "true",
            "web.cancel.enable": "true",
        }

    def _prepare(self) -> None:
        home = pyflink_home()
        s = self.settings
        for folder in (self.conf_dir, self.lib_dir, self.log_dir, s.checkpoint_dir, s.savepoint_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # lib/: PyFlink's jars + flink-python + the pinned connector, as symlinks.
        for old in self.lib_dir.iterdir():
            old.unlink()
        wanted = [
            *sorted((home / "lib").glob("*.jar")),
            *sorted((home / "opt").glob("flink-python-*.jar")),
            connector_jar(s),
        ]
        for jar in wanted:
            (self.lib_dir / jar.name).symlink_to(jar)
        for name in (
            "log4j.properties",
            "log4j-console.properties",
            "log4j-cli.properties",
            "logback.xml",
            "logback-console.xml",
        ):
            source = home / "conf" / name
            if source.exists():
                shutil.copyfile(source, self.conf_dir / name)
        config = self.configuration()
        text = "# Generated by infra/flink.py; edits are overwritten.\n" + yaml.safe_dump(config, sort_keys=True)
        (self.conf_dir / "config.yaml").write_text(text)

    def prepare_client(self) -> None:
        """Make sure the `flink` CLI has a conf/ and lib/ (written by the first `stack up` otherwise)."""
        if not (self.conf_dir / "config.yaml").exists():
            self._prepare()

    def environment(self) -> dict[str, str]:
        """Environment for Flink's scripts (cluster processes and the `flink` CLI)."""
        env = dict(os.environ)
        env["FLINK_HOME"] = str(pyflink_home())
        env["FLINK_CONF_DIR"] = str(self.conf_dir)
        env["FLINK_LIB_DIR"] = str(self.lib_dir)
        env["FLINK_LOG_DIR"] = str(self.log_dir)
        env["FLINK_PID_DIR"] = str(self.settings.run_dir)
        env["JAVA_HOME"] = str(find_java().resolve().parent.parent)
        env["PYTHONPATH"] = python_path(env.get("PYTHONPATH"))
        return env

    def _start_role(self, role: str, script: str) -> None:
        process = self._process(role)
        if process.is_running():
            return
        env = self.environment()
        # The marker lands in the JVM's command line, so our pid file can be verified.
        env["JVM_ARGS"] = f"-Dmetering.marker=metering-flink-{role}-{self.settings.flink_rest_port}"
        argv = ["bash", str(pyflink_home() / "bin" / script), "start-foreground"]
        process.start(argv, env=env, cwd=self.settings.flink_dir)

    def start(self, timeout_s: float | None = None) -> None:
        """Start JobManager and TaskManager (idempotent) and wait until a TaskManager registered."""
        s = self.settings
        find_java()
        if not self.jobmanager.is_running():
            for port in (s.flink_rest_port, s.flink_rpc_port):
                if not wait_until_port_is_free(LOOPBACK, port):
                    raise StackError(
                        f"port {LOOPBACK}:{port} is already in use by another process; the Flink JobManager cannot bind it "
                        f"(holders: {port_users(port)})",
                        hint="stop that process, or choose other ports "
                        "with METERING__STACK__FLINK_REST_PORT / METERING__STACK__FLINK_RPC_PORT",
                        log=self.jobmanager.log_file,
                    )
            self._prepare()
        self._start_role("jobmanager", "jobmanager.sh")
        self.jobmanager.wait_ready(self._probe_rest, timeout_s or s.startup_timeout_s, "REST /overview")
        self._start_role("taskmanager", "taskmanager.sh")
        self.taskmanager.wait_ready(self.probe, timeout_s or s.startup_timeout_s, "TaskManager registration")

    def start_taskmanager(self, timeout_s: float | None = None) -> None:
        """(Re)start only the TaskManager, e.g. after a fault test killed it.

        Waits until the new TaskManager (not a dead one the JobManager has not yet noticed) has
        registered: the REST list of TaskManagers must contain an id not seen before the start.
        """
        before = {tm["id"] for tm in self.rest("/taskmanagers").get("taskmanagers", [])}
        self._start_role("taskmanager", "taskmanager.sh")

        def new_one_registered() -> str | None:
            try:
                current = {tm["id"] for tm in self.rest("/taskmanagers").get("taskmanagers", [])}
            except (urllib.error.URLError, OSError, ValueError) as exc:
                return f"{type(exc).__name__}: {exc}"
            return None if current - before else "the new TaskManager has not registered yet"

        self.taskmanager.wait_ready(new_one_registered, timeout_s or self.settings.startup_timeout_s, "TaskManager registration")

    def run_python(
        self,
        script: Path,
        args: list[str],
        *,
        python_files: list[Path] | None = None,
        timeout_s: float = 600,
        detached: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """``flink run -py SCRIPT -- ARGS`` against this cluster.

        Attached (default) it returns when the job ends; ``detached`` returns once it is submitted
        (the job id is in stdout: "Job has been submitted with JobID …").
        """
        command = [
            "bash",
            str(pyflink_home() / "bin" / "flink"),
            "run",
            *(["-d"] if detached else []),
            "-m",
            f"{LOOPBACK}:{self.settings.flink_rest_port}",
            "-py",
            str(script),
            "-pyexec",
            self.settings.python_executable,
        ]
        if python_files:
            command += ["-pyfs", ",".join(str(p) for p in python_files)]
        return subprocess.run(
            [*command, *args], env=self.environment(), capture_output=True, text=True, timeout=timeout_s, check=False
        )

    def wait_for_job(self, job_id: str, states: set[str], timeout_s: float = 600) -> dict[str, Any]:
        """Poll ``/jobs/<id>`` until its state is one of ``states``; returns the job's JSON."""
        from infra.flink_rest import FlinkRest

        return FlinkRest(self.settings.flink_rest_url).wait_for_state(job_id, states, timeout_s)

    def rest(self, path: str, timeout_s: float = 3.0) -> Any:
        """GET a Flink REST endpoint and decode its JSON."""
        with urllib.request.urlopen(f"{self.settings.flink_rest_url}{path}", timeout=timeout_s) as response:
            return json.loads(response.read())

    def _probe_rest(self) -> str | None:
        try:
            self.rest("/overview")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def probe(self) -> str | None:
        """None when the REST API answers and a TaskManager with free slots is registered."""
        try:
            overview = self.rest("/overview")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        if overview.get("taskmanagers", 0) < 1:
            return "no TaskManager registered"
        return None

    def status(self) -> dict[str, Any]:
        jm, tm = self.jobmanager.pid(), self.taskmanager.pid()
        status: dict[str, Any] = {
            "component": "flink",
            "running": jm is not None and tm is not None,
            "jobmanager_pid": jm,
            "taskmanager_pid": tm,
            "rest_url": self.settings.flink_rest_url,
            "web_ui": self.settings.flink_rest_url + "/#/overview",
            "log": str(self.log_dir),
        }
        if jm is not None:
            try:
                overview = self.rest("/overview")
            except (urllib.error.URLError, OSError, ValueError) as exc:
                status.update(healthy=False, problem=f"REST API not answering: {exc}")
                return status
            status.update(
                healthy=overview.get("taskmanagers", 0) >= 1,
                flink_version=overview.get("flink-version"),
                taskmanagers=overview.get("taskmanagers"),
                slots_total=overview.get("slots-total"),
                slots_available=overview.get("slots-available"),
                jobs_running=overview.get("jobs-running"),
            )
            if not status["healthy"]:
                status["problem"] = "no TaskManager registered"
        else:
            status["healthy"] = False
        return status

    def stop(self) -> bool:
        stopped_tm = self.taskmanager.stop(timeout_s=20)
        stopped_jm = self.jobmanager.stop(timeout_s=20)
        return stopped_tm or stopped_jm
