"""API keys of the ingestion service: created once, stored hashed, scoped to customers, revocable live.

A key is ``mik_<id>_<secret>``: ``id`` (12 characters) names it in listings and revocations, the
secret is 32 random bytes in base64url. The register (``keys.jsonl`` in ``ingest.keys``) keeps
each key's id, name, customers, creation time and the SHA-256 of the whole key text, never the
key: a key is shown once, at creation, and cannot be recovered, only revoked. A key of 256 random
bits needs no slow hash; a lookup by its SHA-256 compares no secret byte by byte.

Revoking appends the id to ``revoked.txt`` (clickhouse/access.py's :class:`Revocations`, the
access tokens' list); the service re-reads both files when they change (one ``stat`` each per
request), so a key created or revoked takes effect at the next request without a restart.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clickhouse.access import Revocations, append_private
from schemas.validate import string_rule

PREFIX = "mik"
REGISTER = "keys.jsonl"
REVOKED = "revoked.txt"
#: A header longer than this is no key of ours (refused before hashing).
MAX_KEY_CHARS = 200
_KEY = re.compile(r"mik_([A-Za-z0-9]{12})_[A-Za-z0-9_-]{43}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:@-]{0,63}")


class KeyProblem(ValueError):
    """A key cannot be created as asked (a bad name or customer id)."""


@dataclass(frozen=True)
class ApiKey:
    """A key's register entry: who it is for and what it may send (``customers`` None: every customer)."""

    id: str
    name: str
    customers: tuple[str, ...] | None
    created_at: int
    revoked: bool = False

    def may_send_for(self, customer: str) -> bool:
        return self.customers is None or customer in self.customers


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore:
    """The register and the revocation list in one folder (``ingest.keys``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.revocations = Revocations(folder / REVOKED)
        self._seen: tuple[int, int] | None = None
        self._by_hash: dict[str, ApiKey] = {}

    def create(self, name: str, customers: Sequence[str] | None = None, now: float | None = None) -> tuple[str, ApiKey]:
        """A new key (its text, shown once) and its entry, recorded in the register."""
        if not _NAME.fullmatch(name):
            raise KeyProblem(
                f"--name: {name!r} must be 1-64 letters, digits, spaces and . _ : @ - (starting with a letter or digit)"
            )
        rule = string_rule("customer_id")
        for customer in customers or ():
            problem = rule.problem(customer)
            if problem is not None:
                raise KeyProblem(f"--customers: {problem}")
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        key_id = "".join(secrets.choice(alphabet) for _ in range(12))
        text = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        entry = ApiKey(
            key_id, name, tuple(sorted(set(customers))) if customers else None, int(time.time() if now is None else now)
        )
        record = {
            "id": entry.id,
            "name": entry.name,
            "customers": list(entry.customers) if entry.customers is not None else None,
            "created_at": entry.created_at,
            "sha256": hash_key(text),
        }
        append_private(self.folder / REGISTER, json.dumps(record, sort_keys=True))
        return text, entry

    def _entries(self) -> dict[str, ApiKey]:
        """Hash -> entry, re-read when the register changed."""
        path = self.folder / REGISTER
        try:
            stat = path.stat()
        except FileNotFoundError:
            self._seen, self._by_hash = None, {}
            return self._by_hash
        version = (stat.st_mtime_ns, stat.st_size)
        if version != self._seen:
            entries = {}
            for line in path.read_text().splitlines():
                if line.strip():
                    d = json.loads(line)
                    customers = tuple(d["customers"]) if d.get("customers") is not None else None
                    entries[d["sha256"]] = ApiKey(d["id"], d["name"], customers, d["created_at"])
            self._by_hash, self._seen = entries, version
        return self._by_hash

    def check(self, key: str | None) -> ApiKey | None:
        """The entry of a valid, unrevoked key; None for anything else."""
        if not key or len(key) > MAX_KEY_CHARS or _KEY.fullmatch(key) is None:
            return None
        entry = self._entries().get(hash_key(key))
        if entry is None or self.revocations.contains(entry.id):
            return None
        return entry

    def listed(self) -> list[ApiKey]:
        revoked = self.revocations.ids()
        return [ApiKey(e.id, e.name, e.customers, e.created_at, e.id in revoked) for e in self._entries().values()]  # as created

    def revoke(self, key_id: str) -> bool:
        """Revoke by id; False when no key of that id is in the register (nothing is written)."""
        if not any(e.id == key_id for e in self._entries().values()):
            return False
        if not self.revocations.contains(key_id):
            append_private(self.folder / REVOKED, key_id)
        return True
