"""CORS for browsers calling the API (AFPIPE_CORS_ORIGINS): off by default, never on
the webhook (AppsFlyer's servers are not browsers), only for the origins listed."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from afpipe import config
from afpipe.config.sections import sections
from afpipe.errors import ConfigError
from tests.test_ingest import ScriptedQueue, running

APP = "https://dashboard.example.com"


async def test_cors_is_off_by_default() -> None:
    with trio.fail_after(20):
        async with running(ScriptedQueue()) as (client, _, _):
            answer = await client.get("/api/hello", headers={"Origin": APP})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


async def test_a_listed_origin_may_read_the_api() -> None:
    with trio.fail_after(20):
        async with running(ScriptedQueue(), cors_origins=(APP,)) as (client, _, _):
            hello = await client.get("/api/hello", headers={"Origin": APP})
            health = await client.get("/health", headers={"Origin": APP})
            other = await client.get("/api/hello", headers={"Origin": "https://evil.example"})
    assert hello.headers["access-control-allow-origin"] == APP
    assert "Origin" in hello.headers["vary"]
    assert health.headers["access-control-allow-origin"] == APP
    assert "access-control-allow-origin" not in other.headers  # the browser blocks it
    assert other.status_code == 200  # CORS is the browser's to enforce, not a refusal


async def test_a_preflight_is_answered_for_a_listed_origin() -> None:
    preflight = {"Origin": APP, "Access-Control-Request-Method": "GET"}
    with trio.fail_after(20):
        async with running(ScriptedQueue(), cors_origins=(APP,)) as (client, _, _):
            answer = await client.options("/api/hello", headers=preflight)
    assert answer.status_code in (200, 204)
    assert answer.headers["access-control-allow-origin"] == APP
    assert "GET" in answer.headers["access-control-allow-methods"]


async def test_the_webhook_never_answers_cors() -> None:
    queue = ScriptedQueue()
    with trio.fail_after(20):
        async with running(queue, cors_origins=("*",)) as (client, _, _):
            posted = await client.post(
                "/webhook/appsflyer", json={"event_name": "install"}, headers={"Origin": APP}
            )
            hello = await client.get("/api/hello", headers={"Origin": APP})
    assert posted.status_code == 200
    assert "access-control-allow-origin" not in posted.headers
    assert hello.headers["access-control-allow-origin"] == "*"


def test_the_setting_is_parsed_once_and_checked(tmp_path: Path) -> None:
    none = tmp_path / "none"
    assert sections(config.load({}, none)).cors_origins == ()
    listed = config.load({"AFPIPE_CORS_ORIGINS": f"{APP}, http://localhost:5173"}, none)
    assert sections(listed).cors_origins == (APP, "http://localhost:5173")
    ipv6 = config.load({"AFPIPE_CORS_ORIGINS": "http://[::1]:8080"}, none)
    assert sections(ipv6).cors_origins == ("http://[::1]:8080",)
    assert sections(config.load({"AFPIPE_CORS_ORIGINS": "*"}, none)).cors_origins == ("*",)
    for bad in ("dashboard.example.com", "https://a.example/path", "*, https://a.example"):
        with pytest.raises(ConfigError, match=r"^AFPIPE_CORS_ORIGINS="):
            config.load({"AFPIPE_CORS_ORIGINS": bad}, none)
