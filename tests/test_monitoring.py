"""The operator's monitoring kit (monitoring/) stays true to afpipe and to Prometheus.

- The rules pass ``promtool check rules`` and their unit tests (``promtool test rules``),
  which can fail; the example configuration passes ``promtool check config``.
- Every alert has a severity, a summary, a description and a runbook, and a unit test
  where it fires and one where it does not.
- Every metric that the rules and the dashboard name is one afpipe registers (with the
  suffixes its type exposes), and every recorded name they use is recorded.
- The dashboard imports anywhere: its data source is a variable.
- A real Prometheus, on the example configuration, scraping a real ``afpipe serve``
  that is made to refuse, dead-letter, hand off, fail loads and restart, loads the rules
  healthy and answers every dashboard query with data.

The tools are Prometheus's own (tests/prometheus_tools.py): on PATH, cached, or
Debian's package fetched once.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import afpipe
from afpipe.sqlite import BUSY_TIMEOUT_MS
from afpipe.warehouse.embedded import EmbeddedWarehouse
from tests import prometheus_tools
from tests.daemon import Daemon, afpipe_process
from tests.load import purchase
from tests.prometheus_tools import PrometheusTools, free_port, query, running_prometheus

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "monitoring" / "prometheus"
RULES = PROMETHEUS_DIR / "afpipe.rules.yml"
RULES_TESTS = PROMETHEUS_DIR / "afpipe.rules.test.yml"
EXAMPLE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "afpipe.json"
DATA_SOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
ANNOTATIONS = {"summary", "description", "runbook"}
SEVERITIES = {"critical", "warning"}


@pytest.fixture(scope="session")
def tools() -> PrometheusTools:
    try:
        return prometheus_tools.locate_or_fetch()
    except prometheus_tools.NoWayToFetch as exc:
        pytest.skip(str(exc))
    except prometheus_tools.FetchFailed as exc:
        pytest.fail(f"fetching Debian's prometheus package failed: {exc}")


def run(tool: Path, *args: str, cwd: Path = PROMETHEUS_DIR) -> tuple[int, str]:
    result = subprocess.run(
        [str(tool), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    return result.returncode, result.stdout + result.stderr


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules(path: Path = RULES) -> list[dict[str, Any]]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def alerts() -> dict[str, list[dict[str, Any]]]:
    """Alert name -> its rules (one name may have a rule per severity)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for rule in rules():
        if "alert" in rule:
            found.setdefault(rule["alert"], []).append(rule)
    return found


# ---------------------------------------------------------------- promtool


def test_promtool_checks_the_rules(tools: PrometheusTools) -> None:
    code, output = run(tools.promtool, "check", "rules", RULES.name)
    assert code == 0, output


def test_promtool_checks_the_example_configuration(tools: PrometheusTools) -> None:
    code, output = run(tools.promtool, "check", "config", EXAMPLE_CONFIG.name)
    assert code == 0, output
    assert RULES.name in load_yaml(EXAMPLE_CONFIG)["rule_files"]


def test_the_rules_pass_their_unit_tests(tools: PrometheusTools) -> None:
    code, output = run(tools.promtool, "test", "rules", RULES_TESTS.name)
    assert code == 0, output


def test_the_unit_tests_catch_a_changed_threshold(tools: PrometheusTools, tmp_path: Path) -> None:
    text = RULES.read_text()
    assert "afpipe:events_unaccounted:increase1h > 100\n" in text
    (tmp_path / RULES.name).write_text(
        text.replace(
            "afpipe:events_unaccounted:increase1h > 100\n",
            "afpipe:events_unaccounted:increase1h > 1000\n",
        )
    )
    cases = load_yaml(RULES_TESTS)
    cases["tests"] = [  # only this alert's cases: promtool takes a while over all of them
        case
        for case in cases["tests"]
        if any(c["alertname"] == "AfpipeEventsUnaccounted" for c in case.get("alert_rule_test", []))
    ]
    assert cases["tests"]
    (tmp_path / RULES_TESTS.name).write_text(yaml.safe_dump(cases))
    code, output = run(tools.promtool, "test", "rules", RULES_TESTS.name, cwd=tmp_path)
    assert code != 0
    assert "AfpipeEventsUnaccounted" in output


