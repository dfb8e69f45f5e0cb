"""afpipe.config and the CLI's handling of it: names, defaults, .env, errors, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from afpipe import cli, config
from afpipe.config import environment
from afpipe.errors import ConfigError

NO_DOTENV = Path("/nonexistent/.env")


def test_defaults() -> None:
    settings = config.load({}, NO_DOTENV)
    assert settings == config.Settings()
    assert settings.port == 3000
    assert settings.data_dir == "./afpipe-data"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.queue_max_message_bytes == 256 * 1024
    assert settings.drain_timeout_s == 10.0
    assert settings.webhook_token_header == "Authorization"
    assert not settings.uses_sqs
    assert not settings.uses_redshift


def test_every_setting_has_help() -> None:
    assert set(config.HELP) == set(config.setting_names())


def test_values_are_decoded() -> None:
    settings = config.load(
        {
            "PORT": " 8080 ",
            "ENABLE_SQS_CONSUMER": "no",
            "SECONDARY_REDSHIFT_ENABLED": "YES",
            "AFPIPE_DRAIN_TIMEOUT_S": "2.5",
            "AFPIPE_CHANNEL_MESSAGES": "0",
            "REDSHIFT_TABLE_NAME": "analytics.events",
            "SQS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/q",
            "REDSHIFT_WORKGROUP_NAME": "wg",
            "UNRELATED": "ignored",
        },
        NO_DOTENV,
    )
    assert settings.port == 8080
    assert settings.enable_sqs_consumer is False
    assert settings.secondary_redshift_enabled is True
    assert settings.drain_timeout_s == 2.5
    assert settings.channel_messages == 0
    assert settings.redshift_table_name == "analytics.events"
    assert settings.uses_sqs
    assert settings.uses_redshift


def test_yes_no_words_only_apply_to_booleans() -> None:
    # a token (or a name) that happens to read "on"/"no" must stay as written
    settings = config.load(
        {"AFPIPE_WEBHOOK_TOKEN": "on", "REDSHIFT_DB_USER": "no", "ENABLE_SQS_CONSUMER": "off"},
        NO_DOTENV,
    )
    assert settings.webhook_token == "on"
    assert settings.redshift_db_user == "no"
    assert settings.enable_sqs_consumer is False


def test_empty_value_means_default() -> None:
    assert config.load({"PORT": "", "HOST": "   "}, NO_DOTENV).port == 3000
    assert config.load({"HOST": "   "}, NO_DOTENV).host == "0.0.0.0"


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("PORT", "abc", "expected int"),
        ("PORT", "70000", "<= 65535"),
        ("PORT", "-1", ">= 0"),
        ("AFPIPE_POLLERS", "-1", ">= 1"),
        ("AFPIPE_WRITERS", "0", ">= 1"),
        ("AFPIPE_CHANNEL_MESSAGES", "-3", ">= 0"),
        ("ENABLE_SQS_CONSUMER", "maybe", "expected bool"),
        ("LOG_LEVEL", "loud", "invalid enum value"),
        ("AFPIPE_DRAIN_TIMEOUT_S", "0", "> 0"),
        ("AFPIPE_ENQUEUE_TIMEOUT_S", "nan", "> 0"),
        ("AFPIPE_QUEUE_MAX_MESSAGE_BYTES", "2000000", "<= 1048576"),
        ("AFPIPE_QUEUE_MAX_MESSAGE_BYTES", "8192", ">= 16384"),
        ("AFPIPE_KEEP_ALIVE_TIMEOUT_S", "0", "> 0"),
        ("AFPIPE_KEEP_ALIVE_TIMEOUT_S", "inf", "<= 86400"),
        ("AFPIPE_LOG_THIRD_PARTY", "maybe", "expected bool"),
        ("AFPIPE_MAX_BODY_BUFFER_BYTES", "1000", "at least AFPIPE_MAX_BODY_BYTES"),
        ("AFPIPE_PRODUCER_MAX_PENDING_BYTES", "1000", "at least twice AFPIPE_MAX_BODY_BYTES"),
        ("AFPIPE_VISIBILITY_TIMEOUT_S", "-1", ">= 0"),
        ("AFPIPE_MAX_BODY_BYTES", "1.5", "expected int"),
        ("REDSHIFT_TABLE_NAME", 'events"; DROP TABLE x; --', "matching regex"),
        ("REDSHIFT_TABLE_NAME", "a.b.c", "matching regex"),
        ("SECONDARY_REDSHIFT_TABLE_NAME", "bad name", "matching regex"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load({name: value}, NO_DOTENV)
    message = str(caught.value)
    assert message.startswith(f"{name}=")
    assert problem in message
    assert "\n" not in message


def test_secret_values_are_redacted() -> None:
    settings = config.load({"AFPIPE_WEBHOOK_TOKEN": "s3cr3t-token"}, NO_DOTENV)
    shown = config.redacted(settings)
    assert shown["AFPIPE_WEBHOOK_TOKEN"] == "<redacted>"
    assert "s3cr3t-token" not in repr(shown)
    assert shown["PORT"] == 3000
    # an unset secret shows as unset, not as redacted
    assert config.redacted(config.load({}, NO_DOTENV))["AFPIPE_WEBHOOK_TOKEN"] == ""


def test_parse_dotenv() -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            "PORT=8080",
            "export HOST=127.0.0.1",
            "  LOG_LEVEL = debug  ",
            'AFPIPE_WEBHOOK_TOKEN="tok # not a comment"',
            "AFPIPE_DATA_DIR='/var/lib/afpipe' # a comment after quotes",
            'REDSHIFT_DB_USER="quoted"   # another',
            "AFPIPE_DLQ_URL=plain # trailing comment",
            "SQS_QUEUE_URL=https://x/#fragment",
            'EMPTY=""',
            'INNER="say "hi""',
        ]
    )
    assert config.parse_dotenv(text) == {
        "PORT": "8080",
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "debug",
        "AFPIPE_WEBHOOK_TOKEN": "tok # not a comment",
        "AFPIPE_DATA_DIR": "/var/lib/afpipe",
        "REDSHIFT_DB_USER": "quoted",
        "AFPIPE_DLQ_URL": "plain",
        "SQS_QUEUE_URL": "https://x/#fragment",
        "EMPTY": "",
        "INNER": 'say "hi"',
    }


@pytest.mark.parametrize("line", ["just words", "=value", "1BAD=x", "BAD KEY=x"])
def test_parse_dotenv_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(ConfigError, match="line 2"):
        config.parse_dotenv(f"PORT=1\n{line}\n")


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=4000\nHOST=10.0.0.1\nAFPIPE_POLLERS=7\n", encoding="utf-8")
    settings = config.load({"PORT": "5000"}, dotenv)
    assert settings.port == 5000  # environment
    assert settings.host == "10.0.0.1"  # .env
    assert settings.pollers == 7


def test_dotenv_bad_value_names_the_variable(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("AFPIPE_WRITERS=lots\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^AFPIPE_WRITERS='lots': expected int"):
        config.load({}, dotenv)


def test_default_dotenv_is_the_working_directory(clean_env: Path) -> None:
    (clean_env / ".env").write_text("AFPIPE_BATCH_MAX_ROWS=12\n", encoding="utf-8")
    assert config.load().batch_max_rows == 12


def test_bad_secret_value_is_not_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # AFPIPE_WEBHOOK_TOKEN takes any text: make a typed setting secret to see the wording.
    monkeypatch.setattr(environment, "SECRET_SETTINGS", frozenset({"AFPIPE_WRITERS"}))
    with pytest.raises(ConfigError) as refused:
        config.load({"AFPIPE_WRITERS": "hunter2"}, tmp_path / "none")
    assert "hunter2" not in str(refused.value)
    assert str(refused.value).startswith("AFPIPE_WRITERS=<redacted>: expected int")


def _serve_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["serve", "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_serve_help_lists_every_setting_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _serve_help(capsys)
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    for name, default in config.defaults().items():
        assert name in lines, name
        shown = "" if default == "" else str(default)
        assert f"default: {shown}" in lines[name], lines[name]
    assert "--no-ingest" in text


def test_serve_help_from_the_installed_command() -> None:
    afpipe = Path(sys.executable).with_name("afpipe")
    done = subprocess.run(
        [str(afpipe), "serve", "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    for name in config.setting_names():
        assert name in done.stdout


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "abc"), ("AFPIPE_POLLERS", "-2"), ("ENABLE_SQS_CONSUMER", "maybe")],
)
def test_cli_exits_2_on_a_bad_value(
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one line
    assert f"{name}={value!r}" in err
    assert not (clean_env / "afpipe-data").exists()  # nothing was opened or bound


def test_cli_exits_2_on_a_bad_dotenv_value(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (clean_env / ".env").write_text("PORT=abc\n", encoding="utf-8")
    assert cli.main(["check"]) == 2
    assert "PORT='abc'" in capsys.readouterr().err


def test_cli_exits_2_when_no_role_is_left(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENABLE_SQS_CONSUMER", "false")
    assert cli.main(["serve", "--no-ingest"]) == 2
    assert "ENABLE_SQS_CONSUMER" in capsys.readouterr().err


def test_log_level_is_case_insensitive_like_the_node_service(tmp_path: Path) -> None:
    assert config.load({"LOG_LEVEL": "WARN"}, tmp_path / "none").log_level == "warn"


@pytest.mark.parametrize("name", ["AFPIPE_DRAIN_TIMEOUT_S", "AFPIPE_ENQUEUE_TIMEOUT_S"])
def test_timeouts_must_be_finite(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        config.load({name: "inf"}, tmp_path / "none")
