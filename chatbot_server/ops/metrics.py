"""Prometheus metrics: cheap counters on the hot path, read by a collector at scrape time."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..layers import ChannelLayer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StoreCounters(Protocol):
    """What the conversation store counts (store/base.py StoreStats)."""

    data_lost: int
    rewritten: int


class _CountingStore(Protocol):
    @property
    def stats(self) -> StoreCounters: ...


class ProbeCounters(Protocol):
    """What a layer that probes its own delivery counts (layers/redis_probe.py ProbeStats)."""

    failures: int
    round_trip: float


class _CountingBot(Protocol):
    def counters(self) -> Mapping[str, int]: ...


@runtime_checkable
class _ProbingLayer(Protocol):
    probe_stats: ProbeCounters


class ServerStats:
    """Plain integer counters (no locks) incremented by consumers; one per application."""

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_out = 0
        self.connections_total = 0
        self.frames_replayed = 0  # stored frames sent again by resumes and history pages
        self.errors: Counter[str] = Counter()
        self.api_requests: Counter[tuple[str, int]] = Counter()  # (endpoint, status) of /api/v1 (api/)
        # (score, agent username) of ratings after human chats: bounded by the configured accounts.
        self.ratings: Counter[tuple[str, str]] = Counter()
        self.registry = CollectorRegistry(auto_describe=True)
        self.bot_latency = LatencyHistogram((0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    def error(self, code: str) -> None:
        """Count one error frame or close by its code."""
        self.errors[code] += 1

    def api_request(self, endpoint: str, status: int) -> None:
        """Count one HTTP API request by its endpoint (a route name: a bounded set) and status."""
        self.api_requests[endpoint, status] += 1

    def rating(self, score: int, agent: str) -> None:
        """Count one customer rating (1..5) of an agent's chat."""
        self.ratings[str(score), agent] += 1

    def bind(
        self,
        open_sockets: Callable[[], int],
        layer: ChannelLayer,
        store: _CountingStore | None = None,
        bot: _CountingBot | None = None,
    ) -> None:
        """Expose the counters, the open socket count, the layer's stats (and the store's, the bot's)."""
        self.registry.register(_StatsCollector(self, open_sockets, layer, store, bot))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class LatencyHistogram:
    """A lock-free histogram for one event loop (prometheus_client's takes a lock per observe)."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Record one duration."""
        self.buckets[bisect.bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.total += seconds

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        """The histogram in Prometheus form (cumulative buckets)."""
        cumulative, running = [], 0
        for bound, hits in zip((*map(str, self.bounds), "+Inf"), self.buckets, strict=True):
            running += hits
            cumulative.append((bound, running))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.total)


