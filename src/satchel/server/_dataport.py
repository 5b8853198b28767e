"""The data port: single-chunk PUTs and GETs on plain threads, beside the ASGI API.

A chunk that crosses the ASGI stack is copied four times in user space on the way in (uvloop
into a new ``bytes`` per socket read, httptools into another per body piece, uvicorn joining
pieces while the handler is busy, then the pieces into the blob file) and passes ~130 ASGI
messages through every middleware. On the benchmark machine (2 cores) the server spent ~5 s
of CPU per 2 GiB uploaded that way; here a thread per connection reads each body straight
into one buffer (``recv_into``), hashes it, writes and syncs it, then records it: the work
left is the kernel's copy, BLAKE3 and the write (see ``bench/RESULTS.md``).

Same routes, auth, answers and errors as the API's (one code path in ``routes.chunks``):

* ``PUT /api/v1/chunks/{digest}`` — body of at most one chunk, with ``Content-Length``;
* ``GET /api/v1/chunks/{digest}[?verify=true]``;
* ``GET /healthz`` (no auth) — answers this server's instance id, which ``GET
  /api/v1/chunks/direct/info`` also gives: a client sends its token to the data port only
  after checking that the port belongs to the server it talks to (behind a proxy or load
  balancer, ``host:port`` may be something else entirely).

Anything else is 404. The access log has one line per request (never the query string); no
token, traceback or request text is ever logged or echoed.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from satchel.core import CHUNK_SIZE, Core
from satchel.core._wire import API_PREFIX
from satchel.errors import (
    WIRE_TABLE,
    AuthError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    SatchelError,
)
from satchel.server._errors import report_internal
from satchel.server._inflight import Inflight
from satchel.server.routes.chunks import opened_chunk, read_chunk, store_chunk

__all__ = ["DataPort"]

log = logging.getLogger("satchel.server")
access_log = logging.getLogger("satchel.server.access")

_CHUNK_PATH = re.compile(re.escape(API_PREFIX) + r"/chunks/([0-9a-f]{64})")
_IDLE_TIMEOUT_S = 60.0
"""A connection that sends nothing for this long is closed (slow or stuck clients)."""
_MAX_CONNECTIONS = 128
_DRAIN_S = 30.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "satchel"
    sys_version = ""
    timeout = _IDLE_TIMEOUT_S
    server: _Server
    _buffer = bytearray()

    # -- answers ---------------------------------------------------------------------------------

    def _head(self, status: int, content_type: str, length: int) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._status = status

    def _answer(self, status: int, body: bytes | memoryview, content_type: str) -> None:
        self._head(status, content_type, len(body))
        self.wfile.write(body)

    def _send_range(self, fd: int, offset: int, length: int) -> None:
        """200 with ``length`` bytes of file ``fd`` from ``offset``, sent by the kernel
        (``sendfile``: page cache to socket, no copy through Python; on the benchmark
        machine reading each 8 MiB chunk into a buffer first cost ~1.3 s of server CPU per
        2 GiB downloaded). A file that ends early closes the connection mid-body, which the
        client sees as an incomplete chunk."""
        self._head(200, "application/octet-stream", length)
        with open(fd, "rb", buffering=0, closefd=False) as source:
            sent = self.connection.sendfile(source, offset, length)
        if sent != length:
            self.close_connection = True

    def _json(self, status: int, doc: dict[str, Any]) -> None:
        self._answer(status, json.dumps(doc).encode(), "application/json")

    def _error(self, err: SatchelError) -> None:
        cls = WIRE_TABLE.get(err.code, SatchelError)
        self._json(cls.http_status, {"error": err.to_wire()})

    def parse_request(self) -> bool:
        """http.server's parsing, without HTTP/0.9 (an answer with no status line)."""
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            self.send_error(400)
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """For malformed requests (http.server's own checks): a JSON error that does not repeat
        any of the request back, always with a status line (http.server leaves it out when
        it could not read the request's version)."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        self._json(code, {"error": {"code": f"http_{code}", "message": "malformed request"}})

    def log_message(self, format: str, *args: Any) -> None:
        """http.server would print the request line (query string included): never."""

    # -- requests --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        start = time.perf_counter()
        self._status = 500
        path = ""
        try:
            with self.server.inflight:
                parts = urlsplit(self.path)
                path = parts.path
                self._route(method, path, parts.query)
        except SatchelError as err:
            self._error(err)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            self._status = 499
        except Exception as exc:
            self.close_connection = True
            self._json(500, report_internal(f"data port {method}", exc))
        finally:
            if access_log.isEnabledFor(logging.INFO):
                shown = path if _CHUNK_PATH.fullmatch(path) or path == "/healthz" else "<other>"
                access_log.info(
                    '%s "%s %s" %s %.1fms data-port',
                    self.client_address[0],
                    method,
                    shown,
                    self._status,
                    (time.perf_counter() - start) * 1000,
                )

    def _route(self, method: str, path: str, query: str) -> None:
        if path == "/healthz" and method == "GET":
            self._json(200, {"status": "ok", "instance": self.server.instance})
            return
        match = _CHUNK_PATH.fullmatch(path)
        if match is None:
            self._refuse_body()
            raise NotFoundError("not found on the data port (chunk PUT and GET only)")
        digest = match.group(1)
        core = self.server.core
        try:
            caller = core.tokens.authenticate(self._bearer())
        except AuthError:
            self._refuse_body()
            raise
        if method == "GET":
            verify = parse_qs(query).get("verify", ["false"])[-1].lower() in ("true", "1")
            if not verify:
                with opened_chunk(core, caller.workspace_id, digest) as place:
                    if place is not None:
                        self._send_range(*place)
                        return
            self._answer(
                200,
                read_chunk(core, caller.workspace_id, digest, verify),
                "application/octet-stream",
            )
            return
        body = self._read_body()
        self._json(200, {"stored": store_chunk(core, caller.workspace_id, digest, [body])})

    def _bearer(self) -> str:
        value = self.headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
        return token.strip()

    def _refuse_body(self) -> None:
        """An answer before the body was read: the connection cannot be reused."""
        if self.headers.get("Content-Length", "0") not in ("", "0") or self.headers.get(
            "Transfer-Encoding"
        ):
            self.close_connection = True

    def _read_body(self) -> memoryview:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise InvalidArgumentError("chunk uploads need a Content-Length (no chunked encoding)")
        declared = self.headers.get("Content-Length", "")
        if not declared.isdigit():
            self.close_connection = True
            raise InvalidArgumentError("chunk uploads need a Content-Length")
        size = int(declared)
        if size > CHUNK_SIZE:
            self.close_connection = True
            raise LimitExceededError(f"request body is larger than {CHUNK_SIZE} bytes")
        # One buffer per connection, reused by its requests: a fresh 8 MiB bytearray per
        # chunk is zeroed and page-faulted in again each time.
        if len(self._buffer) < size:
            self._buffer = bytearray(max(size, CHUNK_SIZE))
        view = memoryview(self._buffer)[:size]
        filled = 0
        while filled < size:
            n = self.rfile.readinto(view[filled:])
            if not n:
                self.close_connection = True
                raise ConnectionError("the client closed the connection mid-body")
            filled += n
        return view


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], core: Core, family: int, instance: str) -> None:
        self.address_family = family
        self.core = core
        self.instance = instance
        self._slots = threading.BoundedSemaphore(_MAX_CONNECTIONS)
        self.inflight = Inflight("data port")
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Over the connection limit: say so (the client falls back to the API port).
            try:
                body = b'{"error": {"code": "unavailable", "message": "data port is busy"}}'
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
            finally:
                self.shutdown_request(request)
            return
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An exception outside a request's own handling (socketserver would print its
        traceback): a client that reset or dropped its connection is routine; anything else
        is one line with a reference, the traceback only at DEBUG."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("data port connection dropped by the client: %s", type(exc).__name__)
            return
        if exc is not None:
            report_internal("a data port connection", exc)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class DataPort:
    """The data port's listener and its accept thread (see the module docstring)."""

    def __init__(self, core: Core, host: str, port: int, instance: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = _Server((host, port), core, family, instance)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="satchel-data-port", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def instance(self) -> str:
        return self._server.instance

    def start(self) -> DataPort:
        self._thread.start()
        return self

    def stop(self, timeout: float = _DRAIN_S) -> None:
        """Stop accepting, then wait up to ``timeout`` s for connections being served (idle
        keep-alive connections are not waited for: their next request finds the port closed,
        and the client retries)."""
        self._server.shutdown()
        self._server.server_close()
        self._server.inflight.drain(timeout)
