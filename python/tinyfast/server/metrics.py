"""Prometheus metrics for `GET /metrics`, in a registry per app (several apps can share a process).

Counters and histograms are fed by the request handlers; engine state (running/waiting sequences,
KV usage, prefix-cache hits) is read from the scheduler at scrape time. Scheduler calls hold the
GIL, so reading them from the event loop thread is serialized with the engine thread's steps.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
ITL_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
RATE_WINDOW_S = 10.0


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, engine, in_flight) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter("tinyfast_http_requests", "HTTP responses by method, route and status",
                                     ["method", "route", "status"], registry=r)
        self.requests = Counter("tinyfast_requests", "Finished generation requests by API and finish reason",
                                ["api", "finish_reason"], registry=r)
        self.rejected = Counter("tinyfast_requests_rejected", "Generation requests rejected before the engine",
                                ["reason"], registry=r)
        self.prompt_tokens = Counter("tinyfast_prompt_tokens", "Prompt tokens of accepted requests", registry=r)
        self.generation_tokens = Counter("tinyfast_generation_tokens", "Generated tokens", registry=r)
        self.ttft = Histogram("tinyfast_time_to_first_token_seconds",
                              "Request accepted -> first token delivered", buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("tinyfast_inter_token_latency_seconds",
                             "Time between consecutive delivered tokens of a sample", buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram("tinyfast_request_latency_seconds", "Request accepted -> finished",
                             buckets=E2E_BUCKETS, registry=r)
        self.in_flight = Gauge("tinyfast_server_requests_in_flight",
                               "Engine requests admitted by the server and not finished (the bounded queue)",
                               registry=r)
        self.in_flight.set_function(in_flight)
        self._window: collections.deque[tuple[float, int]] = collections.deque()
        self._window_lock = threading.Lock()
        self._start = time.monotonic()
        r.register(_EngineCollector(engine, self))

    def observe_http(self, method: str, route: str, status: int, _seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()

    def tokens_generated(self, n: int) -> None:
        if n <= 0:
            return
        self.generation_tokens.inc(n)
        now = time.monotonic()
        with self._window_lock:
            self._window.append((now, n))

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._window_lock:
            while self._window and self._window[0][0] < now - RATE_WINDOW_S:
                self._window.popleft()
            total = sum(n for _, n in self._window)
        span = min(RATE_WINDOW_S, max(now - self._start, 1e-3))
        return total / span

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector:
    def __init__(self, engine, metrics: ServerMetrics):
        self.engine = engine
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        sched = self.engine.scheduler
        bm = sched.block_manager
        stats = bm.stats
        hits, misses = int(stats["hits"]), int(stats["misses"])
        yield _gauge("tinyfast_num_requests_running", "Sequences the scheduler is running", sched.num_running)
        yield _gauge("tinyfast_num_requests_waiting", "Sequences waiting for admission", sched.num_waiting)
        yield _gauge("tinyfast_kv_cache_usage_ratio", "Fraction of KV blocks in use", bm.usage)
        yield _gauge("tinyfast_kv_cache_blocks_total", "KV blocks in the pool", bm.num_blocks)
        yield _gauge("tinyfast_kv_cache_blocks_used", "KV blocks held by sequences", bm.num_used_blocks)
        yield _counter("tinyfast_prefix_cache_hits", "Prefix-cache hits (blocks)", hits)
        yield _counter("tinyfast_prefix_cache_queries", "Prefix-cache lookups (blocks)", hits + misses)
        yield _gauge("tinyfast_prefix_cache_hit_rate", "Prefix-cache hits / lookups since start (blocks)",
                     hits / (hits + misses) if hits + misses else 0.0)
        yield _counter("tinyfast_num_preemptions", "Sequences preempted (recompute)", sched.num_preemptions)
        yield _counter("tinyfast_engine_steps", "Engine steps run", self.engine.stats["steps"])
        yield _counter("tinyfast_decode_lookahead_used", "Decode steps computed ahead and used",
                       self.engine.stats["lookahead_used"])
        yield _counter("tinyfast_decode_lookahead_dropped",
                       "Decode steps computed ahead and dropped (a request stopped, joined or left)",
                       self.engine.stats["lookahead_dropped"])
        yield _gauge("tinyfast_generation_tokens_per_second",
                     f"Generated tokens per second over the last {RATE_WINDOW_S:.0f} s",
                     self.metrics.tokens_per_second())


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=float(value))
