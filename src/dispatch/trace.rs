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
            let (provider, model) = requested(inner, rendered, options);
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
            server(inner, Some(&r.provider)),
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
        {
            // The provider that failed, or (a failure before sending) the
            // one asked for.
            let server = server(inner, e.provider().or(self.otel.provider()));
            self.otel
                .failure(&inner.otel, e, server, self.started, first_chunk);
        }
        let _ = (inner, first_chunk);
    }
}

/// The provider and model a call asks for first, as the client resolves
/// them ([`super::primary`], [`super::split_target`]); a template's own
/// connection (`azure:name`, a provider not configured) split as written.
#[cfg(feature = "otel")]
fn requested(
    inner: &Inner,
    rendered: &Rendered,
    options: &SendOptions,
) -> (Option<String>, Option<String>) {
    let Ok(spec) = super::primary(rendered, options) else {
        return (None, None);
    };
    let (provider, model) = super::split_target(&spec, &inner.providers)
        .ok()
        .or_else(|| spec.split_once(':'))
        .unwrap_or(("", &spec));
    (
        Some(provider.to_owned()).filter(|p| !p.is_empty()),
        Some(model.to_owned()),
    )
}

/// `server.address` and `server.port` of a configured provider.
#[cfg(feature = "otel")]
fn server<'i>(inner: &'i Inner, provider: Option<&str>) -> &'i super::otel::Server {
    static UNKNOWN: super::otel::Server = super::otel::Server {
        address: None,
        port: None,
    };
    provider
        .and_then(|p| inner.providers.get(p))
        .map_or(&UNKNOWN, |p| &p.server)
}
