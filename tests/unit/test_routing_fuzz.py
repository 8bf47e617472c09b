"""Fuzzing the activator's request identification and header shaping (hypothesis), plus a regression corpus.

The properties check :mod:`activator.routing` against oracles written here from its docstrings, not against its
own helpers: a name is valid when it is made of ASCII lowercase letters, digits and '-' (and '.' between labels of
a revision), a header is the same header whatever its ASCII case. ``fuzz_corpus/routing.json`` replays inputs
that are tricky or that once failed, each with the outcome expected of :func:`identify`.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from activator.routing import (
    HOP_BY_HOP_HEADERS,
    NAMESPACE_HEADER,
    ORIGINAL_HOST_HEADER,
    PROBE_HEADER,
    PROBE_VALUE,
    PROXY_HEADER,
    PROXY_VALUE,
    REVISION_HEADER,
    BadRevisionHeaders,
    RevisionRef,
    forward_headers,
    identify,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_probe,
    response_headers,
)

FUZZ = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
#: For properties over whole header lists, whose examples take longer to build.
FUZZ_LISTS = settings(FUZZ, max_examples=60)
CORPUS = Path(__file__).parent / "fuzz_corpus" / "routing.json"

Pairs = list[tuple[str, str]]

# --- oracles ------------------------------------------------------------------------------------------------------

_LABEL_CHARS = frozenset(string.ascii_lowercase + string.digits + "-")
_STANDARD_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
_ROUTING = {NAMESPACE_HEADER.lower(), REVISION_HEADER.lower(), "host"}
_FRAMING = {"content-length", "transfer-encoding"}


def valid_label(value: str) -> bool:
    """RFC 1123 label as Kubernetes has it (a Namespace name), written without the module's regex."""
    return 0 < len(value) <= 63 and set(value) <= _LABEL_CHARS and value[0] != "-" and value[-1] != "-"


def valid_subdomain(value: str) -> bool:
    """Kubernetes DNS-1123 subdomain (a Revision name): labels joined by '.', at most 253 characters."""
    return len(value) <= 253 and all(valid_label(part) for part in value.split("."))


def headers(pairs: Iterable[tuple[str, str]]) -> CIMultiDictProxy[str]:
    """Headers the way aiohttp hands them to a handler: case-insensitive, multi-valued, read-only."""
    return CIMultiDictProxy(CIMultiDict(pairs))


def values_of(pairs: Pairs, name: str) -> list[str]:
    return [value for key, value in pairs if key.lower() == name.lower()]


def connection_tokens(pairs: Pairs) -> set[str]:
    """Header names listed in the Connection headers: comma-separated, surrounding whitespace ignored."""
    return {tok.strip().lower() for value in values_of(pairs, "Connection") for tok in value.split(",") if tok.strip()}


def outcome(pairs: Pairs, host: str | None, cluster_domain: str = "cluster.local") -> RevisionRef | str | None:
    """``identify``'s result, or ``"bad_headers"`` when it raises BadRevisionHeaders (anything else propagates)."""
    try:
        return identify(headers(pairs), host, cluster_domain)
    except BadRevisionHeaders:
        return "bad_headers"


def host_names(host: str, ref: RevisionRef, cluster_domain: str) -> bool:
    """Whether ``host`` names ``ref`` the way the docstring allows: ``{rev}.{ns}.svc[.{domain}]`` in any ASCII
    case, with surrounding whitespace, a port and trailing dots ignored. Non-ASCII letters are never a case
    variant of a DNS name (RFC 4343): the Kelvin sign is not a ``k``."""
    core = host.strip().partition(":")[0].rstrip(".")
    if not core.isascii():
        return False
    core = core.lower()
    domain = cluster_domain.strip().lower().strip(".")
    accepted = {f"{ref.name}.{ref.namespace}.svc"}
    if domain:
        accepted.add(f"{ref.name}.{ref.namespace}.svc.{domain}")
    return core in accepted


# --- strategies ---------------------------------------------------------------------------------------------------

_LABEL_ALPHABET = string.ascii_lowercase + string.digits + "-"
labels = st.text(_LABEL_ALPHABET, min_size=1, max_size=63).map(lambda s: s.strip("-") or "0")
short_labels = st.text(_LABEL_ALPHABET, min_size=1, max_size=10).map(lambda s: s.strip("-") or "a")
subdomains = st.lists(labels, min_size=1, max_size=5).map(".".join).filter(lambda s: len(s) <= 253)
ows = st.sampled_from(["", " ", "\t", "  ", " \t "])
weird_whitespace = st.sampled_from(["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2028", "\u3000"])
tricky_chars = st.sampled_from(
    ["\x00", "\r", "\n", "%", "%2e", ".", "..", "/", ":", "_", "-", "K", "\u212a", "\u0130", "\u017f", "é", "\ufeff"]
)


