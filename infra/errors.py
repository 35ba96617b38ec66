"""Errors raised by the local stack; each names the cause and where to look."""

from __future__ import annotations

from pathlib import Path


class StackError(RuntimeError):
    """A stack component could not be prepared, started, checked or stopped."""

    def __init__(self, message: str, *, log: Path | None = None, hint: str | None = None) -> None:
        self.log = log
        self.hint = hint
        parts = [message]
        if hint:
            parts.append(f"fix: {hint}")
        if log is not None:
            parts.append(f"log: {log}")
        super().__init__("\n  ".join(parts))


class JarChecksumError(StackError):
    """A jar in the cache does not match the SHA-256 pinned in infra/jars.lock."""
