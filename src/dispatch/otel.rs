//! OpenTelemetry for every call (feature `otel`), as the GenAI semantic
//! conventions name it (open-telemetry/semantic-conventions, `gen-ai`):
//! one span per call, named `chat {model}`, of kind client, and the
//! metrics `gen_ai.client.operation.duration` (s),
//! `gen_ai.client.token.usage` ({token}, by `gen_ai.token.type`) and, for
//! streams, `gen_ai.client.operation.time_to_first_chunk` (s).
//!
//! Spans and instruments come from the global providers
//! (`opentelemetry::global`) as they are when the
//! [`Client`](super::Client) is built: set yours first. `promptbook send`
//! and `serve` set an OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set (see [`crate::telemetry`]). Message contents go on the span only
//! when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`: they hold
//! user data.

use std::time::Instant;

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::metrics::Histogram;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};

use super::error::DispatchError;
use super::response::{FinishReason, Response};
use crate::render::Rendered;

/// The variable that lets message contents onto spans (the name the
/// OpenTelemetry GenAI instrumentations read).
pub const CAPTURE_CONTENT_ENV: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

/// The semantic conventions' bucket boundaries for
/// `gen_ai.client.operation.duration`, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// ... and for `gen_ai.client.token.usage`, in tokens.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// The tracer and instruments of one client.
pub(crate) struct Instruments {
    tracer: BoxedTracer,
    duration: Histogram<f64>,
    tokens: Histogram<u64>,
    first_chunk: Histogram<f64>,
    capture_content: bool,
}

impl Instruments {
    /// From the global providers as they are now.
    pub(crate) fn new() -> Instruments {
        let scope = InstrumentationScope::builder("promptbook")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let meter = opentelemetry::global::meter_with_scope(scope.clone());
        Instruments {
            tracer: opentelemetry::global::tracer_with_scope(scope),
            duration: meter
                .f64_histogram("gen_ai.client.operation.duration")
                .with_unit("s")
                .with_description("GenAI operation duration")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            tokens: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            first_chunk: meter
                .f64_histogram("gen_ai.client.operation.time_to_first_chunk")
                .with_unit("s")
                .with_description("Time to the first chunk of a streamed answer")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            capture_content: std::env::var(CAPTURE_CONTENT_ENV)
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")),
        }
    }
}

/// What a call asked for, known before it is sent.
pub(crate) struct Request<'a> {
    pub rendered: &'a Rendered,
    /// The provider and model asked for first.
    pub provider: Option<String>,
    pub model: Option<String>,
    pub stream: bool,
}

/// Where an answer came from: a provider's base URL's host and port.
pub(crate) struct Server {
    pub address: Option<String>,
    pub port: Option<u16>,
}

impl Server {
    pub(crate) fn of(base_url: &str) -> Server {
        let url = reqwest::Url::parse(base_url).ok();
        Server {
            address: url.as_ref().and_then(|u| u.host_str().map(str::to_owned)),
            port: url.as_ref().and_then(reqwest::Url::port_or_known_default),
        }
    }
}

/// One call's span, open until the call ends.
pub(crate) struct Call {
    span: BoxedSpan,
    /// The provider asked for first.
    provider: Option<String>,
    /// Attributes every metric point of the call carries.
    common: Vec<KeyValue>,
    stream: bool,
    capture_content: bool,
}