def ascii_case(draw: st.DrawFn, value: str) -> str:
    """``value`` with its ASCII letters in a case chosen by hypothesis (kept, lower, upper, or mixed by a mask)."""
    how = draw(st.sampled_from(["keep", "lower", "upper", "mixed"]))
    if how == "keep":
        return value
    mask = draw(st.integers(0, 2**61 - 1)) if how == "mixed" else (0 if how == "lower" else -1)
    return "".join(
        (c.upper() if mask >> (i % 61) & 1 else c.lower()) if c.isascii() else c for i, c in enumerate(value)
    )


@st.composite
def cased(draw: st.DrawFn, value: str) -> str:
    return ascii_case(draw, value)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A valid name bent out of shape: a character inserted, the case changed, padded, stretched or emptied."""
    value = draw(base)
    how = draw(st.sampled_from(["insert", "case", "pad", "stretch", "dash", "empty", "dots"]))
    if how == "insert":
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(tricky_chars | weird_whitespace | st.characters()) + value[at:]
    elif how == "case":
        value = ascii_case(draw, value)
    elif how == "pad":
        value = draw(weird_whitespace) + value + draw(weird_whitespace | ows)
    elif how == "stretch":
        value = value + "a" * draw(st.sampled_from([63, 64, 253, 254, 10_240]))
    elif how == "dash":
        value = draw(st.sampled_from(["-", ".", ""])) + value + draw(st.sampled_from(["-", ".", ""]))
    elif how == "dots":
        value = value.replace("-", ".") + "..x"
    else:
        value = ""
    return value


name_values = st.one_of(
    labels,
    subdomains,
    st.tuples(ows, subdomains, ows).map("".join),
    mutated(short_labels),
    mutated(labels),
    mutated(subdomains),
    st.text(max_size=40),
)


def ports() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(""),
        st.integers(0, 70_000).map(lambda port: f":{port}"),
        st.sampled_from([":", "::", ":http", ":80:81", ":-1"]),
    )


@st.composite
def hosts(draw: st.DrawFn) -> str:
    """Hosts that look cluster-local, some valid and most bent: case, ports, brackets, dots, escapes, unicode."""
    shape = draw(st.sampled_from(["svc", "svc", "svc", "ipv6", "text", "long"]))
    if shape == "ipv6":
        inside = draw(st.sampled_from(["::1", "fe80::1%25eth0", "2001:db8::a.b.svc", "rev.ns.svc"]))
        return "[" + inside + draw(st.sampled_from(["]", "]", ""])) + draw(ports())
    if shape == "text":
        return draw(st.text(max_size=60))
    if shape == "long":
        return draw(short_labels) + "." + "a" * draw(st.integers(60, 10_240)) + ".svc"
    rev = draw(name_values)
    ns = draw(st.one_of(short_labels, labels, mutated(short_labels)))
    suffix = draw(
        st.sampled_from(
            [".svc", ".svc.cluster.local", ".svc.example.org", "", ".svc.", ".cluster.local", ".svc.cluster", ".%73vc"]
        )
    )
    host = ascii_case(draw, f"{rev}.{ns}{suffix}")
    if draw(st.integers(0, 7)) == 0:  # the one non-ASCII letter whose str.lower() is ASCII: the Kelvin sign
        at = draw(st.integers(0, len(host)))
        host = host[:at] + "\u212a" + host[at:]
    host += "." * draw(st.integers(0, 3))
    return draw(ows) + host + draw(ports()) + draw(ows)


@st.composite
def routing_pairs(draw: st.DrawFn) -> Pairs:
    """Zero, one or several Knative-Serving-Namespace / -Revision headers, names in any ASCII case."""
    pairs: Pairs = []
    for header in (NAMESPACE_HEADER, REVISION_HEADER):
        for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3]))):
            pairs.append((ascii_case(draw, header), draw(name_values)))
    return draw(st.permutations(pairs))


token_names = st.text("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits, min_size=1, max_size=24)
special_names = st.sampled_from(
    [
        *(name.title() for name in _STANDARD_HOP_BY_HOP),
        NAMESPACE_HEADER,
        REVISION_HEADER,
        "Host",
        ORIGINAL_HOST_HEADER,
        PROXY_HEADER,
        PROBE_HEADER,
        "X-Forwarded-For",
        "Content-Length",
        "Content-Encoding",
        "Set-Cookie",
        "Cookie",
        "X-Hop",
        "X-Other",
    ]
)
header_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "keep-alive", "close", "activator", "a\x00b", "a\r\nX-Injected: 1", "\n"]),
    st.integers(10_000, 10_300).map(lambda n: "v" * n),
)


@st.composite
def header_names(draw: st.DrawFn) -> str:
    """HTTP tokens, as aiohttp's parser lets through, with the interesting ones in any ASCII case."""
    return ascii_case(draw, draw(special_names | token_names))


