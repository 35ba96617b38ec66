"""Reads through the process that owns the chDB directory, for those allowed to read.

Embedded ClickHouse (chDB) allows one process per data directory, and the loader holds it for as
long as it runs. So the owner serves the *named read queries* (``clickhouse/queries/*.sql``, the
same allow-list the CLI and the dashboard use) on a loopback HTTP port and writes where to find it
in ``<chdb dir>/.gateway.json``. Any other process that wants to read (``metering query``,
``metering dashboard``) calls :func:`open_reader`: it opens the storage itself when the directory
is free, and goes through the owner's gateway when it is not. Only reads cross the gateway; no SQL
text does, only a query name and its parameters, which ClickHouse binds server-side.

Who may ask. Each start of a gateway makes a random secret and writes it, with the URL, into
``.gateway.json``, created with mode 0600 (never readable by another user, not for an instant) in
a directory no other user may write. Every request carries ``Authorization: Bearer <credential>``:

- the gateway's secret (what :func:`open_reader` sends, read from that file): the owner's own
  user, who can read the chDB directory anyway, reads everything;
- an access token (clickhouse/access.py), when the gateway was given the signing key
  (``access.signing_key``): the token's scope decides, with the one rule of
  :func:`clickhouse.access.authorize_query` before the query runs and
  :func:`clickhouse.access.visible_rows` on its rows; a customer token reads its own rows only.

Anything else is refused with 401 and a JSON error, before any query runs. Requests are held to
their form (JSON, at most :data:`MAX_BODY_BYTES`, an object of plain parameters) before they reach
the storage. The gateway listens on 127.0.0.1 only; a reader on another machine reaches it
through an SSH tunnel or a TLS proxy, with a token (``metering query --gateway``).

With a ClickHouse server (``storage.url``, ``METERING__STORAGE__URL``) every process connects directly.

Why one module: the gateway's server, its credentials file and its client must agree on one
protocol; the access rule itself is in clickhouse/access.py.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
import stat
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from clickhouse.access import AccessDenied, AccessSettings, Claims, Revocations, SigningKey, authorize_query, verify, visible_rows
from clickhouse.client import Storage, StorageError, StorageLockedError, StorageSettings, open_storage
from clickhouse.queries import QueryError, Reader, StorageReader

log = logging.getLogger("metering.gateway")

GATEWAY_FILE = ".gateway.json"
#: The largest request body served; a larger one is refused with 413 (a query name and a few parameters fit in far less).
MAX_BODY_BYTES = 64 * 1024
#: How much of a too-large body is read and dropped before the 413, so the client sees the answer, not a reset.
_DRAIN_BYTES = 1024 * 1024
_PARAMETER_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
_MAX_PARAMETERS = 64
_MAX_NAME_CHARS = 128
#: ClickHouse's refusals of a parameter (UNKNOWN_QUERY_PARAMETER, BAD_QUERY_PARAMETER): the request's fault, a 400.
_BAD_PARAMETER = re.compile(r"\((?:UNKNOWN|BAD)_QUERY_PARAMETER\)")


def gateway_file(settings: StorageSettings) -> Path:
    return settings.path.resolve() / GATEWAY_FILE


class GatewayRefused(StorageError):
    """The gateway refused the credential (401) or what it may read (403); ``reason`` is access.py's stable reason."""

    def __init__(self, reason: str, message: str, status: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class _Refusal(Exception):
    """A request refused for its form: status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _plain_value(value: Any, depth: int = 0) -> bool:
    """A value ClickHouse can bind as a parameter: text, number, boolean, null, or an array of them (nested 3 deep)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    return isinstance(value, list) and depth < 3 and all(_plain_value(v, depth + 1) for v in value)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_request(body: bytes) -> tuple[str, dict[str, Any]]:
    """The query name and parameters of a request body; :class:`_Refusal` (400) for anything but that exact form."""
    try:
        request = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise _Refusal(400, f"the body is not JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("name"), str) or set(request) - {"name", "parameters"}:
        raise _Refusal(400, "expected {'name': str, 'parameters': object}")
    name: str = request["name"]
    parameters = request.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise _Refusal(400, "expected {'name': str, 'parameters': object}: parameters must be an object")
    if len(name) > _MAX_NAME_CHARS:
        raise _Refusal(400, "name: too long for a query name")
    if len(parameters) > _MAX_PARAMETERS:
        raise _Refusal(400, f"parameters: at most {_MAX_PARAMETERS}")
    for key, value in parameters.items():
        if not _PARAMETER_NAME.match(key):
            raise _Refusal(400, f"parameters: {key[:70]!r} is not a parameter name (lower-case letters, digits, _)")
        if not _plain_value(value):
            raise _Refusal(400, f"parameters.{key}: must be text, a number, a boolean or an array of them")
    return name, parameters


class _Handler(BaseHTTPRequestHandler):
    server: _GatewayServer
    server_version = "metering-gateway"
    sys_version = ""
    timeout = 30  # seconds a client may take to send its request (a stalled one does not hold a thread forever)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("gateway: " + format, *args)

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="metering-gateway"')
        self.end_headers()
        self.wfile.write(data)

    def _authenticate(self) -> Claims | None:
        """None for the gateway's secret (its owner's user: everything), the claims of a valid token, else AccessDenied."""
        given = self.headers.get_all("Authorization") or []
        if len(given) > 1:
            raise AccessDenied("malformed_credentials", "give one Authorization header")
        scheme, _, credential = (given[0] if given else "").strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AccessDenied(
                "missing_token", "a credential is required: Authorization: Bearer <the gateway's secret or an access token>"
            )
        if hmac.compare_digest(credential.encode(), self.server.secret.encode()):
            return None
        if self.server.key is None:
            raise AccessDenied("bad_credentials", "not this gateway's secret (and this gateway takes no access tokens)")
        with self.server.checking:  # Revocations caches the list; one thread at a time re-reads it
            return verify(credential, self.server.key, self.server.revocations)

    def _body(self) -> bytes:
        """The request body, read in full (so an early refusal still reaches the client): at most MAX_BODY_BYTES."""
        text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise _Refusal(411, "send the body with a Content-Length (no chunked encoding)")
        if text is None:
            return b""
        if not (text.strip().isascii() and text.strip().isdigit()):
            raise _Refusal(400, "Content-Length: not a length")
        length = int(text)
        if length > MAX_BODY_BYTES:
            if length <= _DRAIN_BYTES:
                with suppress(OSError):
                    self.rfile.read(length)
            self.close_connection = True
            raise _Refusal(413, f"the request is larger than {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def do_GET(self) -> None:
        self._serve("GET", b"")

    def do_POST(self) -> None:
        try:
            body = self._body()
        except _Refusal as refusal:
            self._reply(refusal.status, {"error": str(refusal)})
            return
        except OSError:  # the client stalled (the handler's timeout) or went away before its body arrived
            self.close_connection = True
            return
        self._serve("POST", body)

    def _serve(self, method: str, body: bytes) -> None:
        claims: Claims | None = None
        try:
            claims = self._authenticate()
            if (method, self.path) == ("GET", "/health"):
                if claims is not None:
                    claims.require_operator("the gateway's health")
                self._reply(200, {"owner_pid": os.getpid(), "database": self.server.reader.storage.settings.database})
                return
            if (method, self.path) != ("POST", "/query"):
                raise _Refusal(404, "not found; POST /query")
            if self.headers.get_content_type() != "application/json" or self.headers.get_content_charset("utf-8").lower() not in (
                "utf-8",
                "utf8",
            ):
                raise _Refusal(415, "Content-Type: application/json (UTF-8) only")
            name, parameters = parse_request(body)
            if claims is not None:
                authorize_query(claims, name, parameters)
            rows = self.server.reader.run(name, parameters)
            if claims is not None:
                rows = visible_rows(claims, rows)
        except AccessDenied as denied:
            log.info("gateway refused %s %.80r: %s", method, self.path, denied.reason)
            self._reply(denied.status, {"error": str(denied), "reason": denied.reason})
            return
        except _Refusal as refusal:
            self._reply(refusal.status, {"error": str(refusal)})
            return
        except (QueryError, ValueError) as exc:
            self._reply(400, {"error": str(exc)})
            return
        except Exception as exc:  # the storage refused: report, keep serving
            if _BAD_PARAMETER.search(str(exc)):  # a value ClickHouse cannot bind as its type: the request's fault
                self._reply(400, {"error": str(exc) if claims is None else "a parameter is not a value of its type"})
                return
            log.warning("gateway query failed: %s", exc)
            # the storage's own words to the owner's user; a token holder learns only that it failed
            self._reply(500, {"error": f"{type(exc).__name__}: {exc}" if claims is None else "the query failed"})
            return
        self._reply(200, {"rows": rows})


class _GatewayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        reader: StorageReader,
        secret: str,
        key: SigningKey | None,
        revocations: Revocations | None,
    ) -> None:
        super().__init__(address, _Handler)
        self.reader = reader
        self.secret = secret
        self.key = key
        self.revocations = revocations
        self.checking = threading.Lock()


def _private_folder(folder: Path) -> None:
    """Refuse a folder another user could write to (and so replace the gateway file in): ours or root's, not g+w or o+w."""
    info = folder.stat()
    if info.st_uid not in (os.geteuid(), 0) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StorageError(
            f"{folder} is writable by other users (mode {stat.filemode(info.st_mode)}, owner uid {info.st_uid}): the "
            f"query gateway keeps its credentials there and will not start. Fix: `chmod go-w {folder}` as its owner, "
            "or use a folder of the user that runs the loader"
        )


def _write_private(path: Path, content: dict[str, Any]) -> None:
    """Write ``path`` atomically, readable by this user only from the first byte (mode 0600, then rename)."""
    _private_folder(path.parent)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # whatever the umask
        with os.fdopen(descriptor, "w") as handle:
            descriptor = -1
            handle.write(json.dumps(content))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if descriptor >= 0:
            os.close(descriptor)
        tmp.unlink(missing_ok=True)
        raise


class QueryGateway:
    """Serve the named read queries of an open storage on 127.0.0.1 (a background thread), to credentials only.

    ``access`` with a signing key also admits access tokens (their scope enforced); without one, only
    the secret of the gateway file (:attr:`secret`, made anew at each start) is accepted.
    """

    def __init__(self, storage: Storage, *, port: int = 0, access: AccessSettings | None = None) -> None:
        self.storage = storage
        self.secret = secrets.token_urlsafe(32)
        key = access.key() if access is not None and access.signing_key else None
        revocations = access.tokens().revocations if key is not None and access is not None else None
        self.accepts_tokens = key is not None
        self._server = _GatewayServer(("127.0.0.1", port), StorageReader(storage), self.secret, key, revocations)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="query-gateway", daemon=True)

    def __repr__(self) -> str:
        return f"QueryGateway(url={self.url!r}, accepts_tokens={self.accepts_tokens})"

    def __enter__(self) -> QueryGateway:
        if self.storage.settings.backend == "chdb":
            try:
                _write_private(
                    gateway_file(self.storage.settings),
                    {"pid": os.getpid(), "url": self.url, "database": self.storage.settings.database, "secret": self.secret},
                )
            except BaseException:
                self._server.server_close()
                raise
        self._thread.start()
        admits = "the gateway secret or access tokens" if self.accepts_tokens else "the gateway secret only"
        log.info("serving read queries at %s (to %s)", self.url, admits)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.storage.settings.backend == "chdb":
            with suppress(OSError, ValueError):
                path = gateway_file(self.storage.settings)
                if json.loads(path.read_text()).get("pid") == os.getpid():
                    path.unlink()
        self._server.shutdown()
        self._server.server_close()


class GatewayReader:
    """A Reader that asks a query gateway, with a credential: the gateway file's secret, or an access token.

    Refusals raise :class:`GatewayRefused` (401/403), a request the gateway finds malformed
    :class:`QueryError`, and an unreachable or failing gateway :class:`StorageError`.
    """

    def __init__(self, url: str, *, timeout_s: float = 30.0, credential: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._credential = credential

    def __repr__(self) -> str:  # never the credential
        return f"GatewayReader({self.url!r})"

    def run(self, name: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        body = json.dumps({"name": name, "parameters": dict(parameters)}).encode()
        headers = {"Content-Type": "application/json"}
        if self._credential:
            headers["Authorization"] = f"Bearer {self._credential}"
        request = urllib.request.Request(f"{self.url}/query", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read() or b"{}")
            except ValueError:
                error = {}
            detail = str(error.get("error", exc.reason)) if isinstance(error, dict) else str(exc.reason)
            if exc.code in (401, 403):
                reason = str(error.get("reason", "refused")) if isinstance(error, dict) else "refused"
                raise GatewayRefused(reason, f"the chDB owner's gateway at {self.url} refused: {detail}", exc.code) from None
            if exc.code in (400, 413, 415):
                raise QueryError(detail) from None
            raise StorageError(f"the chDB owner's gateway at {self.url} failed ({exc.code}): {detail}") from None
        except OSError as exc:
            raise StorageError(f"the chDB owner's gateway at {self.url} is unreachable: {exc}") from None
        except ValueError as exc:
            raise StorageError(f"{self.url} answered, but not as a metering query gateway: {exc}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("rows"), list):
            raise StorageError(f"{self.url} answered, but not as a metering query gateway")
        rows: list[dict[str, Any]] = answer["rows"]
        return rows


def _lock_holder(settings: StorageSettings) -> int | None:
    """The pid the current owner wrote into the chDB lock file (clickhouse.client._chdb_lock), if readable."""
    try:
        return int((settings.path.resolve() / ".owner.lock").read_text().strip())
    except (OSError, ValueError):
        return None


class _Untrusted(Exception):
    """A gateway file another user could have written or read."""


def _read_gateway_file(path: Path) -> dict[str, Any]:
    """The gateway file, trusted only when this user owns it and nobody else can read it (as the owner writes it)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise _Untrusted(f"{path} is not private to this user (mode {stat.filemode(info.st_mode)}, owner uid {info.st_uid})")
        content = json.loads(handle.read())
    if not isinstance(content, dict):
        raise ValueError("not an object")
    return content


def _gateway_of(settings: StorageSettings, locked: StorageLockedError) -> GatewayReader:
    path = gateway_file(settings)
    try:
        info = _read_gateway_file(path)
    except PermissionError:
        raise StorageLockedError(
            f"{locked} (its gateway file {path} belongs to another user: from this user, read through the gateway "
            "with an access token: `metering query --gateway URL` with METERING__ACCESS__TOKEN)"
        ) from None
    except _Untrusted as exc:
        raise StorageLockedError(f"{locked} (its gateway file is not trusted: {exc})") from None
    except (OSError, ValueError):
        raise StorageLockedError(f"{locked} (that process serves no read gateway: no {path})") from None
    owner = _lock_holder(settings)
    if owner is not None and info.get("pid") != owner:  # left behind by an owner that did not exit cleanly
        raise StorageLockedError(f"{locked} (that process serves no read gateway: {path} is from process {info.get('pid')})")
    if info.get("database") != settings.database:
        raise StorageLockedError(f"{locked} (its gateway serves database {info.get('database')!r}, not {settings.database!r})")
    if not isinstance(info.get("secret"), str) or not isinstance(info.get("url"), str):
        raise StorageLockedError(f"{locked} (its gateway file {path} has no url or secret: an owner of an older version?)")
    return GatewayReader(info["url"], credential=info["secret"])


@contextmanager
def open_reader(settings: StorageSettings, *, serve: bool = False, access: AccessSettings | None = None) -> Iterator[Reader]:
    """A Reader for the configured storage: direct when possible, else through the chDB owner's gateway.

    Through the gateway it sends the secret of the gateway file (readable by the owner's user only),
    so a process of that user reads everything, as it could directly. With ``serve=True`` a process
    that becomes the owner also serves the gateway while the reader is open, so other processes can
    read through it; ``access`` with a signing key lets that gateway admit access tokens too.
    """
    with ExitStack() as stack:
        try:
            storage = stack.enter_context(open_storage(settings, create_database=False))
        except StorageLockedError as locked:
            if settings.backend != "chdb":
                raise
            yield _gateway_of(settings, locked)
            return
        if serve:
            stack.enter_context(QueryGateway(storage, access=access))
        yield StorageReader(storage)
