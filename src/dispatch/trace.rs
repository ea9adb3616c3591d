//! What a call reports: one `promptbook.dispatch` tracing span per call
//! with the template and its content hash, the provider and model that
//! answered, attempts, latency, token counts, the circuits skipped and the
//! outcome (`ok`, `cached`, or the error's class); and, with feature
//! `otel`, the OpenTelemetry GenAI span and metrics of [`super::otel`].

use std::time::Instant;

use super::error::DispatchError;
use super::response::Response;
use super::{Inner, SendOptions};
use crate::render::Rendered;

/// One call being traced, from its start to its end.
pub(crate) struct CallTrace {
    pub span: tracing::Span,
    started: Instant,
    #[cfg(feature = "otel")]
    otel: super::otel::Call,
}

impl CallTrace {
    pub(crate) fn start(
        inner: &Inner,
        rendered: &Rendered,
        options: &SendOptions,
        stream: bool,
    ) -> CallTrace {
        let span = tracing::info_span!(
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
            open_circuits = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        #[cfg(feature = "otel")]
        let otel = {
            let (provider, model) = requested(rendered, options);
            super::otel::Call::start(
                &inner.otel,
                &super::otel::Request {
                    rendered,
                    provider,
                    model,
                    stream,
                },
            )
        };
        let _ = (inner, options);
        CallTrace {
            span,
            started: Instant::now(),
            #[cfg(feature = "otel")]
            otel,
        }
    }

    pub(crate) fn success(self, inner: &Inner, r: &Response, first_chunk: Option<Instant>) {
        let span = &self.span;
        span.record("latency_ms", self.started.elapsed().as_millis() as u64);
        span.record("provider", r.provider.as_str());
        span.record("model", r.model.as_str());
        span.record("attempts", r.attempts);
        if let Some(u) = r.usage {
            span.record("input_tokens", u.input_tokens);
            span.record("output_tokens", u.output_tokens);
        }
        if !r.open_circuits.is_empty() {
            span.record("open_circuits", r.open_circuits.join(",").as_str());
        }
        span.record("outcome", if r.cached { "cached" } else { "ok" });
        span.in_scope(|| tracing::info!(fallback = r.fallback, "answered"));
        #[cfg(feature = "otel")]
        self.otel.success(
            &inner.otel,
            r,
            &server(inner, Some(&r.provider)),
            self.started,
            first_chunk,
        );
        let _ = (inner, first_chunk);
    }

    pub(crate) fn failure(self, inner: &Inner, e: &DispatchError, first_chunk: Option<Instant>) {
        let span = &self.span;
        span.record("latency_ms", self.started.elapsed().as_millis() as u64);
        if let Some(p) = e.provider() {
            span.record("provider", p);
        }
        span.record("outcome", e.class());
        span.in_scope(|| tracing::warn!(error = %e, "failed"));
        #[cfg(feature = "otel")]
        self.otel.failure(
            &inner.otel,
            e,
            &server(inner, e.provider()),
            self.started,
            first_chunk,
        );
        let _ = (inner, first_chunk);
    }
}

/// The provider and model a call asks for first: the override, else the
/// template's `model:` block (`provider:name` split).
#[cfg(feature = "otel")]
fn requested(rendered: &Rendered, options: &SendOptions) -> (Option<String>, Option<String>) {
    let block = rendered.model.as_ref();
    let spec = options
        .model
        .clone()
        .or_else(|| block.and_then(|b| b.name.clone()));
    let Some(spec) = spec else {
        return (block.and_then(|b| b.provider.clone()), None);
    };
    match spec.split_once(':') {
        Some((p, m)) if !p.contains(['.', '/']) => (Some(p.to_owned()), Some(m.to_owned())),
        _ => {
            let provider = block
                .and_then(|b| b.provider.clone())
                .filter(|_| options.model.is_none())
                .unwrap_or_else(|| {
                    if spec.starts_with("claude") {
                        "anthropic"
                    } else {
                        "openai"
                    }
                    .to_owned()
                });
            (Some(provider), Some(spec))
        }
    }
}

/// `server.address` and `server.port` of a configured provider.
#[cfg(feature = "otel")]
fn server(inner: &Inner, provider: Option<&str>) -> super::otel::Server {
    let url = provider
        .and_then(|p| inner.providers.get(p))
        .and_then(|p| reqwest::Url::parse(&p.config.base_url).ok());
    super::otel::Server {
        address: url.as_ref().and_then(|u| u.host_str().map(str::to_owned)),
        port: url.as_ref().and_then(reqwest::Url::port_or_known_default),
    }
}
