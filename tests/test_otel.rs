//! OpenTelemetry GenAI spans and metrics (feature `otel`), as a collector
//! receives them: `promptbook send` runs against a fake provider on
//! loopback with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a receiver on
//! loopback, which decodes the OTLP/HTTP protobuf bodies with the official
//! generated types (opentelemetry-proto).
#![cfg(all(feature = "otel", feature = "server"))]

mod fake;
mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use fake::{FakeProvider, Reply, fixture};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message;

/// A loopback OTLP/HTTP receiver: keeps every body posted, by path.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<(String, Bytes)>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let bodies: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let kept = bodies.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push((uri.path().to_owned(), body));
                // An empty Export*ServiceResponse.
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }
        });
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await
        });
        Receiver {
            url,
            bodies,
            _runtime: runtime,
        }
    }

    fn spans(&self) -> Vec<Span> {
        let bodies = self.bodies.lock().unwrap();
        let mut spans = Vec::new();
        for (path, body) in bodies.iter().filter(|(p, _)| p == "/v1/traces") {
            let request = ExportTraceServiceRequest::decode(body.as_ref())
                .unwrap_or_else(|e| panic!("{path}: not OTLP protobuf: {e}"));
            for resource in request.resource_spans {
                let service = attributes(&resource.resource.unwrap().attributes);
                assert_eq!(service["service.name"], "promptbook");
                for scope in resource.scope_spans {
                    assert_eq!(scope.scope.as_ref().unwrap().name, "promptbook");
                    spans.extend(scope.spans);
                }
            }
        }
        spans
    }

    /// Metric name -> the attribute sets of its data points.
    fn metrics(&self) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
        let bodies = self.bodies.lock().unwrap();
        let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
        for (_, body) in bodies.iter().filter(|(p, _)| p == "/v1/metrics") {
            let request = ExportMetricsServiceRequest::decode(body.as_ref()).unwrap();
            for resource in request.resource_metrics {
                for scope in resource.scope_metrics {
                    for metric in scope.metrics {
                        let points = match metric.data {
                            Some(Data::Histogram(h)) => h
                                .data_points
                                .iter()
                                .filter(|p| p.count > 0)
                                .map(|p| attributes(&p.attributes))
                                .collect(),
                            _ => vec![],
                        };
                        out.entry(metric.name).or_default().extend(points);
                    }
                }
            }
        }
        out
    }
}

