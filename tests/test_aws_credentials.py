"""Credentials: resolved and refreshed in worker threads, cached in between."""

from __future__ import annotations

import datetime
import threading
from typing import Any

import botocore.exceptions
import pytest
import trio
from botocore.credentials import Credentials, RefreshableCredentials

from afpipe.aws import CredentialCache, static_credentials
from afpipe.errors import ConfigError, TransientError
from tests.fixtures.moto import FAKE_ACCESS_KEY_ID


def _metadata(key: str, expires_in_s: float) -> dict[str, Any]:
    expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=expires_in_s)
    return {
        "access_key": key,
        "secret_key": "s-" + key,
        "token": "t-" + key,
        "expiry_time": expiry.isoformat(),
    }


async def test_refresh_runs_off_the_event_loop_thread() -> None:
    loop_thread = threading.get_ident()
    refresh_threads: list[int] = []

    def refresh() -> dict[str, Any]:  # botocore calls this; IMDS or STS would block here
        refresh_threads.append(threading.get_ident())
        return _metadata("NEW", 3600)

    # expires in 5 minutes: inside botocore's refresh window
    source = RefreshableCredentials.create_from_metadata(_metadata("OLD", 300), refresh, "test")
    cache = CredentialCache(lambda: source)
    with trio.fail_after(5):
        first = await cache.get()
        second = await cache.get()
    assert first.access_key == second.access_key == "NEW"
    assert first.token == "t-NEW"
    assert len(refresh_threads) == 1  # the fresh credentials are cached
    assert refresh_threads[0] != loop_thread


async def test_resolution_runs_off_the_event_loop_once_for_concurrent_callers() -> None:
    loop_thread = threading.get_ident()
    load_threads: list[int] = []

    def load() -> Credentials:
        load_threads.append(threading.get_ident())
        return Credentials("AKID", "SECRET", method="test")

    cache = CredentialCache(load)
    keys: list[str | None] = []

    async def get() -> None:
        keys.append((await cache.get()).access_key)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(get)
    assert keys == ["AKID"] * 10
    assert len(load_threads) == 1
    assert load_threads[0] != loop_thread


async def test_invalidate_resolves_the_chain_again() -> None:
    loads: list[int] = []

    def load() -> Credentials:
        loads.append(1)
        return Credentials(f"AKID{len(loads)}", "SECRET")

    cache = CredentialCache(load)
    with trio.fail_after(5):
        assert (await cache.get()).access_key == "AKID1"
        cache.invalidate()
        assert (await cache.get()).access_key == "AKID2"


async def test_an_invalidate_during_a_resolve_is_not_lost() -> None:
    """AWS refuses the credentials (invalidate) while a resolve is still running in its
    thread: what that resolve brings back may be the refused credentials, so it is not
    cached or used; the chain is resolved again."""
    entered, release = threading.Event(), threading.Event()
    loads: list[str] = []

    def load() -> Credentials:
        loads.append(f"AKID{len(loads) + 1}")
        if len(loads) == 1:  # the first resolve waits until the test has invalidated
            entered.set()
            release.wait(5)
        return Credentials(loads[-1], "SECRET")

    cache = CredentialCache(load)
    got: list[str | None] = []

    async def get() -> None:
        got.append((await cache.get()).access_key)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(get)
            await trio.to_thread.run_sync(entered.wait)
            cache.invalidate()
            release.set()
        assert (await cache.get()).access_key == "AKID2"  # nothing stale was cached
    assert got == ["AKID2"]
    assert loads == ["AKID1", "AKID2"]


async def test_an_invalidate_during_a_refresh_resolves_the_chain_again() -> None:
    entered, release = threading.Event(), threading.Event()
    refreshes: list[int] = []

    def refresh() -> dict[str, Any]:
        refreshes.append(1)
        entered.set()
        release.wait(5)
        return _metadata("REFRESHED", 3600)

    # expires in 5 minutes: inside botocore's refresh window
    sources: list[Credentials] = [
        RefreshableCredentials.create_from_metadata(_metadata("OLD", 300), refresh, "t"),
        Credentials("FROM-CHAIN", "SECRET"),
    ]
    cache = CredentialCache(lambda: sources.pop(0))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cache.get)
            await trio.to_thread.run_sync(entered.wait)
            cache.invalidate()
            release.set()
        assert (await cache.get()).access_key == "FROM-CHAIN"
    assert refreshes == [1] and sources == []


async def test_no_credentials_is_a_config_error() -> None:
    cache = CredentialCache(lambda: None)
    with trio.fail_after(5), pytest.raises(ConfigError, match="no AWS credentials"):
        await cache.get()


async def test_failed_mandatory_refresh_is_transient() -> None:
    def refresh() -> dict[str, Any]:
        raise botocore.exceptions.CredentialRetrievalError(provider="imds", error_msg="down")

    source = RefreshableCredentials.create_from_metadata(_metadata("OLD", -60), refresh, "test")
    cache = CredentialCache(lambda: source)
    with trio.fail_after(5), pytest.raises(TransientError) as caught:
        await cache.get()
    assert caught.value.code == "CredentialRetrievalError"
    assert isinstance(caught.value.__cause__, botocore.exceptions.CredentialRetrievalError)


async def test_default_chain_reads_the_environment(aws_test_env: dict[str, str]) -> None:
    with trio.fail_after(10):
        credentials = await CredentialCache().get()
    assert credentials.access_key == FAKE_ACCESS_KEY_ID


async def test_static_credentials() -> None:
    with trio.fail_after(5):
        credentials = await CredentialCache(static_credentials("A", "B", "C")).get()
    assert (credentials.access_key, credentials.secret_key, credentials.token) == ("A", "B", "C")
