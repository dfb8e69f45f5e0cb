"""``afpipe status``: how fresh the warehouse is, whether anything was lost, what it costs.

The dashboard's numbers on one screen: each instance's ``/metrics`` and the queues,
read live through the backends so the answer is current even with every instance
down. This module does the I/O; ``report`` draws the answer, ``text`` prints it.
"""

from __future__ import annotations

import sqlite3
import ssl
import sys
import time
from collections.abc import Sequence

import httpx
import trio

from afpipe import backends
from afpipe.aws import AwsClient
from afpipe.config import Settings
from afpipe.config.sections import Sections, sections
from afpipe.errors import AfpipeError, ConfigError
from afpipe.queue.base import Queue, QueueSize
from afpipe.status.report import Report, Scrape, build, parse
from afpipe.status.text import render, to_json

FETCH_TIMEOUT_S = 5.0
QUEUE_TIMEOUT_S = 15.0  # SQS calls retry inside; a queue that never answers is a failure


async def status(settings: Settings, urls: Sequence[str], *, as_json: bool = False) -> int:
    """Print the report; 0 when everything answered, 1 when something did not (what
    is known is printed all the same, and each failure named on stderr)."""
    verify = True if urls else own_certificate(settings)
    report = await gather(settings, urls or [default_url(settings)], verify)
    print(to_json(report) if as_json else render(report))
    for error in report.errors:
        print(f"afpipe status: {error}", file=sys.stderr)
    return 1 if report.errors else 0


def default_url(settings: Settings) -> str:
    """The local instance's /metrics: on AFPIPE_METRICS_PORT (plain HTTP) when set,
    else on PORT, with TLS when it serves TLS; at HOST."""
    port = settings.metrics_port or settings.port
    if port == 0:
        raise ConfigError("PORT=0: the instance's port is not known; pass --url")
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    scheme = "https" if settings.tls_cert_file and not settings.metrics_port else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/metrics"


def own_certificate(settings: Settings) -> ssl.SSLContext | bool:
    """Trust the local instance's own certificate, whatever its name: the default URL
    is an address (127.0.0.1) the certificate need not name."""
    if not settings.tls_cert_file or settings.metrics_port:
        return True
    context = ssl.create_default_context(cafile=settings.tls_cert_file)
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the anchor
    return context


async def gather(
    settings: Settings, urls: Sequence[str], verify: ssl.SSLContext | bool = True
) -> Report:
    parts = sections(settings)
    scrapes = await _scrape_all(urls, verify)
    # The queues after the metrics: a message the metrics saw visible that is loaded
    # and deleted before the queue is read would take a whole load to slip through.
    queues = await _read_queues(parts)
    seen = {labels.get("target") for s in scrapes for _, labels, _ in s.samples}
    secondary = parts.secondary is not None or "secondary" in seen
    return build(scrapes, queues, ["primary", "secondary"][: 1 + secondary], time.time())


async def _scrape_all(urls: Sequence[str], verify: ssl.SSLContext | bool) -> list[Scrape]:
    scrapes: dict[int, Scrape] = {}
    client = httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, verify=verify, trust_env=False)
    async with client, trio.open_nursery() as nursery:
        for index, url in enumerate(urls):
            nursery.start_soon(_scrape, client, url, scrapes, index)
    return [scrapes[index] for index in range(len(urls))]


async def _scrape(client: httpx.AsyncClient, url: str, into: dict[int, Scrape], index: int) -> None:
    try:
        response = await client.get(url)
        response.raise_for_status()
        into[index] = parse(url, response.text)
    except httpx.HTTPStatusError as exc:
        into[index] = Scrape(url, error=f"answered HTTP {exc.response.status_code}")
    except httpx.HTTPError as exc:
        into[index] = Scrape(url, error=f"cannot reach it: {_reason(exc)}")
    except httpx.InvalidURL as exc:  # not an HTTPError
        into[index] = Scrape(url, error=f"not a URL: {exc}")
    except ValueError as exc:
        into[index] = Scrape(url, error=str(exc))


def _reason(exc: BaseException) -> str:
    """The first message along the causes: httpx's ConnectError over a refused
    certificate says nothing, the SSL error under it does."""
    cause = exc.__cause__ or exc.__context__
    while not str(exc) and cause is not None:
        exc, cause = cause, cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


async def _read_queues(parts: Sections) -> dict[str, QueueSize | str]:
    sizes: dict[str, QueueSize | str] = {}
    async with backends.open_aws(parts) as aws, trio.open_nursery() as nursery:
        nursery.start_soon(_read_main, parts, aws, sizes)
        if parts.secondary is not None and parts.queue.secondary_retry_url:
            retry = backends.sqs_queue(parts.queue, aws, parts.queue.secondary_retry_url)
            nursery.start_soon(_read, "secondary_retry", retry, sizes)
    return sizes


async def _read_main(
    parts: Sections, aws: AwsClient | None, into: dict[str, QueueSize | str]
) -> None:
    section = parts.queue
    if not section.uses_sqs and not section.embedded_path.exists():
        # Opening it would make an empty one, and a balance against nothing.
        into["main"] = f"no embedded queue at {section.embedded_path} (see AFPIPE_DATA_DIR)"
        return
    try:
        async with backends.open_queue(section, aws) as queue:
            await _read("main", queue, into)
    except (sqlite3.Error, OSError) as exc:
        into["main"] = f"{section.embedded_path}: {exc}"


async def _read(name: str, queue: Queue, into: dict[str, QueueSize | str]) -> None:
    try:
        with trio.fail_after(QUEUE_TIMEOUT_S):
            into[name] = await queue.size()
    except trio.TooSlowError:
        into[name] = f"no answer within {QUEUE_TIMEOUT_S:.0f} s"
    except AfpipeError as exc:  # AccessDenied too: the rest of the screen still shows
        into[name] = str(exc) or type(exc).__name__
