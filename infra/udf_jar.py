"""The job's Java UDFs (``udfs/jvm``), compiled into a jar on first use.

Per-event parsing runs in the JVM; small functions there (registered by name in
``jobs/flink/sql.FUNCTIONS``) replace SQL expressions that Flink evaluates slowly (docs/benchmarks.md,
"Parse stage"). They are compiled with ``javac`` against the jars of the installed PyFlink, the
same ones the job runs on, so no extra download or version pin is involved. The jar is cached
under the jar cache, named by a hash of the sources and the PyFlink version: editing a source or
upgrading PyFlink builds a new one. ``stack.udf_jar`` (``METERING__STACK__UDF_JAR``) names a prebuilt jar instead (the
deployment image has one and no JDK).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from infra.errors import StackError
from infra.settings import PROJECT_ROOT, StackSettings

SOURCE_DIR = PROJECT_ROOT / "udfs" / "jvm" / "src"
#: ``javac`` options; ``-parameters`` keeps parameter names, which Flink reads as the names of a
#: process table function's state entries (``FirstSeen``).
JAVAC_OPTIONS = ("--release", "17", "-parameters", "-nowarn")


def _sources(source_dir: Path) -> list[Path]:
    sources = sorted(source_dir.rglob("*.java"))
    if not sources:
        raise StackError(f"no Java sources under {source_dir}", hint="restore udfs/jvm/src from the repository")
    return sources


def source_hash(source_dir: Path = SOURCE_DIR) -> str:
    """A digest of the UDF sources, the PyFlink version they compile against and the ``javac`` options."""
    from infra.versions import PYFLINK_VERSION

    digest = hashlib.sha256(PYFLINK_VERSION.encode() + b"\0" + " ".join(JAVAC_OPTIONS).encode())
    for path in _sources(source_dir):
        digest.update(str(path.relative_to(source_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def udf_jar(settings: StackSettings, source_dir: Path = SOURCE_DIR) -> Path:
    """The compiled UDF jar (built when the sources changed); raises :class:`StackError` without a JDK."""
    from infra.flink import pyflink_home

    prebuilt = settings.udf_jar
    if prebuilt is not None:  # an image built with the jar (infra/deploy.py) and no JDK
        if not prebuilt.is_file():
            raise StackError(f"stack.udf_jar={prebuilt} is not a file", hint="unset it to compile udfs/jvm here")
        return prebuilt
    target = settings.jar_cache / "metering-udfs" / f"metering-udfs-{source_hash(source_dir)}.jar"
    if target.exists():
        return target
    javac = shutil.which("javac")
    if javac is None:
        raise StackError(
            "javac not found: the job's Java UDFs (udfs/jvm) are compiled on first use",
            hint="install a Java 17 JDK, e.g. `apt-get install openjdk-17-jdk-headless`",
        )
    classpath = os.pathsep.join(str(jar) for jar in sorted((pyflink_home() / "lib").glob("*.jar")))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="metering-udfs-") as scratch:
        classes = Path(scratch) / "classes"
        command = [javac, *JAVAC_OPTIONS, "-d", str(classes), "-cp", classpath]
        result = subprocess.run(
            [*command, *map(str, _sources(source_dir))], capture_output=True, text=True, check=False, timeout=300
        )
        if result.returncode != 0:
            raise StackError(f"compiling the Java UDFs in {source_dir} failed:\n{result.stderr[-3000:]}")
        partial = target.parent / f".{target.name}.{os.getpid()}.tmp"
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as jar:
            jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: infra/udf_jar.py\n\n")
            for path in sorted(classes.rglob("*.class")):
                jar.write(path, str(path.relative_to(classes)))
        os.replace(partial, target)  # complete or absent: concurrent builders race harmlessly
    return target
