"""A small client for the Flink REST API (any session cluster: local standalone, remote, Kubernetes).

Only the endpoints the `metering job` commands need. Every failure becomes a :class:`StackError`
that names the cluster and what to check; nothing is retried silently.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from infra.errors import StackError

#: Job states after which a job never runs again.
TERMINAL_STATES = frozenset({"FINISHED", "CANCELED", "FAILED"})


@dataclass(frozen=True)
class FlinkRest:
    """The REST endpoint of one Flink cluster, e.g. ``http://127.0.0.1:18081``."""

    url: str
    timeout_s: float = 10.0

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request and decode the JSON answer (``{}`` when the body is empty)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url.rstrip('/')}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                errors = json.loads(detail).get("errors", [detail])
                detail = errors[0].strip().splitlines()[0] if errors else detail
            except (ValueError, AttributeError, IndexError):
                pass
            if exc.code == 404 and "/jobs/" in path:
                raise StackError(
                    f"Flink at {self.url} does not know {path.split('/jobs/')[1].split('/')[0]}: {detail}",
                    hint="list the jobs with `metering job list --cluster URL`",
                ) from exc
            raise StackError(f"Flink at {self.url} refused {method} {path}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise StackError(
                f"the Flink cluster at {self.url} is not reachable ({exc})",
                hint="start the local one with `metering stack up`, or pass --cluster URL of a running cluster",
            ) from exc
        return json.loads(text) if text.strip() else {}

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the cluster knows (``/jobs/overview``), newest first."""
        jobs: list[dict[str, Any]] = self.get("/jobs/overview").get("jobs", [])
        return sorted(jobs, key=lambda j: j.get("start-time", 0), reverse=True)

    def cluster_config(self) -> dict[str, str]:
        """The cluster's configuration (``/jobmanager/config``; a standalone cluster's TaskManagers share it) as a dict."""
        return {row["key"]: row["value"] for row in self.get("/jobmanager/config")}

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/jobs/{job_id}")
        return result

    def job_metrics(self, job_id: str, names: list[str]) -> dict[str, str]:
        """Job-level metrics (e.g. ``numRestarts``) as ``{name: value}``."""
        rows = self.get(f"/jobs/{job_id}/metrics?get={','.join(names)}")
        return {row["id"]: row["value"] for row in rows}

    def subtask_metrics(self, job_id: str, vertex_id: str, names: list[str] | None = None) -> dict[str, float]:
        """A vertex's metrics summed over its subtasks; without ``names``: the ids on offer (value 0)."""
        path = f"/jobs/{job_id}/vertices/{vertex_id}/subtasks/metrics"
        if names is None:
            return {row["id"]: 0.0 for row in self.get(path)}
        if not names:
            return {}
        rows = self.get(f"{path}?get={','.join(names)}&agg=sum")
        return {row["id"]: float(row.get("sum", 0)) for row in rows}

    def watermarks(self, job_id: str, vertex_id: str) -> list[int]:
        """Current input watermark (epoch ms) of each subtask of a vertex."""
        rows = self.get(f"/jobs/{job_id}/vertices/{vertex_id}/watermarks")
        return [int(float(row["value"])) for row in rows if row["id"].endswith("currentInputWatermark")]

    def trigger_savepoint(self, job_id: str, target_directory: str | None, *, stop: bool, drain: bool = False) -> str:
        """Start a savepoint (optionally stopping the job); returns the trigger id to poll."""
        body: dict[str, Any] = {"formatType": "CANONICAL"}
        if stop:
            body["drain"] = drain
            if target_directory:
                body["targetDirectory"] = target_directory
            answer = self.request("POST", f"/jobs/{job_id}/stop", body)
        else:
            body["cancel-job"] = False
            if target_directory:
                body["target-directory"] = target_directory
            answer = self.request("POST", f"/jobs/{job_id}/savepoints", body)
        return str(answer["request-id"])

    def await_savepoint(self, job_id: str, trigger_id: str, timeout_s: float) -> str:
        """Poll a savepoint trigger until it completes; returns the savepoint's location."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answer = self.get(f"/jobs/{job_id}/savepoints/{trigger_id}")
            if answer.get("status", {}).get("id") == "COMPLETED":
                operation = answer.get("operation", {})
                if "location" in operation:
                    return str(operation["location"])
                cause = operation.get("failure-cause", {})
                message = cause.get("stack-trace", "").strip().splitlines()
                raise StackError(
                    f"the savepoint of job {job_id} failed: {message[0] if message else cause}",
                    hint="see `metering job status ID` and the JobManager log; the job keeps running when a savepoint fails",
                )
            time.sleep(0.5)
        raise StackError(f"the savepoint of job {job_id} did not complete within {timeout_s:.0f}s (trigger {trigger_id})")

    def cancel(self, job_id: str) -> None:
        self.request("PATCH", f"/jobs/{job_id}?mode=cancel")

    def wait_for_state(self, job_id: str, states: set[str], timeout_s: float) -> dict[str, Any]:
        """Poll until the job is in one of ``states``; a terminal state not asked for is an error."""
        deadline = time.monotonic() + timeout_s
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.job(job_id)
            state = job.get("state")
            if state in states:
                return job
            if state in TERMINAL_STATES:
                raise StackError(f"job {job_id} ended {state} (waiting for {', '.join(sorted(states))})")
            time.sleep(0.5)
        wanted = ", ".join(sorted(states))
        raise StackError(f"job {job_id} did not reach {wanted} within {timeout_s:.0f}s (last: {job.get('state')})")
