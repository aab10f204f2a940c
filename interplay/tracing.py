"""Tracing with the OpenTelemetry SDK: one tracer provider per process, a JSON-lines file exporter, an
OTLP exporter when a collector is configured, and W3C trace context carried in gRPC metadata.

`configure(path, service, otlp_endpoint)` makes this process record spans and append them to `path`,
one JSON object per line (the SDK's own `ReadableSpan.to_json`, on one line), and/or send them to an
OTLP/gRPC collector at `otlp_endpoint` ("http://host:4317"; `otlp_from_env` reads the standard
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT), each through a batch processor;
every process of a run (the interaction actor, each background actor, a demo driver) may append to
the same file: each span is one `write` on an O_APPEND descriptor. Unconfigured, `tracer()` is
OpenTelemetry's no-op tracer: spans cost next to nothing and nothing is exported or propagated.
`flush()` exports what is buffered; `shutdown()` (also at interpreter exit) ends every long span
still open, then flushes and closes.

Long spans: a span that lives as long as a session (`start_long_span`, ended by `end_long_span`) is
exported only when it ends; its children export as *they* end. A long span still open at
`shutdown()` (a process stopping without closing its sessions) is ended there, marked
`interplay.ended_by = "shutdown"`, so a session's trace never lacks its root.

Propagation: `outgoing_metadata()` is the current span's context as gRPC metadata (`traceparent`,
`tracestate`: W3C Trace Context via OpenTelemetry's TraceContextTextMapPropagator); the server passes
`context.invocation_metadata()` to `incoming_context()` and starts its spans under what it returns.

Span names (see the call sites):
- `session` (interaction_actor/runtime/loop.py): one per session, open → close: the trace's root;
- `delegate` (delegator.py, a child of `session`): decision → the result surfaced and the delegation
  settled, with events accepted / queued / progress / tool_call / tool_result / steered / first_partial
  / result (the terminal update arrived) / surfaced (mode, voiced) / voicing_cut / settled;
- `transcribe` (hearing.py, a child of `session`): the window holding the speech's end was fed → the
  transcript reached the loop; `transcribe_segment` (ears/worker.py): one segment through the
  recogniser, in whichever process the ears run;
- `tts` (`TTS_SPAN`, for a backend that synthesises speech, a child of the session's span:
  `record_span(TTS_SPAN, long_span(f"session:{session_id}"), ms, {...})` after each synthesis);
- in a background actor: `background_task`, one `chat {model}` span per LLM request and one
  `execute_tool {name}` span per tool call (agent.py), with the OpenTelemetry GenAI attribute names.
Never a secret: task text, prompts, transcripts, tool arguments and results are not attributes.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["INVALID_SPAN", "TTS_SPAN", "JsonLinesExporter", "Span", "SpanKind", "Status", "StatusCode", "configure",
           "end_long_span", "enabled", "flush", "incoming_context", "long_span", "otlp_from_env", "outgoing_metadata",
           "record_span", "set_span_in_context", "shutdown", "start_long_span", "tracer", "use_span"]

INVALID_SPAN = trace.INVALID_SPAN  # a span that records nothing (a default before one is started)
TTS_SPAN = "tts"  # one speech synthesis: attributes interplay.session_id, interplay.tts.chars, interplay.tts.audio_s
set_span_in_context = trace.set_span_in_context
use_span = trace.use_span  # make a span current for a block (end_on_exit=False by default)
_PROPAGATOR = TraceContextTextMapPropagator()
_NOOP = trace.NoOpTracer()
_lock = threading.RLock()
_provider: TracerProvider | None = None
_config: tuple[str | None, str, str | None] | None = None
_long: dict[int, Span] = {}  # long spans still open (id → span): ended at shutdown
_keyed: dict[str, Span] = {}  # long spans still open, by the key they were started with ("session:ID")
_atexit = False


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


def otlp_from_env() -> str | None:
    """The OTLP endpoint the standard environment names (traces-specific first), or None."""
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None


def configure(path: str | None, service: str = "interplay", schedule_delay_ms: int = 1000,
              otlp_endpoint: str | None = None) -> bool:
    """Record this process's spans as `service`: into `path` (JSON lines) and/or to the OTLP/gRPC
    collector at `otlp_endpoint` ("http://host:port": plain text; "https://...": TLS); neither: tracing
    off. Calling it again with the same arguments does nothing; with others, the previous provider's
    long spans are ended and it is flushed and replaced. Returns whether tracing is on."""
    global _provider, _config, _atexit
    with _lock:
        want = (path or None, service, otlp_endpoint or None) if (path or otlp_endpoint) else None
        if want == _config:
            return _provider is not None
        old, _provider, _config = _provider, None, want
        if old is not None:
            _end_long_spans()
            old.shutdown()
        if want is not None:
            provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
            if path:
                provider.add_span_processor(BatchSpanProcessor(JsonLinesExporter(path),
                                                               schedule_delay_millis=schedule_delay_ms))
            if otlp_endpoint:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint),
                                                               schedule_delay_millis=schedule_delay_ms))
            _provider = provider
            if not _atexit:
                atexit.register(shutdown)
                _atexit = True
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
    """End the long spans still open, flush and close (tracing is off afterwards)."""
    configure(None)


def start_long_span(name: str, context: otel_context.Context | None = None, kind: SpanKind = SpanKind.INTERNAL,
                    attributes: Mapping[str, str | int | float | bool] | None = None, key: str = "") -> Span:
    """A span that lives long (a session): ended by `end_long_span`, or at `shutdown()` if still open.
    `context` None: the root of a new trace (never a child of whatever span happens to be current);
    `key`: `long_span(key)` finds it while it is open."""
    span = tracer().start_span(name, context=context if context is not None else otel_context.Context(), kind=kind,
                               attributes=attributes)
    if span.is_recording():
        with _lock:
            _long[id(span)] = span
            if key:
                _keyed[key] = span
    return span


def long_span(key: str) -> Span:
    """The open long span started with `key` (INVALID_SPAN when there is none): e.g. a backend's `tts`
    span under its session, `record_span(TTS_SPAN, long_span(f"session:{session_id}"), ms, {...})`."""
    return _keyed.get(key, INVALID_SPAN)


def end_long_span(span: Span, attributes: Mapping[str, str | int | float | bool] | None = None) -> None:
    """End a long span (once; later calls do nothing)."""
    with _lock:
        if _long.pop(id(span), None) is None:
            return
        for k in [k for k, v in _keyed.items() if v is span]:
            del _keyed[k]
    if attributes:
        span.set_attributes(attributes)
    span.end()


def _end_long_spans() -> None:
    with _lock:
        spans = list(_long.values())
        _long.clear()
        _keyed.clear()
    for span in spans:
        span.set_attribute("interplay.ended_by", "shutdown")
        span.end()


def record_span(name: str, parent: Span, duration_ms: float, attributes: Mapping[str, str | int | float | bool]
                | None = None, kind: SpanKind = SpanKind.INTERNAL) -> Span:
    """A span of something that just finished and took `duration_ms` (it started that long before now),
    a child of `parent` (INVALID_SPAN: a new trace). For stages measured elsewhere: a transcript that
    reached the loop (`transcribe`), a synthesis (`tts`)."""
    end = time.time_ns()
    span = tracer().start_span(name, context=set_span_in_context(parent), kind=kind, attributes=attributes,
                               start_time=end - int(max(0.0, duration_ms) * 1e6))
    span.end(end_time=end)
    return span


def outgoing_metadata(ctx: otel_context.Context | None = None) -> tuple[tuple[str, str], ...] | None:
    """The current (or `ctx`'s) span context as gRPC metadata; None when there is nothing to send."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=ctx)
    return tuple(carrier.items()) or None


def incoming_context(metadata: Iterable[tuple[str, str | bytes]] | None) -> otel_context.Context:
    """The remote parent carried by a call's metadata (an empty context when there is none)."""
    carrier = {k.lower(): v for k, v in (metadata or ()) if isinstance(v, str)}
    return _PROPAGATOR.extract(carrier)
