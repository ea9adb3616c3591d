//! Dispatch against a fake provider on 127.0.0.1 that speaks OpenAI's and
//! Anthropic's wire formats and replays recorded SSE fixtures.
#![cfg(feature = "dispatch")]

mod fake;

use std::fs;
use std::time::Duration;

use fake::{FakeProvider, Reply, fixture, recorded_body};
use futures_util::StreamExt;
use promptbook::dispatch::{
    Client, ClientBuilder, DispatchError, ErrorKind, FinishReason, Limits, ProviderConfig,
    ProviderKind, Response, RetryPolicy, SendOptions, StreamEvent, TimeoutKind, Timeouts,
};
use promptbook::{Registry, Rendered};
use serde_json::{Value, json};

const KEY_ENV: &str = "PROMPTBOOK_TEST_KEY";

fn key() -> String {
    std::env::var(KEY_ENV).expect("PROMPTBOOK_TEST_KEY comes from .cargo/config.toml")
}

const TEMPLATES: &[(&str, &str)] = &[
    (
        "oa.prompt.yaml",
        "version: 1.0.0
parameters:
  q: string
  history: {type: messages, default: []}
model:
  provider: openai
  name: gpt-4o-mini
  parameters: {temperature: 0.2, max_tokens: 50, top_k: 3}
messages:
  - role: system
    content: Be brief.
  - history: history
  - role: user
    content: '{{ q }}'
",
    ),
    (
        "an.prompt.yaml",
        "version: 1.0.0
parameters:
  q: string
  history: {type: messages, default: []}
model:
  provider: anthropic
  name: claude-sonnet-4-5
  parameters: {temperature: 0.5, stop: END, response_format: {type: json_object}}
messages:
  - role: system
    content: Rule one.
  - role: system
    content: Rule two.
  - history: history
  - role: user
    content: '{{ q }}'
",
    ),
    (
        "fb.prompt.yaml",
        "version: 1.0.0
parameters:
  q: string
model:
  provider: openai
  name: gpt-4o
  parameters: {max_tokens: 20}
  fallbacks: ['anthropic:claude-haiku-4-5']
messages:
  - role: user
    content: '{{ q }}'
",
    ),
    (
        "det.prompt.yaml",
        "version: 1.0.0
model:
  provider: openai
  name: gpt-4o-mini
  parameters: {temperature: 0}
messages:
  - role: user
    content: Say hello.
",
    ),
    (
        "fbh.prompt.yaml",
        "version: 1.0.0
parameters:
  q: string
  history: {type: messages, default: []}
model:
  provider: openai
  name: gpt-4o
  parameters: {max_tokens: 50}
  fallbacks: ['openai:gpt-4']
messages:
  - role: system
    content: Be brief.
  - history: history
  - role: user
    content: '{{ q }}'
",
    ),
    (
        "det0.prompt.yaml",
        "version: 1.0.0
parameters:
  q: string
model:
  provider: openai
  name: gpt-4o-mini
  parameters: {temperature: 0}
messages:
  - role: user
    content: '{{ q }}'
",
    ),
    (
        "nomodel.prompt.yaml",
        "version: 1.0.0
messages:
  - role: user
    content: Hi.
",
    ),
];

fn registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in TEMPLATES {
        fs::write(dir.path().join(name), text).unwrap();
    }
    let registry = Registry::load(dir.path()).unwrap();
    (dir, registry)
}

fn render(name: &str, inputs: Value) -> Rendered {
    let (_dir, registry) = registry();
    registry.render(name, &inputs).unwrap()
}

fn builder(fake: &FakeProvider) -> ClientBuilder {
    Client::builder()
        .provider("openai", fake.openai(KEY_ENV))
        .provider("anthropic", fake.anthropic(KEY_ENV))
        .retry(
            RetryPolicy::retries(2)
                .backoff(Duration::from_millis(1), Duration::from_millis(5))
                .max_retry_after(Duration::from_millis(50)),
        )
        .timeouts(Timeouts::new(
            Duration::from_secs(2),
            Duration::from_secs(5),
            Duration::from_secs(5),
        ))
}

fn client(fake: &FakeProvider) -> Client {
    builder(fake).build().unwrap()
}

async fn collect(
    client: &Client,
    rendered: &Rendered,
) -> (Vec<StreamEvent>, Option<DispatchError>) {
    let mut events = Vec::new();
    let mut stream = client.stream(rendered);
    while let Some(item) = stream.next().await {
        match item {
            Ok(e) => events.push(e),
            Err(e) => return (events, Some(e)),
        }
    }
    (events, None)
}

fn done(events: &[StreamEvent]) -> &Response {
    match events.last() {
        Some(StreamEvent::Done(r)) => r,
        other => panic!("the stream did not end with Done: {other:?}"),
    }
}

fn streamed_text(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

// ------------------------------------------------------------ wire format

#[tokio::test]
async fn openai_request_and_response_on_the_wire() {
    let fake = FakeProvider::start(vec![Reply::json(&fixture("openai-chat.json"))]);
    let rendered = render(
        "oa",
        json!({"q": "Say hello", "history": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "12:00"}
        ]}),
    );
    let response = client(&fake).send(&rendered).await.unwrap();

    let [request] = fake.requests().try_into().unwrap();
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.headers["authorization"],
        format!("Bearer {}", key())
    );
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(
        request.body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}]},
                {"role": "tool", "content": "12:00", "tool_call_id": "call_1"},
                {"role": "user", "content": "Say hello"}
            ],
            "temperature": 0.2,
            "max_tokens": 50
        }),
        "top_k is Anthropic's and is not sent; content goes as plain strings"
    );

    assert_eq!(response.text, "Hello");
    assert_eq!(response.finish_reason, Some(FinishReason::Stop));
    let usage = response.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (10, 79));
    assert_eq!(
        (response.provider.as_str(), response.model.as_str()),
        ("openai", "gpt-4o-mini")
    );
    assert_eq!(response.response_model.as_deref(), Some("frank/GLM-5.1"));
    assert_eq!(response.attempts, 1);
    assert!(!response.fallback && !response.cached);
}

