"""afpipe status, the command: its default URL, its exit codes, and what it says when
an instance or a queue does not answer or answers something else."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from afpipe import cli, config
from afpipe.errors import ConfigError
from afpipe.queue.embedded import EmbeddedQueue
from afpipe.status import default_url, status
from tests.test_status_report import exposition

NO_DOTENV = Path("/nonexistent/.env")


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "http://127.0.0.1:3000/metrics"),
        ({"HOST": "::", "PORT": "8080"}, "http://127.0.0.1:8080/metrics"),
        ({"HOST": "10.1.2.3"}, "http://10.1.2.3:3000/metrics"),
        ({"HOST": "::1"}, "http://[::1]:3000/metrics"),
        ({"AFPIPE_METRICS_PORT": "9300"}, "http://127.0.0.1:9300/metrics"),
        ({"PORT": "0", "AFPIPE_METRICS_PORT": "9300"}, "http://127.0.0.1:9300/metrics"),
    ],
)
def test_the_default_url_is_the_local_instance(environ: dict[str, str], url: str) -> None:
    assert default_url(config.load(environ, NO_DOTENV)) == url


def test_port_0_leaves_the_instance_unknown() -> None:
    with pytest.raises(ConfigError, match="--url"):
        default_url(config.load({"PORT": "0"}, NO_DOTENV))


def test_the_command_without_a_port_to_ask_exits_2(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "0")
    assert cli.main(["status"]) == 2
    assert "PORT=0" in capsys.readouterr().err


def test_the_command_logs_to_stderr_so_its_json_stays_json(
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    refused_url: str,
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("AFPIPE_LOG_THIRD_PARTY", "true")  # httpcore logs each connect
    assert cli.main(["status", "--url", refused_url, "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["errors"][0].startswith(f"{refused_url}: cannot reach it")
    assert '"logger":"httpcore' in err
    assert "no embedded queue at" in err  # none in the working directory: not made there
    assert not (clean_env / "afpipe-data").exists()


@pytest.mark.parametrize(
    "url", ["localhost:3000/metrics", "ftp://host/metrics", "http://", "http://[::1/metrics"]
)
def test_a_url_that_is_not_http_is_a_usage_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["status", "--url", url])
    assert exited.value.code == 2
    assert f"argument --url: {url!r}" in capsys.readouterr().err


async def test_a_url_that_does_not_parse_is_named_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = await embedded_settings(tmp_path, visible=0)
    with trio.fail_after(30):
        assert await status(settings, ["http://[::1/metrics"]) == 1
    assert "http://[::1/metrics  FAILED: not a URL: Invalid port" in capsys.readouterr().out


@asynccontextmanager
async def http_answering(
    status_line: str, body: str, tls: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """A server on a free port answering every request the same; its /metrics URL."""

    async def answer(stream: trio.abc.Stream) -> None:
        async with stream:
            request = b""
            try:
                while b"\r\n\r\n" not in request:
                    request += await stream.receive_some(4096)
            except trio.BrokenResourceError:  # a client that refused our certificate
                return
            head = f"HTTP/1.1 {status_line}\r\nContent-Length: {len(body.encode())}\r\n"
            await stream.send_all(f"{head}Connection: close\r\n\r\n{body}".encode())

    serve: Callable[..., Awaitable[object]] = partial(trio.serve_tcp, answer, 0, host="127.0.0.1")
    if tls is not None:
        serve = partial(trio.serve_ssl_over_tcp, answer, 0, tls, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1] if tls else None
        port = port or listeners[0].socket.getsockname()[1]
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/metrics"
        nursery.cancel_scope.cancel()


@pytest.fixture
def refused_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"


async def embedded_settings(data_dir: Path, visible: int) -> config.Settings:
    queue = EmbeddedQueue(data_dir / "queue.db")
    try:
        if visible:
            await queue.send_batch(["x"] * visible)
    finally:
        await queue.aclose()
    return config.load({"AFPIPE_DATA_DIR": str(data_dir)}, NO_DOTENV)


async def test_the_default_url_trusts_the_local_instance_s_own_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A certificate for a name, not for 127.0.0.1, from an authority nobody trusts.
    certificate = trustme.CA().issue_cert("afpipe.example.com")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server)
    certificate.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    certificate.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    await embedded_settings(tmp_path, visible=0)
    text = exposition(accepted=3, settled={("primary", "loaded"): 3})
    with trio.fail_after(30):
        async with http_answering("200 OK", text, tls=server) as url:
            settings = config.load(
                {
                    "AFPIPE_DATA_DIR": str(tmp_path),
                    "PORT": url.rsplit(":", 1)[1].split("/")[0],
                    "AFPIPE_TLS_CERT_FILE": str(tmp_path / "tls.crt"),
                    "AFPIPE_TLS_KEY_FILE": str(tmp_path / "tls.key"),
                },
                NO_DOTENV,
            )
            assert default_url(settings) == url
            assert await status(settings, []) == 0
            assert await status(settings, [url]) == 1  # an explicit URL is verified as usual
    out = capsys.readouterr().out
    assert "3 loaded, 0 dead-lettered: balanced" in out
    assert "CERTIFICATE_VERIFY_FAILED" in out


async def test_an_unreachable_instance_exits_1_and_the_rest_is_still_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], refused_url: str
) -> None:
    settings = await embedded_settings(tmp_path, visible=2)
    down = refused_url
    with trio.fail_after(30):
        assert await status(settings, [down]) == 1
    out, err = capsys.readouterr()
    assert f"{down}  FAILED: cannot reach it" in out
    assert "  main queue       2 messages visible, 0 in flight" in out
    assert "not known: no instance answered" in out
    assert f"afpipe status: {down}: cannot reach it" in err


async def test_half_a_pair_answering_prints_its_numbers_and_no_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = await embedded_settings(tmp_path, visible=0)
    text = exposition(accepted=7, settled={("primary", "loaded"): 7})
    with trio.fail_after(30):
        async with http_answering("200 OK", text) as up, http_answering("404 Not Found", "") as no:
            assert await status(settings, [up, no], as_json=True) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["completeness"]["accepted"] == 7
    primary = document["completeness"]["targets"]["primary"]
    assert (primary["verdict"], primary["detail"]) == (
        "unknown",
        "not known: 1 of 2 instances did not answer",
    )
    assert document["errors"] == [f"{no}: answered HTTP 404"]


async def test_an_answer_that_is_not_prometheus_text_is_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = await embedded_settings(tmp_path, visible=0)
    with trio.fail_after(30):
        async with http_answering("200 OK", "<html>It works!</html>\n") as url:
            assert await status(settings, [url]) == 1
    assert "FAILED: not Prometheus text" in capsys.readouterr().out


async def test_a_missing_embedded_queue_is_not_read_as_an_empty_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = config.load({"AFPIPE_DATA_DIR": str(tmp_path / "elsewhere")}, NO_DOTENV)
    text = exposition(accepted=7, settled={("primary", "loaded"): 5})
    with trio.fail_after(30):
        async with http_answering("200 OK", text) as url:
            assert await status(settings, [url]) == 1
    out = capsys.readouterr().out
    assert "main queue       FAILED: no embedded queue at" in out
    words = " ".join(out.split())  # as wrapped to the screen's width
    assert "primary 5 loaded, 0 dead-lettered: 2 not settled; the queue could not be read" in words
    assert not (tmp_path / "elsewhere").exists()
