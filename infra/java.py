"""Find a Java runtime new enough for Kafka 4 and Flink 2."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from infra.errors import StackError
from infra.versions import MIN_JAVA_VERSION


def find_java() -> Path:
    """Path of the ``java`` binary (``$JAVA_HOME/bin/java`` first, then PATH), version-checked."""
    candidates: list[Path] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidates.append(Path(java_home) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path))
    for java in candidates:
        if java.exists() and os.access(java, os.X_OK):
            version = java_feature_version(java)
            if version < MIN_JAVA_VERSION:
                raise StackError(
                    f"{java} is Java {version}; the stack needs Java {MIN_JAVA_VERSION} or newer",
                    hint=f"install Java {MIN_JAVA_VERSION} (Debian: apt-get install openjdk-17-jre-headless) "
                    "and point JAVA_HOME at it",
                )
            return java
    raise StackError(
        "no Java runtime found (checked $JAVA_HOME/bin/java and `java` on PATH)",
        hint=f"install Java {MIN_JAVA_VERSION}+ (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME",
    )


def java_feature_version(java: Path) -> int:
    """The feature release (17, 21, …) reported by ``java -version``."""
    result = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        raise StackError(f"could not read the Java version from `{java} -version`: {result.stderr.strip()!r}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major