#[tokio::test]
async fn anthropic_request_is_adapted_and_its_answer_normalised() {
    let fake = FakeProvider::start(vec![
        Reply::json(&recorded_body("anthropic-recorded-text.json")),
        Reply::json(&recorded_body("anthropic-recorded-tool.json")),
    ]);
    let rendered = render(
        "an",
        json!({"q": "And now?", "history": [
            {"role": "assistant", "content": "Welcome back."},
            {"role": "user", "content": "First"},
            {"role": "user", "content": "Second"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "clock", "arguments": "{\"tz\":\"UTC\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "12:00"}
        ]}),
    );
    let client = client(&fake);
    let response = client.send(&rendered).await.unwrap();

    let request = &fake.requests()[0];
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.headers["x-api-key"], key());
    assert_eq!(request.headers["anthropic-version"], "2023-06-01");
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(
        request.body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 4096,
            "system": "Rule one.\n\nRule two.",
            "messages": [
                {"role": "user", "content": "(start of conversation)"},
                {"role": "assistant", "content": "Welcome back."},
                {"role": "user", "content": "First\n\nSecond"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "clock", "input": {"tz": "UTC"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12:00"},
                    {"type": "text", "text": "And now?"}]}
            ],
            "temperature": 0.5,
            "stop_sequences": ["END"]
        }),
        "system lifted out, same-role turns merged, a user turn first, max_tokens always, \
         OpenAI-only response_format dropped"
    );
    assert!(response.text.starts_with("{\"items\""));
    assert_eq!(response.finish_reason, Some(FinishReason::Stop));
    let usage = response.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (406, 50));
    assert_eq!(response.provider, "anthropic");

    // A tool call in the answer is surfaced.
    let response = client.send(&rendered).await.unwrap();
    assert_eq!(response.finish_reason, Some(FinishReason::ToolCalls));
    let [call] = response.tool_calls.try_into().unwrap();
    assert_eq!(call.id, "toolu_01A9HHF5Ezy3oBrKmSgfASm9");
    assert_eq!(call.name, "get_weather");
    let args: Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(args, json!({"location": "San Francisco, CA", "units": "f"}));
}

// -------------------------------------------------------------- streaming

#[tokio::test]
async fn openai_stream_replays_text_then_finish_and_usage() {
    let fake = FakeProvider::start(vec![
        Reply::Sse(fixture("openai-stream-length.sse")),
        Reply::Sse(fixture("compatible-stream.sse")),
    ]);
    let rendered = render("oa", json!({"q": "Go"}));
    let client = client(&fake);
    let (events, error) = collect(&client, &rendered).await;
    assert!(error.is_none(), "{error:?}");
    let body = &fake.requests()[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(streamed_text(&events), "{\"");
    let r = done(&events);
    assert_eq!(r.text, "{\"");
    assert_eq!(r.finish_reason, Some(FinishReason::Length));
    assert_eq!(
        r.usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((79, 1))
    );

    let (events, error) = collect(&client, &rendered).await;
    assert!(error.is_none(), "{error:?}");
    let r = done(&events);
    assert_eq!(streamed_text(&events), r.text);
    assert!(events.len() > 2, "text arrives in pieces: {events:?}");
    assert_eq!(
        r.usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((15, 3))
    );
}

#[tokio::test]
async fn streamed_tool_calls_are_surfaced_for_both_providers() {
    let fake = FakeProvider::start(vec![
        Reply::Sse(fixture("openai-stream-tool-call.sse")),
        Reply::Sse(fixture("anthropic-stream-tool.sse")),
    ]);
    let client = client(&fake);
    for template in ["oa", "an"] {
        let rendered = render(template, json!({"q": "Weather in Paris?"}));
        let (events, error) = collect(&client, &rendered).await;
        assert!(error.is_none(), "{template}: {error:?}");
        let r = done(&events);
        assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls), "{template}");
        let [call] = r.tool_calls.clone().try_into().unwrap();
        assert_eq!(call.name, "get_weather");
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(args["city"], "Paris", "{template}");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, StreamEvent::ToolCall { id: Some(_), .. })),
            "{template}: the call's first piece carries its id"
        );
    }
}

#[tokio::test]
async fn anthropic_stream_replays_the_sdk_fixture() {
    let fake = FakeProvider::start(vec![Reply::Sse(fixture("anthropic-stream-basic.sse"))]);
    let rendered = render("an", json!({"q": "Hi"}));
    let (events, error) = collect(&client(&fake), &rendered).await;
    assert!(error.is_none(), "{error:?}");
    let texts: Vec<&StreamEvent> = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Text(_)))
        .collect();
    assert_eq!(texts.len(), 3, "one event per delta: {events:?}");
    let r = done(&events);
    assert_eq!(r.text, "Hello there!");
    assert_eq!(r.finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        r.usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((11, 6))
    );
    assert_eq!(r.response_model.as_deref(), Some("claude-3-opus-latest"));
    assert_eq!(fake.requests()[0].body["stream"], true);
}

