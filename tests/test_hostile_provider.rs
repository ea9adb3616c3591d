//! A hostile or broken provider endpoint (on 127.0.0.1): redirects that
//! would carry the key elsewhere, answers and streams that never end,
//! headers that overflow, error bodies that echo the key. Every call ends,
//! bounded, with a classified error that holds no key.
#![cfg(feature = "dispatch")]

mod fake;

use std::time::Duration;

use fake::{FakeProvider, Reply};
use futures_util::StreamExt;
use promptbook::dispatch::{
    Client, ClientBuilder, DispatchError, ErrorKind, ProviderConfig, RetryPolicy, SizeLimits,
    StreamEvent, TimeoutKind, Timeouts,
};
use promptbook::{Registry, Rendered};
use serde_json::json;

const KEY_ENV: &str = "PROMPTBOOK_TEST_KEY";

fn key() -> String {
    std::env::var(KEY_ENV).expect("PROMPTBOOK_TEST_KEY comes from .cargo/config.toml")
}

/// A template for `model` (`provider:name`).
fn rendered(model: &str) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    let (provider, name) = model.split_once(':').unwrap();
    std::fs::write(
        dir.path().join("t.prompt.yaml"),
        format!(
            "version: 1.0.0\nmodel: {{provider: {provider}, name: {name}}}\n\
             messages:\n  - role: user\n    content: the secret prompt\n"
        ),
    )
    .unwrap();
    Registry::load(dir.path())
        .unwrap()
        .render("t", &json!({}))
        .unwrap()
}

fn builder() -> ClientBuilder {
    Client::builder()
        .retry(RetryPolicy::retries(0))
        .timeouts(Timeouts::new(
            Duration::from_secs(5),
            Duration::from_secs(20),
            Duration::from_secs(20),
        ))
}

async fn stream_error(client: &Client, rendered: &Rendered) -> DispatchError {
    let mut stream = client.stream(rendered);
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            return e;
        }
    }
    panic!("the stream ended without an error")
}

/// Every form a key is sent in: OpenAI's bearer token, Anthropic's
/// `x-api-key`, and a custom header (Azure's `api-key`).
fn credential_forms(fake: &FakeProvider) -> Vec<(&'static str, ProviderConfig, String)> {
    let mut azure = fake.openai(KEY_ENV);
    azure.auth_header = Some("api-key".into());
    vec![
        ("bearer", fake.openai(KEY_ENV), "openai:gpt-4o".into()),
        (
            "x-api-key",
            fake.anthropic(KEY_ENV),
            "anthropic:claude-x".into(),
        ),
        ("api-key", azure, "openai:gpt-4o".into()),
    ]
}

#[tokio::test]
async fn redirects_are_never_followed_so_no_key_or_prompt_leaves() {
    let elsewhere = FakeProvider::start(vec![Reply::json("{}"); 64]);
    for status in [301, 302, 303, 307, 308] {
        for stream in [false, true] {
            let location = format!("{}/collect?token=s3cret#frag", elsewhere.url);
            let fake = FakeProvider::start(vec![Reply::Redirect(status, location); 3]);
            for (form, config, model) in credential_forms(&fake) {
                let client = builder().provider("p", config).build().unwrap();
                let model = model.replace(model.split(':').next().unwrap(), "p");
                let r = rendered(&model);
                let e = if stream {
                    stream_error(&client, &r).await
                } else {
                    client.send(&r).await.unwrap_err()
                };
                assert_eq!(
                    (e.kind(), e.status()),
                    (ErrorKind::InvalidRequest, Some(status)),
                    "{status} {form}: {e}"
                );
                let text = e.to_string();
                assert!(
                    text.contains(&format!("{}/collect", elsewhere.url)),
                    "{status} {form}: {text}"
                );
                assert!(!text.contains("s3cret") && !text.contains("frag"), "{text}");
                assert!(!text.contains(&key()), "{text}");
            }
            assert_eq!(fake.count(), 3, "one request per credential form, no retry");
        }
    }
    assert_eq!(
        elsewhere.count(),
        0,
        "a redirect was followed: {:?}",
        elsewhere.requests()
    );
}

/// A body that never ends, sent as fast as the client reads.
fn endless(status: u16, content_type: &'static str, prefix: &str, chunk: &str) -> Reply {
    Reply::Endless {
        status,
        content_type,
        prefix: prefix.into(),
        chunk: chunk.into(),
        every: Duration::ZERO,
    }
}

#[tokio::test]
async fn answers_that_never_end_are_cut_at_their_bound() {
    let chunk = "x".repeat(64 << 10);
    let sizes = SizeLimits::new()
        .response_bytes(4 << 20)
        .event_bytes(1 << 20)
        .error_bytes(16 << 10);

    // A whole answer of endless JSON.
    let fake = FakeProvider::start(vec![endless(
        200,
        "application/json",
        "{\"choices\": [\"",
        &chunk,
    )]);
    let client = builder()
        .provider("openai", fake.openai(KEY_ENV))
        .size_limits(sizes)
        .build()
        .unwrap();
    let e = client.send(&rendered("openai:gpt-4o")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Stream, "{e}");
    assert!(e.to_string().contains("SizeLimits::response_bytes"), "{e}");

    // An endless error body: only its start is read, and shown shortened.
    let fake = FakeProvider::start(vec![endless(400, "text/plain", "bad: ", &chunk)]);
    let client = builder()
        .provider("openai", fake.openai(KEY_ENV))
        .size_limits(sizes)
        .build()
        .unwrap();
    let e = client.send(&rendered("openai:gpt-4o")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRequest, "{e}");
    let message = e.message();
    assert!(message.starts_with("bad: xxx"), "{message}");
    assert!(message.chars().count() <= 501, "{}", message.len());

    // Streams: `data:` lines with no blank line ever; one line with no end;
    // many small events adding up past the whole answer's bound.
    let delta = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}]}\n\n";
    for (what, reply, bound) in [
        (
            "data lines",
            endless(200, "text/event-stream", "", &"data: x\n".repeat(4096)),
            "event_bytes",
        ),
        (
            "one line",
            endless(200, "text/event-stream", "data: ", &chunk),
            "event_bytes",
        ),
        (
            "many events",
            endless(200, "text/event-stream", "", &delta.repeat(256)),
            "response_bytes",
        ),
    ] {
        let fake = FakeProvider::start(vec![reply]);
        let client = builder()
            .provider("openai", fake.openai(KEY_ENV))
            .size_limits(sizes)
            .build()
            .unwrap();
        let e = stream_error(&client, &rendered("openai:gpt-4o")).await;
        assert_eq!(e.kind(), ErrorKind::Stream, "{what}: {e}");
        assert!(e.to_string().contains(bound), "{what}: {e}");
    }
}

