"""Prometheus metrics: request latency histograms, plus queue, job and index gauges read at scrape time."""
from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class _StateCollector:
    #: seconds the index's byte count is reused for: summing storage sizes lists the bucket in cluster mode,
    #: which a scrape every few seconds must not do (the video count is one catalog query, read every time)
    BYTES_TTL_S = 300.0

    def __init__(self, queue, engine):
        self.queue, self.engine = queue, engine
        self._bytes: tuple[float, int] | None = None

    def index_bytes(self) -> int:
        now = time.monotonic()
        if self._bytes is None or now - self._bytes[0] > self.BYTES_TTL_S:
            self._bytes = (now, self.engine.stats()["bytes"])
        return self._bytes[1]

    def collect(self):
        stats = self.queue.stats()
        yield GaugeMetricFamily("hapvr_queue_depth", "jobs waiting or running", value=stats["queue_depth"])
        jobs = GaugeMetricFamily("hapvr_jobs", "recent jobs by state", labels=["state"])
        for state, count in stats["jobs_by_state"].items():
            jobs.add_metric([state], count)
        yield jobs
        yield CounterMetricFamily("hapvr_frames_embedded", "frames embedded by workers for indexing",
                                  value=stats["frames_embedded"])
        yield GaugeMetricFamily("hapvr_index_videos", "indexed videos", value=self.engine.video_count())
        yield GaugeMetricFamily("hapvr_index_bytes", f"bytes of features and catalog (refreshed every "
                                f"{self.BYTES_TTL_S:g} s)", value=self.index_bytes())
        yield GaugeMetricFamily("hapvr_workers_alive", "workers with a fresh heartbeat", value=self.queue.workers_alive())


class Metrics:
    def __init__(self, queue, engine):
        self.registry = CollectorRegistry()
        self.latency = Histogram("hapvr_request_seconds", "HTTP request latency", ["method", "route", "status"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.registry.register(_StateCollector(queue, engine))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route, str(status)).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
