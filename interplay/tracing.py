"""Tracing with the OpenTelemetry SDK: one tracer provider per process, a JSON-lines file exporter,
and W3C trace context carried in gRPC metadata.

`configure(path, service)` makes this process record spans and append them to `path`, one JSON object
per line (the SDK's own `ReadableSpan.to_json`, on one line), through a batch processor; every process
of a run (the interaction actor, each background actor, a demo driver) may append to the same file:
each span is one `write` on an O_APPEND descriptor. Unconfigured, `tracer()` is OpenTelemetry's no-op
tracer: spans cost next to nothing and nothing is exported or propagated. `flush()` exports what is
buffered; `shutdown()` flushes and closes.

Propagation: `outgoing_metadata()` is the current span's context as gRPC metadata (`traceparent`,
`tracestate`: W3C Trace Context via OpenTelemetry's TraceContextTextMapPropagator); the server passes
`context.invocation_metadata()` to `incoming_context()` and starts its spans under what it returns.

What spans carry (see the call sites): the interaction side's `delegate` span (delegator.py), the
background's `background_task` span (tasks.py), one `chat {model}` span per LLM request and one
`execute_tool {name}` span per tool call (agent.py), with the OpenTelemetry GenAI attribute names.
Never a secret: task text, prompts, tool arguments and results are not attributes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["INVALID_SPAN", "JsonLinesExporter", "Span", "SpanKind", "Status", "StatusCode", "configure", "enabled", "flush",
           "incoming_context", "outgoing_metadata", "set_span_in_context", "shutdown", "tracer", "use_span"]

INVALID_SPAN = trace.INVALID_SPAN  # a span that records nothing (a default before one is started)
set_span_in_context = trace.set_span_in_context
use_span = trace.use_span  # make a span current for a block (end_on_exit=False by default)
_PROPAGATOR = TraceContextTextMapPropagator()
_NOOP = trace.NoOpTracer()
_lock = threading.Lock()
_provider: TracerProvider | None = None
_config: tuple[str, str] | None = None


class JsonLinesExporter(SpanExporter):
    """Appends each finished span to a file as one line of JSON (one `os.write` per span)."""

    def __init__(self, path: str) -> None:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._fd is None:
            return SpanExportResult.FAILURE
        for s in spans:
            os.write(self._fd, (s.to_json(indent=None) + "\n").encode())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def configure(path: str | None, service: str = "interplay", schedule_delay_ms: int = 1000) -> bool:
    """Record this process's spans into `path` (JSON lines) as `service`; None or "": tracing off.
    Calling it again with the same path and service does nothing; with others, the previous provider
    is flushed and replaced. Returns whether tracing is on."""
    global _provider, _config
    with _lock:
        want = (path, service) if path else None
        if want == _config:
            return _provider is not None
        old, _provider, _config = _provider, None, want
        if old is not None:
            old.shutdown()
        if path:
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            provider.add_span_processor(BatchSpanProcessor(JsonLinesExporter(path),
                                                           schedule_delay_millis=schedule_delay_ms))
            _provider = provider
        return _provider is not None


def enabled() -> bool:
    return _provider is not None


def tracer() -> trace.Tracer:
    """The tracer of this process's provider; the no-op tracer when tracing is off."""
    p = _provider
    return p.get_tracer("interplay") if p is not None else _NOOP


def flush(timeout_ms: int = 5000) -> bool:
    p = _provider
    return p.force_flush(timeout_ms) if p is not None else True


def shutdown() -> None:
    configure(None)


def outgoing_metadata(ctx: otel_context.Context | None = None) -> tuple[tuple[str, str], ...] | None:
    """The current (or `ctx`'s) span context as gRPC metadata; None when there is nothing to send."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=ctx)
    return tuple(carrier.items()) or None


def incoming_context(metadata: Iterable[tuple[str, str | bytes]] | None) -> otel_context.Context:
    """The remote parent carried by a call's metadata (an empty context when there is none)."""
    carrier = {k.lower(): v for k, v in (metadata or ()) if isinstance(v, str)}
    return _PROPAGATOR.extract(carrier)
