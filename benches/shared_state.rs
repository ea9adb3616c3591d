//! What the Redis limiter adds to a call: `Client::send` to a loopback
//! server with the same limits (requests and tokens per minute, 64 in
//! flight) kept in this process and kept in a `redis-server` on loopback
//! (started here; it must be on PATH). Criterion times both; a second pass
//! interleaves 3,000 calls of each and prints p50 and p99 of each and of
//! the difference, the figure docs/performance.md reports.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use promptbook::Registry;
use promptbook::dispatch::{Client, Limits, ProviderConfig, ProviderKind, StateConfig};

// The tests' own redis-server on a free loopback port, stopped when
// dropped.
#[path = "../tests/redis/mod.rs"]
mod redis;

const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":120,"completion_tokens":1,"total_tokens":121}}"#;

async fn serve() -> String {
    let app = axum::Router::new().fallback(|| async {
        (
            [("content-type", "application/json")],
            axum::body::Body::from(ANSWER),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn client(url: &str, state: StateConfig) -> Client {
    let limits = Limits::new()
        .requests_per_minute(10_000_000)
        .tokens_per_minute(1_000_000_000)
        .concurrent(64);
    Client::builder()
        .provider(
            "openai",
            ProviderConfig::new(
                ProviderKind::Openai,
                format!("{url}/v1"),
                Some("PROMPTBOOK_TEST_KEY"),
            )
            .with_limits(limits),
        )
        .state(state)
        .build()
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(serve());
    let server = redis::RedisServer::start();
    let local = client(&url, StateConfig::local());
    let shared = client(&url, StateConfig::redis(server.url()));
    let registry = Registry::load("templates").unwrap();
    let rendered = registry
        .render(
            "support/triage",
            &serde_json::json!({"ticket": "My invoice is blank"}),
        )
        .unwrap();

    let mut g = c.benchmark_group("shared state");
    g.bench_function("Client::send, limits in this process", |b| {
        b.to_async(&rt)
            .iter(|| async { local.send(&rendered).await.unwrap() })
    });
    g.bench_function("Client::send, limits in Redis", |b| {
        b.to_async(&rt)
            .iter(|| async { shared.send(&rendered).await.unwrap() })
    });
    g.finish();

    // p50 and p99, interleaved so that drift hits both alike.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for _ in 0..3_000 {
            let t = Instant::now();
            local.send(&rendered).await.unwrap();
            a.push(t.elapsed());
            let t = Instant::now();
            shared.send(&rendered).await.unwrap();
            b.push(t.elapsed());
        }
    });
    a.sort();
    b.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for p in [0.5, 0.99] {
        let (x, y) = (percentile(&a, p), percentile(&b, p));
        println!(
            "p{:.0}: in process {:.0} us, in Redis {:.0} us, added {:.0} us",
            p * 100.0,
            us(x),
            us(y),
            us(y) - us(x)
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
