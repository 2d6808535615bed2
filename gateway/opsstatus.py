"""``ywtb ops status``: the figures of ``/metrics`` on one terminal screen, as plain tables.

Without ``--url`` the command gathers the store and Kafka figures itself
(``gateway.opsdata``); with ``--url`` it reads a running API's ``/metrics``,
which adds what only that process knows: its breakers, its loops and its
counters. Either way the screen is drawn from Prometheus metric families, so
it shows exactly what Prometheus would.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import figure_families
from gateway.opsdata import OpsFigures
from schemas.errors import ConnectorError, PlatformUnavailable, Unauthorized

CIRCUIT = {0: "closed", 1: "half-open", 2: "OPEN"}


@dataclass(frozen=True)
class Row:
    labels: dict[str, str]
    value: float


class Families:
    """Samples by family name, from a collector or from a scraped ``/metrics``."""

    def __init__(self, families: Iterable[Metric]) -> None:
        # A gauge's value, a counter's total; histograms are not drawn.
        self._samples = {
            family.name: [
                Row(dict(s.labels), s.value)
                for s in family.samples
                if s.name in (family.name, f"{family.name}_total")
            ]
            for family in families
        }

    def __contains__(self, name: str) -> bool:
        return name in self._samples

    def rows(self, name: str) -> list[Row]:
        return self._samples.get(name, [])

    def one(self, name: str) -> float | None:
        rows = self.rows(name)
        return rows[0].value if rows else None


async def gathered(figures: OpsFigures) -> Families:
    """Refresh ``figures`` (store and Kafka) and return them as metric families."""
    await figures.refresh()
    return Families(figure_families(figures.latest))


async def scraped(url: str, key: str | None, *, timeout_s: float = 30.0) -> Families:
    """A running API's ``/metrics``."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(url.rstrip("/") + "/metrics", headers=headers)
    except httpx.HTTPError as exc:
        raise PlatformUnavailable("api", f"{url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code in (401, 403):
        raise Unauthorized(f"{url}/metrics answered {response.status_code}: give --key")
    if response.status_code != 200:
        raise ConnectorError(f"{url}/metrics answered HTTP {response.status_code}")
    return Families(text_string_to_metric_families(response.text))


def _table(title: str, header: list[str], rows: list[list[str]], empty: str) -> list[str]:
    lines = [title]
    if not rows:
        return [*lines, f"  {empty}", ""]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return (
            "  "
            + "  ".join(
                str(c).rjust(w) if i and _numeric(str(c)) else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )

    return [*lines, line(header), *(line(r) for r in rows), ""]


def _numeric(text: str) -> bool:
    return text.replace(".", "", 1).replace("-", "", 1).isdigit()


def _n(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(families: Families, *, source: str, now: float | None = None) -> str:
    """One screen of plain-text tables."""
    now = time.time() if now is None else now
    at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    gathered_at = families.one("ywtb_figures_gathered_timestamp_seconds")
    freshness = "never gathered" if gathered_at is None else f"{_age(now - gathered_at)} old"
    lines = [f"ywtb ops status — {at} — {source} (figures {freshness})", ""]

    down = [r.labels["part"] for r in families.rows("ywtb_figures_up") if not r.value]
    if down:
        lines += [f"! could not read: {', '.join(down)} (see the log of the API)", ""]

    pending = families.one("ywtb_outbox_pending")
    oldest = families.one("ywtb_outbox_oldest_age_seconds")
    statuses = "  ".join(
        f"{r.labels['status']} {_n(r.value)}" for r in families.rows("ywtb_applications")
    )
    lines += [
        "OUTBOX        "
        + ("?" if pending is None else f"{_n(pending)} pending, oldest {_age(oldest)}"),
        "APPLICATIONS  " + (statuses or "?"),
        "",
    ]

    per_group: dict[str, list[float]] = {}
    for r in families.rows("ywtb_consumer_lag_messages"):
        per_group.setdefault(r.labels["group"], [0.0, 0.0])[0] += r.value
    for r in families.rows("ywtb_consumer_lag_seconds"):
        entry = per_group.setdefault(r.labels["group"], [0.0, 0.0])
        entry[1] = max(entry[1], r.value)
    lines += _table(
        "CONSUMER LAG (per consumer group; partitions summed, oldest waiting message)",
        ["group", "messages", "oldest waiting"],
        [[g, _n(m), _age(s) if m else "-"] for g, (m, s) in sorted(per_group.items())],
        "no consumer group figures",
    )
    lines += _table(
        "DEAD LETTERS (messages on the .dlq topics; replay with `ywtb dlq` or /ops)",
        ["topic", "worker", "messages"],
        [
            [r.labels["topic"], r.labels["worker"], _n(r.value)]
            for r in families.rows("ywtb_dead_letters")
        ],
        "none",
    )
    if "ywtb_circuit_state" in families:
        calls: dict[str, dict[str, float]] = {}
        for r in families.rows("ywtb_platform_calls"):
            per = calls.setdefault(r.labels["platform"], {})
            per[r.labels["outcome"]] = per.get(r.labels["outcome"], 0) + r.value
        lines += _table(
            "PLATFORMS (breakers and calls of the API process)",
            ["platform", "circuit", "ok", "transient", "permanent", "refused (open)"],
            [
                [
                    r.labels["platform"],
                    CIRCUIT.get(int(r.value), str(r.value)),
                    *(
                        _n(calls.get(r.labels["platform"], {}).get(outcome, 0))
                        for outcome in ("ok", "transient_error", "permanent_error", "circuit_open")
                    ),
                ]
                for r in families.rows("ywtb_circuit_state")
            ],
            "no platform",
        )
        running = {r.labels["loop"]: r.value for r in families.rows("ywtb_loop_running")}
        restarts = {r.labels["loop"]: r.value for r in families.rows("ywtb_loop_restarts")}
        lines += _table(
            "LOOPS (of the API process)",
            ["loop", "running", "last progress", "restarts"],
            [
                [
                    r.labels["loop"],
                    "yes" if running.get(r.labels["loop"]) else "NO",
                    f"{_age(now - r.value)} ago",
                    _n(restarts.get(r.labels["loop"], 0)),
                ]
                for r in families.rows("ywtb_loop_last_progress_timestamp_seconds")
            ],
            "no loop",
        )
    else:
        lines += [
            "Breakers, loops and call counts live in the API process: add --url to see them.",
            "",
        ]
    return "\n".join(lines)
