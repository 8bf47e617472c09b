"""Which revision a request is for, and which headers travel with it.

A request names its revision the way Knative's activator expects: by the ``Knative-Serving-Namespace`` and
``Knative-Serving-Revision`` headers, falling back to a cluster-local Host ``{rev}.{ns}.svc[.{cluster-domain}]``.
Everything here is pure: no I/O, no app state, so the aiohttp handlers stay thin and the rules stay testable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from multidict import CIMultiDict, MultiMapping

__all__ = [
    "HOP_BY_HOP_HEADERS",
    "NAMESPACE_HEADER",
    "ORIGINAL_HOST_HEADER",
    "PROBE_HEADER",
    "PROBE_VALUE",
    "PROXY_HEADER",
    "PROXY_VALUE",
    "REVISION_HEADER",
    "BadRevisionHeaders",
    "RevisionRef",
    "forward_headers",
    "identify",
    "is_probe",
    "response_headers",
]

NAMESPACE_HEADER = "Knative-Serving-Namespace"
REVISION_HEADER = "Knative-Serving-Revision"
#: ``K-Network-Probe: activator`` is answered by the activator itself with 200 ``activator``.
PROBE_HEADER = "K-Network-Probe"
PROBE_VALUE = "activator"
#: Marks requests the activator forwarded (Knative's queue-proxy looks at it).
PROXY_HEADER = "K-Proxy-Request"
PROXY_VALUE = "activator"
#: Knative's activator moves the incoming Host here (``RewriteHostIn``); queue-proxy restores it for the app.
ORIGINAL_HOST_HEADER = "K-Original-Host"

#: RFC 9110 §7.6.1 connection-specific headers, plus the non-standard ``Proxy-Connection``. Headers named in
#: ``Connection`` are hop-by-hop too and are removed in addition to these.
HOP_BY_HOP_HEADERS: frozenset[str] = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)

# Never forwarded to the pod: the routing headers are ours, and aiohttp's client writes Host from the target URL.
_REQUEST_ONLY_HEADERS: frozenset[str] = frozenset(h.lower() for h in (NAMESPACE_HEADER, REVISION_HEADER, "Host"))
# aiohttp's StreamResponse frames the body itself (Content-Length when the handler sets it, chunked otherwise);
# copying the upstream's framing headers would contradict the framing aiohttp actually writes.
_FRAMING_HEADERS: frozenset[str] = frozenset(("content-length", "transfer-encoding"))
_NOT_FORWARDED = HOP_BY_HOP_HEADERS | _REQUEST_ONLY_HEADERS
_NOT_RETURNED = HOP_BY_HOP_HEADERS | _FRAMING_HEADERS

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS1123_SUBDOMAIN_MAX = 253


@dataclass(frozen=True, slots=True)
class RevisionRef:
    """A Knative Revision, by namespace and name."""

    namespace: str
    name: str

    @property
    def key(self) -> str:
        """``namespace/name``, the key used by watch caches and per-revision registries."""
        return f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return self.key


class BadRevisionHeaders(ValueError):
    """The Knative-Serving-* headers are present but unusable (only one of them, or not a Kubernetes name)."""


def is_dns1123_label(value: str) -> bool:
    """Whether ``value`` is a DNS-1123 label (a Namespace name): lowercase alphanumerics and '-', ≤ 63."""
    return _DNS1123_LABEL.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    """Whether ``value`` is a DNS-1123 subdomain (most object names): dot-separated labels, ≤ 253 in all."""
    return len(value) <= _DNS1123_SUBDOMAIN_MAX and all(is_dns1123_label(part) for part in value.split("."))


def is_probe(headers: Mapping[str, str]) -> bool:
    """Whether the request is Knative's network probe for the activator (``K-Network-Probe: activator``)."""
    return headers.get(PROBE_HEADER, "").strip() == PROBE_VALUE


def identify(
    headers: Mapping[str, str],
    host: str | None,
    cluster_domain: str = "cluster.local",
) -> RevisionRef | None:
    """Name the revision a request is for, or ``None`` when it names none (the app answers 404 with a hint).

    ``headers`` must be case-insensitive (aiohttp's ``request.headers``). The Knative-Serving-* headers win when
    both are present; only one of them, or a value that is not a Kubernetes name (namespace: DNS-1123 label,
    revision: DNS-1123 subdomain), raises :class:`BadRevisionHeaders`: the caller meant to name a revision and
    got it wrong, which deserves a 400 rather than a Host-based guess. Without those headers, ``host`` is matched
    case-insensitively (in ASCII: a non-ASCII host names nothing) against ``{rev}.{ns}.svc`` and
    ``{rev}.{ns}.svc.{cluster_domain}``, port and a trailing dot ignored.
    """
    namespace = headers.get(NAMESPACE_HEADER)
    revision = headers.get(REVISION_HEADER)
    if namespace is not None or revision is not None:
        return _from_headers(namespace, revision)
    if host is None:
        return None
    return _from_host(host, cluster_domain)