@st.composite
def connection_values(draw: st.DrawFn, names: list[str]) -> str:
    """A Connection header value: tokens (some naming headers present), empty items, whitespace, odd case."""
    candidates = st.one_of(
        st.sampled_from(names) if names else token_names,
        special_names,
        token_names,
        st.sampled_from(["close", "keep-alive", "", " ", "upgrade"]),
    )
    tokens = [ascii_case(draw, token) for token in draw(st.lists(candidates, max_size=6))]
    return ",".join(draw(ows) + token + draw(ows) for token in tokens)


quick_hosts = st.one_of(
    st.sampled_from(["", "hello.default.svc", "Hello.Default.SVC.cluster.local.:80", "[::1]:8012", "example.com"]),
    st.text(max_size=20),
)


@st.composite
def header_lists(draw: st.DrawFn) -> Pairs:
    """An HTTP header list with repeats, Connection headers naming some of its headers, routing headers, Host."""
    pairs: Pairs = draw(st.lists(st.tuples(header_names(), header_values), max_size=10))
    names = [name for name, _ in pairs]
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(pairs)))
        pairs.insert(at, (ascii_case(draw, "Connection"), draw(connection_values(names))))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(pairs)))
        pairs.insert(at, (ascii_case(draw, "Host"), draw(quick_hosts)))
    return pairs


CLUSTER_DOMAINS = st.sampled_from(["cluster.local", "Example.Org.", "", " ", ".", "svc", "cluster.local.."])
client_ips = st.one_of(st.none(), st.just(""), st.ip_addresses().map(str))


# --- identify -----------------------------------------------------------------------------------------------------


@FUZZ
@given(pairs=st.lists(st.tuples(st.text(max_size=30), st.text(max_size=60)), max_size=6), host=st.none() | hosts())
@example(pairs=[(NAMESPACE_HEADER, "\x00"), (REVISION_HEADER, "\udcff")], host=None)
def test_identify_on_arbitrary_headers_returns_a_valid_ref_none_or_bad_headers(pairs: Pairs, host: str | None) -> None:
    result = outcome(pairs, host)

    assert result is None or result == "bad_headers" or isinstance(result, RevisionRef)


@FUZZ
@given(
    pairs=routing_pairs(),
    host=st.none() | hosts(),
    cluster_domain=CLUSTER_DOMAINS,
)
def test_identify_names_only_valid_revisions_and_only_as_documented(
    pairs: Pairs, host: str | None, cluster_domain: str
) -> None:
    namespaces, revisions = values_of(pairs, NAMESPACE_HEADER), values_of(pairs, REVISION_HEADER)

    result = outcome(pairs, host, cluster_domain)

    if isinstance(result, RevisionRef):
        assert valid_label(result.namespace), result
        assert is_dns1123_label(result.namespace), result
        assert valid_subdomain(result.name), result
        assert is_dns1123_subdomain(result.name), result
    if namespaces and revisions:  # the headers decide, the first of each (as Go's Header.Get), Host is ignored
        ns, rev = namespaces[0].strip(), revisions[0].strip()
        expected = RevisionRef(ns, rev) if valid_label(ns) and valid_subdomain(rev) else "bad_headers"
        assert result == expected
    elif namespaces or revisions:  # only one of them: the caller meant to name a revision and got it wrong
        assert result == "bad_headers"
    elif host is None:
        assert result is None
    elif result is not None:  # from Host: a cluster-local name of a valid revision, nothing else
        assert isinstance(result, RevisionRef)
        assert valid_label(result.name), result
        assert host_names(host, result, cluster_domain), (host, result)


@FUZZ
@given(host=hosts(), cluster_domain=CLUSTER_DOMAINS)
@example(host="hello.\u212aube.svc", cluster_domain="cluster.local")  # found by hypothesis: Kelvin sign -> "k"
def test_identify_by_host_accepts_only_cluster_local_names_of_valid_revisions(host: str, cluster_domain: str) -> None:
    result = outcome([], host, cluster_domain)

    assert result is None or isinstance(result, RevisionRef)
    if result is not None:
        assert valid_label(result.name), result
        assert valid_label(result.namespace), result
        assert host_names(host, result, cluster_domain), (host, result)


