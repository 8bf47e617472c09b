"""Control-plane binaries for the devcluster: find them, or build them once and cache them.

Order of preference:

1. ``$KUBEBUILDER_ASSETS`` (the envtest convention) when it holds all three binaries;
2. the cache (``$LOCALSCHED_CACHE_DIR``, default ``~/.cache/localsched``) from an earlier build;
3. a build of kube-apiserver, kube-controller-manager and kube-scheduler v1.20.2 from Debian's
   ``kubernetes`` source package (about 5-8 minutes on 2 cores, ~3.5 GB of scratch space).

etcd always comes from Debian's ``etcd-server`` package. Every step prints one progress line, and a step
that cannot run says what to install or set instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

KUBE_VERSION = "v1.20.2"
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
APT_PACKAGES = (
    "golang-go",
    "rsync",
    "jq",
    "etcd-server",
    "golang-github-modern-go-reflect2-dev",
    "dpkg-dev",
)
DEB_SRC_FILE = Path("/etc/apt/sources.list.d/localsched-deb-src.sources")
DEB_SRC_ENTRY = """Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


class BinariesError(RuntimeError):
    """A step of finding or building the binaries cannot run; the message says what to do instead."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path


def cache_dir() -> Path:
    return Path(os.environ.get("LOCALSCHED_CACHE_DIR", Path.home() / ".cache" / "localsched"))


def _say(message: str) -> None:
    print(f"[devcluster] {message}", file=sys.stderr, flush=True)


def _run(
    cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, log: Path | None = None
) -> None:
    if log is None:
        result = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output = result.stdout
    else:
        with log.open("w") as fh:
            result = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True)
        output = log.read_text()[-4000:]
    if result.returncode != 0:
        raise BinariesError(f"`{' '.join(cmd)}` failed with exit code {result.returncode}:\n{output[-4000:]}")


def _have_all(directory: Path) -> bool:
    return all((directory / name).is_file() and os.access(directory / name, os.X_OK) for name in KUBE_BINARIES)


def find_etcd() -> Path | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and (Path(assets) / "etcd").is_file():
        return Path(assets) / "etcd"
    found = shutil.which("etcd")
    return Path(found) if found else None


def find() -> Binaries | None:
    """The binaries if they are already there; never installs or builds anything."""
    etcd = find_etcd()
    if etcd is None:
        return None
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    for directory in ([Path(assets)] if assets else []) + [cache_dir() / KUBE_VERSION / "bin"]:
        if _have_all(directory):
            return Binaries(
                etcd=etcd,
                kube_apiserver=directory / "kube-apiserver",
                kube_controller_manager=directory / "kube-controller-manager",
                kube_scheduler=directory / "kube-scheduler",
            )
    return None


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise BinariesError(
            f"{what} needs root (apt-get). Either run as root, or install the Debian packages "
            f"{' '.join(APT_PACKAGES)} yourself, or set KUBEBUILDER_ASSETS to a directory holding "
            f"etcd, {', '.join(KUBE_BINARIES)} ({KUBE_VERSION})."
        )


def _apt_install() -> None:
    _require_root("Installing the build dependencies")
    if not DEB_SRC_FILE.exists():
        _say(f"adding a deb-src entry for bookworm ({DEB_SRC_FILE})")
        DEB_SRC_FILE.write_text(DEB_SRC_ENTRY)
    _say("apt-get update")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-q"], env=env)
    _say(f"apt-get install {' '.join(APT_PACKAGES)}")
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES], env=env)


def ensure_etcd() -> Path:
    etcd = find_etcd()
    if etcd is not None:
        return etcd
    _require_root("Installing etcd")
    _say("apt-get install etcd-server")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-q"], env=env)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "etcd-server"], env=env)
    etcd = find_etcd()
    if etcd is None:
        raise BinariesError("etcd-server was installed but no `etcd` is on PATH")
    return etcd


def _unpack_source(scratch: Path) -> Path:
    """Download Debian's kubernetes source package into ``scratch`` and return the unpacked tree."""
    tree = scratch / "kubernetes"
    if (tree / "Makefile").exists():
        _say(f"source tree already unpacked at {tree}")
        return tree
    _say("apt-get source --download-only kubernetes")
    _run(["apt-get", "source", "--download-only", "kubernetes"], cwd=scratch)
    tarballs = sorted(p for p in scratch.glob("kubernetes_*.orig.tar.*"))
    if not tarballs:
        raise BinariesError(f"no kubernetes orig tarball was downloaded into {scratch}")
    _say(f"unpacking {tarballs[0].name}")
    staging = scratch / "unpack"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    with tarfile.open(tarballs[0]) as tar:
        tar.extractall(staging, filter="tar")
    roots = [p for p in staging.iterdir() if p.is_dir()]
    if len(roots) != 1:
        raise BinariesError(f"unexpected layout of {tarballs[0].name}: {[p.name for p in roots]}")
    roots[0].rename(tree)
    staging.rmdir()
    return tree


def _patch_reflect2(tree: Path) -> None:
    # modern-go/reflect2 v1.0.1 (vendored) crashes under Go >= 1.18 with "fatal error: fault" in mapiterinit;
    # Debian's packaged copy is fixed.
    fixed = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")
    vendored = tree / "vendor" / "github.com" / "modern-go" / "reflect2"
    if not fixed.is_dir():
        raise BinariesError(f"{fixed} is missing: install golang-github-modern-go-reflect2-dev")
    _say("replacing vendor/github.com/modern-go/reflect2 with Debian's fixed copy")
    shutil.rmtree(vendored, ignore_errors=True)
    shutil.copytree(fixed, vendored, symlinks=False)


def build() -> Binaries:
    """Build the three binaries into the cache (idempotent)."""
    existing = find()
    if existing is not None:
        return existing
    _apt_install()
    out = cache_dir() / KUBE_VERSION / "bin"
    scratch = cache_dir() / "build"
    scratch.mkdir(parents=True, exist_ok=True)
    tree = _unpack_source(scratch)
    _patch_reflect2(tree)
    gopath = tree / ".go"
    link = gopath / "src" / "k8s.io" / "kubernetes"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(tree)
    log = scratch / "make.log"
    _say(f"building {' '.join(KUBE_BINARIES)} {KUBE_VERSION} (5-8 minutes on 2 cores; log: {log})")
    env = dict(os.environ, GOPATH=str(gopath), CGO_ENABLED="0", GOFLAGS="-mod=vendor", GO111MODULE="off")
    env.pop("GOFLAGS")
    _run(
        ["make", "WHAT=cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler"],
        cwd=link,
        env=env,
        log=log,
    )
    built = next((p for p in (tree / "_output").glob("**/bin") if _have_all(p)), None)
    if built is None:
        raise BinariesError(f"the build finished but the binaries are not under {tree / '_output'}; see {log}")
    out.mkdir(parents=True, exist_ok=True)
    for name in KUBE_BINARIES:
        shutil.copy2(built / name, out / name)
    _say(f"cached in {out}; removing the scratch tree")
    shutil.rmtree(scratch, ignore_errors=True)
    ensure_etcd()
    result = find()
    if result is None:
        raise BinariesError(f"binaries were copied to {out} but are not usable")
    return result


def ensure() -> Binaries:
    found = find()
    if found is not None:
        _say(f"control-plane binaries: {found.kube_apiserver.parent} (etcd: {found.etcd})")
        return found
    return build()


def main() -> int:
    try:
        ensure()
    except BinariesError as exc:
        _say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
