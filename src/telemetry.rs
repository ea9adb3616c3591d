//! Exporting OpenTelemetry over OTLP (feature `otel`), configured by the
//! standard environment variables, as `promptbook send` and `serve` do:
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (e.g. `http://localhost:4318`): export
//!   only when it (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; spans go
//!   to `{endpoint}/v1/traces`, metrics to `{endpoint}/v1/metrics`.
//! - `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (the default and the
//!   one built in; `grpc` and `http/json` are refused with a message).
//! - `OTEL_SERVICE_NAME` (default `promptbook`), `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_EXPORTER_OTLP_HEADERS` (e.g. Langfuse's `Authorization=Basic …`),
//!   `OTEL_EXPORTER_OTLP_TIMEOUT`: as the opentelemetry-otlp crate reads
//!   them.
//!
//! A library user who sets up OpenTelemetry already needs none of this:
//! [`Client`](crate::dispatch::Client) reports to the global providers.

use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The exporters, installed as the global providers; [`Telemetry::shutdown`]
/// (or dropping it) flushes what is buffered, waiting at most 3 s.
pub struct Telemetry {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

fn set(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.trim().is_empty())
}

impl Telemetry {
    /// Installs OTLP exporters as the global tracer and meter providers
    /// when `OTEL_EXPORTER_OTLP_ENDPOINT` (or its `_TRACES_` or
    /// `_METRICS_` variant) is set; `Ok(None)` when none is. Call it before
    /// building a [`Client`](crate::dispatch::Client).
    ///
    /// # Errors
    /// A message naming the variable when the protocol is one this build
    /// does not speak, or an exporter cannot be built.
    pub fn from_env() -> Result<Option<Telemetry>, String> {
        if ![
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ]
        .into_iter()
        .any(set)
        {
            return Ok(None);
        }
        for var in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        ] {
            if let Ok(p) = std::env::var(var)
                && !p.trim().is_empty()
                && p.trim() != "http/protobuf"
            {
                return Err(format!(
                    "{var}={p}: promptbook exports OTLP over http/protobuf only; set it to \
                     http/protobuf (collectors listen for it on port 4318)"
                ));
            }
        }
        let mut resource = Resource::builder();
        if !set("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name("promptbook");
        }
        let resource = resource.build();
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| format!("cannot build the OTLP span exporter: {e}"))?;
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .build()
            .map_err(|e| format!("cannot build the OTLP metric exporter: {e}"))?;
        let tracer = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let meter = SdkMeterProvider::builder()
            .with_periodic_exporter(metrics)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_tracer_provider(tracer.clone());
        opentelemetry::global::set_meter_provider(meter.clone());
        Ok(Some(Telemetry { tracer, meter }))
    }

    /// Exports what is buffered and stops, waiting at most 3 s (spans and
    /// metrics at once); says what failed.
    ///
    /// # Errors
    /// The exporters' messages (an unreachable collector, a timeout).
    pub fn shutdown(self) -> Result<(), String> {
        let this = std::mem::ManuallyDrop::new(self);
        this.flush()
    }

    fn flush(&self) -> Result<(), String> {
        // Each shutdown on a thread of its own (the metric reader's does
        // not honour a shorter timeout than its own 5 s): the process
        // waits at most 3 s in all, however the collector behaves.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let (tx, rx) = std::sync::mpsc::channel();
        let tracer = self.tracer.clone();
        let spans_tx = tx.clone();
        std::thread::spawn(move || {
            let r = tracer.shutdown_with_timeout(Duration::from_secs(3));
            let _ = spans_tx.send(("spans", r.map_err(|e| e.to_string())));
        });
        let meter = self.meter.clone();
        std::thread::spawn(move || {
            let r = meter.shutdown_with_timeout(Duration::from_secs(3));
            let _ = tx.send(("metrics", r.map_err(|e| e.to_string())));
        });
        let mut problems = Vec::new();
        let mut answered = 0;
        while answered < 2 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((_, Ok(()))) => answered += 1,
                Ok((what, Err(e))) => {
                    answered += 1;
                    problems.push(format!("{what}: {e}"));
                }
                Err(_) => {
                    problems.push("the collector did not take everything within 3 s".into());
                    break;
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("OpenTelemetry export: {}", problems.join("; ")))
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
