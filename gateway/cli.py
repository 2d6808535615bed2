"""The ``ywtb`` command: sandbox, serve, relay, worker, dlq, lag, report, ops.

``ywtb report --from YYYY-MM-DD --to YYYY-MM-DD [--chart FILE.png]`` prints the
Getting Electricity figures of the period as JSON (it needs only the store)
and, with ``--chart``, draws days per customer class against the limits.

``ywtb ops status [--watch [SECONDS]]`` shows backlog, lag, dead letters and platforms.

``ywtb audit verify|export`` checks and exports the exchange log; ``ywtb keys rotate``
re-encrypts the personal fields under the current key.

The long-running commands (``serve``, ``relay``, ``worker``) run on uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvloop

from gateway.logs import configure_logging
from gateway.settings import load_settings

if TYPE_CHECKING:
    from gateway.bootstrap import Container
    from gateway.supervise import LoopBody


async def _serve(host: str, port: int) -> None:
    from gateway.api.app import create_app
    from gateway.runtime import api_server, stop_on_signals

    settings = load_settings()
    server = api_server(create_app(settings), host, port, settings.limits, settle_heap=True)
    stop = asyncio.Event()
    stop_on_signals(stop)
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    server.should_exit = True
    # Open connections and the lifespan's closing get their time; then the process ends.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(serving, settings.loops.shutdown_s)


async def _host(loops_of: Callable[[Container], dict[str, LoopBody]]) -> None:
    """Run a process's background loops, supervised, until SIGINT/SIGTERM."""
    from gateway.background import run_supervised
    from gateway.bootstrap import bootstrap
    from gateway.runtime import settle_heap, stop_on_signals

    container = await bootstrap()
    settle_heap()
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        await run_supervised(
            loops_of(container), stop, container.loops, container.settings.loops.shutdown_s
        )
    finally:
        await container.aclose()


def main(argv: list[str] | None = None) -> int:
    from gateway.workers import WORKERS

    parser = argparse.ArgumentParser(
        prog="ywtb", description="一网通办 connector of State Grid Shanghai"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sandbox = commands.add_parser(
        "sandbox", help="API, simulators, broker, relay and workers on loopback"
    )
    sandbox.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    sandbox.add_argument("--seed", type=Path, default=None, help="seed file for the simulators")
    serve = commands.add_parser("serve", help="the API (needs YWTB_KAFKA_BOOTSTRAP)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    commands.add_parser("relay", help="publish the outbox to Kafka; run the periodic jobs")
    worker = commands.add_parser("worker", help="run one named worker")
    worker.add_argument("name", choices=sorted(WORKERS))
    lag = commands.add_parser("lag", help="consumer lag of each worker, per partition")
    lag.add_argument("--worker", choices=sorted(WORKERS), help="only this worker")
    dlq = commands.add_parser("dlq", help="dead letters: list, show, replay")
    dlq.add_argument("action", choices=["list", "show", "replay"])
    dlq.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="for show and replay")
    dlq.add_argument("--worker", help="only the dead letters of this worker")
    report = commands.add_parser(
        "report", help="Getting Electricity figures of a period (JSON), optionally a chart"
    )
    report.add_argument("--from", dest="period_from", required=True, type=_date, metavar="DATE")
    report.add_argument("--to", dest="period_to", required=True, type=_date, metavar="DATE")
    report.add_argument("--chart", type=Path, metavar="FILE.png", help="write the chart (PNG)")
    ops = commands.add_parser("ops", help="ops figures: backlog, lag, dead letters, platforms")
    ops.add_argument("action", choices=["status"])
    ops.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=5.0,
        default=None,
        metavar="SECONDS",
        help="redraw every SECONDS (default 5) until Ctrl-C",
    )
    ops.add_argument(
        "--url", help="read a running API's /metrics (adds its breakers, loops and calls)"
    )
    ops.add_argument("--key", help="API key for --url (default: the sandbox key in the sandbox)")
    dlq.add_argument("--topic", help="list: only letters of this topic")
    dlq.add_argument("--error", help="list: only letters whose error contains this text")
    dlq.add_argument("--application", help="list: only letters of this application id")
    dlq.add_argument("--since", help="list: died at or after (ISO 8601)")
    dlq.add_argument("--until", help="list: died before (ISO 8601)")
    dlq.add_argument(
        "--all", action="store_true", help="list: also letters applied or replayed since"
    )
    dlq.add_argument("--dry-run", action="store_true", help="replay: show what would be sent where")
    audit = commands.add_parser("audit", help="the exchange log: verify the chain, export it")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="walk the chain and its signed checkpoints (exit 1 naming the first bad seq)"
    )
    verify.add_argument("--file", type=Path, help="verify an export instead of the store")
    verify.add_argument("--public-key", help="SM2 public key to trust (default: settings / file)")
    export = audit_commands.add_parser("export", help="records in a time range, for an auditor")
    export.add_argument("--from", dest="since", help="ISO 8601 time (default: the beginning)")
    export.add_argument("--to", dest="until", help="ISO 8601 time (default: now)")
    export.add_argument("file", type=Path, help="where to write the JSON lines")
    keys = commands.add_parser("keys", help="data keys of the personal fields")
    keys.add_argument("action", choices=["rotate"], help="re-encrypt all under the current key")
    args = parser.parse_args(argv)

    configure_logging(load_settings().log_level)
    if args.command == "sandbox":
        from gateway.sandbox import run_sandbox

        run_sandbox(args.port, args.seed)
    elif args.command == "serve":
        uvloop.run(_serve(args.host, args.port))
    elif args.command == "relay":
        from gateway.background import relay_loops

        uvloop.run(_host(relay_loops))
    elif args.command == "worker":
        from gateway.background import worker_loops

        uvloop.run(_host(lambda container: worker_loops(container, args.name)))
    elif args.command == "dlq":
        return _dlq(args)
    elif args.command == "lag":
        return _lag(args.worker)
    elif args.command == "report":
        return asyncio.run(_report(args.period_from, args.period_to, args.chart))
    elif args.command == "ops":
        return _ops_status(args.watch, args.url, args.key)
    elif args.command == "audit":
        if args.audit_command == "verify":
            return _audit_verify(args.file, args.public_key)
        return _audit_export(args.since, args.until, args.file)
    elif args.command == "keys":
        return asyncio.run(_keys_rotate())
    return 0


