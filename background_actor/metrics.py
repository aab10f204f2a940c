"""A background actor's Prometheus metrics: tool calls and LLM requests, served per actor.

`BackgroundMetrics` holds prometheus_client collectors in a registry of its own (one per server, so
several servers in one process never share counts). The agent loop (agent.py) observes each tool
call (`tool_call`: latency and outcome, by tool) and each LLM request (`llm_request`: time to first
token and generation time, by model, plus input/output tokens); the task manager (tasks.py) counts
settled tasks by outcome (`task_settled`). `serve(host, port)` starts prometheus_client's HTTP
server for the registry on a daemon thread bound to `host` (port 0: a free one) and returns its
"host:port"; `close()` stops it. Exposed names:

- interplay_background_tool_latency_ms{tool} (histogram), interplay_background_tool_calls_total{tool,outcome}
  (outcome "ok" or the tool error code: timeout, invalid_arguments, ...)
- interplay_background_llm_ttft_ms{model}, interplay_background_llm_generation_ms{model} (histograms),
  interplay_background_llm_tokens_total{model,direction} (direction input | output),
  interplay_background_llm_tokens_per_s{model} (histogram: decode speed, (output tokens - 1) / (request
  time - time to first token), as `interplay bench engine` reports it; requests of one token have none)
- interplay_background_tasks_total{outcome} (final, error, cancelled; refused and invalid at the door)

Tool arguments and results never become labels; tool and model names are the only free labels.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

TOOL_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000)
LLM_BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000)
RATE_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)


class BackgroundMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tool_latency = Histogram("interplay_background_tool_latency_ms", "Tool call time (ms), by tool.",
                                      ["tool"], buckets=TOOL_BUCKETS_MS, registry=r)
        self.tool_calls = Counter("interplay_background_tool_calls", "Tool calls settled, by tool and outcome.",
                                  ["tool", "outcome"], registry=r)
        self.ttft = Histogram("interplay_background_llm_ttft_ms", "LLM request start to its first token (ms).",
                              ["model"], buckets=LLM_BUCKETS_MS, registry=r)
        self.generation = Histogram("interplay_background_llm_generation_ms", "LLM request time (ms).",
                                    ["model"], buckets=LLM_BUCKETS_MS, registry=r)
        self.rate = Histogram("interplay_background_llm_tokens_per_s", "LLM decode speed (output tokens/s after "
                              "the first).", ["model"], buckets=RATE_BUCKETS, registry=r)
        self.tokens = Counter("interplay_background_llm_tokens", "LLM tokens, by model and direction.",
                              ["model", "direction"], registry=r)
        self.tasks = Counter("interplay_background_tasks", "Tasks settled, by outcome.", ["outcome"], registry=r)
        self._http = None
        self.address = ""

    def tool_call(self, tool: str, ok: bool, error_code: str, duration_ms: float) -> None:
        self.tool_latency.labels(tool).observe(duration_ms)
        self.tool_calls.labels(tool, "ok" if ok else (error_code or "tool_error")).inc()

    def llm_request(self, model: str, ttft_ms: float, total_ms: float, input_tokens: int, output_tokens: int) -> None:
        self.ttft.labels(model).observe(ttft_ms)
        self.generation.labels(model).observe(total_ms)
        if input_tokens:  # only where the engine counts them
            self.tokens.labels(model, "input").inc(input_tokens)
        self.tokens.labels(model, "output").inc(output_tokens)
        if output_tokens > 1 and total_ms > ttft_ms:
            self.rate.labels(model).observe((output_tokens - 1) / ((total_ms - ttft_ms) / 1000.0))

    def task_settled(self, outcome: str) -> None:
        self.tasks.labels(outcome).inc()

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve /metrics on host:port (0: a free port); returns "host:port"."""
        if self._http is None:
            self._http = start_http_server(port, addr=host, registry=self.registry)
            h, p = self._http[0].server_address[:2]
            self.address = f"{h}:{p}"
        return self.address

    def close(self) -> None:
        if self._http is not None:
            httpd, thread = self._http
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
            self._http, self.address = None, ""
