"""Prometheus metrics: cheap counters on the hot path, read by a collector at scrape time."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..layers import ChannelLayer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerStats:
    """Plain integer counters (no locks) incremented by consumers; one per application."""

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_out = 0
        self.connections_total = 0
        self.errors: Counter[str] = Counter()
        self.registry = CollectorRegistry(auto_describe=True)
        self.bot_latency = LatencyHistogram((0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    def error(self, code: str) -> None:
        """Count one error frame or close by its code."""
        self.errors[code] += 1

    def bind(self, open_sockets: Callable[[], int], layer: ChannelLayer) -> None:
        """Expose the counters, the open socket count and the layer's stats."""
        self.registry.register(_StatsCollector(self, open_sockets, layer))

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
    def __init__(self, stats: ServerStats, open_sockets: Callable[[], int], layer: ChannelLayer) -> None:
        self.stats = stats
        self.open_sockets = open_sockets
        self.layer = layer

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
        ):
            layer.add_metric([self.layer.backend, op], value)
        yield layer
        yield CounterMetricFamily(
            "chatbot_layer_reconnects", "Times the layer reconnected to its backend", value=ls.reconnects
        )
        yield s.bot_latency.family("chatbot_bot_answer_seconds", "Time the bot took to answer one message")
