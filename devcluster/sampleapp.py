"""The sample app: a tiny HTTP server that says which pod and node answered.

Standard library only, so it starts in tens of milliseconds. Settings from the environment:
``PORT`` (8080), ``POD_IP`` (the address to bind; 0.0.0.0 when unset), ``STARTUP_DELAY`` seconds before it
listens (a slow cold start), ``POD_NAME``/``NODE_NAME``/``POD_NAMESPACE`` (downward API) to report.

Endpoints: ``GET /`` answers JSON (pod, node, requests, in-flight, max in-flight); ``?sleep=S`` holds the request
S seconds (concurrency tests); ``GET /bytes?n=N`` streams N bytes (slow-reader tests; counted in flight until
the last byte is written or the client is gone); ``POST /upload`` streams the body and answers its size and sha256;
``GET /stats`` the counters; ``GET /healthz`` 200 (503 after ``POST /admin/unready``, until
``POST /admin/ready``: lets tests prove readiness probes are really executed).

On SIGTERM it drains as Knative's queue-proxy does: it keeps serving for ``DRAIN_SECONDS`` (0.5), answering with
``Connection: close`` and failing readiness, and exits once nothing is in flight, so no request on a kept-alive
connection is cut.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def enter(self) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {"requests": self.requests, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight}


STATS = Stats()
HEALTHY = threading.Event()
HEALTHY.set()
DRAINING = threading.Event()
IDENTITY = {
    "pod": os.environ.get("POD_NAME", os.environ.get("HOSTNAME", "")),
    "node": os.environ.get("NODE_NAME", ""),
    "namespace": os.environ.get("POD_NAMESPACE", ""),
    "ip": os.environ.get("POD_IP", ""),
}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the stdlib default backlog of 5 drops SYNs under any burst


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle holds the body until the client's
    # delayed ACK (40 ms on Linux) on every kept-alive request.
    disable_nagle_algorithm = True
    server_version = "localsched-sampleapp/1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if DRAINING.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/healthz":
            healthy = HEALTHY.is_set() and not DRAINING.is_set()
            self._json(200 if healthy else 503, {"ok": healthy})
            return
        if url.path == "/stats":
            self._json(200, {**IDENTITY, **STATS.snapshot()})
            return
        if url.path == "/bytes":
            self._bytes(int(parse_qs(url.query).get("n", ["0"])[0]))
            return
        STATS.enter()
        try:
            delay = float(parse_qs(url.query).get("sleep", ["0"])[0])
            if delay > 0:
                time.sleep(min(delay, 60.0))
            headers = {k: v for k, v in self.headers.items() if k.lower().startswith(("k-", "knative-", "x-"))}
            self._json(200, {**IDENTITY, **STATS.snapshot(), "path": url.path, "headers": headers})
        finally:
            STATS.leave()

    def _bytes(self, size: int) -> None:
        STATS.enter()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            block = b"x" * 65536
            while size > 0:
                self.wfile.write(block[: min(size, len(block))])
                size -= len(block)
        except OSError:
            self.close_connection = True  # the reader went away
        finally:
            STATS.leave()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/admin/ready", "/admin/unready"):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            (HEALTHY.set if path == "/admin/ready" else HEALTHY.clear)()
            self._json(200, {"ok": HEALTHY.is_set()})
            return
        STATS.enter()
        try:
            digest = hashlib.sha256()
            size = 0
            remaining = int(self.headers.get("Content-Length") or 0)
            chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
            if chunked:
                while True:
                    line = self.rfile.readline().strip()
                    length = int(line.split(b";")[0], 16)
                    if length == 0:
                        self.rfile.readline()
                        break
                    chunk = self.rfile.read(length)
                    self.rfile.readline()
                    digest.update(chunk)
                    size += len(chunk)
            else:
                while remaining > 0:
                    chunk = self.rfile.read(min(65536, remaining))
                    if not chunk:
                        break
                    digest.update(chunk)
                    size += len(chunk)
                    remaining -= len(chunk)
            self._json(200, {**IDENTITY, "bytes": size, "sha256": digest.hexdigest()})
        finally:
            STATS.leave()


def main() -> None:
    delay = float(os.environ.get("STARTUP_DELAY", "0"))
    if delay > 0:
        time.sleep(delay)
    server = Server((os.environ.get("POD_IP", "0.0.0.0"), int(os.environ.get("PORT", "8080"))), Handler)

    drain = float(os.environ.get("DRAIN_SECONDS", "0.5"))

    def drain_then_stop() -> None:
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline or STATS.snapshot()["in_flight"] > 0:
            time.sleep(0.05)
        server.shutdown()

    def stop(signum: int, frame: Any) -> None:
        if not DRAINING.is_set():
            DRAINING.set()
            threading.Thread(target=drain_then_stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"sampleapp listening on {server.server_address}", file=sys.stderr, flush=True)
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
