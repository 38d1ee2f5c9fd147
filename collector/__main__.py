"""CLI: `python -m collector {status,run,changes,search,reset,load-dump,demo-server}` (README.md, "Command line").

Exit codes (README.md, "Exit codes"):
  0  ok (`run --once`: the pass ended with no failed code and no failed article; a pass
     stopped by SIGTERM/SIGINT is ok when nothing failed before)
  1  something failed: `run --once` printed its summary with `codes_failed` or `failed` > 0
     (an unknown but well-formed code id is a failed code), no token could be had within
     15 s (the host is named), or any other error
  2  bad configuration or arguments (a malformed code id in MAINTENANCE_CODES / MASSIVE_CODES,
     half a PISTE credential, a bad option)
  3  authentication refused by the API
  4  permanent store failure
  5  another collector holds the store lease
Logs go to stderr; stdout carries only the JSON results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from collector.config import ConfigError, InvalidMode, Mode, Settings, mode_from_text
from collector.pagetext import masked

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_AUTH, EXIT_STORE, EXIT_LEASE = 0, 1, 2, 3, 4, 5
SHUTDOWN_TIMEOUT = 8.0  # seconds; SIGTERM must end the process within 10 s

AUTH_HINT = (
    "check LEGIFRANCE_CLIENT_ID / LEGIFRANCE_CLIENT_SECRET, LEGIFRANCE_OAUTH_URL, and that the "
    "application is subscribed to the Légifrance API in the PISTE console"
)


class CliError(Exception):
    """A failure reported as one line on stderr with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _mode(value: str) -> Mode:
    try:
        return mode_from_text(value)
    except InvalidMode as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        from collector.store.rows import MAX_SEQ

        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if not minimum <= number <= MAX_SEQ:
            raise argparse.ArgumentTypeError(f"expected an integer from {minimum} to {MAX_SEQ}, got {value[:40]}")
        return number

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m collector", description="Légifrance collector")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("status", help="print the status as one JSON object (starts nothing)")
    run = commands.add_parser("run", help="run the collector in the foreground")
    run.add_argument("--mode", type=_mode,
                     help="MASSIVE or MAINTENANCE, any case (saved as the desired mode; with --once, used "
                          "for that pass only)")
    run.add_argument("--once", action="store_true", help="run a single pass, print its summary as JSON")
    changes = commands.add_parser("changes", help="print the change log, one JSON object per line in seq order")
    changes.add_argument("--since", type=_count(0), default=0, metavar="SEQ",
                         help="only events after this seq (the last one you handled)")
    changes.add_argument("--limit", type=_count(1), metavar="N", help="at most N events (default: all)")
    changes.add_argument("--code", metavar="ID", help="only the events of this code (LEGITEXT id)")
    commands.add_parser("reset", help="clear the saved state (back to ENABLE_SCHEDULER / SIPHONNAGE_MODE)")
    search = commands.add_parser(
        "search", help="full-text search of the stored articles (accent- and case-insensitive), one JSON line per match"
    )
    search.add_argument("query", nargs="+", metavar="QUERY", help="words that must all appear in the text")
    search.add_argument("--code", metavar="ID", help="only this code (LEGITEXT id)")
    search.add_argument("--state", metavar="ETAT", help="VIGUEUR (in force), MODIFIE or ABROGE")
    search.add_argument("--limit", type=int, default=20, metavar="N", help="at most N matches, best first (1-200; default 20)")
    load = commands.add_parser("load-dump", help="apply DILA LEGI archives (files, folders or a folder URL)")
    load.add_argument("sources", nargs="+", metavar="SOURCE",
                      help="a .tar.gz, a folder holding archives, or an http(s) URL of a folder index")
    load.add_argument("--codes", default="configured",
                      help="configured (MASSIVE_CODES, default), all (every code in force), or ID,ID,...")
    # Its options are parsed by demo_server_parser() so other commands never import the emulator.
    demo = commands.add_parser("demo-server", add_help=False,
                               help="serve the offline Légifrance emulator on 127.0.0.1 (--help for options)")
    demo.set_defaults(demo_args=[])
    return parser