def test_every_alert_says_how_bad_what_and_what_to_do() -> None:
    problems = []
    for name, found in alerts().items():
        for rule in found:
            if rule.get("labels", {}).get("severity") not in SEVERITIES:
                problems.append(f"{name}: severity {rule.get('labels', {}).get('severity')!r}")
            annotations = rule.get("annotations", {})
            missing = ANNOTATIONS - {key for key, text in annotations.items() if text.strip()}
            if missing:
                problems.append(f"{name}: no {sorted(missing)}")
            runbook = annotations.get("runbook", "")
            if not all(part in runbook for part in ("What it means", "First checks", "Fix")):
                problems.append(f"{name}: the runbook lacks its meaning, checks or fix")
            if "Threshold" not in annotations.get("description", ""):
                problems.append(f"{name}: the description does not state its threshold")
    assert problems == []


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULES_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert sorted(set(alerts()) - firing) == []
    assert sorted(set(alerts()) - quiet) == []


def test_every_recording_rule_is_unit_tested() -> None:
    tested = {
        check["expr"]
        for case in load_yaml(RULES_TESTS)["tests"]
        for check in case.get("promql_expr_test", [])
    }
    records = {rule["record"] for rule in rules() if "record" in rule}
    assert sorted(records - tested) == []


def test_the_tools_come_from_path_first(tmp_path: Path) -> None:
    for name in ("promtool", "prometheus"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    assert prometheus_tools.on_path(str(tmp_path)) == PrometheusTools(
        tmp_path / "promtool", tmp_path / "prometheus"
    )
    (tmp_path / "prometheus").unlink()
    assert prometheus_tools.on_path(str(tmp_path)) is None  # both, or neither


def test_the_cache_gives_its_newest_whole_entry(tmp_path: Path) -> None:
    def entry(name: str, *tools: str) -> Path:
        (tmp_path / name / "usr/bin").mkdir(parents=True)
        for tool in tools:
            (tmp_path / name / "usr/bin" / tool).write_text("#!/bin/sh\n")
            (tmp_path / name / "usr/bin" / tool).chmod(0o755)
        return tmp_path / name / "usr/bin"

    assert prometheus_tools.in_cache(tmp_path) is None
    entry("prometheus-2.9.1+ds-1", "promtool", "prometheus")
    newest = entry("prometheus-2.42.0+ds-5", "promtool", "prometheus")
    entry("prometheus-2.53.0+ds-1", "promtool")  # not whole: passed over
    entry(".fetch-abc", "promtool", "prometheus")  # a fetch under way
    found = prometheus_tools.in_cache(tmp_path)
    assert found == PrometheusTools(newest / "promtool", newest / "prometheus")


def test_without_apt_the_tools_cannot_be_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, no dpkg-deb
    with pytest.raises(prometheus_tools.NoWayToFetch):
        prometheus_tools.fetch(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------- names


def registered_samples() -> set[str]:
    """Every sample name afpipe's metrics expose, by type as prometheus_client does,
    with every afpipe module imported (each registers its metrics at import)."""
    for module in pkgutil.walk_packages(afpipe.__path__, "afpipe."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def dashboard_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, query) of every target."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def variable_queries(dashboard: Mapping[str, Any]) -> list[str]:
    return [
        variable["query"]["query"]
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    ]


def unknown_names(expressions: list[str], samples: set[str], recorded: set[str]) -> list[str]:
    """The afpipe_* and process_* names no metric exposes, and the afpipe:* names no
    recording rule records."""
    problems = []
    for expression in expressions:
        for name in re.findall(r"\b(?:afpipe|process)_[a-zA-Z0-9_]+", expression):
            if name not in samples:
                problems.append(f"no metric exposes {name} (in {expression!r})")
        for name in re.findall(r"\bafpipe:[a-zA-Z0-9_:]+", expression):
            if name not in recorded:
                problems.append(f"no rule records {name} (in {expression!r})")
    return problems


def named_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        *(rule["expr"] for rule in rules()),
        *(expr for _, expr in dashboard_queries(dashboard)),
        *variable_queries(dashboard),
    ]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def test_every_name_in_the_rules_and_the_dashboard_exists() -> None:
    assert unknown_names(named_expressions(), registered_samples(), recorded_names()) == []


def test_the_name_check_reports_made_up_names() -> None:
    made_up = [
        "rate(afpipe_events_acepted_total[5m])",  # a typo
        "rate(afpipe_events_accepted[5m])",  # a counter without _total
        "histogram_quantile(0.9, rate(afpipe_load_seconds_total[5m]))",  # not a counter
        "afpipe:nothing_records:this",
    ]
    problems = unknown_names(made_up, registered_samples(), recorded_names())
    assert len(problems) == 4, problems


# ---------------------------------------------------------------- the dashboard


def test_the_dashboard_imports_anywhere() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["instance"]["includeAll"] and variables["instance"]["allValue"] == ".*"
    panels = [p for p in dashboard_panels(dashboard) if p["type"] != "row"]
    assert len({p["id"] for p in dashboard_panels(dashboard)}) == len(
        list(dashboard_panels(dashboard))
    )
    assert [p["title"] for p in panels if p.get("datasource") != DATA_SOURCE] == []
    assert [p["title"] for p in panels if not p.get("targets")] == []
    unsourced = [
        p["title"] for p in panels for t in p["targets"] if t.get("datasource") != DATA_SOURCE
    ]
    assert unsourced == []


def test_every_dashboard_selector_is_of_the_chosen_job() -> None:
    """So a query answers for the deployment chosen, and nothing without afpipe."""
    dashboard = json.loads(DASHBOARD.read_text())
    selectors = [
        (title, selector)
        for title, expr in dashboard_queries(dashboard)
        for selector in re.findall(r"\b(?:afpipe|process)[_:][a-zA-Z0-9_:]+(?:\{[^}]*\})?", expr)
    ]
    assert selectors
    assert [(t, s) for t, s in selectors if 'job="$job"' not in s] == []


# ---------------------------------------------------------------- a real Prometheus

RATE_INTERVAL = "1m"
DATA_DEADLINE_S = 60
# Panels that an embedded run cannot fill, and why.
NO_DATA_IN_AN_EMBEDDED_RUN = {
    "Loads through S3 staging /s": (
        "S3 staging and COPY exist for Redshift only (AFPIPE_S3_STAGING_URI); the embedded"
        " warehouse always loads inline"
    ),
}
# Panels whose every series may rightly stay 0 through the scenario, and why.
ZERO_IS_RIGHT = {
    "Held by afpipe": "the channel and the producer's pending events empty within a scrape",
    "Secondary hand-offs and drops (events/s)": "with a retry queue nothing is dropped",
    "Secondary backlog": "the retry consumer loads a hand-off within a scrape",
}
WEBHOOK = "/webhook/appsflyer"
TABLE = "appsflyer_events"
POISON_TRIGGER = (
    f"CREATE TRIGGER afpipe_test_poison BEFORE INSERT ON {TABLE}"
    " WHEN NEW.event_name = 'poison' BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
)
# An integer overflow fails every insert as an OperationalError: to afpipe, a warehouse
# that is down (transient), not rows it refuses. It fails as the insert runs, not as it is
# prepared (a missing function would), so the connection sees the trigger dropped.
DOWN_TRIGGER = (
    f"CREATE TRIGGER afpipe_test_down BEFORE INSERT ON {TABLE}"
    " BEGIN SELECT abs(-9223372036854775807 - 1); END"
)
UP = "DROP TRIGGER afpipe_test_down"


def concrete(expr: str, job: str = "afpipe") -> str:
    """A dashboard query as Grafana sends it, every instance chosen."""
    text = expr.replace("$__rate_interval", RATE_INTERVAL)
    text = text.replace("$job", job).replace("$instance", ".*")
    assert "$" not in text, text
    return text


def as_query(variable_query: str) -> str:
    """Grafana's ``label_values(selector, label)`` as the PromQL that needs the same data."""
    found = re.fullmatch(r"label_values\((.+), *([a-z_]+)\)", variable_query)
    assert found is not None, variable_query
    return f"count by ({found[2]}) ({found[1]})"


def prometheus_config(target: str) -> dict[str, Any]:
    """The example configuration, quicker, scraping ``target``, with absolute rule paths."""
    config: dict[str, Any] = load_yaml(EXAMPLE_CONFIG)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "afpipe"]
    job["static_configs"] = [{"targets": [target]}]
    return config