/// A streamed request is the whole-answer request plus the fields that ask
/// for a stream, on both providers: nothing of the prompt is lost or
/// changed on the way to a stream.
#[tokio::test]
async fn a_streamed_request_is_the_whole_request_plus_its_stream_fields() {
    let history = json!([
        {"role": "user", "content": "Earlier question"},
        {"role": "assistant", "content": "Earlier answer"},
    ]);
    for (template, whole, stream, extra) in [
        (
            "oa",
            "openai-chat.json",
            "compatible-stream.sse",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
        (
            "an",
            "anthropic-recorded-text.json",
            "anthropic-stream-basic.sse",
            json!({"stream": true}),
        ),
    ] {
        let whole_body = if template == "an" {
            recorded_body(whole)
        } else {
            fixture(whole)
        };
        let fake = FakeProvider::start(vec![Reply::json(&whole_body), Reply::Sse(fixture(stream))]);
        let client = client(&fake);
        let rendered = render(template, json!({"q": "Now?", "history": history}));
        client.send(&rendered).await.unwrap();
        let (_, error) = collect(&client, &rendered).await;
        assert!(error.is_none(), "{template}: {error:?}");
        let requests = fake.requests();
        let (sent_whole, sent_stream) = (&requests[0].body, &requests[1].body);
        assert_eq!(requests[0].path, requests[1].path, "{template}");
        let mut expected = sent_whole.as_object().unwrap().clone();
        expected.extend(extra.as_object().unwrap().clone());
        assert_eq!(sent_stream, &Value::Object(expected), "{template}");
        assert!(sent_whole.get("stream").is_none_or(|s| s == false));
        // The prompt itself, in the provider's shape.
        let texts: Vec<&str> = sent_stream["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        match template {
            "oa" => assert_eq!(
                texts,
                ["Be brief.", "Earlier question", "Earlier answer", "Now?"]
            ),
            _ => {
                assert_eq!(sent_stream["system"], "Rule one.\n\nRule two.");
                assert_eq!(texts, ["Earlier question", "Earlier answer", "Now?"]);
            }
        }
    }
}

// ----------------------------------------------------------------- faults

#[tokio::test]
async fn rate_limits_are_retried_honouring_retry_after() {
    let fake = FakeProvider::start(vec![
        Reply::Status(429, vec![("retry-after-ms", "5".into())], "{}".into()),
        Reply::json(&fixture("openai-chat.json")),
    ]);
    let r = client(&fake)
        .send(&render("oa", json!({"q": "x"})))
        .await
        .unwrap();
    assert_eq!((r.attempts, fake.count()), (2, 2));

    // Always 429: three attempts, then the classified error with the wait
    // the provider asked for (a long one is capped, so this test is quick).
    let fake = FakeProvider::start(vec![
        Reply::Status(
            429,
            vec![("retry-after", "30".into())],
            r#"{"error":{"message":"slow down"}}"#.into()
        );
        3
    ]);
    let e = client(&fake)
        .send(&render("oa", json!({"q": "x"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
    assert!(e.to_string().contains("slow down"), "{e}");
    assert_eq!(fake.count(), 3);
}

#[tokio::test]
async fn server_errors_and_overload_are_retried_then_classified() {
    let fake = FakeProvider::start(vec![Reply::error(500, "boom"); 3]);
    let e = client(&fake)
        .send(&render("oa", json!({"q": "x"})))
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.status()),
        (ErrorKind::Unavailable, Some(500)),
        "{e:?}"
    );
    assert_eq!(
        fake.count(),
        3,
        "2 retries = 3 attempts, like the official SDKs"
    );

    let fake = FakeProvider::start(vec![
        Reply::error(529, "Overloaded"),
        Reply::json(&recorded_body("anthropic-recorded-text.json")),
    ]);
    let r = client(&fake)
        .send(&render("an", json!({"q": "x"})))
        .await
        .unwrap();
    assert_eq!((r.attempts, fake.count()), (2, 2));

    for status in [408, 409] {
        let fake = FakeProvider::start(vec![
            Reply::error(status, "try again"),
            Reply::json(&fixture("openai-chat.json")),
        ]);
        let r = client(&fake)
            .send(&render("oa", json!({"q": "x"})))
            .await
            .unwrap();
        assert_eq!(r.attempts, 2, "{status}");
    }

    // Retries are configurable.
    let fake = FakeProvider::start(vec![Reply::error(503, "down"); 6]);
    let client = builder(&fake)
        .retry(RetryPolicy::retries(4).backoff(Duration::from_millis(1), Duration::from_millis(2)))
        .build()
        .unwrap();
    let e = client
        .send(&render("oa", json!({"q": "x"})))
        .await
        .unwrap_err();
    assert_eq!((e.kind(), e.status()), (ErrorKind::Unavailable, Some(503)));
    assert_eq!(fake.count(), 5);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let fake = FakeProvider::start(vec![Reply::error(400, "messages: too many roles")]);
    let e = client(&fake)
        .send(&render("oa", json!({"q": "x"})))
        .await
        .unwrap_err();
    match &e {
        e if e.kind() == ErrorKind::InvalidRequest => {
            assert_eq!(e.status(), Some(400));
            assert_eq!(e.message(), "messages: too many roles");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.count(), 1);

    let fake = FakeProvider::start(vec![Reply::error(401, "Incorrect API key")]);
    let e = client(&fake)
        .send(&render("an", json!({"q": "x"})))
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.status()),
        (ErrorKind::Authentication, Some(401)),
        "{e:?}"
    );
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn a_hang_past_the_timeout_is_a_timeout() {
    let fake = FakeProvider::start(vec![
        Reply::Hang(Duration::from_secs(30), "{}".into()),
        Reply::Hang(Duration::from_secs(30), "{}".into()),
    ]);
    let client = builder(&fake)
        .retry(RetryPolicy::retries(1).backoff(Duration::from_millis(1), Duration::from_millis(1)))
        .timeouts(Timeouts::new(
            Duration::from_secs(1),
            Duration::from_millis(200),
            Duration::from_millis(200),
        ))
        .build()
        .unwrap();
    let e = client
        .send(&render("oa", json!({"q": "x"})))
        .await
        .unwrap_err();
    assert!(
        matches!(e.timeout(), Some((TimeoutKind::Request, _))),
        "{e:?}"
    );
    assert_eq!(fake.count(), 2, "a timeout is retried");
}

#[tokio::test]
async fn a_stream_that_goes_silent_hits_the_idle_timeout() {
    let basic = fixture("anthropic-stream-basic.sse");
    let head: String = basic.split_inclusive("\n\n").take(4).collect(); // through "Hello"
    let fake = FakeProvider::start(vec![Reply::Stall(head)]);
    let client = builder(&fake)
        .timeouts(Timeouts::new(
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_millis(300),
        ))
        .build()
        .unwrap();
    let (events, error) = collect(&client, &render("an", json!({"q": "x"}))).await;
    assert_eq!(streamed_text(&events), "Hello");
    match error {
        Some(e) if e.kind() == ErrorKind::Stream => {
            assert_eq!(e.partial().unwrap().text, "Hello");
            assert!(e.message().contains("idle"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.count(), 1, "text was delivered: no silent retry");
}

#[tokio::test]
async fn a_stream_cut_mid_message_surfaces_what_arrived_and_is_not_retried() {
    let basic = fixture("anthropic-stream-basic.sse");
    let head: String = basic.split_inclusive("\n\n").take(5).collect(); // "Hello", " there"
    let fake = FakeProvider::start(vec![Reply::Cut(head), Reply::Sse(basic.clone())]);
    let (events, error) = collect(&client(&fake), &render("an", json!({"q": "x"}))).await;
    assert_eq!(streamed_text(&events), "Hello there");
    match error {
        Some(e) if e.kind() == ErrorKind::Stream => {
            let partial = e.partial().unwrap();
            assert_eq!(partial.text, "Hello there");
            assert_eq!(partial.usage.map(|u| u.input_tokens), Some(11));
        }
        other => panic!("expected a stream error, got {other:?} after {events:?}"),
    }
    assert_eq!(fake.count(), 1);

    // Cut before any text: nothing was delivered, so it is retried.
    let start: String = basic.split_inclusive("\n\n").take(1).collect();
    let fake = FakeProvider::start(vec![Reply::Cut(start), Reply::Sse(basic)]);
    let (events, error) = collect(&client(&fake), &render("an", json!({"q": "x"}))).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(done(&events).text, "Hello there!");
    assert_eq!(done(&events).attempts, 2);
    assert_eq!(fake.count(), 2);

    // An OpenAI stream that ends without a finish reason is incomplete.
    let full = fixture("compatible-stream.sse");
    let head: String = full.split_inclusive("\n\n").take(2).collect();
    let fake = FakeProvider::start(vec![Reply::Sse(head)]);
    let (_, error) = collect(&client(&fake), &render("oa", json!({"q": "x"}))).await;
    assert!(
        error.as_ref().map(DispatchError::kind) == Some(ErrorKind::Stream),
        "{error:?}"
    );
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn malformed_json_is_a_classified_error_not_a_panic() {
    let fake = FakeProvider::start(vec![Reply::json("{\"choices\": [")]);
    let e = client(&fake)
        .send(&render("oa", json!({"q": "x"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Stream, "{e:?}");
    assert!(e.to_string().contains("not valid JSON"), "{e}");
    assert_eq!(fake.count(), 1, "garbage is not retried");

    let fake = FakeProvider::start(vec![Reply::Sse("data: {\"choices\": [\n\n".into())]);
    let (_, error) = collect(&client(&fake), &render("oa", json!({"q": "x"}))).await;
    match error {
        Some(e) if e.kind() == ErrorKind::Stream => assert!(e.to_string().contains("malformed")),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.count(), 1);
}

// ------------------------------------------------------------- fallbacks

/// Prices given for a model give each of its answers a cost, on each
/// wire's own count of prompt tokens; a model without prices has none.
#[tokio::test]
async fn answers_carry_their_cost_when_prices_are_given() {
    use promptbook::dispatch::Prices;
    let fake = FakeProvider::start(vec![
        Reply::json(&fixture("openai-chat.json")),
        Reply::json(&recorded_body("anthropic-recorded-text.json")),
        Reply::json(&fixture("openai-chat.json")),
    ]);
    let client = builder(&fake)
        .provider(
            "openai",
            fake.openai(KEY_ENV)
                .with_prices("gpt-4o-mini", Prices::new(0.15, 0.60).cached_input(0.075)),
        )
        .provider(
            "anthropic",
            fake.anthropic(KEY_ENV).with_prices(
                "claude-sonnet-4-5",
                Prices::new(3.0, 15.0).cache_write(3.75),
            ),
        )
        .build()
        .unwrap();
    // 10 prompt tokens (none cached), 79 reply tokens.
    let r = client.send(&render("oa", json!({"q": "x"}))).await.unwrap();
    let cost = r.cost.expect("priced");
    assert!(
        (cost - (10.0 * 0.15 + 79.0 * 0.60) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    assert_eq!(serde_json::to_value(&r).unwrap()["cost"], json!(cost));
    // Anthropic: 406 uncached prompt tokens, 50 reply tokens.
    let r = client.send(&render("an", json!({"q": "x"}))).await.unwrap();
    let cost = r.cost.expect("priced");
    assert!(
        (cost - (406.0 * 3.0 + 50.0 * 15.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    // gpt-4o has no prices.
    let r = client
        .send_with(
            &render("oa", json!({"q": "x"})),
            &promptbook::dispatch::SendOptions::new().model("openai:gpt-4o"),
        )
        .await
        .unwrap();
    assert_eq!(r.cost, None);
    assert!(serde_json::to_value(&r).unwrap().get("cost").is_none());
}

/// A failed call says which models it skipped as open, and how many
/// attempts it made.
#[tokio::test]
async fn a_failed_call_names_the_circuits_it_skipped() {
    use promptbook::dispatch::{CircuitBreaker, SendOptions};
    let fake = FakeProvider::start(vec![Reply::error(503, "down"); 3]);
    // Only the primary's provider has a breaker: one failure opens it.
    let mut openai = fake.openai(KEY_ENV);
    openai.circuit_breaker = Some(CircuitBreaker::new(
        1,
        Duration::from_secs(60),
        Duration::from_secs(60),
    ));
    let client = builder(&fake)
        .provider("openai", openai)
        .retry(RetryPolicy::retries(0))
        .circuit_breaker(CircuitBreaker::off())
        .build()
        .unwrap();
    let rendered = render("fb", json!({"q": "x"}));
    let e = client.send(&rendered).await.unwrap_err();
    assert_eq!((e.attempts(), e.open_circuits().len()), (2, 0), "{e}");
    // The primary is open now: only the fallback is tried, and it fails.
    let e = client.send(&rendered).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(e.attempts(), 1);
    assert_eq!(e.open_circuits(), ["openai:gpt-4o"]);
    assert_eq!(fake.count(), 3);
    // Without a fallback nothing is sent, and the error names the model.
    let only = SendOptions::new().model("openai:gpt-4o").fallbacks(vec![]);
    let e = client.send_with(&rendered, &only).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CircuitOpen, "{e}");
    assert_eq!(e.attempts(), 0);
    assert_eq!(e.open_circuits(), ["openai:gpt-4o"]);
    assert_eq!(fake.count(), 3);
}

/// A 429 with a wait opens the primary's circuit for that wait only: the
/// fallback answers at once instead of after the wait, the next call skips
/// the primary (and says so), and once the wait is over the primary takes
/// calls again, with no probe.
#[tokio::test]
async fn a_rate_limit_sends_calls_to_the_fallback_for_its_wait_only() {
    let anthropic = recorded_body("anthropic-recorded-text.json");
    let fake = FakeProvider::start(vec![
        Reply::Status(
            429,
            vec![("retry-after-ms", "400".into())],
            json!({"error": {"message": "slow down", "type": "rate_limit"}}).to_string(),
        ),
        Reply::json(&anthropic),
        Reply::json(&anthropic),
        Reply::json(&fixture("openai-chat.json")),
    ]);
    let client = builder(&fake)
        .retry(RetryPolicy::retries(2).max_retry_after(Duration::from_secs(5)))
        .build()
        .unwrap();
    let rendered = render("fb", json!({"q": "x"}));
    let started = std::time::Instant::now();
    let r = client.send(&rendered).await.unwrap();
    assert!(r.fallback && r.open_circuits.is_empty(), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_millis(350),
        "the fallback answered without waiting out the 429: {:?}",
        started.elapsed()
    );
    let r = client.send(&rendered).await.unwrap();
    assert_eq!(r.open_circuits, ["openai:gpt-4o"]);
    assert_eq!(r.provider, "anthropic");
    assert_eq!(fake.count(), 3, "the open primary got no request");
    // The wait the provider named is over: the primary answers.
    tokio::time::sleep(Duration::from_millis(450).saturating_sub(started.elapsed())).await;
    let r = client.send(&rendered).await.unwrap();
    assert!(!r.fallback && r.open_circuits.is_empty(), "{r:?}");
    assert_eq!(r.provider, "openai");
}

#[tokio::test]
async fn fallbacks_answer_when_the_primary_stays_down() {
    let mut script = vec![Reply::error(503, "down"); 3];
    script.push(Reply::json(&recorded_body("anthropic-recorded-text.json")));
    let fake = FakeProvider::start(script);
    let r = client(&fake)
        .send(&render("fb", json!({"q": "x"})))
        .await
        .unwrap();
    assert!(r.fallback);
    assert_eq!(
        (r.provider.as_str(), r.model.as_str()),
        ("anthropic", "claude-haiku-4-5")
    );
    assert_eq!(r.attempts, 4);
    let requests = fake.requests();
    assert_eq!(requests[2].path, "/v1/chat/completions");
    assert_eq!(requests[3].path, "/v1/messages");
    assert_eq!(requests[3].body["model"], "claude-haiku-4-5");
    assert_eq!(
        requests[3].body["max_tokens"], 20,
        "the template's max_tokens"
    );

    // A bad request is the caller's problem: no fallback.
    let fake = FakeProvider::start(vec![Reply::error(400, "bad")]);
    let e = client(&fake)
        .send(&render("fb", json!({"q": "x"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    assert_eq!(fake.count(), 1);

    // The same for streams, before any text.
    let mut script = vec![Reply::error(500, "down"); 3];
    script.push(Reply::Sse(fixture("anthropic-stream-basic.sse")));
    let fake = FakeProvider::start(script);
    let (events, error) = collect(&client(&fake), &render("fb", json!({"q": "x"}))).await;
    assert!(error.is_none(), "{error:?}");
    assert!(done(&events).fallback);
}

#[tokio::test]
async fn the_model_can_be_overridden_per_call() {
    let fake = FakeProvider::start(vec![Reply::json(&recorded_body(
        "anthropic-recorded-text.json",
    ))]);
    let r = client(&fake)
        .send_with(
            &render("oa", json!({"q": "x"})),
            &SendOptions::new().model("anthropic:claude-opus-4-5"),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.provider.as_str(), r.model.as_str()),
        ("anthropic", "claude-opus-4-5")
    );
    let body = &fake.requests()[0].body;
    assert_eq!(fake.requests()[0].path, "/v1/messages");
    // In Anthropic's shape: the system message moved to `system`, the
    // template's parameters kept, a `max_tokens` (which Anthropic requires)
    // taken from the template.
    assert_eq!(
        body,
        &json!({
            "model": "claude-opus-4-5",
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 50,
            "temperature": 0.2,
            "top_k": 3,
        })
    );
}

// ---------------------------------------------------- config and secrets

#[tokio::test]
async fn missing_keys_and_unknown_providers_fail_before_any_request() {
    let fake = FakeProvider::start(vec![]);
    let client = builder(&fake)
        .provider(
            "openai",
            ProviderConfig::new(
                ProviderKind::Openai,
                fake.url.clone(),
                Some("PROMPTBOOK_SURELY_UNSET_KEY"),
            ),
        )
        .build()
        .unwrap();
    let e = client
        .send(&render("oa", json!({"q": "x"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("PROMPTBOOK_SURELY_UNSET_KEY"), "{e}");

    let c = self::client(&fake);
    for model in ["nosuch:gpt-4o", "openai:"] {
        let e = c
            .send_with(
                &render("oa", json!({"q": "x"})),
                &SendOptions::new().model(model),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{model}: {e:?}");
    }
    let e = c.send(&render("nomodel", json!({}))).await.unwrap_err();
    assert!(e.to_string().contains("model"), "{e}");
    assert_eq!(fake.count(), 0);
}

#[tokio::test]
async fn providers_yaml_declares_compatible_endpoints() {
    let fake = FakeProvider::start(vec![Reply::Sse(fixture("compatible-stream.sse"))]);
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("providers.yaml"),
        format!(
            "qwen:\n  kind: openai\n  base_url: {}/compatible-mode/v1\n  api_key_env: {KEY_ENV}\n  \
             query: {{api-version: '2024-10-21'}}\n  limits: {{concurrent: 2}}\n\
             local:\n  kind: openai\n  base_url: {}/ollama/v1\n",
            fake.url, fake.url
        ),
    )
    .unwrap();
    fs::write(
        dir.path().join("q.prompt.yaml"),
        "version: 1.0.0\nmodel: {provider: qwen, name: qwen-plus}\nmessages:\n  - role: user\n    content: hi\n",
    )
    .unwrap();
    let registry = Registry::load(dir.path()).unwrap();
    let rendered = registry.render("q", &json!({})).unwrap();
    let client = Client::builder()
        .template_root(dir.path())
        .unwrap()
        .build()
        .unwrap();
    let (events, error) = collect(&client, &rendered).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(done(&events).provider, "qwen");
    let request = &fake.requests()[0];
    assert_eq!(
        request.path,
        "/compatible-mode/v1/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(
        request.headers["authorization"],
        format!("Bearer {}", key())
    );

    // A provider without a key sends none.
    let fake2 = FakeProvider::start(vec![Reply::json(&fixture("openai-chat.json"))]);
    fs::write(
        dir.path().join("providers.yaml"),
        format!(
            "local:\n  kind: openai\n  base_url: {}/ollama/v1\n",
            fake2.url
        ),
    )
    .unwrap();
    let client = Client::builder()
        .template_root(dir.path())
        .unwrap()
        .build()
        .unwrap();
    client
        .send_with(&rendered, &SendOptions::new().model("local:llama3.1:8b"))
        .await
        .unwrap();
    let request = &fake2.requests()[0];
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(request.body["model"], "llama3.1:8b");

    // A bad file says which and why.
    fs::write(
        dir.path().join("providers.yaml"),
        "qwen:\n  base_url: http://x\n",
    )
    .unwrap();
    let e = Client::builder().template_root(dir.path()).unwrap_err();
    assert!(
        e.to_string().contains("providers.yaml") && e.to_string().contains("kind"),
        "{e}"
    );

    // The built-in keys go only to their own provider's host: a file that
    // points OPENAI_API_KEY (by moving `openai`, or naming it for another
    // provider) elsewhere is refused, naming the variable, not its value.
    for file in [
        format!("openai:\n  base_url: {}/evil/v1\n", fake2.url),
        format!(
            "evil:\n  kind: openai\n  base_url: {}/evil/v1\n  api_key_env: OPENAI_API_KEY\n",
            fake2.url
        ),
    ] {
        fs::write(dir.path().join("providers.yaml"), &file).unwrap();
        let e = Client::builder().template_root(dir.path()).unwrap_err();
        assert!(
            e.to_string().contains("OPENAI_API_KEY") && e.to_string().contains("goes only to"),
            "{file}: {e}"
        );
    }
    assert_eq!(fake2.count(), 1);
}

#[tokio::test]
async fn concurrency_limits_make_requests_wait_not_fail() {
    let slow = || Reply::Hang(Duration::from_millis(100), fixture("openai-chat.json"));
    let fake = FakeProvider::start(vec![slow(), slow(), slow(), slow()]);
    let client = builder(&fake)
        .provider(
            "openai",
            fake.openai(KEY_ENV)
                .with_limits(Limits::new().concurrent(1)),
        )
        .build()
        .unwrap();
    let rendered = render("oa", json!({"q": "x"}));
    let results = futures_util::future::join_all((0..4).map(|_| client.send(&rendered))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(fake.count(), 4);
    assert_eq!(fake.max_in_flight(), 1);
}

#[tokio::test]
async fn request_and_token_rate_limits_wait_for_their_turn() {
    // One request a minute; ten prompt tokens a minute (less than one
    // prompt, which then takes a whole minute's budget).
    for limits in [
        Limits::new().requests_per_minute(1),
        Limits::new().tokens_per_minute(10),
    ] {
        let fake = FakeProvider::start(vec![Reply::json(&fixture("openai-chat.json")); 2]);
        let client = builder(&fake)
            .provider("openai", fake.openai(KEY_ENV).with_limits(limits))
            .build()
            .unwrap();
        let rendered = render("oa", json!({"q": "x"}));
        client.send(&rendered).await.unwrap();
        // The second is a minute away: still waiting, not failed, long
        // after the first went through.
        let second = tokio::time::timeout(Duration::from_millis(300), client.send(&rendered)).await;
        assert!(
            second.is_err(),
            "{limits:?}: the second request did not wait: {second:?}"
        );
        assert_eq!(fake.count(), 1, "{limits:?}");
    }
}

#[tokio::test]
async fn deterministic_calls_can_be_cached() {
    let fake = FakeProvider::start(vec![Reply::json(&fixture("openai-chat.json")); 3]);
    let cached = builder(&fake)
        .cache(Duration::from_secs(60))
        .build()
        .unwrap();
    let det = render("det", json!({}));
    let first = cached.send(&det).await.unwrap();
    let second = cached.send(&det).await.unwrap();
    assert_eq!(fake.count(), 1);
    assert!(!first.cached && second.cached);
    assert_eq!(first.text, second.text);
    // The same template, provider and model with other inputs is another
    // request: never answered from the cache.
    let other = render("det0", json!({"q": "Say goodbye."}));
    let again = render("det0", json!({"q": "Say goodbye!"}));
    let (a, b) = (
        cached.send(&other).await.unwrap(),
        cached.send(&again).await.unwrap(),
    );
    assert!(!a.cached && !b.cached, "a different body is a miss");
    assert_eq!(fake.count(), 3);
    assert_eq!(
        fake.requests()[2].body["messages"][0]["content"],
        "Say goodbye!"
    );
    let fake = FakeProvider::start(vec![Reply::json(&fixture("openai-chat.json")); 3]);
    let cached = builder(&fake)
        .cache(Duration::from_secs(60))
        .build()
        .unwrap();
    // temperature 0.2 is not deterministic: not cached.
    let creative = render("oa", json!({"q": "x"}));
    cached.send(&creative).await.unwrap();
    cached.send(&creative).await.unwrap();
    assert_eq!(fake.count(), 2);
}

// -------------------------------------------------------------------- CLI

fn send_cli(fake: &FakeProvider, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promptbook"))
        .args([
            "send",
            "support/triage",
            "--var",
            "ticket=My invoice is wrong",
            "--dir",
            "templates",
        ])
        .args(args)
        .env("OPENAI_BASE_URL", format!("{}/v1", fake.url))
        .env("ANTHROPIC_BASE_URL", &fake.url)
        .env("OPENAI_API_KEY", key())
        .env("ANTHROPIC_API_KEY", key())
        .env_remove("PROMPTBOOK_DIR")
        .env_remove("PROMPTBOOK_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn cli_send_prints_the_reply_its_json_or_its_stream() {
    let fake = FakeProvider::start(vec![
        Reply::json(&fixture("openai-chat.json")),
        Reply::json(&fixture("openai-chat.json")),
        Reply::Sse(fixture("compatible-stream.sse")),
        Reply::Sse(fixture("anthropic-stream-basic.sse")),
    ]);
    let (ok, stdout, stderr) = send_cli(&fake, &[]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "Hello\n");
    assert!(stderr.contains("openai:gpt-4o-mini"), "{stderr}");
    let body = &fake.requests()[0].body;
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
    assert_eq!(
        body["messages"].as_array().unwrap().last().unwrap()["content"],
        "My invoice is wrong"
    );

    let (ok, stdout, _) = send_cli(&fake, &["--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["text"], "Hello");
    assert_eq!(v["finish_reason"], "stop");
    // The fixture's `prompt_tokens_details.cached_tokens: 0` is reported.
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 10, "output_tokens": 79, "cache_read_input_tokens": 0})
    );
    assert_eq!(
        (v["provider"].as_str(), v["model"].as_str()),
        (Some("openai"), Some("gpt-4o-mini"))
    );

    let (ok, stdout, stderr) = send_cli(&fake, &["--stream"]);
    assert!(ok, "{stderr}");
    let expected = {
        fixture("compatible-stream.sse")
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect::<String>()
    };
    assert_eq!(stdout, format!("{expected}\n"));

    let (ok, stdout, stderr) = send_cli(
        &fake,
        &["--stream", "--model", "anthropic:claude-haiku-4-5"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "Hello there!\n");
    assert_eq!(fake.requests()[3].path, "/v1/messages");
    assert_eq!(fake.count(), 4);
}

#[test]
fn cli_send_fails_cleanly_with_the_classified_error() {
    let fake = FakeProvider::start(vec![Reply::error(400, "Invalid 'messages'")]);
    let (ok, stdout, stderr) = send_cli(&fake, &[]);
    assert!(!ok);
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("invalid request (HTTP 400): Invalid 'messages'"),
        "{stderr}"
    );

    // No key: nothing is sent.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promptbook"))
        .args([
            "send",
            "support/triage",
            "--var",
            "ticket=x",
            "--dir",
            "templates",
        ])
        .env("OPENAI_BASE_URL", format!("{}/v1", fake.url))
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("OPENAI_API_KEY"), "{stderr}");
    assert_eq!(fake.count(), 1);
}

/// 200 alternating user/assistant turns of about 100 tokens each, the
/// `i`th starting `i:`: more than gpt-4's 8k window, less than gpt-4o's.
fn long_history() -> Vec<Value> {
    let turn = "lorem ipsum dolor sit amet ".repeat(20); // ~100 tokens
    (0..200)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("{i}: {turn}")}))
        .collect()
}

#[tokio::test]
async fn the_prompt_is_fitted_to_the_budget_of_the_model_it_goes_to() {
    let history = long_history();
    let rendered = render("oa", json!({"q": "Sum it up", "history": history}));
    assert_eq!(
        rendered.messages.len(),
        202,
        "gpt-4o-mini's 128k window holds it all"
    );

    let fake = FakeProvider::start(vec![Reply::json(&fixture("openai-chat.json"))]);
    client(&fake)
        .send_with(&rendered, &SendOptions::new().model("openai:gpt-4"))
        .await
        .unwrap();
    let sent = fake.requests()[0].body["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert!(sent.len() < 202, "not truncated for gpt-4's 8k window");
    assert_eq!(
        sent[0]["content"], "Be brief.",
        "template messages are kept"
    );
    assert_eq!(sent[1]["role"], "user", "history restarts on a user turn");
    assert_eq!(sent.last().unwrap()["content"], "Sum it up");
    assert!(
        sent[1]["content"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", 200 - (sent.len() - 2))),
        "oldest dropped first"
    );
    let messages: Vec<promptbook::Message> = serde_json::from_value(Value::Array(sent)).unwrap();
    let counted = promptbook::tokens::count_messages(
        &*promptbook::tokens::counter_for_model(Some("gpt-4")),
        &messages,
    );
    assert!(
        counted.total <= 8_192 - 50,
        "{} tokens do not fit",
        counted.total
    );
}

/// A fallback to a model with a smaller window gets the prompt fitted to
/// that window: the primary saw the whole history, the fallback the newest
/// turns that fit, the template's own messages kept.
#[tokio::test]
async fn a_fallback_gets_the_history_fitted_to_its_own_window() {
    let history = long_history();
    let rendered = render("fbh", json!({"q": "Sum it up", "history": history}));
    assert_eq!(rendered.messages.len(), 202, "gpt-4o's window holds it all");
    let mut script = vec![Reply::error(503, "down"); 3];
    script.push(Reply::json(&fixture("openai-chat.json")));
    let fake = FakeProvider::start(script);
    let r = client(&fake).send(&rendered).await.unwrap();
    assert!(r.fallback);
    assert_eq!(r.model, "gpt-4");
    let requests = fake.requests();
    for primary in &requests[..3] {
        assert_eq!(primary.body["model"], "gpt-4o");
        assert_eq!(primary.body["messages"].as_array().unwrap().len(), 202);
    }
    let body = &requests[3].body;
    assert_eq!(body["model"], "gpt-4");
    let sent = body["messages"].as_array().unwrap().clone();
    assert!(sent.len() < 202, "not fitted to gpt-4's 8k window");
    assert_eq!(sent[0]["content"], "Be brief.");
    assert_eq!(sent.last().unwrap()["content"], "Sum it up");
    assert!(
        sent[1]["content"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", 200 - (sent.len() - 2))),
        "the oldest turns are the ones dropped"
    );
    // Counted by an independent implementation of OpenAI's tokenizer.
    let bpe = tiktoken_rs::cl100k_base().unwrap();
    let tokens: usize = sent
        .iter()
        .map(|m| 3 + bpe.encode_ordinary(m["content"].as_str().unwrap()).len() + 1)
        .sum::<usize>()
        + 3;
    assert!(
        tokens <= 8_192 - 50,
        "{tokens} tokens do not fit gpt-4's window"
    );
}

/// A `.prompty` file whose `model.connection` names its endpoint and key
/// with `${env:...}` is sent there: the endpoint read from its variable,
/// the key from its variable, at send time. A key never goes to an
/// endpoint the file itself names (literally, or as the default of an
/// unset variable); without a key such an endpoint is used. Values read
/// from the environment are never printed.
#[test]
fn cli_send_follows_a_prompty_connection() {
    let fake = FakeProvider::start(vec![
        Reply::json(&fixture("openai-chat.json")),
        Reply::json(&fixture("openai-chat.json")),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let write = |endpoint: &str, key: bool| {
        let key = if key {
            "    key: ${env:PB_TEST_CONNECTION_KEY}\n"
        } else {
            ""
        };
        std::fs::write(
            dir.path().join("t.prompty"),
            format!(
                "---\nname: t\nmodel:\n  id: gpt-4o\n  provider: openai\n  connection:\n    kind: key\n    endpoint: {endpoint}\n{key}---\nuser:\nhi\n"
            ),
        )
        .unwrap();
    };
    let send = |endpoint_var: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_promptbook"));
        command
            .args(["send", "t", "--dir"])
            .arg(dir.path())
            .env("PB_TEST_CONNECTION_KEY", key())
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("PB_TEST_CONNECTION_ENDPOINT")
            .env_remove("PROMPTBOOK_DIR");
        if let Some(v) = endpoint_var {
            command.env("PB_TEST_CONNECTION_ENDPOINT", v);
        }
        let out = command.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    write("${env:PB_TEST_CONNECTION_ENDPOINT}", true);
    let (ok, stdout, stderr) = send(Some(&format!("{}/v1", fake.url)));
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "Hello\n");
    let request = &fake.requests()[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.headers["authorization"].to_str().unwrap(),
        format!("Bearer {}", key())
    );
    assert_eq!(request.body["model"], "gpt-4o");

    // An endpoint the file names, with a key: refused, nothing sent.
    let file_default = format!("${{env:PB_TEST_CONNECTION_ENDPOINT:{}/v1}}", fake.url);
    for endpoint in [file_default.clone(), format!("{}/v1", fake.url)] {
        write(&endpoint, true);
        let (ok, _, stderr) = send(None);
        assert!(!ok);
        assert!(stderr.contains("PB_TEST_CONNECTION_KEY"), "{stderr}");
        assert!(
            stderr.contains("endpoint read from the environment"),
            "{stderr}"
        );
        assert_eq!(fake.count(), 1);
    }
    // Without a key, the default endpoint is used (no Authorization).
    write(&file_default, false);
    let (ok, stdout, stderr) = send(None);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "Hello\n");
    assert_eq!(fake.count(), 2);
    assert!(fake.requests()[1].headers.get("authorization").is_none());

    // Unset without a default: a configuration error naming the variable.
    write("${env:PB_TEST_CONNECTION_ENDPOINT}", true);
    let (ok, _, stderr) = send(None);
    assert!(!ok);
    assert!(stderr.contains("PB_TEST_CONNECTION_ENDPOINT"), "{stderr}");
    // A bad value is named by its variable, never printed.
    let (ok, _, stderr) = send(Some("hunter2-not-a-url"));
    assert!(!ok);
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(stderr.contains("PB_TEST_CONNECTION_ENDPOINT"), "{stderr}");
    assert_eq!(fake.count(), 2);
}

/// A `.prompty` connection cannot point a configured provider's key
/// (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`) at another server, whatever
/// variable its endpoint is read from and whatever provider it names;
/// pointed at that provider's own base URL, it works.
#[test]
fn a_prompty_connection_cannot_send_a_providers_key_elsewhere() {
    let fake = FakeProvider::start(vec![Reply::json(&fixture("openai-chat.json"))]);
    let other = FakeProvider::start(vec![]);
    let anthropic = FakeProvider::start(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let send = |provider: &str, key_var: &str, endpoint_var: &str| {
        std::fs::write(
            dir.path().join("t.prompty"),
            format!(
                "---\nname: t\nmodel:\n  id: gpt-4o\n  provider: {provider}\n  connection:\n    kind: key\n    endpoint: ${{env:{endpoint_var}}}\n    key: ${{env:{key_var}}}\n---\nuser:\nhi\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_promptbook"))
            .args(["send", "t", "--dir"])
            .arg(dir.path())
            .env("OPENAI_API_KEY", key())
            .env("ANTHROPIC_API_KEY", key())
            .env("OPENAI_BASE_URL", format!("{}/v1", fake.url))
            .env("ANTHROPIC_BASE_URL", &anthropic.url)
            .env("PB_TEST_OTHER_URL", format!("{}/v1", other.url))
            .env_remove("PROMPTBOOK_DIR")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (provider, key_var) in [
        ("openai", "ANTHROPIC_API_KEY"),
        ("openai", "OPENAI_API_KEY"),
        ("azure", "OPENAI_API_KEY"),
        ("anthropic", "ANTHROPIC_API_KEY"),
    ] {
        let (ok, stderr) = send(provider, key_var, "PB_TEST_OTHER_URL");
        assert!(!ok, "{provider} with {key_var}");
        assert!(
            stderr.contains(&format!("would send {key_var}"))
                && stderr.contains("PB_TEST_OTHER_URL"),
            "{stderr}"
        );
        assert!(
            !stderr.contains(&other.url),
            "the endpoint is never printed: {stderr}"
        );
    }
    // The other provider's base URL is another server too.
    let (ok, stderr) = send("openai", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL");
    assert!(!ok && stderr.contains("ANTHROPIC_API_KEY"), "{stderr}");
    assert_eq!(other.count(), 0, "nothing reached the other server");
    assert_eq!(fake.count() + anthropic.count(), 0);
    // Its own provider's base URL: sent, with its key.
    let (ok, stderr) = send("openai", "OPENAI_API_KEY", "OPENAI_BASE_URL");
    assert!(ok, "{stderr}");
    assert_eq!(fake.count(), 1);
    assert_eq!(
        fake.requests()[0].headers["authorization"]
            .to_str()
            .unwrap(),
        format!("Bearer {}", key())
    );
}
