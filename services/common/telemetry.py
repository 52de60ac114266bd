"""OpenTelemetry traces and metrics plus JSON logs that carry the current trace id."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from pythonjsonlogger.json import JsonFormatter

from services.common.auth.context import CallerLogFilter
from services.common.config import TelemetryConfig


class TraceContextFilter(logging.Filter):
    """Adds the current trace and span ids (hex) to every log record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        record.service = self.service
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else ""
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else ""
        return True


def setup_logging(config: TelemetryConfig) -> None:
    """Send logs to stderr, as JSON lines (default) or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceContextFilter(config.service_name))
    handler.addFilter(CallerLogFilter())
    if config.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}{service}{trace_id}{span_id}{caller}"
                "{request_id}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [%(trace_id)s %(caller)s] %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)


def _span_exporter(kind: str) -> SpanExporter:
    if kind == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint from OTEL_EXPORTER_OTLP_ENDPOINT


def _metric_exporter(kind: str) -> MetricExporter:
    if kind == "console":
        return ConsoleMetricExporter(out=sys.stderr)
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter()


def _instrument_libraries() -> None:
    # Imported here: instrumentation patches libraries, so only when tracing is on.
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
    )

    instrumentors: list[Any] = [
        GrpcAioInstrumentorServer(),  # type: ignore[no-untyped-call]
        GrpcAioInstrumentorClient(),  # type: ignore[no-untyped-call]
        AsyncPGInstrumentor(),  # type: ignore[no-untyped-call]
        AioHttpClientInstrumentor(),
        # No AioHttpServerInstrumentor: the export app makes its own server spans
        # (services/export/middleware.py), after the forwarded client is known.
    ]
    for instrumentor in instrumentors:
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


@contextmanager
def telemetry(config: TelemetryConfig) -> Iterator[None]:
    """Configure logging, tracing and metrics for a process; flush them on exit."""
    setup_logging(config)
    resource = Resource.create({"service.name": config.service_name})
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    if config.traces_exporter != "none":
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(_span_exporter(config.traces_exporter))
        )
        trace.set_tracer_provider(tracer_provider)
        _instrument_libraries()
    if config.metrics_exporter != "none":
        reader = PeriodicExportingMetricReader(_metric_exporter(config.metrics_exporter))
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        metrics.set_meter_provider(meter_provider)
    try:
        yield
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()
        if meter_provider is not None:
            meter_provider.shutdown()