/// Attributes as text (`[a, b]` for arrays).
fn attributes(
    list: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => s.clone(),
                Some(Any::IntValue(i)) => i.to_string(),
                Some(Any::DoubleValue(d)) => d.to_string(),
                Some(Any::BoolValue(b)) => b.to_string(),
                Some(Any::ArrayValue(a)) => format!(
                    "[{}]",
                    a.values
                        .iter()
                        .map(|v| match &v.value {
                            Some(Any::StringValue(s)) => s.clone(),
                            other => format!("{other:?}"),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

const TEMPLATE: &str = "version: 1.2.0
parameters:
  q: {type: string, default: Say hello}
model:
  provider: openai
  name: gpt-4o-mini
  parameters: {temperature: 0.2, max_tokens: 50}
messages:
  - role: system
    content: Be brief.
  - role: user
    content: '{{ q }}'
";

/// Runs `promptbook send greet` with `args` against `fake`, exporting to
/// `receiver`; its exit status and stderr.
fn send(
    fake: &FakeProvider,
    receiver: &Receiver,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greet.prompt.yaml"), TEMPLATE).unwrap();
    send_in(dir.path(), fake, receiver, args, env)
}

/// [`send`] with the template root `dir`.
fn send_in(
    dir: &std::path::Path,
    fake: &FakeProvider,
    receiver: &Receiver,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promptbook"));
    cmd.args(["send", "greet", "--dir"])
        .arg(dir)
        .args(args)
        .env("OPENAI_BASE_URL", format!("{}/v1", fake.url))
        .env("OPENAI_API_KEY", "sk-otel-test")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url)
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
        .env_remove("PROMPTBOOK_REDIS_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn only_span(receiver: &Receiver) -> (Span, BTreeMap<String, String>) {
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1, "one span per call: {spans:#?}");
    let span = spans.into_iter().next().unwrap();
    // OTLP attribute keys are unique: none may be sent twice.
    let mut keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    assert_eq!(
        keys.len(),
        before,
        "an attribute sent twice: {:#?}",
        span.attributes
    );
    let attrs = attributes(&span.attributes);
    (span, attrs)
}

#[test]
fn a_call_exports_one_genai_span_and_both_metrics() {
    let fake = FakeProvider::start(vec![Reply::json(&fixture("openai-chat.json"))]);
    let receiver = Receiver::start();
    let (ok, stderr) = send(&fake, &receiver, &[], &[]);
    assert!(ok, "{stderr}");
    let (span, a) = only_span(&receiver);
    assert_eq!(span.name, "chat gpt-4o-mini");
    assert_eq!(span.kind, SpanKind::Client as i32);
    let port = fake.url.rsplit(':').next().unwrap();
    for (key, value) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-4o-mini"),
        ("gen_ai.response.model", "frank/GLM-5.1"),
        ("gen_ai.response.id", "chatcmpl-R8r7TOigGvlNRwTSLA0WXppc"),
        ("gen_ai.response.finish_reasons", "[stop]"),
        ("gen_ai.usage.input_tokens", "10"),
        ("gen_ai.usage.output_tokens", "79"),
        ("gen_ai.usage.cache_read.input_tokens", "0"),
        ("gen_ai.request.temperature", "0.2"),
        ("gen_ai.request.max_tokens", "50"),
        ("gen_ai.request.stream", "false"),
        ("gen_ai.prompt.name", "greet"),
        ("gen_ai.prompt.version", "1.2.0"),
        ("server.address", "127.0.0.1"),
        ("server.port", port),
        ("promptbook.attempts", "1"),
        ("promptbook.fallback", "false"),
        ("promptbook.cached", "false"),
    ] {
        assert_eq!(
            a.get(key).map(String::as_str),
            Some(value),
            "{key} in {a:#?}"
        );
    }
    let hash = &a["promptbook.prompt.hash"];
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "the template's content hash: {hash}"
    );
    assert!(!a.contains_key("error.type"));
    assert!(
        !a.contains_key("gen_ai.input.messages") && !a.contains_key("gen_ai.output.messages"),
        "message contents only when opted in"
    );
    let metrics = receiver.metrics();
    let duration = &metrics["gen_ai.client.operation.duration"];
    assert_eq!(duration.len(), 1, "{metrics:#?}");
    assert_eq!(duration[0]["gen_ai.request.model"], "gpt-4o-mini");
    assert_eq!(duration[0]["gen_ai.response.model"], "frank/GLM-5.1");
    assert_eq!(duration[0]["gen_ai.provider.name"], "openai");
    let usage = &metrics["gen_ai.client.token.usage"];
    let mut types: Vec<&str> = usage
        .iter()
        .map(|p| p["gen_ai.token.type"].as_str())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["input", "output"]);
}

#[test]
fn a_failed_call_exports_its_error_type() {
    let fake = FakeProvider::start(vec![Reply::error(400, "bad request")]);
    let receiver = Receiver::start();
    let (ok, _) = send(&fake, &receiver, &[], &[]);
    assert!(!ok);
    let (span, a) = only_span(&receiver);
    assert_eq!(a["error.type"], "invalid_request");
    assert_eq!(
        a["promptbook.attempts"], "1",
        "a bad request is not retried"
    );
    assert_eq!(a["http.response.status_code"], "400");
    let status = span.status.unwrap();
    assert_eq!(status.code, StatusCode::Error as i32);
    assert!(status.message.contains("bad request"), "{}", status.message);
    assert!(!status.message.contains("sk-otel-test"));
    let metrics = receiver.metrics();
    assert_eq!(
        metrics["gen_ai.client.operation.duration"][0]["error.type"],
        "invalid_request"
    );
    assert!(
        metrics
            .get("gen_ai.client.token.usage")
            .is_none_or(Vec::is_empty),
        "no usage for a failed call"
    );
}