@FUZZ
@given(
    rev=labels,
    ns=labels,
    long_form=st.booleans(),
    trailing_dot=st.booleans(),
    port=st.one_of(st.just(""), st.integers(1, 65_535).map(lambda port: f":{port}")),
    padding=st.tuples(ows, ows),
    data=st.data(),
)
def test_identify_recognises_every_cluster_local_host(
    rev: str, ns: str, long_form: bool, trailing_dot: bool, port: str, padding: tuple[str, str], data: st.DataObject
) -> None:
    name = f"{rev}.{ns}.svc" + (".cluster.local" if long_form else "") + ("." if trailing_dot else "")
    host = padding[0] + data.draw(cased(name)) + port + padding[1]

    assert outcome([], host) == RevisionRef(ns, rev)


@FUZZ
@given(ns=name_values, rev=name_values, host=st.none() | quick_hosts)
@example(ns="Default", rev="hello", host=None)
@example(ns="default", rev="hello.", host=None)
def test_identify_by_headers_accepts_exactly_the_valid_kubernetes_names(ns: str, rev: str, host: str | None) -> None:
    valid = valid_label(ns.strip()) and valid_subdomain(rev.strip())

    result = outcome([(NAMESPACE_HEADER, ns), (REVISION_HEADER, rev)], host)

    assert result == (RevisionRef(ns.strip(), rev.strip()) if valid else "bad_headers")


@FUZZ
@given(
    ns=labels, rev=subdomains, pad=st.tuples(ows, ows, ows, ows), host1=st.none() | hosts(), host2=st.none() | hosts()
)
def test_identify_prefers_valid_headers_to_any_host(
    ns: str, rev: str, pad: tuple[str, str, str, str], host1: str | None, host2: str | None
) -> None:
    pairs = [(NAMESPACE_HEADER, pad[0] + ns + pad[1]), (REVISION_HEADER, pad[2] + rev + pad[3])]

    assert outcome(pairs, host1) == outcome(pairs, host2) == RevisionRef(ns, rev)


@FUZZ
@given(header=st.sampled_from([NAMESPACE_HEADER, REVISION_HEADER]), value=name_values, host=st.none() | hosts())
@example(header=REVISION_HEADER, value="hello", host="hello.default.svc")
def test_identify_with_only_one_routing_header_is_bad_whatever_the_host(header: str, value: str, host: str) -> None:
    assert outcome([(header, value)], host) == "bad_headers"


@FUZZ_LISTS
@given(pairs=header_lists(), host=st.none() | hosts())
def test_identify_without_routing_headers_depends_on_the_host_alone(pairs: Pairs, host: str | None) -> None:
    pairs = [(name, value) for name, value in pairs if name.lower() not in _ROUTING - {"host"}]

    assert outcome(pairs, host) == outcome([], host)


# --- forward_headers / response_headers ---------------------------------------------------------------------------


def check_forwarded(incoming: Pairs, client_ip: str | None) -> None:
    """Every documented rule of forward_headers, for one request."""
    proxy = headers(incoming)
    before = list(proxy.items())
    named = connection_tokens(incoming)
    out = forward_headers(proxy, client_ip=client_ip)

    assert list(proxy.items()) == before, "the incoming headers were modified"
    for name in HOP_BY_HOP_HEADERS | _STANDARD_HOP_BY_HOP | _ROUTING:
        assert name not in out, name
    added = {PROXY_HEADER.lower(), ORIGINAL_HOST_HEADER.lower(), "x-forwarded-for"}
    for token in named - added:
        assert token not in out, token
    assert out.getall(PROXY_HEADER) == [PROXY_VALUE]

    dropped = _STANDARD_HOP_BY_HOP | _ROUTING | named
    kept = [(name, value) for name, value in incoming if name.lower() not in dropped]
    original_hosts = values_of(kept, ORIGINAL_HOST_HEADER)
    host = next(iter(values_of(incoming, "Host")), "")
    expected_original = original_hosts or ([host] if host else [])
    assert out.getall(ORIGINAL_HOST_HEADER, []) == expected_original
    chain = values_of(kept, "X-Forwarded-For")
    assert out.getall("X-Forwarded-For", []) == ([", ".join([*chain, client_ip])] if client_ip else chain)

    def others(items: Iterable[tuple[str, str]]) -> Pairs:
        return [(name, value) for name, value in items if name.lower() not in added]

    assert others(out.items()) == others(kept), "other headers lost, reordered or renamed"


