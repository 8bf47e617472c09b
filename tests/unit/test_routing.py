"""Identifying the revision of a request and shaping the headers that travel with it."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from activator.routing import (
    NAMESPACE_HEADER,
    ORIGINAL_HOST_HEADER,
    PROXY_HEADER,
    REVISION_HEADER,
    BadRevisionHeaders,
    RevisionRef,
    forward_headers,
    identify,
    is_probe,
    response_headers,
)


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    """Headers the way aiohttp hands them to a handler: case-insensitive, multi-valued, read-only."""
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_revision_ref_key_is_namespace_slash_name() -> None:
    assert RevisionRef("default", "hello-00001").key == "default/hello-00001"


@pytest.mark.parametrize(
    ("pairs", "host", "expected"),
    [
        pytest.param(
            [(NAMESPACE_HEADER, "default"), (REVISION_HEADER, "hello-00001")],
            None,
            RevisionRef("default", "hello-00001"),
            id="both-headers-name-the-revision",
        ),
        pytest.param(
            [("knative-serving-namespace", "default"), ("KNATIVE-SERVING-REVISION", "hello-00001")],
            None,
            RevisionRef("default", "hello-00001"),
            id="header-names-are-case-insensitive",
        ),
        pytest.param(
            [(NAMESPACE_HEADER, "default"), (REVISION_HEADER, "hello-00001")],
            "other-00002.prod.svc.cluster.local",
            RevisionRef("default", "hello-00001"),
            id="headers-win-over-host",
        ),
        pytest.param(
            [(NAMESPACE_HEADER, " default "), (REVISION_HEADER, " hello-00001 ")],
            None,
            RevisionRef("default", "hello-00001"),
            id="surrounding-whitespace-in-header-values-is-ignored",
        ),
        pytest.param(
            [(NAMESPACE_HEADER, "default"), (REVISION_HEADER, "hello.v1")],
            None,
            RevisionRef("default", "hello.v1"),
            id="revision-header-may-be-a-dns-subdomain",
        ),
        pytest.param([], "hello-00001.default.svc", RevisionRef("default", "hello-00001"), id="host-with-svc-suffix"),
        pytest.param(
            [],
            "hello-00001.default.svc.cluster.local",
            RevisionRef("default", "hello-00001"),
            id="host-with-cluster-domain",
        ),
        pytest.param(
            [],
            "hello-00001.default.svc.cluster.local:8080",
            RevisionRef("default", "hello-00001"),
            id="host-port-is-stripped",
        ),
        pytest.param([], "hello-00001.default.svc:80", RevisionRef("default", "hello-00001"), id="short-host-port"),
        pytest.param(
            [],
            "Hello-00001.Default.SVC.Cluster.Local",
            RevisionRef("default", "hello-00001"),
            id="host-is-case-insensitive",
        ),
        pytest.param(
            [],
            "hello-00001.default.svc.cluster.local.",
            RevisionRef("default", "hello-00001"),
            id="host-trailing-dot-is-accepted",
        ),
        pytest.param([], "hello-00001.default.svc.example.org", None, id="host-with-another-cluster-domain-is-none"),
        pytest.param([], "hello.example.com", None, id="public-host-is-none"),
        pytest.param([], "hello-00001.default", None, id="host-without-svc-is-none"),
        pytest.param([], "a.hello-00001.default.svc", None, id="host-with-extra-label-is-none"),
        pytest.param([], "default.svc", None, id="host-without-revision-is-none"),
        pytest.param([], "10.0.0.1:8080", None, id="ip-host-is-none"),
        pytest.param([], "[::1]:8080", None, id="ipv6-host-is-none"),
        pytest.param([], "hello_1.default.svc", None, id="host-with-invalid-label-is-none"),
        pytest.param([], "", None, id="empty-host-is-none"),
        pytest.param([], None, None, id="no-host-and-no-headers-is-none"),
    ],
)
def test_identify_names_the_revision_by_headers_or_host(
    pairs: list[tuple[str, str]], host: str | None, expected: RevisionRef | None
) -> None:
    assert identify(headers(*pairs), host) == expected


@pytest.mark.parametrize(
    ("host", "cluster_domain", "expected"),
    [
        pytest.param(
            "hello.default.svc.example.org", "example.org", RevisionRef("default", "hello"), id="custom-domain"
        ),
        pytest.param(
            "hello.default.svc.example.org", "Example.Org.", RevisionRef("default", "hello"), id="domain-normalised"
        ),
        pytest.param("hello.default.svc.cluster.local", "example.org", None, id="default-domain-no-longer-matches"),
        pytest.param("hello.default.svc", "example.org", RevisionRef("default", "hello"), id="short-form-still-works"),
    ],
)
def test_identify_honours_the_cluster_domain(host: str, cluster_domain: str, expected: RevisionRef | None) -> None:
    assert identify(headers(), host, cluster_domain=cluster_domain) == expected


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        pytest.param([(NAMESPACE_HEADER, "default")], "Knative-Serving-Revision is missing", id="only-namespace"),
        pytest.param([(REVISION_HEADER, "hello-00001")], "Knative-Serving-Namespace is missing", id="only-revision"),
        pytest.param(
            [(NAMESPACE_HEADER, ""), (REVISION_HEADER, "hello-00001")], "not a namespace name", id="empty-namespace"
        ),
        pytest.param(
            [(NAMESPACE_HEADER, "default"), (REVISION_HEADER, "")], "not a revision name", id="empty-revision"
        ),
        pytest.param(
            [(NAMESPACE_HEADER, "Default"), (REVISION_HEADER, "hello")],
            "not a namespace name",
            id="uppercase-namespace",
        ),
        pytest.param(
            [(NAMESPACE_HEADER, "my.ns"), (REVISION_HEADER, "hello")], "not a namespace name", id="dotted-namespace"
        ),
        pytest.param(
            [(NAMESPACE_HEADER, "default"), (REVISION_HEADER, "hello/../x")], "not a revision name", id="slash-revision"
        ),
        pytest.param(
            [(NAMESPACE_HEADER, "default"), (REVISION_HEADER, "-hello")], "not a revision name", id="leading-dash"
        ),
        pytest.param(
            [(NAMESPACE_HEADER, "n" * 64), (REVISION_HEADER, "hello")], "not a namespace name", id="namespace-too-long"
        ),
        pytest.param(
            [(NAMESPACE_HEADER, "default"), (REVISION_HEADER, "a" * 254)], "not a revision name", id="revision-too-long"
        ),
    ],
)
def test_identify_rejects_partial_or_invalid_headers(pairs: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(BadRevisionHeaders, match=message):
        identify(headers(*pairs), "hello.default.svc")


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        pytest.param([("K-Network-Probe", "activator")], True, id="activator-probe"),
        pytest.param([("k-network-probe", "activator")], True, id="case-insensitive-name"),
        pytest.param([("K-Network-Probe", "queue")], False, id="probe-for-someone-else"),
        pytest.param([], False, id="ordinary-request"),
    ],
)
def test_is_probe_recognises_the_activator_network_probe(pairs: list[tuple[str, str]], expected: bool) -> None:
    assert is_probe(headers(*pairs)) is expected


@pytest.mark.parametrize(
    ("incoming", "dropped"),
    [
        pytest.param(
            [
                ("Connection", "keep-alive"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Authenticate", "Basic"),
                ("Proxy-Authorization", "Basic eA=="),
                ("Proxy-Connection", "keep-alive"),
                ("TE", "trailers"),
                ("Trailer", "Expires"),
                ("Transfer-Encoding", "chunked"),
                ("Upgrade", "websocket"),
            ],
            {
                "Connection",
                "Keep-Alive",
                "Proxy-Authenticate",
                "Proxy-Authorization",
                "Proxy-Connection",
                "TE",
                "Trailer",
                "Transfer-Encoding",
                "Upgrade",
            },
            id="standard-hop-by-hop-headers",
        ),
        pytest.param(
            [("Connection", "close, X-Hop"), ("Connection", " x-other ,"), ("X-Hop", "1"), ("X-Other", "2")],
            {"Connection", "X-Hop", "X-Other"},
            id="headers-named-in-connection",
        ),
        pytest.param(
            [(NAMESPACE_HEADER, "default"), (REVISION_HEADER, "hello"), ("Host", "hello.default.svc")],
            {NAMESPACE_HEADER, REVISION_HEADER, "Host"},
            id="routing-headers-and-host",
        ),
    ],
)
def test_forward_headers_strips_what_must_not_reach_the_pod(incoming: list[tuple[str, str]], dropped: set[str]) -> None:
    out = forward_headers(headers(*incoming, ("Accept", "*/*")), client_ip=None)

    still_present = {name.lower() for name in dropped} & {name.lower() for name in out}
    assert not still_present
    assert out["Accept"] == "*/*"


def test_forward_headers_keeps_repeated_headers_in_order() -> None:
    out = forward_headers(
        headers(("Cookie", "a=1"), ("X-Tag", "one"), ("Cookie", "b=2"), ("x-tag", "two")), client_ip=None
    )

    assert out.getall("Cookie") == ["a=1", "b=2"]
    assert out.getall("X-Tag") == ["one", "two"]


@pytest.mark.parametrize(
    ("incoming", "client_ip", "expected"),
    [
        pytest.param([], "10.1.2.3", ["10.1.2.3"], id="first-hop-starts-the-chain"),
        pytest.param(
            [("X-Forwarded-For", "1.1.1.1, 2.2.2.2")], "10.1.2.3", ["1.1.1.1, 2.2.2.2, 10.1.2.3"], id="append"
        ),
        pytest.param(
            [("X-Forwarded-For", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")],
            "10.1.2.3",
            ["1.1.1.1, 2.2.2.2, 10.1.2.3"],
            id="repeated-headers-are-folded-then-appended",
        ),
        pytest.param([("X-Forwarded-For", "1.1.1.1")], None, ["1.1.1.1"], id="unknown-client-leaves-chain-alone"),
        pytest.param([], None, [], id="unknown-client-and-no-chain"),
    ],
)
def test_forward_headers_appends_the_client_to_x_forwarded_for(
    incoming: list[tuple[str, str]], client_ip: str | None, expected: list[str]
) -> None:
    assert forward_headers(headers(*incoming), client_ip=client_ip).getall("X-Forwarded-For", []) == expected


@pytest.mark.parametrize(
    "incoming",
    [
        pytest.param([], id="unmarked-request"),
        pytest.param([("k-proxy-request", "someone-else")], id="foreign-mark-is-replaced"),
    ],
)
def test_forward_headers_marks_the_request_as_proxied_by_the_activator(incoming: list[tuple[str, str]]) -> None:
    assert forward_headers(headers(*incoming), client_ip=None).getall(PROXY_HEADER) == ["activator"]


@pytest.mark.parametrize(
    ("incoming", "expected"),
    [
        pytest.param([("Host", "hello.example.com")], ["hello.example.com"], id="host-moves-to-original-host"),
        pytest.param(
            [("Host", "hello-00001.default.svc"), (ORIGINAL_HOST_HEADER, "hello.example.com")],
            ["hello.example.com"],
            id="existing-original-host-is-kept",
        ),
        pytest.param([], [], id="no-host-no-original-host"),
    ],
)
def test_forward_headers_keeps_the_original_host_like_knative(
    incoming: list[tuple[str, str]], expected: list[str]
) -> None:
    assert forward_headers(headers(*incoming), client_ip=None).getall(ORIGINAL_HOST_HEADER, []) == expected


def test_forward_headers_does_not_modify_the_incoming_headers() -> None:
    incoming = CIMultiDict([("Connection", "close"), ("Host", "h.default.svc")])

    forward_headers(incoming, client_ip="10.0.0.1")

    assert list(incoming.items()) == [("Connection", "close"), ("Host", "h.default.svc")]


@pytest.mark.parametrize(
    ("upstream", "dropped"),
    [
        pytest.param(
            [("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked")],
            {"Connection", "Keep-Alive", "Transfer-Encoding"},
            id="hop-by-hop",
        ),
        pytest.param([("Content-Length", "12")], {"Content-Length"}, id="content-length-is-aiohttps-job"),
        pytest.param(
            [("Connection", "X-Hop"), ("X-Hop", "1")], {"Connection", "X-Hop"}, id="headers-named-in-connection"
        ),
    ],
)
def test_response_headers_strips_framing_and_hop_by_hop(upstream: list[tuple[str, str]], dropped: set[str]) -> None:
    out = response_headers(headers(*upstream, ("Content-Type", "text/plain")))

    still_present = {name.lower() for name in dropped} & {name.lower() for name in out}
    assert not still_present
    assert out["Content-Type"] == "text/plain"


def test_response_headers_keeps_repeated_set_cookie() -> None:
    out = response_headers(headers(("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Content-Encoding", "gzip")))

    assert out.getall("Set-Cookie") == ["a=1", "b=2"]
    assert out["Content-Encoding"] == "gzip"
