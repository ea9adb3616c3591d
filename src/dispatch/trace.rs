//! The tracing span of a call: one `promptbook.dispatch` span per call
//! with the template and its content hash, the provider and model that answered, attempts,
//! latency, token counts and the outcome (`ok`, `cached`, or the error's
//! class).

use std::time::Instant;

use super::error::DispatchError;
use super::response::Response;
use crate::render::Rendered;

pub(crate) fn call_span(rendered: &Rendered, stream: bool) -> tracing::Span {
    tracing::info_span!(
        "promptbook.dispatch",
        template = %rendered.template,
        template_hash = %rendered.hash,
        stream,
        provider = tracing::field::Empty,
        model = tracing::field::Empty,
        attempts = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
        input_tokens = tracing::field::Empty,
        output_tokens = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

pub(crate) fn record_success(span: &tracing::Span, r: &Response, started: Instant) {
    span.record("latency_ms", started.elapsed().as_millis() as u64);
    span.record("provider", r.provider.as_str());
    span.record("model", r.model.as_str());
    span.record("attempts", r.attempts);
    if let Some(u) = r.usage {
        span.record("input_tokens", u.input_tokens);
        span.record("output_tokens", u.output_tokens);
    }
    span.record("outcome", if r.cached { "cached" } else { "ok" });
    span.in_scope(|| tracing::info!(fallback = r.fallback, "answered"));
}

pub(crate) fn record_failure(span: &tracing::Span, e: &DispatchError, started: Instant) {
    span.record("latency_ms", started.elapsed().as_millis() as u64);
    if let Some(p) = e.provider() {
        span.record("provider", p);
    }
    span.record("outcome", e.class());
    span.in_scope(|| tracing::warn!(error = %e, "failed"));
}
