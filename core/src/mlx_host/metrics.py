"""Prometheus metrics of one server (``GET /metrics``): what its requests did (counted when
each response has been sent, from its ``RequestRecord``) and what its models hold now (read
from the memory manager at each scrape).

Each app has a registry of its own, so that several servers in one process (tests) never share
or clash. MLX-free.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from mlx_host.api.access import RequestRecord
    from mlx_host.models.manager import ModelManager

#: Seconds: from a few milliseconds (a cached embedding) to minutes (a long answer on a CPU).
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The server's request metrics and the collector of its models' state."""

    def __init__(self, models: ModelManager) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mlx_host_requests", "Requests answered, by service, route and status.",
            ["service", "route", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "mlx_host_request_duration_seconds", "Time from request to the end of the response.",
            ["service", "route"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.first_token = Histogram(
            "mlx_host_time_to_first_token_seconds",
            "Time from request to the first generated text of a streamed answer.",
            ["service", "model"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "mlx_host_tokens", "Tokens read (prompt) and written (completion).",
            ["service", "model", "direction"], registry=r,
        )  # fmt: skip
        self.rate_limited = Counter(
            "mlx_host_rate_limited_requests", "Requests refused with 429, by service.",
            ["service"], registry=r,
        )  # fmt: skip
        r.register(_ModelState(models))

    def observe(self, record: RequestRecord) -> None:
        """Count a request whose response has been sent."""
        service = record.service or "none"
        self.requests.labels(service, record.route, str(record.status)).inc()
        self.latency.labels(service, record.route).observe(record.duration_ms / 1000)
        if record.status == 429:
            self.rate_limited.labels(service).inc()
        model = record.model or "none"
        if record.first_token_ms is not None:
            self.first_token.labels(service, model).observe(record.first_token_ms / 1000)
        if record.prompt_tokens:
            self.tokens.labels(service, model, "prompt").inc(record.prompt_tokens)
        if record.completion_tokens:
            self.tokens.labels(service, model, "completion").inc(record.completion_tokens)


class _ModelState(Collector):
    """Memory, loads and each loaded model's requests, read when scraped."""

    def __init__(self, models: ModelManager) -> None:
        self._models = models

    def collect(self) -> Iterator[Any]:
        manager = self._models
        usage = manager.usage()
        memory = GaugeMetricFamily(
            "mlx_host_memory_bytes", "The memory budget and what is used and committed.",
            labels=["kind"],
        )  # fmt: skip
        for kind in ("budget", "used", "committed", "free"):
            memory.add_metric([kind], usage[f"{kind}_bytes"])
        yield memory
        yield CounterMetricFamily(
            "mlx_host_model_loads", "Models loaded since the start.", value=manager.loads
        )
        yield CounterMetricFamily(
            "mlx_host_model_evictions", "Idle models unloaded to make room.",
            value=manager.evictions,
        )  # fmt: skip
        yield CounterMetricFamily(
            "mlx_host_model_load_seconds", "Time spent loading models.",
            value=manager.load_seconds,
        )  # fmt: skip
        model_bytes = GaugeMetricFamily(
            "mlx_host_model_memory_bytes", "Each loaded model's measured memory.", labels=["model"]
        )
        running = GaugeMetricFamily(
            "mlx_host_running_requests", "Requests in a model's batch (or worker) now.",
            labels=["model"],
        )  # fmt: skip
        queued = GaugeMetricFamily(
            "mlx_host_queued_requests",
            "Requests waiting for a model now, and what the oldest waits for: a batch_row, "
            "memory for its KV cache, or (none) nothing yet.",
            labels=["model", "waiting_for"],
        )  # fmt: skip
        waited = SummaryMetricFamily(
            "mlx_host_queue_wait_seconds",
            "Time from a request's arrival at a model to its start in the batch (count: "
            "requests started).",
            labels=["model"],
        )  # fmt: skip
        refused = CounterMetricFamily(
            "mlx_host_refused_requests",
            "Requests a model's queue turned away: queue_full (429), queue_timeout and "
            "insufficient_memory (503).",
            labels=["model", "reason"],
        )  # fmt: skip
        drafts = CounterMetricFamily(
            "mlx_host_draft_tokens",
            "Tokens a lone greedy request's speculative decoding guessed from its own text: "
            "accepted (emitted without a pass of their own) and rejected.",
            labels=["model", "outcome"],
        )  # fmt: skip
        for model in usage["models"]:
            name = model["name"]
            model_bytes.add_metric([name], model["memory_bytes"])
            active = model.get("active_requests", 0)
            running.add_metric([name], model.get("running_requests", active))
            queued.add_metric([name, model.get("waiting_for") or "none"],
                              model.get("queued_requests", 0))  # fmt: skip
            if "admitted_requests" in model:  # engines with a queue of their own
                waited.add_metric([name], model["admitted_requests"], model["queue_wait_seconds"])
                for reason, count in model["refused_requests"].items():
                    refused.add_metric([name, reason], count)
            for outcome, count in model.get("draft_tokens", {}).items():
                drafts.add_metric([name, outcome], count)
        yield from (model_bytes, running, queued, waited, refused, drafts)