#[tokio::test]
async fn a_stream_of_keep_alives_still_ends() {
    for (model, keep_alive) in [
        ("openai:gpt-4o", ": keep-alive\n\n"),
        ("openai:gpt-4o", "data:\n\n"),
        (
            "anthropic:claude-x",
            "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        ),
    ] {
        let fake = FakeProvider::start(vec![Reply::Endless {
            status: 200,
            content_type: "text/event-stream",
            prefix: String::new(),
            chunk: keep_alive.into(),
            every: Duration::from_millis(20),
        }]);
        let client = builder()
            .provider("openai", fake.openai(KEY_ENV))
            .provider("anthropic", fake.anthropic(KEY_ENV))
            .timeouts(
                Timeouts::new(
                    Duration::from_secs(5),
                    Duration::from_secs(5),
                    Duration::from_secs(5),
                )
                .stream(Duration::from_millis(800)),
            )
            .build()
            .unwrap();
        let e = stream_error(&client, &rendered(model)).await;
        assert!(
            matches!(e.timeout(), Some((TimeoutKind::Stream, _))),
            "{model} {keep_alive:?}: {e}"
        );
    }
}

#[tokio::test]
async fn empty_events_between_deltas_do_not_break_a_stream() {
    let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n\
                  data:\n\n\
                  : comment\n\n\
                  event: ping\ndata: {}\n\n\
                  data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n\
                  data: [DONE]\n\n";
    let fake = FakeProvider::start(vec![Reply::Sse(stream.into())]);
    let client = builder()
        .provider("openai", fake.openai(KEY_ENV))
        .build()
        .unwrap();
    let mut events = client.stream(&rendered("openai:gpt-4o"));
    let mut text = String::new();
    while let Some(item) = events.next().await {
        match item.unwrap() {
            StreamEvent::Text(t) => text.push_str(&t),
            StreamEvent::Done(r) => assert_eq!(r.text, "Hello"),
            _ => {}
        }
    }
    assert_eq!(text, "Hello");
}

#[tokio::test]
async fn retry_after_values_that_overflow_are_capped_not_a_panic() {
    for (header, value) in [
        ("retry-after", "1e20"),
        ("retry-after", "18446744073709551616"),
        ("retry-after-ms", "1e30"),
        ("retry-after", "-5"),
        ("retry-after", "NaN"),
    ] {
        let fake = FakeProvider::start(vec![Reply::Status(
            429,
            vec![(header, value.to_owned())],
            json!({"error": {"message": "slow down"}}).to_string(),
        )]);
        let client = builder()
            .provider("openai", fake.openai(KEY_ENV))
            .build()
            .unwrap();
        let e = client.send(&rendered("openai:gpt-4o")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RateLimited, "{header}: {value}: {e}");
        let retry_after = e.retry_after();
        if value.starts_with('-') || value == "NaN" {
            assert_eq!(retry_after, None, "{value}");
        } else {
            assert_eq!(retry_after, Some(Duration::from_secs(86_400)), "{value}");
        }
    }
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let at = std::time::SystemTime::now() + Duration::from_secs(30);
    let fake = FakeProvider::start(vec![Reply::Status(
        429,
        vec![("retry-after", httpdate::fmt_http_date(at))],
        json!({"error": {"message": "slow down"}}).to_string(),
    )]);
    let client = builder()
        .provider("openai", fake.openai(KEY_ENV))
        .build()
        .unwrap();
    let e = client.send(&rendered("openai:gpt-4o")).await.unwrap_err();
    let wait = e.retry_after().expect("the date was read");
    // HTTP dates have whole seconds: 29 to 30 s from when it was written.
    assert!(
        wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
}

#[tokio::test]
async fn a_key_echoed_across_the_cut_is_not_shown_even_in_part() {
    let key = key();
    // Plain-text error bodies that put the echo on every position around
    // the 500-character cut, and bodies cut by the read bound mid-key.
    for pad in (480..505).chain([(16 << 10) - 10, (16 << 10) - 3]) {
        let body = format!("{}{key} was rejected", "x".repeat(pad));
        let fake = FakeProvider::start(vec![Reply::Status(401, vec![], body)]);
        let client = builder()
            .provider("openai", fake.openai(KEY_ENV))
            .size_limits(SizeLimits::new().error_bytes(16 << 10))
            .build()
            .unwrap();
        let e = client.send(&rendered("openai:gpt-4o")).await.unwrap_err();
        let shown = format!("{e} {e:?}");
        for n in 5..=key.len() {
            assert!(
                !shown.contains(&key[..n]),
                "pad {pad}: {n} characters of the key shown"
            );
        }
    }
}
