//! Keys never leak: with a recognisable key in the environment, failing
//! calls are made through the library and the CLI, and everything they
//! print or log is scanned for it. (Its own test binary: it installs a
//! process-wide tracing subscriber.)
#![cfg(all(feature = "dispatch", feature = "cli"))]

mod fake;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake::{FakeProvider, Reply};
use futures_util::StreamExt;
use promptbook::Registry;
use promptbook::dispatch::{Client, RetryPolicy};
use serde_json::json;

const KEY_ENV: &str = "PROMPTBOOK_TEST_KEY";

fn key() -> String {
    std::env::var(KEY_ENV).expect("PROMPTBOOK_TEST_KEY comes from .cargo/config.toml")
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Failing replies that echo the key, as some providers' messages do.
fn hostile_script(key: &str) -> Vec<Reply> {
    let echo = format!("Incorrect API key provided: {key}. You can find your API key at ...");
    vec![
        Reply::error(401, &echo),
        Reply::Status(
            429,
            vec![("retry-after-ms", "1".into())],
            json!({"error": {"message": echo}}).to_string(),
        ),
        Reply::error(500, &echo),
        Reply::error(503, &echo),
        Reply::Cut("data: {\"choices\":[{\"delta\":{\"content\":\"partial\"}}]}\n\n".into()),
    ]
}

#[tokio::test]
async fn keys_never_leak_into_errors_or_logs() {
    let logs = Buffer::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let key = key();
    let fake = FakeProvider::start(hostile_script(&key));
    let client = Client::builder()
        .provider("openai", fake.openai(KEY_ENV))
        .retry(RetryPolicy::retries(2).backoff(Duration::from_millis(1), Duration::from_millis(2)))
        .build()
        .unwrap();
    let registry = Registry::load("templates").unwrap();
    let rendered = registry
        .render("support/triage", &json!({"ticket": "x"}))
        .unwrap();
    let mut printed = format!("{client:?}\n");
    for _ in 0..2 {
        let e = client.send(&rendered).await.unwrap_err();
        printed.push_str(&format!("{e}\n{e:?}\n"));
    }
    let mut stream = client.stream(&rendered);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => printed.push_str(&format!("{event:?}\n")),
            Err(e) => printed.push_str(&format!("{e}\n{e:?}\n")),
        }
    }
    assert_eq!(fake.count(), 5, "every hostile reply was served");
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    // The scan can fail: there is output, and the key was echoed into it.
    assert!(
        logs.contains("promptbook.dispatch") && logs.contains("outcome="),
        "no dispatch logs captured: {logs}"
    );
    assert!(printed.contains("[redacted]"), "{printed}");
    assert!(!printed.contains(&key), "the key leaked: {printed}");
    assert!(!logs.contains(&key), "the key leaked into the logs: {logs}");
}

#[test]
fn the_cli_never_prints_the_key() {
    let key = key();
    let fake = FakeProvider::start(hostile_script(&key));
    let mut all = String::new();
    for args in [&["--json"][..], &["--stream"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_promptbook"))
            .args([
                "send",
                "support/triage",
                "--var",
                "ticket=hello",
                "--dir",
                "templates",
            ])
            .args(args)
            .env("OPENAI_BASE_URL", format!("{}/v1", fake.url))
            .env("OPENAI_API_KEY", &key)
            .env("PROMPTBOOK_LOG", "trace")
            .output()
            .unwrap();
        assert!(!out.status.success());
        all.push_str(&String::from_utf8_lossy(&out.stdout));
        all.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(all.contains("authentication failed (HTTP 401)"), "{all}");
    assert!(all.contains("promptbook.dispatch"), "no logs: {all}");
    assert!(all.contains("[redacted]"), "{all}");
    assert!(!all.contains(&key), "the key leaked: {all}");
}
