"""The ``ywtb`` command: sandbox, serve, relay, worker."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.logs import configure_logging
from gateway.settings import load_settings

if TYPE_CHECKING:
    from gateway.bootstrap import Container
    from gateway.supervise import LoopBody


async def _serve(host: str, port: int) -> None:
    from gateway.api.app import create_app
    from gateway.runtime import api_server, stop_on_signals

    settings = load_settings()
    server = api_server(create_app(settings), host, port)
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
    from gateway.runtime import stop_on_signals

    container = await bootstrap()
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
    args = parser.parse_args(argv)

    configure_logging(load_settings().log_level)
    if args.command == "sandbox":
        from gateway.sandbox import run_sandbox

        run_sandbox(args.port, args.seed)
    elif args.command == "serve":
        asyncio.run(_serve(args.host, args.port))
    elif args.command == "relay":
        from gateway.background import relay_loops

        asyncio.run(_host(relay_loops))
    elif args.command == "worker":
        from gateway.background import worker_loops

        asyncio.run(_host(lambda container: worker_loops(container, args.name)))
    elif args.command == "dlq":
        return _dlq(args.action, args.event_ids, args.worker)
    elif args.command == "lag":
        return _lag(args.worker)
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


def _dlq(action: str, event_ids: list[str], worker: str | None) -> int:
    from gateway.dlq import run_dlq_command
    from schemas.errors import ConnectorError

    settings = load_settings()
    if not settings.kafka.bootstrap:
        print("ywtb dlq: YWTB_KAFKA_BOOTSTRAP is not set", file=sys.stderr)
        return 2
    if action != "list" and not event_ids:
        print(f"ywtb dlq {action}: name at least one EVENT_ID", file=sys.stderr)
        return 2
    try:
        rows = run_dlq_command(settings.kafka, action, event_ids, worker)
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