def check_returned(upstream: Pairs) -> None:
    """Every documented rule of response_headers, for one response."""
    proxy = headers(upstream)
    named = connection_tokens(upstream)
    out = response_headers(proxy)

    for name in HOP_BY_HOP_HEADERS | _STANDARD_HOP_BY_HOP | _FRAMING | named:
        assert name not in out, name
    dropped = _STANDARD_HOP_BY_HOP | _FRAMING | named
    assert list(out.items()) == [(name, value) for name, value in upstream if name.lower() not in dropped]


@FUZZ_LISTS
@given(incoming=header_lists(), client_ip=client_ips)
@example(
    incoming=[("Connection", "K-Original-Host, X-Forwarded-For"), ("K-Original-Host", "a"), ("Host", "h")],
    client_ip="10.0.0.1",
)
@example(incoming=[("Host", ""), ("Host", "second.default.svc")], client_ip=None)
@example(incoming=[("connection", " , ,x-HOP ,"), ("X-Hop", "1"), ("x-hop", "2"), ("X-Hop-Not", "3")], client_ip="")
def test_forward_headers_drops_hop_by_hop_and_routing_headers_and_keeps_the_rest(
    incoming: Pairs, client_ip: str | None
) -> None:
    check_forwarded(incoming, client_ip)


@FUZZ_LISTS
@given(upstream=header_lists())
@example(upstream=[("Connection", "Set-Cookie"), ("Set-Cookie", "a=1"), ("Content-Length", "3")])
def test_response_headers_drops_hop_by_hop_and_framing_and_keeps_the_rest(upstream: Pairs) -> None:
    check_returned(upstream)


@FUZZ
@given(
    pairs=st.lists(st.tuples(st.text(min_size=1, max_size=20), st.text(max_size=40)), max_size=8),
    connection=st.text(max_size=40),
    client_ip=client_ips,
)
def test_header_shaping_never_raises_and_never_lets_hop_by_hop_through_for_any_names(
    pairs: Pairs, connection: str, client_ip: str | None
) -> None:
    pairs = [*pairs, ("Connection", connection)]

    forwarded = forward_headers(headers(pairs), client_ip=client_ip)
    returned = response_headers(headers(pairs))

    for name in _STANDARD_HOP_BY_HOP:
        assert name not in forwarded
        assert name not in returned
    assert forwarded.getall(PROXY_HEADER) == [PROXY_VALUE]


# --- is_probe -----------------------------------------------------------------------------------------------------


@FUZZ
@given(
    before=ows,
    after=ows,
    name=cased(PROBE_HEADER),
    others=st.lists(st.tuples(header_names(), st.text(max_size=10)), max_size=4),
)
def test_is_probe_accepts_the_documented_value_with_surrounding_whitespace(
    before: str, after: str, name: str, others: Pairs
) -> None:
    others = [(key, value) for key, value in others if key.lower() != PROBE_HEADER.lower()]

    assert is_probe(headers([*others, (name, before + PROBE_VALUE + after)]))


@FUZZ
@given(value=st.one_of(st.text(max_size=20), mutated(st.just(PROBE_VALUE))), later=st.lists(st.just(PROBE_VALUE)))
@example(value="Activator", later=[])
@example(value="queue", later=[PROBE_VALUE])
@example(value="activator\x00", later=[])
def test_is_probe_refuses_anything_but_the_documented_value(value: str, later: list[str]) -> None:
    assume(value.strip() != PROBE_VALUE)
    pairs = [(PROBE_HEADER, value), *((PROBE_HEADER, v) for v in later)]

    assert not is_probe(headers(pairs))


# --- regression corpus --------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """A corpus string: plain, or ``{"repeat": s, "times": n, "prefix": p, "suffix": q}`` for long values."""
    if isinstance(value, str):
        return value
    return str(value.get("prefix", "")) + str(value["repeat"]) * int(value["times"]) + str(value.get("suffix", ""))


def _corpus() -> list[Any]:
    cases = json.loads(CORPUS.read_text(encoding="utf-8"))["identify"]
    return [pytest.param(case, id=case["id"]) for case in cases]


@pytest.mark.parametrize("case", _corpus())
def test_corpus_case_is_identified_as_recorded(case: dict[str, Any]) -> None:
    pairs = [(_text(name), _text(value)) for name, value in case.get("headers", [])]
    host = None if case.get("host") is None else _text(case["host"])

    result = outcome(pairs, host, case.get("cluster_domain", "cluster.local"))

    if case["expected"] == "ref":
        assert result == RevisionRef(case["ref"]["namespace"], case["ref"]["name"])
    else:
        assert result == (None if case["expected"] == "none" else "bad_headers")
    check_forwarded([*pairs, *([("Host", host)] if host is not None else [])], client_ip="10.0.0.1")
    check_returned(pairs)