def execute(path: Path, sql: str) -> None:
    with closing(sqlite3.connect(path, timeout=10)) as conn:
        conn.execute(sql)
        conn.commit()


async def prepare_warehouses(data_dir: Path) -> None:
    """Both embedded warehouses with afpipe's table; the primary refuses poison events,
    the secondary is down."""
    primary, secondary = data_dir / "warehouse.db", data_dir / "warehouse-secondary.db"
    for path in (primary, secondary):
        warehouse = EmbeddedWarehouse(path, TABLE)
        await warehouse.ensure_table()
        await warehouse.aclose()
    execute(primary, POISON_TRIGGER)
    execute(secondary, DOWN_TRIGGER)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` with ``labels`` in an exposition."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def until_metrics(
    client: httpx.AsyncClient, ready: Callable[[str], bool], timeout_s: float = 20
) -> None:
    """Poll afpipe's /metrics until ``ready(exposition)``."""
    with trio.fail_after(timeout_s):
        while not ready((await client.get("/metrics")).text):
            await trio.sleep(0.1)


async def post_events(client: httpx.AsyncClient, first: int, count: int) -> None:
    async def post(n: int) -> None:
        response = await client.post(WEBHOOK, json=purchase(n))
        assert response.status_code == 200, response.text

    async with trio.open_nursery() as nursery:
        for n in range(first, first + count):
            nursery.start_soon(post, n)


async def post_refusals(client: httpx.AsyncClient) -> None:
    """A poison event (accepted, then refused by the primary) and invalid JSON (400)."""
    poison = await client.post(WEBHOOK, json={**purchase(10_000), "event_name": "poison"})
    assert poison.status_code == 200, poison.text
    invalid = await client.post(WEBHOOK, content=b"{not json")
    assert invalid.status_code == 400, invalid.text


async def refused_while_the_queue_is_locked(client: httpx.AsyncClient, queue_db: Path) -> None:
    """Hold the embedded queue's write lock until afpipe gave up on a queue call (its
    busy timeout) and answered a request 503 (AFPIPE_ENQUEUE_TIMEOUT_S)."""
    locked, release = trio.Event(), trio.Event()

    def hold() -> None:
        with closing(sqlite3.connect(queue_db, timeout=10, isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            trio.from_thread.run_sync(locked.set)
            trio.from_thread.run(release.wait)
            conn.execute("ROLLBACK")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, hold)
        await locked.wait()
        try:
            refused = await client.post(WEBHOOK, json=purchase(20_000))
            assert refused.status_code == 503, refused.text
            await until_metrics(
                client,
                lambda text: metric(text, "afpipe_queue_errors_total") > 0,
                timeout_s=BUSY_TIMEOUT_MS / 1000 + 10,
            )
        finally:
            release.set()


async def first_process(daemon: Daemon, data_dir: Path, prometheus: httpx.AsyncClient) -> None:
    """Loads (the secondary handed off), a dead letter, refusals, queue errors, then a
    primary that fails: killed while it holds messages."""
    primary, secondary = data_dir / "warehouse.db", data_dir / "warehouse-secondary.db"
    async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
        await post_events(client, 0, 20)
        await post_refusals(client)
        await until_metrics(
            client,
            lambda text: (
                metric(text, "afpipe_dead_lettered_total", kind="event") >= 1
                and metric(text, "afpipe_secondary_handed_off_events_total") >= 1
                and metric(text, "afpipe_load_failures_total", target="secondary") >= 1
            ),
        )
        execute(secondary, UP)
        await refused_while_the_queue_is_locked(client, data_dir / "queue.db")
        execute(primary, DOWN_TRIGGER)
        await post_events(client, 100, 5)
        await until_metrics(
            client,
            lambda text: (
                metric(text, "afpipe_load_failures_total", target="primary") >= 1
                and metric(text, "afpipe_events_held", queue="main") >= 1
            ),
        )
    # Two scrapes since the last counter to move moved: the earlier ones have the
    # samples a rate needs when the process is gone. (Every counter is exported at 0
    # from the start, so "the series exists" says nothing about what it counted.)
    failures = 'afpipe_load_failures_total{target="primary"}'
    await until_answered(
        prometheus, f"count_over_time({failures}[3s]) >= 2 and min_over_time({failures}[3s]) >= 1"
    )
    daemon.signal(signal.SIGKILL)
    await daemon.wait()


async def until_answered(prometheus: httpx.AsyncClient, promql: str) -> None:
    with trio.fail_after(20):
        while not await query(prometheus, promql):
            await trio.sleep(0.2)


async def second_process(daemon: Daemon, data_dir: Path) -> None:
    """Starts on what the first held: samples it, receives it again once its visibility
    timeout ends, and loads it when the primary is back."""
    async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
        await until_metrics(
            client,
            lambda text: (
                metric(text, "afpipe_queue_oldest_message_age_seconds", queue="main") > 0
                and metric(text, "afpipe_messages_received_again_total", queue="main") >= 1
            ),
        )
        execute(data_dir / "warehouse.db", UP)
        await post_events(client, 200, 10)
        await post_refusals(client)


async def answered(
    prometheus: httpx.AsyncClient, queries: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    return [(title, promql) for title, promql in queries if await query(prometheus, promql)]


async def unanswered(
    prometheus: httpx.AsyncClient, queries: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    return [(title, promql) for title, promql in queries if not await query(prometheus, promql)]


async def rule_problems(prometheus: httpx.AsyncClient) -> list[str]:
    """Rules not loaded, or whose last evaluation was not ok (or has not happened)."""
    body = (await prometheus.get("/api/v1/rules")).json()
    found = [rule for group in body["data"]["groups"] for rule in group["rules"]]
    problems = [
        f"{rule['name']}: {rule['health']} {rule.get('lastError', '')}"
        for rule in found
        if rule["health"] != "ok"
    ]
    if len(found) != len(rules()):
        problems.append(f"{len(found)} rules loaded of the {len(rules())} in {RULES.name}")
    return problems


def daemon_env(port: int, retry_queue_url: str, sqs_endpoint: str) -> dict[str, str]:
    """Quick to load and to notice; a secondary with an SQS retry queue (moto)."""
    return {
        "PORT": str(port),
        "AFPIPE_BATCH_LINGER_MS": "100",
        "AFPIPE_PRODUCER_LINGER_MS": "5",
        "SQS_POLLING_INTERVAL": "100",
        "AFPIPE_RECEIVE_PAUSE_MS": "50",
        "AFPIPE_RECEIVE_WAIT_S": "1",
        "AFPIPE_ENQUEUE_TIMEOUT_S": "1",
        "AFPIPE_VISIBILITY_TIMEOUT_S": "2",
        "AFPIPE_ACCESS_LOG": "0",
        "SECONDARY_REDSHIFT_ENABLED": "true",
        "AFPIPE_SECONDARY_TIMEOUT_S": "2",
        "AFPIPE_SECONDARY_RETRY_QUEUE_URL": retry_queue_url,
        "AWS_ENDPOINT_URL_SQS": sqs_endpoint,
    }


@pytest.mark.slow
async def test_a_real_prometheus_answers_every_dashboard_query(
    tools: PrometheusTools,
    tmp_path: Path,
    moto_endpoint: str,
    make_sqs_queue: Callable[..., str],
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    templates = dashboard_queries(dashboard)
    templates += [("variable", as_query(q)) for q in variable_queries(dashboard)]
    expected = [(title, concrete(template)) for title, template in templates]
    filled = [(t, q) for t, q in expected if t not in NO_DATA_IN_AN_EMBEDDED_RUN]
    assert set(NO_DATA_IN_AN_EMBEDDED_RUN) <= {title for title, _ in expected}
    # The dead letters made must fire their alert, on real data.
    filled.append(("alert", 'ALERTS{alertname="AfpipeDeadLetters",alertstate="firing"}'))
    data_dir = tmp_path / "data"
    await prepare_warehouses(data_dir)
    port = free_port()  # fixed: the same instance label after the restart
    env = daemon_env(port, make_sqs_queue("afpipe-retry"), moto_endpoint)
    config = prometheus_config(f"127.0.0.1:{port}")
    with trio.fail_after(DATA_DEADLINE_S + 60):
        async with (
            running_prometheus(tools, tmp_path / "prometheus", config) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as prometheus,
        ):
            async with afpipe_process(data_dir, env) as first:
                await until_answered(prometheus, 'sum_over_time(up{job="afpipe"}[1m]) >= 2')
                await first_process(first, data_dir, prometheus)
            async with afpipe_process(data_dir, env) as second:
                await second_process(second, data_dir)
                missing = await unanswered(prometheus, filled)
                with trio.move_on_after(DATA_DEADLINE_S):
                    while missing:
                        await trio.sleep(0.5)
                        missing = await unanswered(prometheus, missing)
                assert missing == [], "\n".join(f"{t}: {q}" for t, q in missing)
                # Data, and not only the zeros every counter starts at: each was moved.
                moved = [(t, f"max_over_time(({q})[5m:1s]) != 0") for t, q in filled]
                unmoved = [(t, q) for t, q in moved if t not in ZERO_IS_RIGHT]
                with trio.move_on_after(DATA_DEADLINE_S):
                    while unmoved := await unanswered(prometheus, unmoved):
                        await trio.sleep(0.5)
                assert unmoved == [], "\n".join(f"{t}: {q}" for t, q in unmoved)
                assert await rule_problems(prometheus) == []
                # Every panel answers for afpipe only: with its job unknown, nothing
                # (and the panels left without data are valid queries too).
                panels = dashboard_queries(dashboard)
                elsewhere = [(t, concrete(e, job="no-such-job")) for t, e in panels]
                assert await answered(prometheus, elsewhere) == []
                always = (
                    'sum(rate(afpipe_events_accepted_total{job="no-such-job"}[1m])) or vector(0)'
                )
                assert await answered(prometheus, [("made up", always)]) != []
