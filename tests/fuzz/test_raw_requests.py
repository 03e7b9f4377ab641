"""hypothesis on raw bytes: any request gets a well-formed answer below 500, fast; every bound is exact.

The server runs as a real process; requests are written to a plain socket,
so nothing in between tidies them up. Two kinds of property:

- **junk**: generated request lines, headers and bodies (valid-looking and
  not) always get one complete HTTP answer with a status below 500 within
  ``ANSWER_TIMEOUT`` -- no 500, no hang -- and the server stays up;
- **bounds**: walked across each documented limit (``docs/protocol.md``,
  *Limits*), the answer flips from accepted to the documented refusal
  exactly at the limit: JSON nesting (16 levels: ``400``), JSON body size
  (64 KiB: ``413``), multipart part count (32: ``400``), one header's size
  (8190 bytes of value: ``400``/``431``), header count (100: ``400``/``431``), upload
  body (max chunk + 64 KiB: ``413``).
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.chaos.figures import record
from tests.support.server import ServerProcess

ANSWER_TIMEOUT = 10.0
MAX_CHUNK = 64 * 1024
JUNK_EXAMPLES = int(os.environ.get("FLOWXFER_RAW_EXAMPLES", "60"))
_TALLY = {"requests": 0}


@pytest.fixture(scope="module")
def raw_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("raw") / "root"
    with ServerProcess(root, "--access-ttl", "86400", "--max-chunk-size", str(MAX_CHUNK)) as server:
        yield server
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
    record("fuzz-raw", requests=_TALLY["requests"], server_errors=0)


def exchange(server: ServerProcess, raw: bytes) -> tuple[int, bytes]:
    """Send ``raw`` (with ``Connection: close``), read the one answer until the server closes; status and body."""
    _TALLY["requests"] += 1
    with socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT) as sock:
        try:
            # No half-close: aiohttp takes EOF from the client as the connection gone, and answers nothing.
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may refuse before reading it all; its answer is still there to read
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    assert match, f"no HTTP answer to {raw[:200]!r}: {data[:200]!r}"
    head, _, body = data.partition(b"\r\n\r\n")
    return int(match.group(1)), body


@pytest.fixture(scope="module")
def token(raw_server: ServerProcess) -> str:
    status, body = post_json(raw_server, "/login", {"username": "alice", "password": "alice-pw-1"})
    assert status == 200
    return str(json.loads(body)["token"])


def request(method: str, path: str, headers: dict[str, str] | list[tuple[str, str]], body: bytes = b"") -> bytes:
    items = list(headers.items()) if isinstance(headers, dict) else headers
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Connection: close",
        *(f"{k}: {v}" for k, v in items),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def post_json(server: ServerProcess, path: str, document: object, token: str | None = None) -> tuple[int, bytes]:
    body = json.dumps(document).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return exchange(server, request("POST", path, headers, body))


# --- junk -------------------------------------------------------------------------------

_PATHS = st.sampled_from(
    [
        "/login",
        "/token",
        "/upload",
        "/upload/1",
        "/data/search",
        "/data/owned",
        "/data/1",
        "/data/1/chunks",
        "/data/1/files",
        "/data/1/permissions",
        "/downloads",
        "/downloads/1/x",
        "/downloads/jobs/1",
        "/downloads/jobs/1/x.zip",
        "/capabilities",
        "/openapi.json",
        "/",
        "/%00",
        "/..%2f..%2fetc%2fpasswd",
        "/upload/sample",
        "/upload/multiplexed",
        "/upload/annotation",
        "/upload/parallel",
        "/upload/parallel/1",
        "/upload/parallel/1/finish",
        "/samples/search",
        "/samples/owned",
        "/samples/1",
        "/samples/1/data",
        "/samples/types",
        "/samples/metadata",
        "/samples/metadata/strandedness/options",
        "/organisms",
        "/projects/owned",
        "/annotation",
        "/annotation/RNA-Seq",
        "/executions/search",
        "/executions/1",
        "/executions/123456789012345678",
        "/samples/1/executions",
    ]
)
_METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "BREW"])
#: Header and query text: printable ASCII and the rest of Latin-1 (raw bytes 0xA0-0xFF on the wire).
_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_categories=("Cc",)), max_size=40)
_QUERY = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "count",
                "page",
                "limit",
                "offset",
                "pattern",
                "filename",
                "size_gt",
                "created_lt",
                "owned",
                "direct",
                "token",
                "sort",
                "organism",
                "sample_types",
                "value",
                "validated",
                "include",
                "exclude",
                "log",
                "return_data",
                "duration_gt",
                "status",
            ]
        ),
        _TEXT,
    ),
    max_size=4,
)
_HEADERS = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(
                [
                    "Content-Type",
                    "Range",
                    "If-Range",
                    "If-None-Match",
                    "Cookie",
                    "Authorization",
                    "X-Junk",
                    "Transfer-Encoding",
                ]
            ),
            _TEXT,
        ),
        # Expect in Latin-1 too: aiohttp's own handler, which echoed it into a 417 and failed with a 500, no
        # longer answers any request (every path, served or not, has ours; see test_inputs_once_seen_to_make_500s).
        st.tuples(st.just("Expect"), _TEXT),
    ),
    max_size=5,
)


@given(
    method=_METHODS,
    path=_PATHS,
    query=_QUERY,
    headers=_HEADERS,
    body=st.binary(max_size=300),
    authenticated=st.booleans(),
)
@example(
    method="POST",
    path="/upload",
    query=[],
    headers=[("Content-Type", "multipart/form-data; boundary=")],
    body=b"--\r\n",
    authenticated=True,
)
@example(method="GET", path="/downloads/1/x", query=[], headers=[("Range", "bytes=-0")], body=b"", authenticated=True)
@settings(max_examples=JUNK_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_junk_gets_an_answer_below_500(
    raw_server: ServerProcess,
    token: str,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: list[tuple[str, str]],
    body: bytes,
    authenticated: bool,
) -> None:
    from urllib.parse import urlencode

    target = path + ("?" + urlencode(query) if query else "")
    safe = [(k, v) for k, v in headers if k.lower() not in ("content-length",)]
    if authenticated:
        safe.append(("Authorization", f"Bearer {token}"))
    status, _ = exchange(raw_server, request(method, target, safe, body))
    assert 100 <= status < 500, (method, target, safe, body[:80])


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "expected"),
    [
        ("GET", "/data/owned", [("Authorization", "Bearer ab\xff\xfecd")], b"", 401),  # not UTF-8 on the wire
        ("GET", "/token", [("Cookie", "flow_refresh_token=\xff\xfe")], b"", 401),
        ("POST", "/login", [("Content-Type", "application/json")], b'{"username": "\\ud800", "password": "x"}', 400),
        ("POST", "/upload", [("Expect", "\xa0")], b"", 417),  # aiohttp's default handler echoed it: 500
        ("POST", "/no/such/path", [("Expect", "\xa0")], b"", 417),  # ... also where no route serves the path
        ("PUT", "/login", [("Expect", "\xff")], b"", 417),  # ... or not under that method
        ("POST", "/a%0Ab", [("Expect", "\xff")], b"", 417),  # ... or a path with a newline in it
        ("OPTIONS", "*", [("Expect", "\xff")], b"", 417),  # ... or the asterisk-form target
    ],
)
def test_inputs_once_seen_to_make_500s(
    raw_server: ServerProcess,
    token: str,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    expected: int,
) -> None:
    """Each of these answered 500 once (a review found them by hand); now each is refused plainly."""
    if path.startswith(("/downloads/", "/upload")):
        headers = [*headers, ("Authorization", f"Bearer {token}")]
    status, _ = exchange(raw_server, request(method, path, headers, body))
    assert status == expected, status


@pytest.mark.parametrize("spec", ["bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 5000, "bytes=\u0661-\u0662"])
def test_range_digits_are_bounded_ascii(raw_server: ServerProcess, token: str, spec: str) -> None:
    """int() refuses 4,300+ digits (that was a 500), and a regex's \\d took Arabic-Indic digits."""
    status, body = _upload(raw_server, token, BASE_FIELDS, b"0123456789")
    assert status == 200, body
    path = f"/downloads/{json.loads(body)['data_id']}/f.bin"
    raw = request("GET", path, {"Authorization": f"Bearer {token}", "Range": "SPEC"})
    status, _ = exchange(raw_server, raw.replace(b"SPEC", spec.encode()))
    assert status == 416, status


