"""nginx as a plain reverse proxy in front of one pod: what a mature proxy costs on the same machine.

One worker process (the activator is one Python process too), keep-alive connections to the pod, no access log,
no buffering of responses to disk. Debian's ``nginx-light`` package; the config and its temp paths live in a
temporary directory, and the process is stopped when the context ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

CONFIG = """\
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream pod {{
        server {upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://pod;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found is None:
        raise RuntimeError("nginx is not installed: apt-get install nginx-light (make bench does, as root)")
    return found


@contextlib.asynccontextmanager
async def reverse_proxy(upstream: str, listen: str) -> AsyncIterator[int]:
    """nginx listening on ``listen`` (host:port) and proxying to ``upstream`` (host:port); yields its pid."""
    with tempfile.TemporaryDirectory(prefix="localsched-bench-nginx-") as tmp:
        config = Path(tmp) / "nginx.conf"
        config.write_text(CONFIG.format(dir=tmp, upstream=upstream, listen=listen))
        stderr = Path(tmp) / "stderr.log"
        with stderr.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                nginx_binary(), "-c", str(config), "-p", tmp, stdout=asyncio.subprocess.DEVNULL, stderr=out
            )
        try:
            host, _, port = listen.rpartition(":")
            await _wait_listening(host, int(port), proc, [stderr, Path(tmp) / "error.log"])
            yield proc.pid
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGQUIT)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def _wait_listening(host: str, port: int, proc: asyncio.subprocess.Process, logs: list[Path]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        if proc.returncode is not None:
            break
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    errors = "".join(log.read_text() for log in logs if log.exists())
    raise RuntimeError(f"nginx did not start listening on {host}:{port}: {errors.strip() or 'no error log'}")