impl Call {
    pub(crate) fn start(instruments: &Instruments, request: &Request<'_>) -> Call {
        let model = request.model.clone().unwrap_or_default();
        let (name, version) = request
            .rendered
            .template
            .split_once('@')
            .unwrap_or((request.rendered.template.as_str(), ""));
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", model.clone()),
            KeyValue::new("gen_ai.request.stream", request.stream),
            KeyValue::new("gen_ai.prompt.name", name.to_owned()),
            KeyValue::new("gen_ai.prompt.version", version.to_owned()),
            KeyValue::new("promptbook.prompt.hash", request.rendered.hash.to_string()),
        ];
        // `gen_ai.provider.name` goes on the span when the call ends: the
        // provider that answered may be a fallback's (an attribute set
        // twice would be sent twice).
        if let Some(params) = request.rendered.model.as_ref().map(|m| &m.parameters) {
            for (key, attribute) in [
                ("temperature", "gen_ai.request.temperature"),
                ("top_p", "gen_ai.request.top_p"),
            ] {
                if let Some(v) = params.get(key).and_then(serde_json::Value::as_f64) {
                    attributes.push(KeyValue::new(attribute, v));
                }
            }
            let max = params
                .get("max_tokens")
                .or_else(|| params.get("max_completion_tokens"))
                .and_then(serde_json::Value::as_i64);
            if let Some(v) = max {
                attributes.push(KeyValue::new("gen_ai.request.max_tokens", v));
            }
        }
        if instruments.capture_content {
            attributes.push(KeyValue::new(
                "gen_ai.input.messages",
                input_messages(request.rendered),
            ));
        }
        let span = instruments
            .tracer
            .span_builder(format!("chat {model}"))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start(&instruments.tracer);
        let mut common = vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", model),
        ];
        if let Some(p) = &request.provider {
            common.push(KeyValue::new("gen_ai.provider.name", p.clone()));
        }
        Call {
            span,
            provider: request.provider.clone(),
            common,
            stream: request.stream,
            capture_content: instruments.capture_content,
        }
    }

    /// The provider asked for first.
    pub(crate) fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }

    fn server(&mut self, server: &Server) {
        if let Some(a) = &server.address {
            self.span
                .set_attribute(KeyValue::new("server.address", a.clone()));
            self.common.push(KeyValue::new("server.address", a.clone()));
        }
        if let Some(p) = server.port {
            self.span
                .set_attribute(KeyValue::new("server.port", i64::from(p)));
            self.common.push(KeyValue::new("server.port", i64::from(p)));
        }
    }

    fn first_chunk(&mut self, instruments: &Instruments, started: Instant, first: Option<Instant>) {
        if let (true, Some(first)) = (self.stream, first) {
            let seconds = first.saturating_duration_since(started).as_secs_f64();
            self.span.set_attribute(KeyValue::new(
                "gen_ai.response.time_to_first_chunk",
                seconds,
            ));
            instruments.first_chunk.record(seconds, &self.common);
        }
    }

    pub(crate) fn success(
        mut self,
        instruments: &Instruments,
        r: &Response,
        server: &Server,
        started: Instant,
        first: Option<Instant>,
    ) {
        // The provider that answered (a fallback's, after a fallback).
        set_or_replace(&mut self.common, "gen_ai.provider.name", r.provider.clone());
        self.span
            .set_attribute(KeyValue::new("gen_ai.provider.name", r.provider.clone()));
        self.server(server);
        let response_model = r.response_model.clone().unwrap_or_else(|| r.model.clone());
        self.common.push(KeyValue::new(
            "gen_ai.response.model",
            response_model.clone(),
        ));
        let span = &mut self.span;
        span.set_attribute(KeyValue::new("gen_ai.response.model", response_model));
        if let Some(id) = &r.response_id {
            span.set_attribute(KeyValue::new("gen_ai.response.id", id.clone()));
        }
        if let Some(reason) = &r.finish_reason {
            span.set_attribute(KeyValue::new(
                "gen_ai.response.finish_reasons",
                Value::Array(Array::String(vec![StringValue::from(
                    reason.as_str().to_owned(),
                )])),
            ));
        }
        if let Some(u) = r.usage {
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            span.set_attribute(KeyValue::new(
                "gen_ai.usage.input_tokens",
                count(u.input_tokens),
            ));
            span.set_attribute(KeyValue::new(
                "gen_ai.usage.output_tokens",
                count(u.output_tokens),
            ));
            for (name, value) in [
                (
                    "gen_ai.usage.cache_read.input_tokens",
                    u.cache_read_input_tokens,
                ),
                (
                    "gen_ai.usage.cache_creation.input_tokens",
                    u.cache_creation_input_tokens,
                ),
                ("gen_ai.usage.reasoning.output_tokens", u.reasoning_tokens),
            ] {
                if let Some(n) = value {
                    span.set_attribute(KeyValue::new(name, count(n)));
                }
            }
            for (kind, n) in [("input", u.input_tokens), ("output", u.output_tokens)] {
                let mut attributes = self.common.clone();
                attributes.push(KeyValue::new("gen_ai.token.type", kind));
                instruments.tokens.record(n, &attributes);
            }
        }
        span.set_attribute(KeyValue::new("promptbook.attempts", i64::from(r.attempts)));
        span.set_attribute(KeyValue::new("promptbook.fallback", r.fallback));
        span.set_attribute(KeyValue::new("promptbook.cached", r.cached));
        if r.repairs > 0 {
            span.set_attribute(KeyValue::new("promptbook.repairs", i64::from(r.repairs)));
        }
        if !r.open_circuits.is_empty() {
            span.set_attribute(open_circuits(&r.open_circuits));
        }
        if self.capture_content {
            span.set_attribute(KeyValue::new("gen_ai.output.messages", output_messages(r)));
        }
        self.first_chunk(instruments, started, first);
        instruments
            .duration
            .record(started.elapsed().as_secs_f64(), &self.common);
        self.span.end();
    }

    pub(crate) fn failure(
        mut self,
        instruments: &Instruments,
        e: &DispatchError,
        server: &Server,
        started: Instant,
        first: Option<Instant>,
    ) {
        // The provider that failed, or (for a failure before sending, such
        // as a missing key) the one asked for.
        if let Some(p) = e.provider().map(str::to_owned).or(self.provider.clone()) {
            set_or_replace(&mut self.common, "gen_ai.provider.name", p.clone());
            self.span
                .set_attribute(KeyValue::new("gen_ai.provider.name", p));
        }
        self.server(server);
        if !e.open_circuits().is_empty() {
            self.span.set_attribute(open_circuits(e.open_circuits()));
        }
        self.common.push(KeyValue::new("error.type", e.class()));
        self.span
            .set_attribute(KeyValue::new("error.type", e.class()));
        self.span.set_attribute(KeyValue::new(
            "promptbook.attempts",
            i64::from(e.attempts()),
        ));
        if let Some(status) = e.status() {
            self.span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        // The error's text never holds a key (see DispatchError).
        self.span.set_status(Status::error(e.to_string()));
        self.first_chunk(instruments, started, first);
        instruments
            .duration
            .record(started.elapsed().as_secs_f64(), &self.common);
        self.span.end();
    }
}

