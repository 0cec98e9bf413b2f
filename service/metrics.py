"""Prometheus metrics: request latency histograms, plus queue, job and index gauges read at scrape time."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class _StateCollector:
    def __init__(self, queue, engine):
        self.queue, self.engine = queue, engine

    def collect(self):
        stats = self.queue.stats()
        yield GaugeMetricFamily("hapvr_queue_depth", "jobs waiting or running", value=stats["queue_depth"])
        jobs = GaugeMetricFamily("hapvr_jobs", "recent jobs by state", labels=["state"])
        for state, count in stats["jobs_by_state"].items():
            jobs.add_metric([state], count)
        yield jobs
        yield CounterMetricFamily("hapvr_frames_embedded", "frames embedded by workers for indexing",
                                  value=stats["frames_embedded"])
        index = self.engine.stats()
        yield GaugeMetricFamily("hapvr_index_videos", "indexed videos", value=index["videos"])
        yield GaugeMetricFamily("hapvr_index_bytes", "bytes of features and SQLite", value=index["bytes"])
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
