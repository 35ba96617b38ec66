"""Jar verification against the lock: mismatches name the jar and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.errors import JarChecksumError, StackError
from infra.jars import read_lock, sha256_of, verify


def _jars(folder: Path, **contents: bytes) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (folder / f"{name}.jar").write_bytes(data)
    return {f"{name}.jar": sha256_of(folder / f"{name}.jar") for name in contents}


def test_matching_jars_verify(tmp_path: Path) -> None:
    expected = _jars(tmp_path, a=b"alpha", b=b"beta")
    verify(tmp_path, expected, "kafka")


def test_altered_jar_is_named_with_both_digests(tmp_path: Path) -> None:
    expected = _jars(tmp_path, a=b"alpha", b=b"beta")
    (tmp_path / "b.jar").write_bytes(b"tampered")
    with pytest.raises(JarChecksumError) as err:
        verify(tmp_path, expected, "kafka")
    message = str(err.value)
    assert "b.jar" in message and expected["b.jar"] in message and sha256_of(tmp_path / "b.jar") in message
    assert "fix:" in message


def test_missing_and_unexpected_jars_are_reported(tmp_path: Path) -> None:
    expected = _jars(tmp_path, a=b"alpha")
    (tmp_path / "a.jar").unlink()
    with pytest.raises(JarChecksumError, match=r"lacks a\.jar"):
        verify(tmp_path, expected, "kafka")
    _jars(tmp_path, a=b"alpha", extra=b"x")
    with pytest.raises(JarChecksumError, match=r"extra\.jar"):
        verify(tmp_path, expected, "kafka")


def test_lock_file_syntax_errors_name_the_line(tmp_path: Path) -> None:
    lock = tmp_path / "jars.lock"
    lock.write_text("# comment\nkafka a.jar " + "0" * 64 + "\nkafka broken-line\n")
    with pytest.raises(StackError, match=r"jars.lock:3"):
        read_lock(lock)


def test_missing_lock_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="lock-jars"):
        read_lock(tmp_path / "absent.lock")
