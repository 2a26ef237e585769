/**
 * OpenTelemetry providers that keep what they record in memory, for tests
 * that read a limiter's metrics and spans.
 *
 * @module
 */
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from "@opentelemetry/sdk-metrics";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";

/** A meter provider exporting cumulative metrics on `reader.forceFlush()`, and a tracer provider keeping every span. */
export function inMemoryTelemetry(): {
  exporter: InMemoryMetricExporter;
  reader: PeriodicExportingMetricReader;
  meterProvider: MeterProvider;
  spans: InMemorySpanExporter;
  tracerProvider: BasicTracerProvider;
} {
  const exporter = new InMemoryMetricExporter(
    AggregationTemporality.CUMULATIVE,
  );
  const reader = new PeriodicExportingMetricReader({
    exporter,
    exportIntervalMillis: 3_600_000,
  });
  const meterProvider = new MeterProvider({ readers: [reader] });
  const spans = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({
    spanProcessors: [new SimpleSpanProcessor(spans)],
  });
  return { exporter, reader, meterProvider, spans, tracerProvider };
}
