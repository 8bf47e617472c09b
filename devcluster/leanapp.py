"""The lean app: an HTTP server whose start costs almost nothing, so a benchmark shows the platform's share.

Run as ``python3 -S -E leanapp.py`` (no site, no environment-driven imports): only ``os`` and ``socket``. It binds
``POD_IP``:``PORT`` and answers every request with ``200`` and a small JSON body naming its pod and node, then
closes the connection. Nothing else: no keep-alive, no request body handling beyond reading the headers.
"""

import os
import socket


def main() -> None:
    env = os.environ
    identity = '"pod": "{}", "node": "{}", "app": "lean"'.format(env.get("POD_NAME", ""), env.get("NODE_NAME", ""))
    body = ("{" + identity + "}").encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
    response = head % len(body) + body
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((env.get("POD_IP", "0.0.0.0"), int(env.get("PORT", "8080"))))
    server.listen(1024)
    os.write(2, b"leanapp listening\n")
    while True:
        conn, _ = server.accept()
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            conn.sendall(response)
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
