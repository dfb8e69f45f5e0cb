"""``afpipe`` command line: serve, check, dlq, status. Exit codes: 0 ok, 1 failure, 2 bad config."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from afpipe import __version__, config, logs
from afpipe.errors import AfpipeError, ConfigError

if TYPE_CHECKING:
    from watchfiles import Change

if TYPE_CHECKING:
    pass

log = logging.getLogger("afpipe")


def _settings_help() -> str:
    lines = ["settings (environment variables or ./.env; the environment wins):"]
    for name, default in config.defaults().items():
        shown = "" if default == "" else default
        lines.append(f"  {name:<40} default: {shown!s:<16} {config.HELP.get(name, '')}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="afpipe", description="AppsFlyer Push API -> queue -> Redshift pipeline."
    )
    parser.add_argument("--version", action="version", version=f"afpipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the webhook and the consumer",
        description="Run the webhook (HTTP ingest) and the consumer (queue -> warehouse).",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--no-ingest", action="store_true", help="run the consumer only (no HTTP server)"
    )
    serve.add_argument(
        "--reload",
        action="store_true",
        help="development only: restart when a file of the package changes"
        " (needs watchfiles: pip install 'afpipe[dev]'); never in production",
    )
    # Internal, used by AFPIPE_WORKERS' supervisor for its children.
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    commands.add_parser("check", help="check the configuration and that the backends answer")
    dlq = commands.add_parser("dlq", help="inspect or redrive dead-lettered messages")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    peek = dlq_commands.add_parser("peek", help="show dead-lettered messages with their reasons")
    peek.add_argument("--limit", type=int, default=10)
    redrive = dlq_commands.add_parser("redrive", help="move dead letters back onto the queue")
    redrive.add_argument("--limit", type=int, default=1000)
    _add_status(commands)
    return parser


def _add_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="how fresh the warehouse is, whether anything was lost, what it costs",
        description="One screen from a running instance's /metrics and the queues, read live.",
    )
    status.add_argument(
        "--url",
        action="append",
        default=[],
        type=_metrics_url,
        help="an instance's /metrics; repeat for an HA pair (counters summed)."
        " Default: this host's, from PORT and HOST",
    )
    status.add_argument("--json", action="store_true", help="the same numbers as JSON")


def _metrics_url(text: str) -> str:
    import httpx

    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"{text!r}: not an http:// or https:// URL with a host")
    return text


def _export(environment: dict[str, str]) -> None:
    """Like dotenv: ./.env fills in variables the environment lacks, so the AWS
    credential chain (botocore reads os.environ) sees them as the Node.js SDK did."""
    for name, value in environment.items():
        os.environ.setdefault(name, value)


# Hidden from the logs by value too, not only where a pattern finds them.
_AWS_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        environment = config.read_environment()  # the one reading of ./.env
        _export(environment)
        settings = config.settings_from(environment)
    except ConfigError as exc:
        print(f"afpipe: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(
        settings.log_level,
        third_party=settings.log_third_party,
        secrets=[settings.webhook_token, *(os.environ.get(n, "") for n in _AWS_SECRET_VARIABLES)],
        stream=sys.stderr if args.command == "status" else None,  # stdout is the answer
    )
    try:
        if args.command == "serve":
            return _serve(settings, args)
        if args.command == "status":
            from afpipe.status import status

            return trio.run(partial(status, settings, args.url, as_json=args.json))
        from afpipe import admin

        if args.command == "check":
            return trio.run(admin.check, settings)
        if args.dlq_command == "peek":
            return trio.run(admin.dlq_peek, settings, args.limit)
        return trio.run(admin.dlq_redrive, settings, args.limit)
    except BaseException as exc:
        # A running task's error reaches here inside the nurseries' exception groups.
        config_error = _leaf(exc, ConfigError)
        if config_error is not None:
            log.error("configuration error", extra={"error": str(config_error)})
            print(f"afpipe: configuration error: {config_error}", file=sys.stderr)
            return 2
        failure = _leaf(exc, AfpipeError, OSError)
        if failure is None:
            raise
        log.error("afpipe failed", extra={"error": str(failure)})
        print(f"afpipe: {failure}", file=sys.stderr)
        return 1


def _leaf(exc: BaseException, *kinds: type[BaseException]) -> BaseException | None:
    """``exc`` itself, or the first error of ``kinds`` in its exception groups."""
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _leaf(inner, *kinds)
            if found is not None:
                return found
    return None


def _serve(settings: config.Settings, args: argparse.Namespace) -> int:
    from afpipe.supervisor import run

    if args.reload:
        return _serve_reloading(args)
    ingest = not args.no_ingest
    consume = settings.enable_sqs_consumer
    if not ingest and not consume:
        raise ConfigError("ENABLE_SQS_CONSUMER=false with --no-ingest leaves nothing to run")
    if settings.workers > 1 and args.ready_fd is None:
        from afpipe.workers import supervise

        if ingest and settings.port == 0:
            raise ConfigError("PORT=0: AFPIPE_WORKERS > 1 needs a fixed port to share")
        extra = ["--no-ingest"] if args.no_ingest else []
        return trio.run(supervise, settings.workers, extra)
    return trio.run(
        partial(
            run,
            settings,
            ingest=ingest,
            consume=consume,
            reuse_port=args.reuse_port,
            ready_fd=args.ready_fd,
        )
    )


def _serve_reloading(args: argparse.Namespace) -> int:
    """``afpipe serve`` in a child process, started again whenever a file of the
    package changes (watchfiles); SIGINT or SIGTERM stop the child, then this."""
    try:
        import watchfiles  # optional: a development tool (afpipe[dev])
    except ImportError as exc:
        raise ConfigError("serve --reload needs watchfiles: pip install 'afpipe[dev]'") from exc
    package = Path(__file__).resolve().parent
    command = [
        sys.executable,
        "-m",
        "afpipe",
        "serve",
        *(["--no-ingest"] if args.no_ingest else []),
    ]
    signal.signal(signal.SIGTERM, _interrupt)  # as Ctrl-C: watchfiles stops the child
    log.warning(
        "serve --reload: restarting on changes in %s; for development, never production",
        package,
    )
    watchfiles.run_process(
        package, target=shlex.join(command), target_type="command", callback=_changed
    )
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _changed(changes: set[tuple[Change, str]]) -> None:
    changed = sorted(path for _, path in changes)
    log.warning("serve --reload: restarting", extra={"changed": changed})
