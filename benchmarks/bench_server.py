"""Benchmark the local Flow server on loopback against nginx (issue 2's Performance section).

Run from the repository root: ``python -m benchmarks.bench_server [--size-mib 1024] [--runs 3]``.

Measures, with a file of random bytes (1 GiB by default):

1. upload into our server with flowbio v2 (its 1 MB default chunks);
2. upload into our server with 8 MiB chunks sent by a plain loop of aiohttp posts;
3. the same aiohttp loop pushing the same 8 MiB chunks into nginx, and ``curl``
   pushing the whole file in one request into nginx, with nginx storing request
   bodies on the same disk (``client_body_in_file_only on``);
4. ``curl`` downloading the file from our server (``/downloads``, sendfile) and
   from nginx serving it from disk.

Runs alternate between the tools compared (A B A B ...); the median of
``--runs`` runs is reported. nginx is installed with ``apt-get install -y
nginx-light`` when missing (never in CI: the script is not a test), given its
own config in a temporary folder, run in the foreground on a free loopback
port, and stopped at the end. Figures are printed and written into
``benchmarks/RESULTS.md`` under "## Server (issue 2)".
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from ._common import compile_sources, record_section

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work"
MiB = 1024 * 1024
USER, PASSWORD = "bench", "bench-password-1"
HEADING = "## Server (issue 2)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def our_server(root: Path) -> Iterator[str]:
    """``flowxfer serve`` as a subprocess on a fresh root; yields its base URL."""
    command = [
        sys.executable,
        "-c",
        "from flowxfer.cli import run; run()",
        "serve",
        "--root",
        str(root),
        "--port",
        "0",
        "--user",
        f"{USER}:{PASSWORD}",
        "--rate-limits",
        "off",
        "--max-chunk-size",
        "64MiB",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"server did not start: {line!r}")
        yield line.removeprefix("listening on ")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()


def ensure_nginx() -> str:
    found = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
    if found:
        return str(found)
    if os.environ.get("CI"):
        raise SystemExit("nginx is missing and this is CI: the benchmark does not install packages there")
    print("installing nginx-light (apt-get)...", file=sys.stderr)
    subprocess.run(["apt-get", "update"], check=False, capture_output=True)
    done = subprocess.run(["apt-get", "install", "-y", "nginx-light"], capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["apt-get", "install", "-y", "nginx"], check=True, capture_output=True)
    return shutil.which("nginx") or "/usr/sbin/nginx"


NGINX_CONF = """
worker_processes 1;
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 0;
    types {{ application/octet-stream bin; }}
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location /upload {{
            # Read the whole body into a file on disk, then answer (an upstream that
            # gets no body answers 200): nginx's own cost of accepting a request body.
            client_body_in_file_only on;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_pass http://127.0.0.1:{port}/ok;
        }}
        location = /ok {{ return 200 "ok"; }}
    }}
}}
"""


@contextmanager
def nginx(binary: str, www: Path, tmp: Path) -> Iterator[str]:
    port = free_port()
    (tmp / "body").mkdir(parents=True, exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, www=www))
    proc = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"nginx did not start: {(tmp / 'error.log').read_text(errors='replace')}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_file(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(64 * MiB, left))
            f.write(block)
            left -= len(block)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def login(base: str) -> str:
    import httpx

    return str(httpx.post(f"{base}/login", json={"username": USER, "password": PASSWORD}).json()["token"])


async def _post_chunks(url: str, path: Path, chunk: int, token: str | None, flow: bool) -> None:
    import aiohttp

    # The client reads the file inline on purpose: both servers get the same client.
    size = path.stat().st_size  # noqa: ASYNC240
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        data_id = ""
        with open(path, "rb") as f:  # noqa: ASYNC230
            offset = 0
            while offset < size:
                blob = f.read(chunk)
                last = offset + len(blob) >= size
                if flow:
                    form = aiohttp.FormData()
                    form.add_field("filename", path.name)
                    form.add_field("expected_file_size", str(offset))
                    form.add_field("is_last", "true" if last else "false")
                    form.add_field("data", data_id)
                    form.add_field(
                        "blob", io.BytesIO(blob), filename=path.name, content_type="application/octet-stream"
                    )
                    async with session.post(url, data=form, headers=headers) as resp:
                        body = await resp.json()
                        if resp.status != 200:
                            raise RuntimeError(f"upload failed: {resp.status} {body}")
                        data_id = body["id"]
                else:
                    async with session.post(url, data=blob, headers=headers) as resp:
                        await resp.read()
                        if resp.status != 200:
                            raise RuntimeError(f"nginx refused: {resp.status}")
                offset += len(blob)


def post_chunks(url: str, path: Path, chunk: int, token: str | None, flow: bool) -> None:
    asyncio.run(_post_chunks(url, path, chunk, token, flow))


def flowbio_upload(base: str, path: Path) -> str:
    from flowbio.v2 import Client, ClientConfig
    from flowbio.v2.auth import UsernamePasswordCredentials

    client = Client(base_url=base, config=ClientConfig(show_progress=False))
    try:
        client.log_in(UsernamePasswordCredentials(username=USER, password=PASSWORD))
        return client.data.upload_data(path).id
    finally:
        client._transport._client.close()


def curl(*args: str) -> None:
    subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", *args], check=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def mibs(size: int, seconds: float) -> float:
    return size / MiB / seconds


def main() -> None:
    compile_sources()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    size = args.size_mib * MiB
    binary = ensure_nginx()
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK, prefix="bench-server-") as tmp_name:
        tmp = Path(tmp_name)
        www = tmp / "www"
        www.mkdir()
        source = www / "big.bin"
        print(f"writing {args.size_mib} MiB of random bytes...", file=sys.stderr)
        make_file(source, size)
        times: dict[str, list[float]] = {
            k: [] for k in ("flowbio_1mb", "ours_8mib", "nginx_8mib_aiohttp", "nginx_curl_whole", "dl_ours", "dl_nginx")
        }
        with nginx(binary, www, tmp / "nginx") as nginx_url:
            body_dir = tmp / "nginx" / "body"
            # Uploads: a fresh server root per run (every run stores the whole file again).
            for run in range(args.runs):
                root = tmp / f"root-{run}"
                with our_server(root) as base:
                    token = login(base)
                    times["ours_8mib"].append(
                        timed(partial(post_chunks, f"{base}/upload", source, 8 * MiB, token, True))
                    )
                shutil.rmtree(root)
                times["nginx_8mib_aiohttp"].append(
                    timed(lambda: post_chunks(f"{nginx_url}/upload", source, 8 * MiB, None, False))
                )
                shutil.rmtree(body_dir)
                body_dir.mkdir()
                times["nginx_curl_whole"].append(
                    timed(
                        lambda: curl(
                            "-X",
                            "POST",
                            "-T",
                            str(source),
                            "-H",
                            "Content-Type: application/octet-stream",
                            "-H",
                            "Expect:",
                            f"{nginx_url}/upload",
                        )
                    )
                )
                shutil.rmtree(body_dir)
                body_dir.mkdir()
                root = tmp / f"root-flowbio-{run}"
                with our_server(root) as base:
                    times["flowbio_1mb"].append(timed(lambda: flowbio_upload(base, source)))
                shutil.rmtree(root)
                print(f"uploads run {run + 1}/{args.runs} done", file=sys.stderr)
            # Downloads: one stored copy served by both, alternating.
            root = tmp / "root-dl"
            with our_server(root) as base:
                token = login(base)
                data_id = flowbio_upload(base, source)
                ours = f"{base}/downloads/{data_id}/big.bin"
                for _ in range(args.runs):
                    times["dl_ours"].append(timed(lambda: curl("-H", f"Authorization: Bearer {token}", ours)))
                    times["dl_nginx"].append(timed(lambda: curl(f"{nginx_url}/big.bin")))
    report(args.size_mib, size, args.runs, times, write=not args.no_write)


def report(size_mib: int, size: int, runs: int, times: dict[str, list[float]], *, write: bool) -> None:
    med = {k: median(v) for k, v in times.items()}
    rows = [
        ("upload, flowbio v2, 1 MB chunks -> our server", "flowbio_1mb"),
        ("upload, aiohttp loop, 8 MiB chunks -> our server", "ours_8mib"),
        ("upload, aiohttp loop, 8 MiB chunks -> nginx (body to file)", "nginx_8mib_aiohttp"),
        ("upload, curl, whole file in one POST -> nginx (body to file)", "nginx_curl_whole"),
        ("download, curl <- our server (/downloads, sendfile)", "dl_ours"),
        ("download, curl <- nginx (static file, sendfile)", "dl_nginx"),
    ]
    lines = [
        f"Loopback, {size_mib} MiB file of random bytes, median of {runs} alternating runs; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}. "
        "Produced by `python -m benchmarks.bench_server`.",
        "",
        "| what | median s | MiB/s | runs (s) |",
        "|---|---:|---:|---|",
    ]
    for label, key in rows:
        lines.append(
            f"| {label} | {med[key]:.2f} | {mibs(size, med[key]):.0f} | {', '.join(f'{t:.2f}' for t in times[key])} |"
        )
    dl_ratio = med["dl_ours"] / med["dl_nginx"]
    up_vs_curl = med["nginx_curl_whole"] / med["ours_8mib"]
    up_vs_same_client = med["nginx_8mib_aiohttp"] / med["ours_8mib"]
    lines += [
        "",
        f"- Serving a download: our time / nginx's time = **{dl_ratio:.2f}x** (goal <= 1.2x).",
        f"- Accepting 8 MiB chunks: our speed = **{up_vs_curl:.0%}** of curl pushing the file into nginx "
        f"(goal >= 50%), and {up_vs_same_client:.0%} of nginx fed by the same aiohttp client loop.",
        "",
    ]
    text = "\n".join(lines)
    print(f"{HEADING}\n\n{text}")
    if write:
        record_section(HEADING.removeprefix("## "), text)


if __name__ == "__main__":
    main()
