//! A fake LLM provider on 127.0.0.1 for dispatch tests. It answers any
//! POST from a script of replies, speaking OpenAI's and Anthropic's wire
//! formats byte for byte (its streams replay recorded SSE fixtures), and
//! injects faults: error statuses with headers, hangs, streams cut
//! mid-message, malformed bodies. It records every request.
#![allow(dead_code)] // each test file uses a different part

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A status, extra headers and a body (sent as JSON content type).
    Status(u16, Vec<(&'static str, String)>, String),
    /// 200 with `text/event-stream`, one chunk per event.
    Sse(String),
    /// `text/event-stream` that sends this much, then breaks the connection.
    Cut(String),
    /// `text/event-stream` that sends this much, then goes silent.
    Stall(String),
    /// Waits this long, then answers 200 with the body.
    Hang(Duration, String),
    /// A redirect: this status, `Location: <the string>`.
    Redirect(u16, String),
    /// A body that never ends: `prefix`, then `chunk` again and again, one
    /// every `every`, until the client stops reading.
    Endless {
        status: u16,
        content_type: &'static str,
        prefix: String,
        chunk: String,
        every: Duration,
    },
}

impl Reply {
    pub fn json(body: &str) -> Reply {
        Reply::Status(200, vec![], body.to_owned())
    }

    pub fn error(status: u16, message: &str) -> Reply {
        let body = serde_json::json!({"error": {"message": message, "type": "fake_error"}});
        Reply::Status(status, vec![], body.to_string())
    }
}

/// A recorded request.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    /// The reply once the script is used up (else a 500).
    then: Mutex<Option<Reply>>,
    requests: Mutex<Vec<Request>>,
    /// When each request arrived, from the server's start.
    arrivals: Mutex<Vec<Duration>>,
    started: Mutex<Option<std::time::Instant>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

pub struct FakeProvider {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        // Tests drop it inside their own runtime: do not block there.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl FakeProvider {
    /// Starts a server on its own runtime, answering from `script` in order
    /// (500 once the script is used up).
    pub fn start(script: Vec<Reply>) -> FakeProvider {
        FakeProvider::start_then(script, None)
    }

    /// Starts a server answering from `script`, then with `then` for
    /// ever.
    pub fn start_then(script: Vec<Reply>, then: Option<Reply>) -> FakeProvider {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(State {
            script: Mutex::new(script.into()),
            then: Mutex::new(then),
            started: Mutex::new(Some(std::time::Instant::now())),
            ..State::default()
        });
        // Tests start it from inside their own runtime: bind with std, no
        // block_on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await
        });
        FakeProvider {
            url,
            state,
            runtime: Some(runtime),
        }
    }

    /// This server as an OpenAI-compatible provider (its API under
    /// `/v1`), keyed by the variable `key_env`.
    pub fn openai(&self, key_env: &str) -> promptbook::dispatch::ProviderConfig {
        promptbook::dispatch::ProviderConfig::new(
            promptbook::dispatch::ProviderKind::Openai,
            format!("{}/v1", self.url),
            Some(key_env),
        )
    }

    /// This server as an Anthropic provider, keyed by the variable
    /// `key_env`.
    pub fn anthropic(&self, key_env: &str) -> promptbook::dispatch::ProviderConfig {
        promptbook::dispatch::ProviderConfig::new(
            promptbook::dispatch::ProviderKind::Anthropic,
            self.url.clone(),
            Some(key_env),
        )
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// When each request arrived, from the server's start, in order.
    pub fn arrivals(&self) -> Vec<Duration> {
        self.state.arrivals.lock().unwrap().clone()
    }

    /// Forgets the requests, arrivals and the in-flight maximum so far.
    pub fn reset(&self) {
        self.state.requests.lock().unwrap().clear();
        self.state.arrivals.lock().unwrap().clear();
        self.state.max_in_flight.store(0, Ordering::SeqCst);
    }
}

struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    if let Some(started) = *state.started.lock().unwrap() {
        state.arrivals.lock().unwrap().push(started.elapsed());
    }
    let guard = InFlight(state.clone());
    state.requests.lock().unwrap().push(Request {
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let reply = state.script.lock().unwrap().pop_front();
    let reply = reply
        .or_else(|| state.then.lock().unwrap().clone())
        .unwrap_or_else(|| Reply::error(500, "the fake's script is used up"));
    match reply {
        Reply::Status(status, extra, body) => {
            let mut res = (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body,
            )
                .into_response();
            for (k, v) in extra {
                res.headers_mut().insert(k, v.parse().unwrap());
            }
            drop(guard);
            res
        }
        Reply::Hang(wait, body) => {
            tokio::time::sleep(wait).await;
            drop(guard);
            ([("content-type", "application/json")], body).into_response()
        }
        Reply::Redirect(status, location) => {
            drop(guard);
            (
                StatusCode::from_u16(status).unwrap(),
                [("location", location)],
                "moved",
            )
                .into_response()
        }
        Reply::Endless {
            status,
            content_type,
            prefix,
            chunk,
            every,
        } => {
            let chunk = Bytes::from(chunk);
            let first = Bytes::from(prefix);
            let stream = futures_util::stream::unfold(
                (Some(first), chunk, guard),
                move |(first, chunk, guard)| async move {
                    if let Some(first) = first {
                        return Some((Ok::<Bytes, std::io::Error>(first), (None, chunk, guard)));
                    }
                    if every.is_zero() {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(every).await;
                    }
                    Some((Ok(chunk.clone()), (None, chunk, guard)))
                },
            );
            (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", content_type)],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Reply::Sse(text) => sse(events(&text), End::Close, guard),
        Reply::Cut(text) => sse(events(&text), End::Break, guard),
        Reply::Stall(text) => sse(events(&text), End::Stall, guard),
    }
}

/// The transcript split into events (each with its blank line).
fn events(text: &str) -> Vec<Bytes> {
    let text = text.replace("\r\n", "\n");
    let mut out: Vec<Bytes> = text
        .split_inclusive("\n\n")
        .map(|e| Bytes::from(e.to_owned()))
        .collect();
    // A transcript may lack the final blank line.
    if let Some(last) = out.last_mut()
        && !last.ends_with(b"\n\n")
    {
        let mut v = last.to_vec();
        v.extend_from_slice(if v.ends_with(b"\n") { b"\n" } else { b"\n\n" });
        *last = Bytes::from(v);
    }
    out
}

enum End {
    Close,
    Break,
    Stall,
}

fn sse(chunks: Vec<Bytes>, end: End, guard: InFlight) -> Response {
    let stream = futures_util::stream::unfold(
        (chunks.into_iter(), Some(end), guard),
        |(mut chunks, end, guard)| async move {
            if let Some(chunk) = chunks.next() {
                // One event at a time, as a server writes them.
                tokio::task::yield_now().await;
                return Some((Ok::<Bytes, std::io::Error>(chunk), (chunks, end, guard)));
            }
            match end? {
                End::Close => None,
                End::Break => Some((
                    // hyper drops unflushed bytes when a body fails: give
                    // what was sent time to leave before breaking.
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err(std::io::Error::other("connection cut"))
                    },
                    (chunks, None, guard),
                )),
                End::Stall => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    None
                }
            }
        },
    );
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("tests/fixtures/providers/{name}")).unwrap()
}

/// The recorded response body of an SDK's recorded HTTP exchange.
pub fn recorded_body(name: &str) -> String {
    let v: Value = serde_json::from_str(&fixture(name)).unwrap();
    let exchange = if v.is_array() { &v[0] } else { &v };
    exchange["response"]["body"].to_string()
}
