"""[ext] ``download_by_id``: a describing ``GET /downloads/<id>`` that answers HTML or lies about the file.

``tests/transfer/test_download_by_id.py`` covers flipped bytes, a cut body and
a hostile name in the describing answer; ``tests/cli/test_cli_exit_codes.py``
a server that answers HTML to *everything*. Not covered were a server (or a
proxy in front of it, e.g. a captive portal) that answers HTML only on the
by-id route, and a describing answer whose size or checksum disagrees with
its bytes. The engine must then neither write the page nor wrong bytes as the
download, and the user gets one line and the documented exit code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flowxfer.protocol import checksum_of
from tests.cli.conftest import Cli
from tests.support.faultproxy import Match, RespondWith
from tests.support.rig import rig
from tests.transfer.test_faults import CHUNK, download_through, upload_direct

#: The describing request: the bytes' URL without the filename.
DESCRIBE = r"^/downloads/[^/]+$"
PAGE = b"<html><head><title>Sign in</title></head><body>Please sign in to continue</body></html>\n"


@pytest.mark.parametrize("times", [1, None], ids=["once", "always"])
async def test_an_html_page_on_the_by_id_route_is_never_the_file(tmp_path: Path, times: int | None) -> None:
    """The by-id route answers a 200 HTML page (once, or on every ``/downloads/`` request): the page is
    never written as the file; the command says why in one line and exits 1 (nothing lost: 0 after)."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=CHUNK - 100)
        cli = Cli(r.via_proxy.base_url, tmp_path / "home")
        await cli.login("alice", r.server.users["alice"])
        where = Match("GET", DESCRIBE if times == 1 else "^/downloads/")
        page = r.proxy.add(RespondWith(200, PAGE, {"Content-Type": "text/html"}, match=where, times=times))
        out = tmp_path / "out"
        result = await cli.run("--max-attempts", "2", "download", data_id, "-o", str(out))
        assert page.hits >= 1
        written = {p.name: p.read_bytes() for p in out.glob("*")} if out.exists() else {}
        assert all(PAGE not in body for body in written.values()), written.keys()
        if result.code == 0:
            assert written == {"reads.bin": source}
        else:
            assert result.code == 1, result
            assert "reads.bin" not in written
            assert "<html" not in result.stderr + result.stdout, result
        page.times = 0  # the portal is gone: the same command now finishes
        again = await cli.run("download", data_id, "-o", str(out))
        assert again.code == 0, again
        assert (out / "reads.bin").read_bytes() == source


async def test_a_description_that_lies_about_the_size_is_caught(tmp_path: Path) -> None:
    """The describing answer claims a total 50 bytes short, with the real file's checksum: the bytes
    cannot match it, so the download is not completed and nothing is left as the file."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=CHUNK - 100)
        body = source[:-50]
        headers = {
            "Content-Disposition": 'attachment; filename="reads.bin"',
            "Content-Range": f"bytes 0-{len(body) - 1}/{len(body)}",
            "X-Checksum": checksum_of(source),
        }
        lie = r.proxy.add(RespondWith(206, body, headers, match=Match("GET", DESCRIBE), times=None))
        report, data = await download_through(r, tmp_path, data_id)
        assert lie.hits >= 1
        assert report.status != "completed" and data == b"", (report.status, len(data))


async def test_a_description_whose_range_disagrees_with_its_body_is_not_written(tmp_path: Path) -> None:
    """``Content-Range`` says the whole file, the body is half of it: the engine must not take the half
    for the whole (it may fetch the rest by stream, or fail); the file on disk is the source or absent."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=CHUNK - 100)
        headers = {
            "Content-Disposition": 'attachment; filename="reads.bin"',
            "Content-Range": f"bytes 0-{len(source) - 1}/{len(source)}",
            "X-Checksum": checksum_of(source),
        }
        r.proxy.add(RespondWith(206, source[: len(source) // 2], headers, match=Match("GET", DESCRIBE), times=None))
        report, data = await download_through(r, tmp_path, data_id)
        assert data == (source if report.status == "completed" else b""), (report.status, len(data))


async def test_a_description_with_a_wrong_checksum_header_never_completes(tmp_path: Path) -> None:
    """The real bytes, but a checksum header naming other bytes, on every describing answer."""
    async with rig(tmp_path, True) as r:
        source, data_id = await upload_direct(r.server, tmp_path, size=CHUNK - 100)
        headers = {
            "Content-Disposition": 'attachment; filename="reads.bin"',
            "Content-Range": f"bytes 0-{len(source) - 1}/{len(source)}",
            "X-Checksum": checksum_of(b"something else"),
        }
        r.proxy.add(RespondWith(206, source, headers, match=Match("GET", DESCRIBE), times=None))
        report, data = await download_through(r, tmp_path, data_id)
        assert report.status != "completed" and data == b""
        error = report.files[0].error or ""
        assert "checksum" in error or "match" in error, error
