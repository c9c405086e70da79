"""`/metrics`: vLLM's metric names and types, so the fleet machinery built for vLLM reads Corral.

production-stack's router, the Gateway API Inference Extension's endpoint picker, KEDA and vLLM's
Grafana dashboards look for these names, labelled `model_name`: counters as `_total` counters,
latencies and token counts as histograms, queue and KV state as gauges. Corral's own metrics
(`corral_*`) sit beside them: loads and unloads, device memory, HTTP requests, queue rejections.

Counters and histograms are fed as things happen (the engine and residency call this module's
`ServerMetrics` as a `StatsListener`; the access log counts HTTP requests). Gauges are read
from the loaded engines at scrape time, summed over a model's replicas.
"""

from __future__ import annotations

import time

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from scheduler.adapters import lora_requests_info
from scheduler.residency import Residency
from scheduler.stats import RequestStats, StatsListener

prometheus_client.disable_created_metrics()  # vLLM exposes no `_created` series either

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
MODEL = ["model_name"]
# vLLM's buckets (vllm/v1/metrics/loggers.py), so dashboards' quantiles line up.
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
               10.0, 20.0, 40.0, 80.0]
LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]
LOAD_BUCKETS = [0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0]


def token_buckets(max_tokens: int = 131072) -> list[float]:
    """1, 2, 5, 10, 20, 50, ... up to `max_tokens` (vLLM's build_1_2_5_buckets)."""
    out, exponent = [], 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10 ** exponent
            if value > max_tokens:
                return out
            out.append(float(value))
        exponent += 1