#[test]
fn a_stream_exports_its_time_to_first_chunk_and_contents_when_opted_in() {
    let fake = FakeProvider::start(vec![Reply::Sse(fixture("compatible-stream.sse"))]);
    let receiver = Receiver::start();
    let (ok, stderr) = send(
        &fake,
        &receiver,
        &["--stream"],
        &[
            ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true"),
            ("OTEL_SERVICE_NAME", "promptbook"),
        ],
    );
    assert!(ok, "{stderr}");
    let (_, a) = only_span(&receiver);
    assert_eq!(a["gen_ai.request.stream"], "true");
    let first: f64 = a["gen_ai.response.time_to_first_chunk"].parse().unwrap();
    assert!(first > 0.0 && first < 10.0, "{first}");
    let input: serde_json::Value = serde_json::from_str(&a["gen_ai.input.messages"]).unwrap();
    assert_eq!(input[1]["role"], "user");
    assert_eq!(input[1]["parts"][0]["content"], "Say hello");
    let output: serde_json::Value = serde_json::from_str(&a["gen_ai.output.messages"]).unwrap();
    assert_eq!(output[0]["role"], "assistant");
    assert!(
        output[0]["parts"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("Hello")
    );
    let metrics = receiver.metrics();
    assert_eq!(
        metrics["gen_ai.client.operation.time_to_first_chunk"].len(),
        1
    );
}

/// A call that fails before sending (no key) still names the provider
/// it was for, and its address.
#[test]
fn a_call_failing_before_sending_names_its_provider() {
    let fake = FakeProvider::start(vec![]);
    let receiver = Receiver::start();
    let (ok, stderr) = send(&fake, &receiver, &[], &[("OPENAI_API_KEY", "")]);
    assert!(!ok && stderr.contains("OPENAI_API_KEY"), "{stderr}");
    let (_, a) = only_span(&receiver);
    assert_eq!(a["error.type"], "config");
    assert_eq!(a["promptbook.attempts"], "0");
    assert_eq!(a["gen_ai.provider.name"], "openai");
    assert_eq!(a["server.address"], "127.0.0.1");
    assert_eq!(fake.count(), 0);
}

#[test]
fn an_unsupported_protocol_is_refused_saying_which_to_use() {
    let fake = FakeProvider::start(vec![]);
    let receiver = Receiver::start();
    let (ok, stderr) = send(
        &fake,
        &receiver,
        &[],
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
    );
    assert!(!ok);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        "{stderr}"
    );
    assert!(stderr.contains("http/protobuf"), "{stderr}");
    assert_eq!(fake.count(), 0);
}

/// After a fallback, the span names the provider that answered, once.
#[test]
fn a_fallback_span_names_the_provider_that_answered() {
    let fake = FakeProvider::start(vec![
        Reply::error(503, "down"),
        Reply::error(503, "down"),
        Reply::error(503, "down"),
        Reply::json(&fixture("openai-chat.json")),
    ]);
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("greet.prompt.yaml"),
        TEMPLATE.replace(
            "  parameters: {temperature: 0.2, max_tokens: 50}\n",
            "  parameters: {temperature: 0.2, max_tokens: 50}\n  fallbacks: ['backup:gpt-4o']\n",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("providers.yaml"),
        format!(
            "backup:\n  kind: openai\n  base_url: {}/v1\n  api_key_env: BACKUP_KEY\n",
            fake.url.replace("127.0.0.1", "localhost")
        ),
    )
    .unwrap();
    let (ok, stderr) = send_in(
        dir.path(),
        &fake,
        &receiver,
        &[],
        &[("BACKUP_KEY", "sk-otel-backup")],
    );
    assert!(ok, "{stderr}");
    let (_, a) = only_span(&receiver);
    assert_eq!(a["gen_ai.provider.name"], "backup");
    assert_eq!(a["gen_ai.request.model"], "gpt-4o-mini");
    assert_eq!(a["promptbook.fallback"], "true");
    assert_eq!(a["server.address"], "localhost");
    let metrics = receiver.metrics();
    assert_eq!(
        metrics["gen_ai.client.operation.duration"][0]["gen_ai.provider.name"],
        "backup"
    );
}

/// `serve` stopped with SIGTERM (as container platforms stop it) flushes
/// the spans of the playground's sends before it exits.
#[cfg(unix)]
#[test]
fn serve_flushes_its_spans_when_terminated() {
    let fake = FakeProvider::start(vec![Reply::Sse(fixture("compatible-stream.sse"))]);
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greet.prompt.yaml"), TEMPLATE).unwrap();
    let base = format!("{}/v1", fake.url);
    let server = support::Server::start_env(
        dir.path(),
        &[],
        None,
        &[
            ("OPENAI_BASE_URL", base.as_str()),
            ("OPENAI_API_KEY", "sk-otel-test"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
        ],
    );
    let (status, body) = server.raw(&format!(
        "POST /api/send HTTP/1.1\r\nHost: {{addr}}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        r#"{"template": "greet", "inputs": {}}"#.len(),
        r#"{"template": "greet", "inputs": {}}"#
    ));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"done\""), "{body}");
    assert!(receiver.spans().is_empty(), "batched until the end");
    support::terminate(server.pid());
    support::eventually("the span to arrive after SIGTERM", || {
        (receiver.spans().len() == 1).then_some(())
    });
    let (_, a) = only_span(&receiver);
    assert_eq!(a["gen_ai.request.stream"], "true");
}
