"""`python -m app serve` runs the REST server; `python -m app migrate` brings the database schema up to date."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from core.settings import Settings, get_settings

LOOPBACK = "127.0.0.1"
log = logging.getLogger("lorapod")


def choose_host(settings: Settings, cli_host: str | None) -> tuple[str, str | None]:
    """Where to listen, and a warning to print: without an API key only an explicit --host leaves loopback."""
    if settings.api_key is not None:
        return cli_host or settings.host, None
    if cli_host:
        note = (
            None
            if cli_host == LOOPBACK
            else (
                f"LORAPOD_API_KEY is not set and --host {cli_host} was given: the API is open to anyone who can "
                "reach this address; set LORAPOD_API_KEY"
            )
        )
        return cli_host, note
    note = "LORAPOD_API_KEY is not set: the API has no authentication, so it listens on 127.0.0.1 only"
    if settings.host != LOOPBACK:
        note += f" (not LORAPOD_HOST={settings.host}; pass --host to override, or set LORAPOD_API_KEY)"
    return LOOPBACK, note


def serve(settings: Settings, host: str | None, port: int | None) -> int:
    """Run uvicorn on the app built from settings, with lorapod's logging and a graceful stop on SIGTERM."""
    import uvicorn

    from app.logging_setup import configure_logging
    from app.main import create_app
    from app.memory import return_big_buffers_to_os
    from app.shutdown import GracefulServer

    return_big_buffers_to_os()  # before the first big buffer: see there
    configure_logging(settings)
    bind, note = choose_host(settings, host)
    if note:
        log.warning("%s", note)
    # The note above already says the API is open; the app need not say it again.
    app = create_app(settings, warn_without_key=False)
    config = uvicorn.Config(
        app,
        host=bind,
        port=port or settings.port,
        log_config=None,  # keep the logging configured above: one format for lorapod's and uvicorn's lines
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_seconds)),  # uvicorn takes whole seconds
    )
    # One process only: the scheduler and the running trainers live in it.
    GracefulServer(config, app).run()
    return 0


def migrate(settings: Settings) -> int:
    """Create the workspace and apply the database migrations."""
    from core.db import make_engine
    from core.db import migrate as upgrade
    from core.storage.workspace import Workspace

    Workspace(settings.workspace).ensure()
    engine = make_engine(settings.effective_database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    print("lorapod: database schema is up to date", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: serve and migrate."""
    parser = argparse.ArgumentParser(prog="python -m app", description="lorapod: LoRA-training job server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the REST API (and the RunPod-compatible routes)")
    serve_cmd.add_argument(
        "--host", default=None, help="address to bind; default LORAPOD_HOST (127.0.0.1 when LORAPOD_API_KEY is unset)"
    )
    serve_cmd.add_argument("--port", type=int, default=None, help="port to bind; default LORAPOD_PORT (8000)")
    serve_cmd.add_argument(
        "--log-level",
        default=None,
        choices=["critical", "error", "warning", "info", "debug"],
        help="least severity logged; default LORAPOD_LOG_LEVEL (info)",
    )
    commands.add_parser("migrate", help="create the workspace and apply database migrations")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m app` and the `lorapod` script."""
    args = build_parser().parse_args(argv)
    settings = get_settings()
    if args.command == "serve":
        if args.log_level:
            settings = settings.model_copy(update={"log_level": args.log_level})
        return serve(settings, args.host, args.port)
    return migrate(settings)
