"""The server's pure logic, tested directly: multipart parsing, ranges, archive names, budgets, paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.protocol import RateLimit
from flowxfer.server._downloads import plan_response
from flowxfer.server._multipart import MultipartError, MultipartParser, boundary_of, header_params
from flowxfer.server._ratelimit import RateLimiter
from flowxfer.server._unpack import member_path_problem

BOUNDARY = "----flowxferTestBoundary7MA4YWxk"


def _body(parts: list[tuple[str, bytes]]) -> bytes:
    out = b""
    for name, value in parts:
        out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n').encode() + value + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def _parse(body: bytes, cuts: list[int]) -> list[tuple[dict[str, str], bytes]]:
    parser = MultipartParser(BOUNDARY)
    parts: list[tuple[dict[str, str], bytes]] = []
    points = sorted({c % (len(body) + 1) for c in cuts}) + [len(body)]
    previous = 0
    for point in points:
        for event in parser.feed(body[previous:point]):
            if event[0] == "start":
                parts.append((event[1], b""))
            elif event[0] == "data":
                parts[-1] = (parts[-1][0], parts[-1][1] + event[1])
        previous = point
    parser.close()
    return parts


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4), st.lists(st.integers(0, 10_000), max_size=20))
def test_multipart_parses_the_same_however_the_body_is_cut(values: list[bytes], cuts: list[int]) -> None:
    # Values that contain the delimiter itself are what a real client would never send.
    values = [v.replace(BOUNDARY.encode(), b"x") for v in values]
    body = _body([(f"f{i}", v) for i, v in enumerate(values)])
    parsed = _parse(body, cuts)
    assert [p[1] for p in parsed] == values
    assert [p[0]["content-disposition"] for p in parsed] == [f'form-data; name="f{i}"' for i in range(len(values))]


_DELIMITER = f"\r\n--{BOUNDARY}".encode()
#: Pieces of a value that look like the start of a delimiter without being one.
_NEAR_MISSES = st.sampled_from([_DELIMITER[:n] for n in range(1, len(_DELIMITER))] + [b"\r\n-", b"--", b"\r"])


@given(
    st.lists(
        st.lists(st.one_of(st.binary(min_size=1, max_size=200), _NEAR_MISSES), max_size=30).map(b"".join),
        min_size=1,
        max_size=3,
    ),
    st.lists(st.integers(0, 20_000), max_size=12),
)
def test_multipart_large_feeds_keep_every_byte(values: list[bytes], cuts: list[int]) -> None:
    """Feeds long enough for the no-copy path, with values full of near-delimiters across the cuts."""
    values = [v.replace(BOUNDARY.encode(), b"x") for v in values]
    body = _body([(f"f{i}", v) for i, v in enumerate(values)])
    assert [p[1] for p in _parse(body, cuts)] == values


def test_multipart_every_two_piece_cut() -> None:
    """A cut at every byte after the first part's headers: each delimiter split at each of its positions.

    The first feed ends inside the first body, so the feeds after it start in
    a body and are long enough for the parser's no-copy path.
    """
    values = [bytes(range(256)) * 2, b"\r\n-" * 60]
    body = _body([(f"f{i}", v) for i, v in enumerate(values)])
    start = body.index(b"\r\n\r\n") + 4 + 1
    for cut in range(start, len(body) + 1):
        assert [p[1] for p in _parse(body, [start, cut])] == values, cut


@pytest.mark.parametrize(
    "body",
    [
        b"no delimiter here at all" * 400,
        f"--{BOUNDARY}\r\nBroken header line\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
        f"--{BOUNDARY}junk\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
    ],
)
def test_multipart_refuses_garbage(body: bytes) -> None:
    parser = MultipartParser(BOUNDARY)
    with pytest.raises(MultipartError):
        parser.feed(body)
        parser.close()


def test_multipart_refuses_truncation_and_too_many_parts() -> None:
    body = _body([("a", b"1")])
    parser = MultipartParser(BOUNDARY)
    parser.feed(body[:-10])
    with pytest.raises(MultipartError):
        parser.close()
    with pytest.raises(MultipartError):
        MultipartParser(BOUNDARY, max_parts=2).feed(_body([("a", b"1"), ("b", b"2"), ("c", b"3")]))


def test_boundary_of() -> None:
    assert boundary_of(f"multipart/form-data; boundary={BOUNDARY}") == BOUNDARY
    assert boundary_of('multipart/form-data; boundary="a b"') == "a b"
    for bad in ("application/json", "multipart/form-data", "multipart/form-data; boundary=" + "x" * 71):
        with pytest.raises(MultipartError):
            boundary_of(bad)


def test_header_params_unquote_quoted_pairs_only_inside_quotes() -> None:
    value = r'; name="blob"; filename="a \"b\" c\\d.fq"; plain=x\y; NAME2="no escapes"'
    assert header_params(value) == {"name": "blob", "filename": r'a "b" c\d.fq', "plain": r"x\y", "name2": "no escapes"}


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=40))
def test_header_params_round_trip_a_quoted_value(text: str) -> None:
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    assert header_params(f'; filename="{quoted}"') == {"filename": text}


ETAG = '"abc"'


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, (200, 0, 100)),
        ("bytes=0-9", (206, 0, 10)),
        ("bytes=90-", (206, 90, 10)),
        ("bytes=-5", (206, 95, 5)),
        ("bytes=-500", (206, 0, 100)),
        ("bytes=50-1000", (206, 50, 50)),
        ("bytes=100-", (416, 0, 0)),
        ("bytes=9-3", (416, 0, 0)),
        ("bytes=abc", (416, 0, 0)),
        ("items=0-1", (416, 0, 0)),
        ("bytes=0-1,5-6", (416, 0, 0)),
        ("bytes=-0", (416, 0, 0)),
    ],
)
def test_plan_response_ranges(header: str | None, expected: tuple[int, int, int]) -> None:
    plan = plan_response(100, ETAG, 1_700_000_000.0, header, None, None)
    assert (plan.status, plan.start, plan.count) == expected


def test_plan_response_conditionals() -> None:
    assert plan_response(100, ETAG, 0, "bytes=0-9", ETAG, None).status == 206
    assert plan_response(100, ETAG, 0, "bytes=0-9", '"other"', None).status == 200
    assert plan_response(100, ETAG, 0, "bytes=0-9", "W/" + ETAG, None).status == 200
    assert plan_response(100, ETAG, 1_700_000_000, "bytes=0-9", "Tue, 14 Nov 2023 22:13:20 GMT", None).status == 206
    assert plan_response(100, ETAG, 1_700_000_000, "bytes=0-9", "Mon, 13 Nov 2023 22:13:20 GMT", None).status == 200
    assert plan_response(100, ETAG, 0, "bytes=0-9", "garbage", None).status == 200
    assert plan_response(100, ETAG, 0, None, None, ETAG).status == 304
    assert plan_response(100, ETAG, 0, None, None, '"x", ' + ETAG).status == 304
    assert plan_response(0, ETAG, 0, None, None, None).status == 200
    assert plan_response(0, ETAG, 0, "bytes=0-", None, None).status == 416


def test_rate_limiter_windows() -> None:
    now = [1000.0]
    limiter = RateLimiter({"download": RateLimit(3, 10.0)}, lambda: now[0])
    assert limiter.hit("u", "api") is None  # unlimited class
    decisions = [limiter.hit("u", "download") for _ in range(4)]
    assert [d.allowed for d in decisions if d] == [True, True, True, False]
    assert [d.remaining for d in decisions if d] == [2, 1, 0, 0]
    assert decisions[3] is not None and decisions[3].retry_after == 10 and decisions[3].reset == 1010.0
    other = limiter.hit("other", "download")
    assert other is not None and other.allowed
    peek = limiter.peek("u", "download")
    assert peek is not None and peek.remaining == 0 and peek.allowed
    now[0] = 1010.0
    refilled = limiter.hit("u", "download")
    assert refilled is not None and refilled.allowed and refilled.remaining == 2 and refilled.reset == 1020.0
    assert refilled.headers() == {"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "1020"}


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("run/a.txt", True),
        ("./run/b", True),
        ("dir/", True),
        ("with space.txt", True),
        ("/etc/passwd", False),
        ("../x", False),
        ("a/../../x", False),
        ("C:/x", False),
        ("a\\b", False),
        ("nul\x00", False),
        ("", False),
        ("a/" * 70 + "x", False),
        ("x" * 256, False),
    ],
)
def test_member_path_problem(name: str, ok: bool) -> None:
    assert (member_path_problem(name) is None) == ok
