"""Source allow-list and in-process TLS."""

from __future__ import annotations

import re
import signal
import ssl
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from afpipe import config
from afpipe.errors import ConfigError
from afpipe.sources import allowed, client_address, parse_networks
from tests.daemon import afpipe_process, queue_depth

APPSFLYER = parse_networks("185.0.0.0/24, 2001:db8::/32")
PROXY = parse_networks("10.0.0.0/8")


def test_parse_networks_names_the_bad_entry() -> None:
    assert len(parse_networks(" 1.2.3.4 , 10.0.0.0/8;2001:db8::/32 ,")) == 3
    with pytest.raises(ValueError, match=re.escape("'10.0.0.300/8'")):
        parse_networks("1.2.3.0/24,10.0.0.300/8")


def test_bad_settings_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AFPIPE_ALLOWED_CIDRS"):
        config.load({"AFPIPE_ALLOWED_CIDRS": "everyone"}, tmp_path / "none")
    with pytest.raises(ConfigError, match="go together"):
        config.load({"AFPIPE_TLS_CERT_FILE": str(tmp_path)}, tmp_path / "none")
    with pytest.raises(ConfigError, match="no such file"):
        config.load(
            {"AFPIPE_TLS_CERT_FILE": "/nope.pem", "AFPIPE_TLS_KEY_FILE": "/nope.key"},
            tmp_path / "none",
        )


@pytest.mark.parametrize(
    ("peer", "forwarded", "ok"),
    [
        ("185.0.0.7", None, True),
        ("185.0.0.7:443", None, True),
        ("[2001:db8::1]:443", None, True),
        ("::ffff:185.0.0.7", None, True),
        ("192.0.2.1", None, False),
        # An untrusted peer cannot talk its way in with a header.
        ("192.0.2.1", "185.0.0.7", False),
        # Behind a trusted proxy the forwarded client counts, not the proxy.
        ("10.1.2.3", "185.0.0.7", True),
        ("10.1.2.3", "192.0.2.1", False),
        # A client-supplied left part is not believed: the right-most untrusted hop counts.
        ("10.1.2.3", "185.0.0.7, 192.0.2.1", False),
        ("10.1.2.3", "192.0.2.1, 185.0.0.7, 10.9.9.9", True),
        ("10.1.2.3", "garbage", False),
        ("not an address", None, False),
    ],
)
def test_allow_list(peer: str, forwarded: str | None, ok: bool) -> None:
    assert allowed(peer, forwarded, APPSFLYER, PROXY) is ok


def test_no_list_allows_everyone_and_proxies_are_optional() -> None:
    assert allowed("192.0.2.1", None, (), ())
    assert str(client_address("10.1.2.3", "185.0.0.7", ())) == "10.1.2.3"


async def test_daemon_refuses_sources_outside_the_list(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"AFPIPE_ALLOWED_CIDRS": "192.0.2.0/24", "ENABLE_SQS_CONSUMER": "false"}
    with trio.fail_after(60):
        async with (
            afpipe_process(data_dir, env) as daemon,
            httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
        ):
            refused = await client.post("/webhook/appsflyer", json={"event_name": "x"})
            forged = await client.post(
                "/webhook/appsflyer",
                json={"event_name": "x"},
                headers={"X-Forwarded-For": "192.0.2.9"},
            )
            health = await client.get("/health")  # monitoring is not behind the list
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    assert (refused.status_code, forged.status_code, health.status_code) == (403, 403, 200)
    assert queue_depth(data_dir) == 0


async def test_daemon_serves_https_in_process(tmp_path: Path) -> None:
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    authority.configure_trust(context)
    env = {"AFPIPE_TLS_CERT_FILE": str(cert_file), "AFPIPE_TLS_KEY_FILE": str(key_file)}
    with trio.fail_after(60):
        async with afpipe_process(tmp_path / "data", env) as daemon:
            assert daemon.url.startswith("https://")
            async with httpx.AsyncClient(base_url=daemon.url, verify=context, timeout=30) as c:
                response = await c.post("/webhook/appsflyer", json={"event_name": "tls"})
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    assert response.status_code == 200