def demo_server_parser() -> argparse.ArgumentParser:
    from collector.demo.server import add_demo_server_arguments

    parser = argparse.ArgumentParser(prog="python -m collector demo-server",
                                     description="serve the offline Légifrance emulator")
    add_demo_server_arguments(parser)
    return parser


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise CliError(f"configuration error: {exc}", EXIT_CONFIG) from None


def _print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, ensure_ascii=False, default=str), flush=True)


def cmd_status(_: argparse.Namespace) -> int:
    from collector.logs import configure_logging
    from collector.runtime import status_payload, with_demo_codes
    from collector.store import open_store

    settings = with_demo_codes(_settings())
    configure_logging(settings)
    store = open_store(settings)
    try:
        _print_json(status_payload(settings, store))
    finally:
        store.close()
    return EXIT_OK


def cmd_changes(args: argparse.Namespace) -> int:
    from collector.feed.reader import iter_changes
    from collector.logs import configure_logging
    from collector.store import open_store

    settings = _settings()
    configure_logging(settings)
    store = open_store(settings)
    try:
        for change in iter_changes(store, args.since, args.limit, args.code):
            _print_json(change)
    finally:
        store.close()
    return EXIT_OK


def cmd_reset(_: argparse.Namespace) -> int:
    from collector.logs import configure_logging
    from collector.state import DesiredState, StateFile, defaults_from_settings
    from collector.store import open_store

    settings = _settings()
    configure_logging(settings)
    store = open_store(settings)
    try:
        defaults = defaults_from_settings(settings)
        DesiredState(StateFile(settings.state_file, defaults), store).reset()
    finally:
        store.close()
    _print_json(
        {"reset": True, "state_file": str(settings.state_file),
         "running": defaults.running, "mode": defaults.mode.value}
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from collector.runtime import build_runtime

    runtime = build_runtime(_settings(), resume=False, export=not args.once)  # one pass exports nothing
    try:
        scheduler = runtime.scheduler
        scheduler.load()
        if args.once:  # one pass: the server's desired {running, mode} stays as saved
            return _run_once(runtime, args.mode or scheduler.mode)
        if args.mode is not None:
            scheduler.set_mode(args.mode)
            snap = scheduler.status()
            if not snap.state_saved:
                print(f"warning: mode not saved: {snap.state_error}", file=sys.stderr, flush=True)
        return _run_forever(runtime)
    finally:
        runtime.close(SHUTDOWN_TIMEOUT)


def _run_once(runtime: Any, mode: Mode) -> int:
    from collector.harvest import summary_as_dict

    async def main() -> Any:
        interrupt = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, interrupt.set)
        return await runtime.scheduler.run_once(mode, interrupt=interrupt)

    summary = asyncio.run(main())
    _print_json(summary_as_dict(summary))
    if summary.codes_failed or summary.failed:  # said last on stderr, once the runtime is closed
        raise CliError(f"the pass had failures: {summary.codes_failed} code(s) and {summary.failed} article(s) "
                       "failed (see `errors` in the summary; failed articles are fetched again next pass)",
                       EXIT_ERROR)
    return EXIT_OK


def _run_forever(runtime: Any) -> int:
    """Start (saving running=true) and run until SIGTERM/SIGINT or a fatal error; the saved
    state stays running so the next start resumes."""
    done = threading.Event()
    fatal: list[BaseException] = []

    def on_signal(signum: int, _frame: object) -> None:
        done.set()

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        runtime.scheduler.on_fatal(on_fatal)
        runtime.scheduler.start()
        done.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if fatal:
        raise fatal[0]
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    """Matches best first, one JSON object per line (id, code_id, code_title, num, etat,
    section_path, snippet, rank, url); nothing on stdout when nothing matches."""
    from collector.logs import configure_logging
    from collector.search import SearchQueryError, legifrance_url
    from collector.store import open_store

    settings = _settings()
    configure_logging(settings)
    store = open_store(settings)
    try:
        try:
            hits = store.search(" ".join(args.query), args.code, args.state, args.limit)
        except SearchQueryError as exc:
            raise CliError(f"bad search: {exc}", EXIT_CONFIG) from None
    finally:
        store.close()
    if settings.is_demo:
        from collector.demo.corpus import is_demo_id
    for hit in hits:  # a DEMO article has no page on legifrance.gouv.fr
        url = None if settings.is_demo and is_demo_id(hit["id"]) else legifrance_url(hit["id"])
        _print_json({**hit, "url": url})
    if not hits:
        print("no match", file=sys.stderr, flush=True)
    return EXIT_OK
