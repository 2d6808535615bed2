"""The Prometheus metrics of the connector (``/metrics``), every family named ``ywtb_*``.

Counters and histograms are kept in the process (prometheus-client's default
registry; the platform calls are counted in ``adapters.resilience``). The
figures of the store and Kafka come from the cache of ``gateway.opsdata``;
breakers and loops are read live. ``exposition(...)`` is what ``/metrics``
serves; ``exported_families()`` names every family, for the dashboard and
alert checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from adapters.resilience import BreakerState, CircuitBreaker
from gateway.opsdata import PARTS, Figures
from gateway.supervise import Loops

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

HTTP_REQUESTS = Counter(
    "ywtb_http_requests",
    "HTTP requests answered, by route template, method and status code",
    ["route", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "ywtb_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RELAY_PUBLISHED = Counter(
    "ywtb_relay_published", "Outbox events the relay published and the broker acknowledged"
)
CALLBACK_REFUSALS = Counter(
    "ywtb_callback_refusals",
    "Government callbacks refused (bad signature, stale timestamp, replayed nonce, ...)",
    ["platform", "reason"],
)
EVIDENCE_FETCHES = Counter(
    "ywtb_evidence_fetches",
    "Evidence obtained, by kind and outcome: reused (from the evidence store), fetched "
    "(from the platform), not_found, failed (platform unavailable or refused)",
    ["kind", "outcome"],
)

#: ``ywtb_circuit_state`` values.
CIRCUIT_STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class FiguresCollector:
    """The families computed from cached figures, breakers and loops (read at scrape)."""

    def __init__(
        self,
        figures: Callable[[], Figures | None],
        breakers: Mapping[str, CircuitBreaker],
        loops: Loops,
    ) -> None:
        self._figures = figures
        self._breakers = breakers
        self._loops = loops

    def describe(self) -> list[Metric]:
        """Every family this collector yields, without samples."""
        return list(self._families(None, {}, None))

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._figures(), self._breakers, self._loops)

    @staticmethod
    def _families(
        figures: Figures | None, breakers: Mapping[str, CircuitBreaker], loops: Loops | None
    ) -> Iterator[Metric]:
        circuit = GaugeMetricFamily(
            "ywtb_circuit_state",
            "Circuit breaker of each platform: 0 closed, 1 half-open, 2 open",
            labels=["platform"],
        )
        for name, breaker in breakers.items():
            circuit.add_metric([name], CIRCUIT_STATE_VALUE[breaker.state])
        yield circuit

        loop_progress = GaugeMetricFamily(
            "ywtb_loop_last_progress_timestamp_seconds",
            "When each background loop of this process last made progress (Unix time)",
            labels=["loop"],
        )
        loop_running = GaugeMetricFamily(
            "ywtb_loop_running",
            "1 while the loop runs, 0 between a failure and its restart",
            labels=["loop"],
        )
        loop_restarts = CounterMetricFamily(
            "ywtb_loop_restarts",
            "Times the supervisor restarted the loop after a failure",
            labels=["loop"],
        )
        for state in loops.states() if loops is not None else ():
            progress = state.last_beat or state.started_at
            if progress is not None:
                loop_progress.add_metric([state.name], progress)
            loop_running.add_metric([state.name], 1 if state.running else 0)
            loop_restarts.add_metric([state.name], state.restarts)
        yield from (loop_progress, loop_running, loop_restarts)

        yield from figure_families(figures)


def figure_families(figures: Figures | None) -> Iterator[Metric]:
    """The families of the store and Kafka figures (empty before the first gathering)."""
    outbox_pending = GaugeMetricFamily("ywtb_outbox_pending", "Outbox events not yet published")
    outbox_age = GaugeMetricFamily(
        "ywtb_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox event (0: none)"
    )
    applications = GaugeMetricFamily(
        "ywtb_applications",
        "Applications per status (each counted up to YWTB_METRICS_COUNT_CAP)",
        labels=["status"],
    )
    lag_messages = GaugeMetricFamily(
        "ywtb_consumer_lag_messages",
        "Messages a worker's consumer group has yet to consume, per partition",
        labels=["group", "topic", "partition"],
    )
    lag_seconds = GaugeMetricFamily(
        "ywtb_consumer_lag_seconds",
        "Age of the oldest message a consumer group has yet to consume (0: none waits)",
        labels=["group", "topic", "partition"],
    )
    dead_letters = CounterMetricFamily(
        "ywtb_dead_letters",
        "Messages on the dead-letter topics, by topic and the worker that gave up on them",
        labels=["topic", "worker"],
    )
    up = GaugeMetricFamily(
        "ywtb_figures_up",
        "1 if the last gathering could read this part (store, lag, dead_letters)",
        labels=["part"],
    )
    gathered = GaugeMetricFamily(
        "ywtb_figures_gathered_timestamp_seconds",
        "When the store and Kafka figures were last gathered (Unix time)",
    )
    if figures is not None:
        if figures.up("store"):
            outbox_pending.add_metric([], figures.outbox_pending or 0)
            outbox_age.add_metric([], figures.outbox_oldest_age_s or 0.0)
            for status, count in sorted(figures.applications.items()):
                applications.add_metric([status], count)
        for row in figures.lag:
            labels = [row.group, row.topic, str(row.partition)]
            if row.lag is not None:
                lag_messages.add_metric(labels, row.lag)
            if row.age_s is not None:
                lag_seconds.add_metric(labels, row.age_s)
        for (topic, worker), count in sorted(figures.dead_letters.items()):
            dead_letters.add_metric([topic, worker], count)
        for part in PARTS:
            up.add_metric([part], 1 if figures.up(part) else 0)
        gathered.add_metric([], figures.gathered_at)
    yield from (
        outbox_pending,
        outbox_age,
        applications,
        lag_messages,
        lag_seconds,
        dead_letters,
        up,
        gathered,
    )


class Exposition:
    """What ``/metrics`` serves: the process's registry and the figures collector."""

    def __init__(self, *collectors: Collector) -> None:
        self._collectors = (REGISTRY, *collectors)

    def collect(self) -> Iterable[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def exported_families() -> dict[str, str]:
    """Every ``ywtb_*`` family the service exports, with its type (counter, gauge, histogram)."""
    families = [*REGISTRY.collect(), *FiguresCollector(lambda: None, {}, Loops()).describe()]
    return {m.name: m.type for m in families if m.name.startswith("ywtb_")}


def sample_names(families: Mapping[str, str]) -> set[str]:
    """The series names the families produce (``_total``, ``_bucket``, ... included)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    return {name + suffix for name, kind in families.items() for suffix in suffixes[kind]}