class ServerMetrics(StatsListener):
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.residency: Residency | None = None
        self._per_model: list = []  # metrics labelled model_name, for `forget`

        def kept(metric, labels: list[str]):
            if "model_name" in labels:
                self._per_model.append(metric)
            return metric

        def counter(name: str, doc: str, labels: list[str] = MODEL) -> Counter:
            return kept(Counter(name, doc, labels, registry=registry), labels)

        def histogram(name: str, doc: str, buckets: list[float], labels: list[str] = MODEL):
            return kept(Histogram(name, doc, labels, buckets=buckets, registry=registry), labels)

        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens",
                                         "Number of generation tokens processed.")
        self.request_success = counter("vllm:request_success", "Count of finished requests.",
                                       MODEL + ["finished_reason"])
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemptions.")
        self.prefix_queries = counter("vllm:prefix_cache_queries",
                                      "Prefix cache queries, in terms of number of queried tokens.")
        self.prefix_hits = counter("vllm:prefix_cache_hits",
                                   "Prefix cache hits, in terms of number of cached tokens.")
        self.ttft = histogram("vllm:time_to_first_token_seconds",
                              "Histogram of time to first token in seconds.", TTFT_BUCKETS)
        self.itl = histogram("vllm:inter_token_latency_seconds",
                             "Histogram of inter-token latency in seconds.", ITL_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of e2e request latency in seconds.", LATENCY_BUCKETS)
        self.queue_time = histogram("vllm:request_queue_time_seconds",
                                    "Histogram of time spent in WAITING phase for request.",
                                    LATENCY_BUCKETS)
        self.request_prompt_tokens = histogram("vllm:request_prompt_tokens",
                                               "Number of prefill tokens processed.",
                                               token_buckets())
        self.request_generation_tokens = histogram("vllm:request_generation_tokens",
                                                   "Number of generation tokens processed.",
                                                   token_buckets())
        # Corral's own
        self.loads = counter("corral_model_loads", "Model instances loaded.")
        self.unloads = counter("corral_model_unloads", "Model instances unloaded, by reason "
                               "(expired, requested, evicted, reload, engine_died, shutdown).",
                               MODEL + ["reason"])
        self.load_duration = histogram("corral_model_load_duration_seconds",
                                       "Seconds a model instance took to load.", LOAD_BUCKETS)
        self.queue_rejections = counter("corral_queue_rejections",
                                        "Requests refused with 503 because the queue was full.")
        self.http_requests = counter("corral_http_requests", "HTTP requests answered.",
                                     ["method", "route", "status"])
        registry.register(_Snapshot(self))

    # --- StatsListener: called from engine threads and the event loop ----------------------

    def request_finished(self, stats: RequestStats) -> None:
        model = stats.model
        self.request_success.labels(model, stats.finished_reason).inc()
        self.prompt_tokens.labels(model).inc(stats.num_prompt_tokens)
        self.generation_tokens.labels(model).inc(stats.num_generation_tokens)
        self.preemptions.labels(model).inc(stats.num_preemptions)
        self.prefix_queries.labels(model).inc(stats.num_prefix_query_tokens)
        self.prefix_hits.labels(model).inc(stats.num_prefix_hit_tokens)
        self.e2e.labels(model).observe(stats.e2e_latency)
        self.queue_time.labels(model).observe(stats.queue_time)
        self.request_prompt_tokens.labels(model).observe(stats.num_prompt_tokens)
        self.request_generation_tokens.labels(model).observe(stats.num_generation_tokens)
        if stats.time_to_first_token is not None:
            self.ttft.labels(model).observe(stats.time_to_first_token)
        itl = self.itl.labels(model)
        for gap in stats.inter_token_latencies:
            itl.observe(gap)

    def queue_rejected(self, model: str) -> None:
        self.queue_rejections.labels(model).inc()

    def model_loaded(self, model: str, devices: list[str], seconds: float) -> None:
        self.loads.labels(model).inc()
        self.load_duration.labels(model).observe(seconds)

    def model_unloaded(self, model: str, reason: str) -> None:
        self.unloads.labels(model, reason).inc()

    def http_request(self, method: str, route: str, status: int) -> None:
        self.http_requests.labels(method, route, str(status)).inc()

    def forget(self, model: str) -> None:
        """Drop a deleted model's series: a store that churns names must not grow them forever."""
        for metric in self._per_model:
            metric.remove_by_labels({"model_name": model})

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Snapshot:
    """Gauges read from the loaded runners at scrape time."""

    def __init__(self, metrics: ServerMetrics):
        self.metrics = metrics

    def describe(self):
        return []  # sampled at collect time; nothing to check at registration

    def collect(self):
        residency = self.metrics.residency
        runners = residency.all_runners() if residency is not None else []
        running = GaugeMetricFamily("vllm:num_requests_running",
                                    "Number of requests in model execution batches.", labels=MODEL)
        waiting = GaugeMetricFamily("vllm:num_requests_waiting",
                                    "Number of requests waiting to be processed.", labels=MODEL)
        usage = GaugeMetricFamily("vllm:kv_cache_usage_perc",
                                  "KV-cache usage. 1 means 100 percent usage.", labels=MODEL)
        free = GaugeMetricFamily("corral_kv_blocks_free", "Free KV cache blocks (prefix-cached "
                                 "blocks no sequence holds count as free).", labels=MODEL)
        total = GaugeMetricFamily("corral_kv_blocks_total", "KV cache blocks.", labels=MODEL)
        config = GaugeMetricFamily("vllm:cache_config_info", "Information of the KV cache config.",
                                   labels=MODEL + ["block_size", "num_gpu_blocks",
                                                   "enable_prefix_caching"])
        in_flight = GaugeMetricFamily("corral_model_requests_in_flight",
                                      "Requests holding a lease on the model.", labels=MODEL)
        # vLLM's LoRA gauge, as the Gateway API Inference Extension's LoRA-affinity routing
        # reads it: its labels carry the adapters, its value is the time of the reading.
        lora = GaugeMetricFamily("vllm:lora_requests_info", "Running stats on lora requests.",
                                 labels=MODEL + ["running_lora_adapters", "waiting_lora_adapters",
                                                 "max_lora"])
        per_model: dict[str, list[int]] = {}
        configs: dict[str, tuple[str, ...]] = {}
        for runner in runners:
            name = runner.ref.name
            row = per_model.setdefault(name, [0, 0, 0, 0, 0])
            row[4] += runner.refcount
            engine = getattr(runner.instance, "engine", None)
            if engine is None:
                continue
            stats = engine.stats()
            row[0] += stats.running
            row[1] += stats.waiting
            row[2] += stats.free_blocks
            row[3] += stats.total_blocks
            configs[name] = (str(engine.config.block_size), str(stats.total_blocks),
                             str(engine.config.enable_prefix_caching))
            if stats.max_loras:
                info = lora_requests_info(stats)
                lora.add_metric([name, info["running_lora_adapters"], info["waiting_lora_adapters"],
                                 info["max_lora"]], time.time())
        for name, (n_run, n_wait, n_free, n_total, n_leases) in per_model.items():
            running.add_metric([name], n_run)
            waiting.add_metric([name], n_wait)
            in_flight.add_metric([name], n_leases)
            if n_total:
                usage.add_metric([name], 1.0 - n_free / n_total)
                free.add_metric([name], n_free)
                total.add_metric([name], n_total)
        for name, labels in configs.items():
            config.add_metric([name, *labels], 1.0)
        yield from (running, waiting, usage, free, total, config, in_flight, lora)
        yield from self._devices(residency, runners)

    @staticmethod
    def _devices(residency: Residency | None, runners: list):
        loaded = GaugeMetricFamily("corral_models_loaded", "Model instances loaded, per device.",
                                   labels=["device"])
        used = GaugeMetricFamily("corral_device_memory_used_bytes",
                                 "Device memory the loaded models hold.", labels=["device"])
        size = GaugeMetricFamily("corral_device_memory_total_bytes", "Device memory.",
                                 labels=["device"])
        if residency is not None:
            for device in residency.inventory.devices:
                count = sum(device.id in r.placement.device_ids for r in runners)
                loaded.add_metric([device.id], count)
                used.add_metric([device.id], residency.inventory.reserved(device.id))
                size.add_metric([device.id], device.total)
        yield from (loaded, used, size)