class _StatsCollector(Collector):
    def __init__(
        self,
        stats: ServerStats,
        open_sockets: Callable[[], int],
        layer: ChannelLayer,
        store: _CountingStore | None,
        bot: _CountingBot | None = None,
    ) -> None:
        self.stats = stats
        self.open_sockets = open_sockets
        self.layer = layer
        self.store = store
        self.bot = bot

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield GaugeMetricFamily("chatbot_open_sockets", "Websockets open now", value=self.open_sockets())
        yield CounterMetricFamily("chatbot_connections", "Websockets accepted", value=s.connections_total)
        yield CounterMetricFamily("chatbot_messages_in", "Client frames received", value=s.messages_in)
        yield CounterMetricFamily("chatbot_messages_out", "Frames sent to clients", value=s.messages_out)
        errors = CounterMetricFamily("chatbot_errors", "Error frames and abnormal closes by code", labels=["code"])
        for code, count in sorted(s.errors.items()):
            errors.add_metric([code], count)
        yield errors
        ls = self.layer.stats
        layer = CounterMetricFamily("chatbot_layer_messages", "Channel-layer operations", labels=["backend", "op"])
        for op, value in (
            ("send", ls.sent),
            ("group_send", ls.group_sent),
            ("delivered", ls.delivered),
            ("dropped", ls.dropped),
            ("failure", ls.failures),
            ("write_failure", ls.write_failures),
            ("late", ls.late_writes),
        ):
            layer.add_metric([self.layer.backend, op], value)
        yield layer
        yield CounterMetricFamily(
            "chatbot_layer_reconnects", "Times the layer reconnected to its backend", value=ls.reconnects
        )
        yield GaugeMetricFamily(
            "chatbot_layer_pending_writes",
            "Group memberships the backend refused, being retried",
            value=ls.pending_writes,
        )
        if isinstance(self.layer, _ProbingLayer):  # the Redis layer: its delivery probe
            probe = self.layer.probe_stats
            yield CounterMetricFamily(
                "chatbot_layer_probe_failures", "Delivery probes not back within the interval", value=probe.failures
            )
            yield GaugeMetricFamily(
                "chatbot_layer_probe_seconds", "Round trip of the last delivery probe back", value=probe.round_trip
            )
        yield s.bot_latency.family("chatbot_bot_answer_seconds", "Time the bot took to answer one message")
        bot_counts = self.bot.counters() if self.bot is not None else {}
        if bot_counts:  # Bot.counters(): e.g. the llm bot's answers and endpoint faults
            events = CounterMetricFamily("chatbot_bot_events", "The bot's own events by name", labels=["event"])
            for event, count in sorted(bot_counts.items()):
                events.add_metric([event], count)
            yield events
        if self.store is not None:
            counts = self.store.stats
            yield CounterMetricFamily(
                "chatbot_store_data_lost", "Times Redis was found to have lost the store's data", value=counts.data_lost
            )
            yield CounterMetricFamily(
                "chatbot_store_rewritten", "Held conversations written again whole after a loss", value=counts.rewritten
            )
        yield CounterMetricFamily(
            "chatbot_frames_replayed", "Stored frames sent again by resumes and history pages", value=s.frames_replayed
        )
        api = CounterMetricFamily(
            "chatbot_api_requests", "HTTP API requests by endpoint and status", labels=["endpoint", "status"]
        )
        for (endpoint, status), count in sorted(s.api_requests.items()):
            api.add_metric([endpoint, str(status)], count)
        yield api
        yield from _rating_families(s.ratings)


def _rating_families(ratings: Counter[tuple[str, str]]) -> Iterator[Metric]:
    by_score = CounterMetricFamily("chatbot_ratings", "Customer ratings after human chats by score", labels=["score"])
    per_agent = CounterMetricFamily(
        "chatbot_agent_ratings", "Customer ratings after human chats by agent and score", labels=["agent", "score"]
    )
    totals: Counter[str] = Counter()
    for (score, agent), count in sorted(ratings.items()):
        totals[score] += count
        per_agent.add_metric([agent, score], count)
    for score in "12345":
        by_score.add_metric([score], totals[score])
    yield by_score
    yield per_agent


class GuardStats:
    """The transport guard's counters (ops/guard.py): connections shed by reason, accept() errors."""

    def __init__(self) -> None:
        self.shed: Counter[str] = Counter()  # handshake_timeout, per_ip, fd_reserve
        self.accept_errors = 0

    def collector(self, open_connections: Callable[[], int]) -> Collector:
        """A collector to register on ServerStats.registry (python -m chatbot_server only)."""
        return _GuardCollector(self, open_connections)


class _GuardCollector(Collector):
    def __init__(self, stats: GuardStats, open_connections: Callable[[], int]) -> None:
        self.stats = stats
        self.open_connections = open_connections

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("chatbot_http_connections", "TCP connections open now", value=self.open_connections())
        shed = CounterMetricFamily("chatbot_connections_shed", "Connections closed by the guard", labels=["reason"])
        for reason in ("handshake_timeout", "per_ip", "fd_reserve"):
            shed.add_metric([reason], self.stats.shed[reason])
        yield shed
        yield CounterMetricFamily(
            "chatbot_accept_errors", "accept() failures (out of file descriptors)", value=self.stats.accept_errors
        )