def cmd_load_dump(args: argparse.Namespace) -> int:
    """Apply the archives; last line of stdout: the JSON summary; exit 1 when it has errors."""
    from collector.dumps.apply import CodeScope, DumpOptions, LocalArchives, load_dumps
    from collector.dumps.fetch import DumpFetcher, is_url
    from collector.dumps.progress import TtyBar
    from collector.logs import configure_logging
    from collector.store import open_store

    settings = _settings()
    if args.codes == "configured":
        from collector.runtime import with_demo_codes

        settings = with_demo_codes(settings)
    configure_logging(settings)
    try:
        scope = CodeScope.parse(args.codes, settings.massive_codes)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from None
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    bar = TtyBar() if sys.stderr.isatty() else None
    store = open_store(settings)
    try:
        remote = any(is_url(source) for source in args.sources)
        with DumpFetcher(settings.dump_cache_dir) if remote else contextlib.nullcontext(LocalArchives()) as fetcher:
            summary = load_dumps(args.sources, scope, store, fetcher,
                                 options=DumpOptions.for_settings(settings),
                                 progress=bar, should_stop=stop.is_set)
    finally:
        if bar is not None:
            bar.close()
        store.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _print_json(summary.as_dict())
    return EXIT_OK if summary.ok else EXIT_ERROR


def cmd_demo_server(args: argparse.Namespace) -> int:
    from collector.demo.server import run_demo_server

    result = run_demo_server(demo_server_parser().parse_args(args.demo_args))
    return int(result or 0)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": cmd_status,
    "run": cmd_run,
    "changes": cmd_changes,
    "reset": cmd_reset,
    "search": cmd_search,
    "load-dump": cmd_load_dump,
    "demo-server": cmd_demo_server,
}


def _classify(exc: BaseException) -> CliError:
    """One clear line and an exit code for the errors a user can act on."""
    from collector.legifrance import LegifranceAuthError, LegifranceError
    from collector.scheduler import LeaseHeld
    from collector.state import StateSaveError
    from collector.store.base import StoreError, StoreFatal

    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, ConfigError):
        return CliError(f"configuration error: {exc}", EXIT_CONFIG)
    if isinstance(exc, LegifranceAuthError):
        hint = "" if "LEGIFRANCE_CLIENT_ID" in str(exc) else f" ({AUTH_HINT})"
        return CliError(f"authentication refused by the API: {exc}{hint}", EXIT_AUTH)
    if isinstance(exc, LegifranceError):  # e.g. no token: the host is named, never the secret
        return CliError(f"API error: {exc}", EXIT_ERROR)
    if isinstance(exc, StoreFatal):
        return CliError(f"store error (permanent): {exc}", EXIT_STORE)
    if isinstance(exc, LeaseHeld):
        return CliError(str(exc), EXIT_LEASE)
    if isinstance(exc, (StoreError, StateSaveError)):
        return CliError(f"{type(exc).__name__}: {exc}", EXIT_ERROR)
    return CliError(f"unexpected error: {type(exc).__name__}: {exc}", EXIT_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "demo-server":
        args.demo_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return COMMANDS[args.command](args)
    except Exception as exc:  # noqa: BLE001 - every failure ends as one clear line
        error = _classify(exc)
        message = masked(" ".join(str(error).split()), None)  # one line, no secret
        print(f"error: {message}", file=sys.stderr, flush=True)
        return error.code


if __name__ == "__main__":
    sys.exit(main())