async def _store() -> tuple[Any, Any]:
    from gateway.protect import install, keyring_of
    from gateway.store.db import open_store

    settings = load_settings()
    install(keyring_of(settings.protection))
    return await open_store(settings.store)


def _audit_verify(file: Path | None, public_key: str | None) -> int:
    from gateway.audit import verify_export, verify_store

    if file is not None:
        lines = [json.loads(line) for line in file.read_text("utf-8").splitlines() if line]
        problem = verify_export(lines, public_key)
        checked = sum(1 for line in lines if line.get("type") == "record")
    else:

        async def run() -> tuple[int, Any]:
            engine, sessions = await _store()
            try:
                key = public_key or load_settings().protection.audit_public_key
                return await verify_store(sessions, key)
            finally:
                await engine.dispose()

        checked, problem = asyncio.run(run())
    if problem is not None:
        print(f"ywtb audit verify: BROKEN at {problem}", file=sys.stderr)
        print(json.dumps({"ok": False, "seq": problem.seq, "reason": problem.reason}))
        return 1
    print(json.dumps({"ok": True, "records": checked}))
    print(f"ywtb audit verify: {checked} record(s), chain and checkpoints intact", file=sys.stderr)
    return 0


def _audit_export(since: str | None, until: str | None, file: Path) -> int:
    from datetime import UTC, datetime

    from gateway.audit import Signer, export

    def parse(value: str | None) -> datetime | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    async def run() -> list[dict[str, Any]]:
        engine, sessions = await _store()
        try:
            signer = Signer.of(load_settings().protection)
            return await export(sessions, signer, parse(since), parse(until))
        finally:
            await engine.dispose()

    lines = asyncio.run(run())
    with file.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    records = sum(1 for line in lines if line["type"] == "record")
    print(f"ywtb audit export: {records} record(s) to {file}", file=sys.stderr)
    return 0


async def _keys_rotate() -> int:
    from gateway.keys import Rotated, rotate
    from gateway.protect import keyring

    engine, sessions = await _store()

    def progress(state: Rotated) -> None:
        print(f"{state.column}: {state.rewritten} of {state.total} rewritten", file=sys.stderr)

    try:
        results = await rotate(sessions, keyring(), progress)
    finally:
        await engine.dispose()
    print(json.dumps({r.column: {"total": r.total, "rewritten": r.rewritten} for r in results}))
    return 0


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


async def _report(period_from: date, period_to: date, chart: Path | None) -> int:
    from gateway.deadlines import DeadlineService
    from gateway.reports import ReportService, write_chart
    from schemas.deadlines import load_calendar
    from schemas.errors import ConnectorError

    settings = load_settings()
    engine, sessions = await _store()
    try:
        calendar = load_calendar(settings.deadlines.calendar_files)
        deadlines = DeadlineService(sessions, settings.deadlines, calendar)
        try:
            figures = await ReportService(sessions, deadlines).getting_electricity(
                period_from, period_to
            )
        except ConnectorError as exc:
            print(f"ywtb report: {exc.detail}", file=sys.stderr)
            return 2
    finally:
        await engine.dispose()
    print(figures.model_dump_json(indent=2))
    if chart is not None:
        write_chart(figures, chart)
        print(f"chart written to {chart}", file=sys.stderr)
    return 0