def _from_headers(namespace: str | None, revision: str | None) -> RevisionRef:
    if namespace is None or revision is None:
        present, missing = (
            (NAMESPACE_HEADER, REVISION_HEADER) if revision is None else (REVISION_HEADER, NAMESPACE_HEADER)
        )
        raise BadRevisionHeaders(f"{present} is set but {missing} is missing: send both headers, or neither")
    namespace, revision = namespace.strip(), revision.strip()
    if not is_dns1123_label(namespace):
        raise BadRevisionHeaders(
            f"{NAMESPACE_HEADER} {namespace[:80]!r} is not a namespace name "
            "(lowercase letters, digits and '-', at most 63 characters)"
        )
    if not is_dns1123_subdomain(revision):
        raise BadRevisionHeaders(
            f"{REVISION_HEADER} {revision[:80]!r} is not a revision name "
            "(lowercase letters, digits, '-' and '.', at most 253 characters)"
        )
    return RevisionRef(namespace=namespace, name=revision)


def _from_host(host: str, cluster_domain: str) -> RevisionRef | None:
    if not host.isascii():  # str.lower() maps the Kelvin sign to "k": DNS names compare in ASCII only (RFC 4343)
        return None
    hostname = _strip_port(host.strip()).lower().rstrip(".")
    domain = cluster_domain.strip().lower().strip(".")
    for suffix in (".svc", f".svc.{domain}") if domain else (".svc",):
        if hostname.endswith(suffix):
            name, dot, namespace = hostname[: -len(suffix)].partition(".")
            if dot and is_dns1123_label(name) and is_dns1123_label(namespace):
                return RevisionRef(namespace=namespace, name=name)
    return None


def _strip_port(host: str) -> str:
    if host.startswith("["):  # an IPv6 literal never names a revision; keep it whole so it matches nothing
        return host
    name, _, _port = host.partition(":")
    return name


def _connection_tokens(headers: MultiMapping[str]) -> set[str]:
    """Header names listed in every ``Connection`` header (comma-separated, case-insensitive)."""
    values = headers.getall("Connection", ())
    return {token.strip().lower() for value in values for token in value.split(",") if token.strip()}


def _copy_without(headers: MultiMapping[str], drop: frozenset[str]) -> CIMultiDict[str]:
    """A copy of ``headers`` without those named in ``drop`` (lowercase names), and without any the incoming
    ``Connection`` headers name (hop-by-hop too). On every request: kept lean."""
    named = _connection_tokens(headers) if "Connection" in headers else None
    if named:
        drop = drop | named
    return CIMultiDict([(name, value) for name, value in headers.items() if name.lower() not in drop])


def forward_headers(incoming: MultiMapping[str], *, client_ip: str | None) -> CIMultiDict[str]:
    """The headers to send to the pod for an incoming request (aiohttp's ``request.headers``).

    Removes hop-by-hop headers (the standard set and every header named in ``Connection``), the
    Knative-Serving-* routing headers and Host (aiohttp's client writes Host from the pod URL). Repeated headers
    stay repeated, in order. Like Knative's activator, the incoming Host moves to ``K-Original-Host`` (unless the
    request already carries one) and ``K-Proxy-Request: activator`` marks the request; ``client_ip`` is appended
    to ``X-Forwarded-For`` (earlier hops kept, folded into one header as Go's reverse proxy does).

    ``TE`` and ``Upgrade`` are dropped too: the forwarder speaks plain HTTP/1.1 and does not tunnel upgrades.
    """
    out = _copy_without(incoming, _NOT_FORWARDED)
    host = incoming.get("Host")
    if host and ORIGINAL_HOST_HEADER not in out:
        out[ORIGINAL_HOST_HEADER] = host
    if client_ip:
        prior = out.popall("X-Forwarded-For", [])
        out["X-Forwarded-For"] = ", ".join([*prior, client_ip])
    out[PROXY_HEADER] = PROXY_VALUE
    return out


def response_headers(upstream: MultiMapping[str]) -> CIMultiDict[str]:
    """The headers to copy from the pod's response (aiohttp's ``ClientResponse.headers``) onto ours.

    Removes hop-by-hop headers (the standard set and those named in ``Connection``) and also ``Content-Length``
    and ``Transfer-Encoding``: aiohttp's ``StreamResponse`` decides the framing of what it writes (set
    ``response.content_length`` from the upstream's when the body is passed through unchanged, or let it
    chunk). Repeated headers such as ``Set-Cookie`` stay repeated. The forwarder must read the upstream body
    with ``auto_decompress=False`` so that ``Content-Encoding`` stays true.
    """
    return _copy_without(upstream, _NOT_RETURNED)
