"""The README stays true: its test command is what CI runs, and it lists every setting."""

from __future__ import annotations

import re
from pathlib import Path

from afpipe import config

ROOT = Path(__file__).resolve().parent.parent


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