fn open_circuits(models: &[String]) -> KeyValue {
    KeyValue::new(
        "promptbook.open_circuits",
        Value::Array(Array::String(
            models.iter().cloned().map(StringValue::from).collect(),
        )),
    )
}

fn set_or_replace(attributes: &mut Vec<KeyValue>, key: &'static str, value: String) {
    attributes.retain(|kv| kv.key.as_str() != key);
    attributes.push(KeyValue::new(key, value));
}

/// `gen_ai.input.messages` as the conventions shape it: a JSON array of
/// `{role, parts: [{type: "text", content}]}`.
fn input_messages(rendered: &Rendered) -> String {
    let messages: Vec<serde_json::Value> = rendered
        .messages
        .iter()
        .map(|m| {
            serde_json::json!({
                "role": m.role.as_str(),
                "parts": [{"type": "text", "content": m.content}],
            })
        })
        .collect();
    serde_json::Value::Array(messages).to_string()
}

/// `gen_ai.output.messages`: the answer's text and tool calls.
fn output_messages(r: &Response) -> String {
    let mut parts = Vec::new();
    if !r.text.is_empty() {
        parts.push(serde_json::json!({"type": "text", "content": r.text}));
    }
    for call in &r.tool_calls {
        parts.push(serde_json::json!({
            "type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments,
        }));
    }
    let finish = r.finish_reason.as_ref().map(FinishReason::as_str);
    serde_json::json!([{"role": "assistant", "parts": parts, "finish_reason": finish}]).to_string()
}
