"""Certificates and tokens for the devcluster: a CA, the API server's serving cert, the service-account keys."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    tokens_file: Path
    tokens: dict[str, str]  # user -> bearer token


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


# user name -> groups. The control-plane components get system:masters (no service-account credentials here);
# the scheduler runs under its own bootstrap role so RBAC is exercised for it too.
USERS = {
    "admin": "system:masters",
    "system:kube-controller-manager": "system:masters",
    "system:kube-scheduler": "",
    "localsched-nodesim": "system:masters",
}


def ensure(directory: Path, ips: tuple[str, ...] = ()) -> Pki:
    """Create (once) everything the control plane needs to serve TLS, sign tokens and authenticate users.

    The API server's certificate names 127.0.0.1 and ``ips`` (where nodes and pods reach it); it is made again
    when those change."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
        tokens_file=directory / "tokens.csv",
        tokens={},
    )
    if not pki.ca_cert.exists():
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                 "-days", "3650", "-subj", "/CN=localsched-devcluster-ca", cwd=directory)  # fmt: skip
    extra = "".join(f",IP:{ip}" for ip in sorted(set(ips) - {"127.0.0.1"}))
    san = (
        "[req]\ndistinguished_name=dn\n[dn]\n[ext]\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        f"DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1{extra}\n"
    )
    san_file = directory / "san.cnf"
    if not pki.serving_cert.exists() or not san_file.exists() or san_file.read_text() != san:
        san_file.write_text(san)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr",
                 "-subj", "/CN=kube-apiserver", cwd=directory)  # fmt: skip
        _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "apiserver.crt", "-days", "3650", "-extfile", "san.cnf", "-extensions", "ext",
                 cwd=directory)  # fmt: skip
    if not pki.sa_key.exists():
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    if not pki.tokens_file.exists():
        lines = []
        for user, groups in USERS.items():
            token = secrets.token_hex(16)
            lines.append(f'{token},{user},{user},"{groups}"' if groups else f"{token},{user},{user}")
        pki.tokens_file.write_text("\n".join(lines) + "\n")
        pki.tokens_file.chmod(0o600)
    for line in pki.tokens_file.read_text().splitlines():
        token, user = line.split(",")[:2]
        pki.tokens[user] = token
    return pki
