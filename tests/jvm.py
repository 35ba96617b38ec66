"""A Java main of ``udfs/jvm`` run outside Flink, for the agreement tests: bytes in, one JSON answer per line out."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from typing import Any


class JavaProcess:
    """A running ``main_class`` with the UDF jar and PyFlink's jars on its classpath (one JVM per test module)."""

    def __init__(self, main_class: str, *args: str, jvm_options: tuple[str, ...] = ()) -> None:
        from infra.flink import pyflink_home
        from infra.java import find_java
        from infra.udf_jar import udf_jar
        from jobs.config import load_stack

        classpath = os.pathsep.join([str(udf_jar(load_stack())), *sorted(str(j) for j in (pyflink_home() / "lib").glob("*.jar"))])
        self.process = subprocess.Popen(
            [str(find_java()), *jvm_options, "-cp", classpath, main_class, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def exchange(self, payload: bytes, answers: int) -> list[Any]:
        """Send ``payload``; read ``answers`` JSON lines back."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None

        def write() -> None:  # while this thread reads: neither side fills a pipe and waits forever
            stdin.write(payload)
            stdin.flush()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        read = [json.loads(stdout.readline()) for _ in range(answers)]
        writer.join()
        return read

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)
