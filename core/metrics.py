"""Prometheus metrics of one job service: counters that only grow, histograms, and gauges read at scrape time.

Counters count events as they happen in this process (a submission, a job reaching its final status, a trainer
exiting), so deleting jobs or finishing more than any query window never makes them fall; Prometheus sees a
reset only when the process restarts, which it handles. Each service has its own registry, so several apps in
one process (the tests) never collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Job times span seconds (a warm generation) to days (a FLUX training).
_JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, float("inf"))
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf"))

# Per gauge name, its value now: a number, or {label values: number} for a labelled gauge.
GaugeReader = Callable[[], dict[str, float | dict[tuple[str, ...], float]]]


class ServiceMetrics:
    """The metric objects of one service and the registry that exposes them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.jobs_submitted = Counter(
            "lorapod_jobs_submitted", "Jobs accepted into the queue, by type.", ["type"], registry=reg
        )
        self.jobs_finished = Counter(
            "lorapod_jobs_finished",
            "Jobs that reached a final status, by type and status.",
            ["type", "status"],
            registry=reg,
        )
        self.trainer_exits = Counter(
            "lorapod_trainer_exits",
            "ai-toolkit trainer processes that ended, by cause (completed, cancelled, failed, signal, internal_error).",
            ["cause"],
            registry=reg,
        )
        self.calls_finished = Counter(
            "lorapod_runpod_calls_finished",
            "RunPod-style /v2 calls that ended, by their final RunPod status.",
            ["status"],
            registry=reg,
        )
        self.queue_wait = Histogram(
            "lorapod_job_queue_wait_seconds",
            "Time from submission to start.",
            ["type"],
            buckets=_JOB_BUCKETS,
            registry=reg,
        )
        self.run_time = Histogram(
            "lorapod_job_run_seconds",
            "Time from start to the final status.",
            ["type", "status"],
            buckets=_JOB_BUCKETS,
            registry=reg,
        )
        self.first_progress = Histogram(
            "lorapod_job_first_progress_seconds",
            "Time from start to the first progress report (model loading, caching latents).",
            ["type"],
            buckets=_JOB_BUCKETS,
            registry=reg,
        )
        self.http_requests = Counter(
            "lorapod_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=reg,
        )
        self.http_latency = Histogram(
            "lorapod_http_request_duration_seconds",
            "Time to answer an HTTP request (until the body is sent), by method and route template.",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=reg,
        )

    def add_gauges(self, read: GaugeReader, helps: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        """Gauges whose values read() returns at each scrape; helps gives each one's help text and label names."""
        self.registry.register(_ScrapeGauges(read, helps))

    def job_submitted(self, job_type: str) -> None:
        """A new job entered the queue."""
        self.jobs_submitted.labels(job_type).inc()

    def job_started(self, job_type: str, created_at: datetime) -> None:
        """A queued job got a slot."""
        self.queue_wait.labels(job_type).observe(_seconds_since(created_at))

    def job_finished(self, job_type: str, status: str, started_at: datetime | None) -> None:
        """A job reached its final status (counted once: callers only report transitions that happened)."""
        self.jobs_finished.labels(job_type, status).inc()
        if started_at is not None:
            self.run_time.labels(job_type, status).observe(_seconds_since(started_at))

    def trainer_exited(self, status: str, exit_code: int | None) -> None:
        """A trainer process ended; a signal that was not a requested stop is its own cause."""
        cause = "signal" if status == "failed" and exit_code is not None and exit_code < 0 else status
        self.trainer_exits.labels(cause).inc()

    def run_ended(
        self,
        job_type: str,
        final: tuple[str, datetime | None] | None,
        outcome: tuple[str, int | None] | None,
    ) -> None:
        """A run ended: final (status, started_at) if this run set it; a trainer's (status, exit code) or None."""
        if final is not None:
            self.job_finished(job_type, *final)
        if job_type == "train":
            if outcome is None:
                self.trainer_exits.labels("internal_error").inc()
            else:
                self.trainer_exited(*outcome)

    def render(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)


class _ScrapeGauges(Collector):
    """Gauges computed when scraped (queue depth, busy slots, free disk) rather than kept up to date."""

    def __init__(self, read: GaugeReader, helps: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        self._read = read
        self._helps = helps

    def describe(self) -> Iterable[Metric]:
        """Nothing to check at registration (reading would touch the database before it is migrated)."""
        return []

    def collect(self) -> Iterable[Metric]:
        """One gauge family per name, with its current values."""
        values = self._read()
        for name, (help_text, label_names) in self._helps.items():
            family = GaugeMetricFamily(name, help_text, labels=list(label_names) or None)
            value = values.get(name, 0.0)
            if isinstance(value, dict):
                for labels, number in value.items():
                    family.add_metric(list(labels), number)
            else:
                family.add_metric([], float(value))
            yield family


def _seconds_since(moment: datetime) -> float:
    # SQLite hands back naive datetimes; every stored time is UTC.
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - aware).total_seconds())
