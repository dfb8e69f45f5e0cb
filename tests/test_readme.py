"""The README stays true: its test command is what CI runs, and it lists every setting
and every alert."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from afpipe import config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    block = readme.split("## Test it", 1)[1]
    command = re.search(r"```sh\n(.+?)\n```", block, re.S)
    assert command is not None
    assert command.group(1).strip() in ci.splitlines()


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in config.setting_names() if f"`{name}`" not in readme]
    assert missing == []


def readme_settings_table(readme: str) -> dict[str, tuple[str, str]]:
    """The Settings table: variable -> (default, meaning), as written."""
    rows = re.finditer(r"^\| `([A-Z][A-Z0-9_]*)` \| (.*?) \| (.*) \|$", readme, re.M)
    return {row[1]: (row[2], row[3]) for row in rows}


def expected_row(name: str) -> tuple[str, str]:
    default = config.defaults()[name]
    return ("" if default == "" else f"`{default}`", config.HELP[name])


def test_readme_table_shows_each_settings_declared_default_and_help() -> None:
    table = readme_settings_table((ROOT / "README.md").read_text())
    assert list(table) == config.setting_names()  # every setting, in declaration order
    wrong = {name: row for name, row in table.items() if row != expected_row(name)}
    assert wrong == {}


def test_the_table_check_catches_drift() -> None:
    readme = (ROOT / "README.md").read_text()
    drifted = readme.replace("| `AFPIPE_WRITERS` | `4` |", "| `AFPIPE_WRITERS` | `2` |")
    table = readme_settings_table(drifted)
    assert table["AFPIPE_WRITERS"] != expected_row("AFPIPE_WRITERS")


def readme_layout(readme: str) -> dict[str, str]:
    """The Layout section's tree: module path -> its line's description."""
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    modules: dict[str, str] = {}
    folders: list[str] = []
    for line in block.strip("\n").splitlines()[1:]:  # under "afpipe/"
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name, _, description = line.strip().partition(" ")
        folders = folders[: depth - 1]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            modules["/".join(["afpipe", *folders, name])] = description.strip()
    return modules


def test_readme_layout_lists_every_module_once_with_a_line_each() -> None:
    layout = readme_layout((ROOT / "README.md").read_text())
    package = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "afpipe").rglob("*.py"))
    assert sorted(layout) == package
    assert all(layout.values()), [m for m, d in layout.items() if not d]


def readme_alerts(text: str) -> dict[str, str]:
    """Alert -> severity, from the README's table under "Watching afpipe"."""
    rows = re.findall(r"^\| `(Afpipe\w+)` \| (\w+) \|", text, re.MULTILINE)
    return dict(rows)


def rules_alerts() -> dict[str, str]:
    rules = yaml.safe_load((ROOT / "monitoring/prometheus/afpipe.rules.yml").read_text())
    return {
        rule["alert"]: rule["labels"]["severity"]
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_readme_lists_every_alert_with_its_severity() -> None:
    alerts = rules_alerts()
    assert len(alerts) >= 10
    assert readme_alerts(README.read_text()) == alerts
    drifted = README.read_text().replace(
        "| `AfpipeLagHigh` | warning |", "| `AfpipeLagHigh` | info |"
    )
    assert readme_alerts(drifted) != alerts
