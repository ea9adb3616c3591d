//! What the dispatch layer adds over a bare reqwest call to the same
//! loopback server: a whole answer (`Client::send` against a POST plus JSON
//! parse), and the time to the first streamed token (`Client::stream`'s
//! first text event against the first chunk of a bare streamed response).

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use promptbook::Registry;
use promptbook::dispatch::{Client, ProviderConfig, ProviderKind, StreamEvent};

const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"{\"queue\": \"billing\", \"priority\": \"high\"}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":120,"completion_tokens":12,"total_tokens":132}}"#;

/// A loopback server answering every POST: JSON, or (for `"stream": true`)
/// twenty SSE chunks, the first at once.
async fn serve() -> String {
    use axum::body::{Body, Bytes};
    let app = axum::Router::new().fallback(|body: Bytes| async move {
        let stream = body.windows(14).any(|w| w == b"\"stream\":true}" || w == b"\"stream\":true,");
        if stream {
            let chunks = (0..20).map(|i| {
                Ok::<_, std::io::Error>(Bytes::from(format!(
                    "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":{}}}]}}\n\n",
                    if i == 19 { "\"stop\"" } else { "null" }
                )))
            });
            let tail = std::iter::once(Ok(Bytes::from("data: [DONE]\n\n")));
            axum::response::Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(futures_util::stream::iter(chunks.chain(tail))))
                .unwrap()
        } else {
            axum::response::Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(ANSWER))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(serve());
    // The fake key `.cargo/config.toml` sets for tests and benches.
    let key_env = "PROMPTBOOK_TEST_KEY";
    let client = Client::builder()
        .provider(
            "openai",
            ProviderConfig::new(ProviderKind::Openai, format!("{url}/v1"), Some(key_env)),
        )
        .build()
        .unwrap();
    let registry = Registry::load("templates").unwrap();
    let rendered = registry
        .render(
            "support/triage",
            &serde_json::json!({"ticket": "My invoice is blank"}),
        )
        .unwrap();
    let bare = reqwest::Client::new();
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": rendered.messages,
        "temperature": 0, "max_tokens": 50, "response_format": {"type": "json_object"}
    });
    let key = std::env::var(key_env).unwrap_or_else(|_| "sk-bench".into());

    let mut g = c.benchmark_group("dispatch");
    g.bench_function("bare reqwest (send)", |b| {
        b.to_async(&rt).iter(|| async {
            let res = bare
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = res.json().await.unwrap();
            v
        })
    });
    g.bench_function("promptbook Client::send", |b| {
        b.to_async(&rt)
            .iter(|| async { client.send(&rendered).await.unwrap() })
    });
    let mut stream_body = body.clone();
    stream_body["stream"] = true.into();
    g.bench_function("bare reqwest (first streamed chunk)", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (bare, stream_body, url, key) =
                (bare.clone(), stream_body.clone(), url.clone(), key.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let res = bare
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(&key)
                        .json(&stream_body)
                        .send()
                        .await
                        .unwrap();
                    let mut s = res.bytes_stream();
                    let _first = s.next().await;
                    total += started.elapsed();
                    while s.next().await.is_some() {}
                }
                total
            }
        })
    });
    g.bench_function("promptbook Client::stream (first text event)", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (client, rendered) = (client.clone(), rendered.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let mut s = client.stream(&rendered);
                    while let Some(e) = s.next().await {
                        if matches!(e.unwrap(), StreamEvent::Text(_)) {
                            break;
                        }
                    }
                    total += started.elapsed();
                    while s.next().await.is_some() {}
                }
                total
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
