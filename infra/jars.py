"""Pinned JVM jars: resolved by Maven, verified against ``infra/jars.lock``.

Maven (the ordinary client for Maven Central, with ``--strict-checksums``)
resolves the dependency closure declared in ``infra/maven/pom.xml`` into the
project's git-ignored jar cache. Every jar is then checked against the SHA-256
frozen in ``infra/jars.lock``; an unexpected, missing or altered jar stops the
stack with an error naming it. ``metering stack lock-jars`` regenerates the
lock after a deliberate version change.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from infra.errors import JarChecksumError, StackError

INFRA_DIR = Path(__file__).resolve().parent
POM = INFRA_DIR / "maven" / "pom.xml"
LOCK_FILE = INFRA_DIR / "jars.lock"

#: Maven profiles in the pom, one jar set each.
PROFILES = ("kafka", "flink-connector")


@dataclass(frozen=True)
class LockedJar:
    profile: str
    filename: str
    sha256: str


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_lock(lock_file: Path = LOCK_FILE) -> dict[str, dict[str, str]]:
    """Parse the lock file into ``{profile: {filename: sha256}}``."""
    if not lock_file.exists():
        raise StackError(
            f"jar lock file {lock_file} is missing",
            hint="run `metering stack lock-jars` to resolve and pin the jars",
        )
    locked: dict[str, dict[str, str]] = {}
    for number, line in enumerate(lock_file.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or len(parts[2]) != 64:
            raise StackError(f"{lock_file}:{number}: expected '<profile> <jar> <sha256>', got {line!r}")
        profile, filename, digest = parts
        locked.setdefault(profile, {})[filename] = digest
    return locked


def _maven_resolve(profile: str, into: Path, log: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Maven (`mvn`) is not on PATH; it is needed once to fetch the pinned jars",
            hint="install Maven 3 (Debian: apt-get install maven) or put it on PATH",
        )
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        mvn,
        "-B",
        "--strict-checksums",
        "-f",
        str(POM),
        f"-P{profile}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={into}",
        "-DincludeScope=runtime",
    ]
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(command)}\n".encode())
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise StackError(
            f"Maven could not resolve the '{profile}' jars (exit {result.returncode})",
            log=log,
            hint="check network access to Maven Central and the versions in infra/maven/pom.xml",
        )


def verify(directory: Path, expected: dict[str, str], profile: str) -> None:
    """Fail unless ``directory`` holds exactly the expected jars with the expected SHA-256."""
    present = {p.name for p in directory.glob("*.jar")}
    missing = sorted(set(expected) - present)
    unexpected = sorted(present - set(expected))
    if missing:
        raise JarChecksumError(
            f"jar set '{profile}' in {directory} lacks {', '.join(missing)}",
            hint="delete that folder and start again, or run `metering stack lock-jars` if the pom changed",
        )
    if unexpected:
        raise JarChecksumError(
            f"jar set '{profile}' in {directory} has jars not in infra/jars.lock: {', '.join(unexpected)}",
            hint="run `metering stack lock-jars` if the pom changed on purpose",
        )
    for name, digest in sorted(expected.items()):
        actual = sha256_of(directory / name)
        if actual != digest:
            raise JarChecksumError(
                f"checksum mismatch for {directory / name}: expected sha256 {digest}, got {actual}",
                hint="the cached jar is corrupt or was replaced; delete it and start again (`metering stack reset --jars`)",
            )


def ensure_jars(cache: Path, profile: str, *, log: Path, lock_file: Path = LOCK_FILE) -> Path:
    """Return the folder holding the verified jars of ``profile``, fetching them if absent."""
    expected = read_lock(lock_file).get(profile)
    if not expected:
        raise StackError(f"infra/jars.lock pins no jars for '{profile}'", hint="run `metering stack lock-jars`")
    target = cache / "jars" / profile
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=f".{profile}-") as tmp:
            staging = Path(tmp) / "jars"
            _maven_resolve(profile, staging, log)
            verify(staging, expected, profile)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(target)
    verify(target, expected, profile)
    return target


def write_lock(cache: Path, *, log: Path, lock_file: Path = LOCK_FILE) -> list[LockedJar]:
    """Resolve every profile afresh and rewrite the lock file (a deliberate, reviewed change)."""
    entries: list[LockedJar] = []
    cache.mkdir(parents=True, exist_ok=True)
    for profile in PROFILES:
        with tempfile.TemporaryDirectory(dir=cache, prefix=f".lock-{profile}-") as tmp:
            staging = Path(tmp) / "jars"
            _maven_resolve(profile, staging, log)
            for jar in sorted(staging.glob("*.jar")):
                entries.append(LockedJar(profile, jar.name, sha256_of(jar)))
    header = (
        "# Generated by `metering stack lock-jars` from infra/maven/pom.xml. Do not edit by hand.\n"
        "# <maven profile> <jar file> <sha256>\n"
    )
    lock_file.write_text(header + "".join(f"{e.profile} {e.filename} {e.sha256}\n" for e in entries))
    return entries