def _ops_status(watch: float | None, url: str | None, key: str | None) -> int:
    """``ywtb ops status [--watch [SECONDS]] [--url URL --key KEY]``."""
    from gateway.opsstatus import Families, gathered, render, scraped
    from schemas.errors import ConnectorError

    settings = load_settings()
    if url is None and not settings.kafka.bootstrap:
        print("ywtb ops status: YWTB_KAFKA_BOOTSTRAP is not set (or give --url)", file=sys.stderr)
        return 2
    if url is not None and key is None and settings.environment == "sandbox":
        key = settings.sandbox.api_key.get_secret_value()
    interactive = sys.stdout.isatty()

    async def run() -> int:
        from gateway.opsdata import figures_for
        from gateway.runtime import stop_on_signals
        from gateway.store.db import open_store
        from gateway.supervise import wait_or_stop

        # Ctrl-C sets an event rather than cancelling the read: a Kafka client that swallows
        # a cancellation would otherwise leave --watch redrawing for ever.
        stop = asyncio.Event()
        stop_on_signals(stop)
        engine = figures = None
        if url is None:
            engine, sessions = await open_store(settings.store)
            figures = figures_for(sessions, settings)
        source = url or "store and Kafka"
        try:
            while not stop.is_set():
                print(f"ywtb ops status: reading {source} ...", file=sys.stderr, flush=True)
                started = time.perf_counter()
                try:
                    families: Families = (
                        await gathered(figures)
                        if figures is not None
                        else await scraped(source, key)
                    )
                except ConnectorError as exc:
                    print(f"ywtb ops status: {exc.detail}", file=sys.stderr)
                    if watch is None:
                        return 1
                else:
                    took = time.perf_counter() - started
                    if watch is not None and interactive:
                        print("\033[H\033[2J", end="")  # clear the screen, then redraw
                    print(render(families, source=source), flush=True)
                    print(f"ywtb ops status: read in {took:.1f} s", file=sys.stderr)
                if watch is None:
                    return 0
                await wait_or_stop(stop, watch)
            return 0
        finally:
            if engine is not None:
                await engine.dispose()

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:  # before the loop took over Ctrl-C
        return 0


def _lag(worker: str | None) -> int:
    from gateway.lag import worker_lag
    from gateway.workers import WORKER_TOPICS

    settings = load_settings()
    if not settings.kafka.bootstrap:
        print("ywtb lag: YWTB_KAFKA_BOOTSTRAP is not set", file=sys.stderr)
        return 2
    chosen = {n: t for n, t in WORKER_TOPICS.items() if worker in (None, n)}
    rows = asyncio.run(worker_lag(settings.kafka, chosen))
    for row in rows:
        print(json.dumps(row))
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["worker"]] = totals.get(row["worker"], 0) + (row["lag"] or 0)
    for name, total in totals.items():
        print(f"{name}: lag {total}", file=sys.stderr)
    return 0


def _utc(moment: datetime) -> datetime:
    """A time without an offset is read as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _dlq(args: argparse.Namespace) -> int:
    import getpass

    from gateway.dlq import DeadLetterFilter, run_dlq_command
    from schemas.errors import ConnectorError

    settings = load_settings()
    action: str = args.action
    if not settings.kafka.bootstrap:
        print("ywtb dlq: YWTB_KAFKA_BOOTSTRAP is not set", file=sys.stderr)
        return 2
    if action != "list" and not args.event_ids:
        print(f"ywtb dlq {action}: name at least one EVENT_ID", file=sys.stderr)
        return 2
    try:
        filters = DeadLetterFilter(
            topic=args.topic,
            worker=args.worker,
            error=args.error,
            application_id=args.application,
            since=_utc(datetime.fromisoformat(args.since)) if args.since else None,
            until=_utc(datetime.fromisoformat(args.until)) if args.until else None,
            include_resolved=args.all,
        )
        rows = run_dlq_command(
            settings,
            action,
            args.event_ids,
            actor=f"cli:{getpass.getuser()}",
            filters=filters,
            dry_run=args.dry_run,
        )
    except ValueError as exc:
        print(f"ywtb dlq {action}: {exc}", file=sys.stderr)
        return 2
    except ConnectorError as exc:
        print(f"ywtb dlq {action}: {exc.detail}", file=sys.stderr)
        return 1
    if action == "list":
        print(f"{len(rows)} dead letter(s)", file=sys.stderr)
    for row in rows:
        print(json.dumps(row, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