@given(raw=st.binary(min_size=1, max_size=600))
@example(raw=b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 3 + b"\r\n")
@example(raw=b"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
@settings(max_examples=JUNK_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_bytes_that_are_not_http(raw_server: ServerProcess, raw: bytes) -> None:
    """Garbage gets a 4xx (or the connection closed without one), never a 500, never a hang."""
    _TALLY["requests"] += 1
    with socket.create_connection(("127.0.0.1", raw_server.port), timeout=ANSWER_TIMEOUT) as sock:
        try:
            sock.sendall(raw + b"\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    assert data == b"" or (match and 400 <= int(match.group(1)) < 500) or data.startswith(b"HTTP/1.1 2"), data[:200]


# --- bounds -----------------------------------------------------------------------------


def _nested(levels: int) -> object:
    """A value inside exactly ``levels`` nested lists (0: the bare number)."""
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


@given(depth=st.integers(1, 40))
@example(depth=16)
@example(depth=17)
@settings(max_examples=12, deadline=None, database=None)
def test_json_nesting_bound(raw_server: ServerProcess, depth: int) -> None:
    # The top-level object is level 1; "x" holds the other depth - 1 levels.
    status, body = post_json(
        raw_server, "/login", {"username": "alice", "password": "alice-pw-1", "x": _nested(depth - 1)}
    )
    if depth <= 16:
        assert status == 200, (depth, body)
    else:
        assert status == 400 and b"nested" in body, (depth, body)


@given(size=st.integers(60 * 1024, 70 * 1024))
@example(size=64 * 1024)
@example(size=64 * 1024 + 1)
@settings(max_examples=10, deadline=None, database=None)
def test_json_size_bound(raw_server: ServerProcess, size: int) -> None:
    base = {"username": "alice", "password": "alice-pw-1", "pad": ""}
    room = size - len(json.dumps(base).encode())
    document = {**base, "pad": "p" * room}
    assert len(json.dumps(document).encode()) == size
    status, body = post_json(raw_server, "/login", document)
    assert status == (200 if size <= 64 * 1024 else 413), (size, body)


def _multipart(fields: list[tuple[str, bytes]], blob: bytes) -> tuple[str, bytes]:
    boundary = "fuzzboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
        for name, value in fields
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="blob"; filename="b"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + blob
        + b"\r\n"
    )
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


def _upload(
    server: ServerProcess, token: str, fields: list[tuple[str, bytes]], blob: bytes, path: str = "/upload"
) -> tuple[int, bytes]:
    content_type, body = _multipart(fields, blob)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    return exchange(server, request("POST", path, headers, body))


BASE_FIELDS = [("filename", b"f.bin"), ("expected_file_size", b"0"), ("is_last", b"true"), ("data", b"")]


@given(parts=st.integers(5, 60))
@example(parts=32)
@example(parts=33)
@settings(max_examples=10, deadline=None, database=None)
def test_multipart_part_count_bound(raw_server: ServerProcess, token: str, parts: int) -> None:
    # BASE_FIELDS and the blob are 5 parts; unknown fields (ignored by design) make up the rest.
    extra = [(f"extra{i}", b"x") for i in range(parts - 5)]
    status, body = _upload(raw_server, token, BASE_FIELDS + extra, b"data")
    assert status == (200 if parts <= 32 else 400), (parts, body)


SAMPLE_FIELDS = [("sample_name", b"s"), ("sample_type", b"generic"), ("is_last_sample", b"true")]


@given(parts=st.integers(200, 300))
@example(parts=256)
@example(parts=257)
@settings(max_examples=10, deadline=None, database=None)
def test_sample_upload_part_count_bound(raw_server: ServerProcess, token: str, parts: int) -> None:
    """``POST /upload/sample`` takes up to 256 parts (~60 attributes with annotations), ``/upload`` 32."""
    extra = [(f"extra{i}", b"x") for i in range(parts - 8)]
    status, body = _upload(raw_server, token, BASE_FIELDS + SAMPLE_FIELDS + extra, b"data", "/upload/sample")
    assert status == (200 if parts <= 256 else 400), (parts, body)


@given(size=st.integers(8000, 8400))
@example(size=8190)
@example(size=8191)
@settings(max_examples=10, deadline=None, database=None)
def test_header_size_bound(raw_server: ServerProcess, token: str, size: int) -> None:
    """One header's value may be 8190 bytes (aiohttp's ``max_field_size``, which bounds the value)."""
    status, _ = exchange(
        raw_server, request("GET", "/data/owned", {"Authorization": f"Bearer {token}", "X-Pad": "v" * size})
    )
    assert (status == 200) if size <= 8190 else status in (400, 431), (size, status)


@given(count=st.integers(80, 120))
@example(count=100)
@example(count=101)
@settings(max_examples=10, deadline=None, database=None)
def test_header_count_bound(raw_server: ServerProcess, token: str, count: int) -> None:
    # request() adds Host, Connection, Authorization and Content-Length: ``count`` is the total.
    extra = [(f"X-H{i}", "1") for i in range(count - 4)]
    status, _ = exchange(raw_server, request("GET", "/data/owned", [("Authorization", f"Bearer {token}"), *extra]))
    assert (status == 200) if count <= 100 else status in (400, 431), (count, status)


@given(size=st.integers(MAX_CHUNK - 1024, MAX_CHUNK + 70 * 1024))
@example(size=MAX_CHUNK)
@example(size=MAX_CHUNK + 64 * 1024 + 1)
@settings(max_examples=10, deadline=None, database=None)
def test_upload_body_bound(raw_server: ServerProcess, token: str, size: int) -> None:
    status, body = _upload(raw_server, token, BASE_FIELDS, b"b" * size)
    _, whole = _multipart(BASE_FIELDS, b"b" * size)
    if size <= MAX_CHUNK:
        assert status == 200, (size, body)
    else:
        # Over the chunk limit: refused, before reading when the body is over the request limit too.
        assert status == 413, (size, len(whole), body)
