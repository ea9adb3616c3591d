//! `promptbook serve`: the JSON API over real HTTP on 127.0.0.1, with real
//! files and the real file watcher behind it.
#![cfg(feature = "server")]

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use support::{Server, WAIT, copy_tree};

fn client() -> Client {
    Client::builder().timeout(WAIT).build().unwrap()
}

fn cli_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_promptbook"))
        .args(args)
        .env_remove("PROMPTBOOK_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn post_render(server: &Server, body: &Value) -> (StatusCode, Value) {
    let res = client()
        .post(format!("{}/api/render", server.url))
        .json(body)
        .send()
        .unwrap();
    let status = res.status();
    (status, res.json().unwrap())
}

fn get(server: &Server, path: &str) -> Value {
    let res = client()
        .get(format!("{}{path}", server.url))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "GET {path}");
    res.json().unwrap()
}

/// Asserts the shape every error answer has.
fn assert_error_shape(body: &Value) -> &Value {
    let e = &body["error"];
    assert!(e["message"].is_string(), "{body}");
    for key in ["file", "line", "column", "parameter", "rule", "kind"] {
        assert!(e.get(key).is_some(), "error without `{key}`: {body}");
    }
    e
}

#[test]
fn templates_and_renders_match_the_cli() {
    let server = Server::start(Path::new("templates"));
    assert_eq!(
        get(&server, "/api/templates"),
        cli_json(&["list", "--json", "--dir", "templates"])
    );

    let history = json!([
        {"role": "user", "content": "My VM will not boot."},
        {"role": "assistant", "content": "Which region is it in?"}
    ]);
    let cases = [
        (
            json!({"template": "support/triage", "inputs": {"ticket": "Refund me"}}),
            vec![
                "render",
                "support/triage",
                "--json",
                "--var",
                "ticket=Refund me",
            ],
        ),
        (
            json!({"template": "support/triage@legacy", "inputs": {"ticket": "Hi"}}),
            vec![
                "render",
                "support/triage@legacy",
                "--json",
                "--var",
                "ticket=Hi",
            ],
        ),
        (
            json!({"template": "chat/assistant", "inputs": {"question": "eu-west", "history": history},
                   "model": "anthropic:claude-sonnet-4-5"}),
            vec![
                "render",
                "chat/assistant",
                "--json",
                "--model",
                "anthropic:claude-sonnet-4-5",
                "--var",
                "question=eu-west",
                "--var",
            ],
        ),
    ];
    for (request, mut args) in cases {
        let history_arg = format!("history:={history}");
        if args.last() == Some(&"--var") {
            args.push(&history_arg);
        }
        args.extend(["--dir", "templates"]);
        let (status, body) = post_render(&server, &request);
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, cli_json(&args), "{request}");
    }
}

#[test]
fn bad_requests_get_json_errors_that_say_what_and_where() {
    let server = Server::start(Path::new("templates"));

    // An input that breaks the schema: 422, naming the parameter and rule.
    let (status, body) = post_render(
        &server,
        &json!({"template": "support/triage", "inputs": {"ticket": 5}}),
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let e = assert_error_shape(&body);
    assert_eq!(e["parameter"], "/ticket");
    assert_eq!(e["rule"], "type");
    assert!(e["message"].as_str().unwrap().contains("/ticket"), "{body}");

    // A missing required input.
    let (status, body) = post_render(&server, &json!({"template": "support/triage"}));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(assert_error_shape(&body)["parameter"], "/ticket");

    // Unknown template: 404 listing what exists.
    let (status, body) = post_render(&server, &json!({"template": "support/triag"}));
    assert_eq!(status, StatusCode::NOT_FOUND);
    let message = assert_error_shape(&body)["message"].as_str().unwrap();
    assert!(message.contains("support/triage"), "{message}");

    // A version that does not exist.
    let (status, body) = post_render(&server, &json!({"template": "support/triage@^9"}));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        assert_error_shape(&body)["message"]
            .as_str()
            .unwrap()
            .contains("2.1.0")
    );

    // Not JSON, or not the request shape: 400.
    for raw in [
        "{\"template\": ",
        "[]",
        "{\"template\": \"x\", \"input\": {}}",
    ] {
        let res = client()
            .post(format!("{}/api/render", server.url))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{raw}");
        assert_error_shape(&res.json().unwrap());
    }

    // Too big: 413, still JSON, and the server keeps serving.
    let res = client()
        .post(format!("{}/api/render", server.url))
        .header("content-type", "application/json")
        .body(vec![b' '; promptbook::server::MAX_BODY + 1])
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_error_shape(&res.json().unwrap());

    // Unknown route: 404 JSON.
    let res = client()
        .get(format!("{}/api/nope", server.url))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_error_shape(&res.json().unwrap());

    let (status, _) = post_render(
        &server,
        &json!({"template": "support/triage", "inputs": {"ticket": "still up"}}),
    );
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn a_template_error_at_render_time_names_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("calc@1.0.0.prompt.jinja"),
        "---\nversion: 1.0.0\nparameters:\n  n: integer\n---\nuser:\nline two\n{{ 10 // n }}\n",
    )
    .unwrap();
    let server = Server::start(dir.path());
    let (status, body) = post_render(&server, &json!({"template": "calc", "inputs": {"n": 0}}));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let e = assert_error_shape(&body);
    assert!(
        e["file"]
            .as_str()
            .unwrap()
            .ends_with("calc@1.0.0.prompt.jinja"),
        "{body}"
    );
    assert_eq!(e["line"], 8, "{body}");
}

/// Reads server-sent events on a thread: (event name, data) pairs.
fn subscribe(server: &Server) -> mpsc::Receiver<(String, Value)> {
    let res = Client::builder()
        .build()
        .unwrap()
        .get(format!("{}/api/events", server.url))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut name = String::new();
        let mut data = String::new();
        for line in BufReader::new(res).lines() {
            let Ok(line) = line else { return };
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                let value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if tx.send((std::mem::take(&mut name), value)).is_err() {
                    return;
                }
                data.clear();
            }
        }
    });
    rx
}

fn next_reload(rx: &mpsc::Receiver<(String, Value)>) -> Value {
    let (name, data) = rx.recv_timeout(WAIT).expect("a reload event");
    assert_eq!(name, "reload");
    data
}

#[test]
fn edits_reach_status_events_and_renders() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(Path::new("templates"), dir.path());
    let server = Server::start(dir.path());
    let status = get(&server, "/api/status");
    assert_eq!(status["generation"], 1);
    assert_eq!(status["errors"], json!([]));
    let events = subscribe(&server);

    let file = dir.path().join("chat/assistant.prompt.yaml");
    let original = fs::read_to_string(&file).unwrap();
    let render = |server: &Server| {
        post_render(
            server,
            &json!({"template": "chat/assistant", "inputs": {"question": "Hi"}}),
        )
    };

    // A broken save: an event with the error, status says so, renders go on
    // with the last good version.
    fs::write(&file, original.replace("messages:", "messages: [")).unwrap();
    let event = next_reload(&events);
    assert_eq!(event["generation"], 1);
    let errors = event["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{event}");
    assert!(
        errors[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("assistant.prompt.yaml")
    );
    assert!(errors[0]["line"].as_u64().is_some(), "{event}");
    let status = get(&server, "/api/status");
    assert_eq!(status["generation"], 1);
    assert_eq!(status["errors"], event["errors"]);
    let (code, body) = render(&server);
    assert_eq!(code, StatusCode::OK);
    assert!(
        body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("customer assistant")
    );

    // A good save: generation 2, no errors, the new text renders.
    fs::write(
        &file,
        original.replace("customer assistant", "night-shift assistant"),
    )
    .unwrap();
    let event = next_reload(&events);
    assert_eq!(event["generation"], 2, "{event}");
    assert_eq!(event["errors"], json!([]));
    assert_eq!(event["changed"], json!(["chat/assistant"]));
    assert_eq!(get(&server, "/api/status")["errors"], json!([]));
    let (code, body) = render(&server);
    assert_eq!(code, StatusCode::OK);
    assert!(
        body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("night-shift assistant"),
        "{body}"
    );
}

#[test]
fn a_root_that_does_not_load_yet_is_served_empty_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.prompt.yaml");
    fs::write(&file, "version: 1.0.0\nmessages: {\n").unwrap();
    let server = Server::start(dir.path());
    let status = get(&server, "/api/status");
    assert_eq!(status["generation"], 0);
    assert_eq!(status["errors"][0]["file"], json!(file));
    assert_eq!(get(&server, "/api/templates"), json!([]));

    let events = subscribe(&server);
    fs::write(
        &file,
        "version: 1.0.0\nmessages:\n  - role: user\n    content: hello\n",
    )
    .unwrap();
    assert_eq!(next_reload(&events)["generation"], 1);
    let (code, body) = post_render(&server, &json!({"template": "hello"}));
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["messages"][0]["content"], "hello");
}

/// Methods a route does not take get 405 (not a content-type error), and
/// a blank model name is an input error.
#[test]
fn wrong_methods_and_blank_models_get_the_right_status() {
    let server = Server::start(Path::new("templates"));
    let res = client()
        .put(format!("{}/api/templates", server.url))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let (status, body) = post_render(
        &server,
        &json!({"template": "support/triage", "inputs": {"ticket": "x"}, "model": ""}),
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[test]
fn the_playground_page_is_served_self_contained() {
    let server = Server::start(Path::new("templates"));
    let res = client().get(format!("{}/", server.url)).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    // No other page may frame it (clickjacking the render button).
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let page = res.text().unwrap();
    assert!(page.contains("api/render") && page.contains("EventSource"));
    // Nothing is fetched from elsewhere.
    assert!(!page.contains("http://") && !page.contains("https://"));
}

#[test]
fn serve_refuses_a_public_address_without_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_promptbook"))
        .args(["serve", "--addr", "0.0.0.0:0", "--dir", "templates"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}

/// 1,000 render requests, 200 at a time, one in five invalid and one in
/// fifty a runaway template: every valid one gets its correct render, every
/// other a JSON error, and the server is still up. (200 stays under the
/// server's connection cap: at the cap it closes connections that have not
/// sent a request for half a second, which a loaded client's fresh
/// connection can be; `idle_and_trickling_connections_do_not_starve_valid_requests`
/// covers the cap.)
#[test]
fn the_server_survives_a_burst_of_concurrent_renders() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(Path::new("templates"), dir.path());
    fs::write(
        dir.path().join("runaway@1.0.0.prompt.jinja"),
        "---\nversion: 1.0.0\n---\nuser:\n{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}",
    )
    .unwrap();
    let server = Server::start(dir.path());
    let url = format!("{}/api/render", server.url);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcomes = runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(WAIT * 4).build().unwrap();
        let requests = (0..1000).map(|i| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let body = match i % 50 {
                    0 => json!({"template": "runaway"}),
                    n if n % 5 == 1 => json!({"template": "support/triage", "inputs": {"ticket": i}}),
                    _ => json!({"template": "support/triage", "inputs": {"ticket": format!("ticket {i}")}}),
                };
                let res = client.post(&url).json(&body).send().await.unwrap_or_else(|e| panic!("request {i}: {e:?}"));
                let status = res.status();
                let value: Value = res.json().await.unwrap();
                (i, status, value)
            }
        });
        use futures_util::StreamExt;
        futures_util::stream::iter(requests)
            .buffer_unordered(200)
            .collect::<Vec<_>>()
            .await
    });
    for (i, status, value) in outcomes {
        match i % 50 {
            0 => {
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{value}");
                assert!(
                    value["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("RenderLimits::fuel")
                );
            }
            n if n % 5 == 1 => {
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
                assert_eq!(value["error"]["parameter"], "/ticket");
            }
            _ => {
                assert_eq!(status, StatusCode::OK, "{value}");
                let last = value["messages"]
                    .as_array()
                    .unwrap()
                    .last()
                    .unwrap()
                    .clone();
                assert_eq!(last["content"], format!("ticket {i}"));
            }
        }
    }
    assert_eq!(get(&server, "/api/status")["generation"], 1);
}

/// A web page cannot use the server: not through DNS rebinding (a foreign
/// `Host`), not with a cross-site POST (a foreign `Origin`, or a body that
/// needs no CORS preflight).
#[test]
fn web_pages_cannot_reach_the_api() {
    let server = Server::start(Path::new("templates"));
    let render = "{\"template\": \"support/triage\", \"inputs\": {\"ticket\": \"hi\"}}";
    let post = |host: &str, extra: &str, content_type: &str| {
        server.raw(&format!(
            "POST /api/render HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{render}",
            render.len()
        ))
    };
    let get = |path: &str, host: &str| {
        server.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ))
    };
    let port = server.addr().rsplit_once(':').unwrap().1.to_owned();

    // The server's own names work.
    for host in [
        server.addr().to_owned(),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(get("/api/templates", &host).0, 200, "{host}");
        assert_eq!(post(&host, "", "application/json").0, 200, "{host}");
        let own = format!("Origin: http://{host}\r\n");
        assert_eq!(post(&host, &own, "application/json").0, 200, "{host}");
    }
    // A rebound name reads nothing: not the catalog, the status (with the
    // root path), the page or a render.
    let evil = format!("rebind.attacker.example:{port}");
    for path in ["/api/templates", "/api/status", "/", "/api/events"] {
        let (status, body) = get(path, &evil);
        assert_eq!(status, 403, "{path}");
        assert!(!body.contains("support/triage"), "{path}: {body}");
    }
    let (status, body) = post(&evil, "", "application/json");
    assert_eq!(status, 403);
    assert!(body.contains("does not name this server"), "{body}");
    // A page elsewhere posting to the right address.
    for origin in ["http://attacker.example", "null", "http://127.0.0.1:1"] {
        let (status, _) = post(
            server.addr(),
            &format!("Origin: {origin}\r\n"),
            "application/json",
        );
        assert_eq!(status, 403, "{origin}");
    }
    // Bodies a form or `fetch` without preflight can send.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (status, body) = post(server.addr(), "", content_type);
        assert_eq!(status, 415, "{content_type}");
        assert!(body.contains("application/json"), "{body}");
    }
}

/// A template that builds a string of 32 MiB, then measures it until its
/// fuel runs out: memory held for as long as a render can run.
const HEAVY: &str = "---\nversion: 1.0.0\n---\nuser:\n\
    {% set ns = namespace(s='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx') %}\
    {% for i in range(19) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}\
    {% for i in range(300) %}{% if ns.s|length < 0 %}x{% endif %}{% endfor %}{{ ns.s|length }}\n";

/// The peak resident memory of a process, in KiB (Linux).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// 32 heavy renders at once: at most `--max-renders` run, the rest wait or
/// get 503 with `Retry-After`, and the server's memory stays near one
/// render's worth per slot (it peaked at 5.25 GiB before renders were
/// bounded).
#[test]
fn concurrent_renders_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("heavy.prompt.jinja"), HEAVY).unwrap();
    fs::write(
        dir.path().join("light.prompt.jinja"),
        "---\nversion: 1.0.0\n---\nuser:\nhi\n",
    )
    .unwrap();
    let server = Server::start_with(dir.path(), &["--max-renders", "2"], None);
    let statuses: Vec<(u16, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|_| {
                s.spawn(|| {
                    let res = client()
                        .post(format!("{}/api/render", server.url))
                        .json(&json!({"template": "heavy"}))
                        .send()
                        .unwrap();
                    (
                        res.status().as_u16(),
                        res.headers().contains_key("retry-after"),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|(s, retry)| match s {
            503 => *retry,
            200 | 422 => true,
            _ => false,
        }),
        "{statuses:?}"
    );
    let peak_mib = peak_rss_kib(server.pid()) / 1024;
    eprintln!("peak resident memory under 32 heavy renders, 2 slots: {peak_mib} MiB");
    assert!(peak_mib < 512, "{peak_mib} MiB");
    // And it still answers.
    let (status, _) = post_render(&server, &json!({"template": "light"}));
    assert_eq!(status, StatusCode::OK);
}

/// Bodies that are small as text but many values once parsed (16 MB of
/// `[0,0,...]`, 8 million numbers), eight at once with one render slot:
/// each is refused with 413 before its values are built, and the server's
/// memory stays far below what parsing them would take (2.5 GB before).
#[test]
fn bodies_of_many_small_values_are_refused_before_they_are_parsed() {
    let server = Server::start_with(Path::new("templates"), &["--max-renders", "1"], None);
    let body = format!(
        "{{\"template\": \"support/triage\", \"inputs\": {{\"ticket\": \"x\", \"x\": [{}0]}}}}",
        "0,".repeat(8_000_000)
    );
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    client()
                        .post(format!("{}/api/render", server.url))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| *s == 413 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&413), "{statuses:?}");
    let peak_mib = peak_rss_kib(server.pid()) / 1024;
    eprintln!("peak resident memory under 8 bodies of 8M values: {peak_mib} MiB");
    assert!(peak_mib < 400, "{peak_mib} MiB");
    let (status, _) = post_render(
        &server,
        &json!({"template": "support/triage", "inputs": {"ticket": "hello"}}),
    );
    assert_eq!(status, StatusCode::OK);
}

/// Hundreds of reload-event streams (long-lived by design) under a low
/// open-file limit: valid renders are still served, the longest-waiting
/// streams making room (a browser's EventSource reconnects by itself).
#[test]
fn event_streams_do_not_starve_valid_requests() {
    use std::io::Write;
    use std::net::TcpStream;
    let server = Server::start_with(Path::new("templates"), &[], Some(256));
    let mut streams = Vec::new();
    for _ in 0..300 {
        if let Ok(mut c) = TcpStream::connect(server.addr()) {
            let _ = c.write_all(b"GET /api/events HTTP/1.1\r\nHost: localhost\r\n\r\n");
            streams.push(c);
        }
    }
    let served = (0..10)
        .filter(|_| {
            let (status, _) = post_render(
                &server,
                &json!({"template": "support/triage", "inputs": {"ticket": "hello"}}),
            );
            status == StatusCode::OK
        })
        .count();
    assert_eq!(served, 10, "beside {} event streams", streams.len());
}

/// Hundreds of connections that never send a request, or trickle one a
/// byte at a time, under a low open-file limit: valid requests are still
/// served (none were, before header timeouts and the connection cap).
#[test]
fn idle_and_trickling_connections_do_not_starve_valid_requests() {
    use std::io::Write;
    use std::net::TcpStream;
    let server = Server::start_with(Path::new("templates"), &[], Some(256));
    let mut idle = Vec::new();
    for _ in 0..1000 {
        if let Ok(c) = TcpStream::connect(server.addr()) {
            idle.push(c);
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        let addr = server.addr().to_owned();
        std::thread::spawn(move || {
            let mut conns: Vec<TcpStream> = (0..200)
                .filter_map(|_| TcpStream::connect(&addr).ok())
                .collect();
            let head = b"GET /api/templates HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for c in &mut conns {
                    let _ = c.write_all(&[head[i.min(head.len() - 1)]]);
                }
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
    };
    let started = std::time::Instant::now();
    let served = (0..20)
        .filter(|_| {
            let (status, _) = post_render(
                &server,
                &json!({"template": "support/triage", "inputs": {"ticket": "hello"}}),
            );
            status == StatusCode::OK
        })
        .count();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    trickler.join().unwrap();
    eprintln!(
        "{served} of 20 renders served in {:?} beside {} idle and 200 trickling connections",
        started.elapsed(),
        idle.len()
    );
    assert_eq!(served, 20);
    drop(idle);
}

/// With every slot taken and no time to wait, a render request is turned
/// away at once with 503 and `Retry-After`, and served again once a slot
/// is free.
#[test]
fn a_render_without_a_free_slot_gets_503_with_retry_after() {
    use promptbook::server::Options;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("heavy.prompt.jinja"), HEAVY).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let registry = promptbook::WatchedRegistry::watch(dir.path()).unwrap();
    let options = Options::new()
        .max_renders(1)
        .render_queue_wait(std::time::Duration::ZERO);
    runtime.spawn(promptbook::server::serve(listener, registry, options));
    let answers: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let res = client()
                        .post(format!("{url}/api/render"))
                        .json(&json!({"template": "heavy"}))
                        .send()
                        .unwrap();
                    let retry = res
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_owned());
                    (res.status().as_u16(), retry)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let busy: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!busy.is_empty(), "{answers:?}");
    assert!(
        busy.iter().all(|(_, r)| r.as_deref() == Some("1")),
        "{answers:?}"
    );
    assert!(answers.iter().any(|(s, _)| *s == 422), "{answers:?}");
    runtime.shutdown_background();
}

/// A root with a broken file serves the others from the start, and says
/// what was left out in `/api/status`.
#[test]
fn a_broken_file_at_start_leaves_the_others_served() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("ok.prompt.jinja"),
        "---\nversion: 1.0.0\n---\nuser:\nhello\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("broken.prompt.jinja"),
        "---\nversion: 1.0.0\n---\nuser:\n{{ nope\n",
    )
    .unwrap();
    let server = Server::start(dir.path());
    let (status, body) = post_render(&server, &json!({"template": "ok"}));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["messages"][0]["content"], "hello");
    let status = get(&server, "/api/status");
    assert_eq!(status["generation"], 1, "{status}");
    let errors = status["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|d| d["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("broken.prompt.jinja"))),
        "{status}"
    );
    let (code, body) = post_render(&server, &json!({"template": "broken"}));
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not load"),
        "{body}"
    );
}

/// Sends a render request for `q` over a raw connection and reads only the
/// status line, then stops reading: the response waits in the server.
fn stalled_render(server: &Server, q_len: usize) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let addr = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let body = json!({"template": "echo", "inputs": {"q": "x".repeat(q_len)}}).to_string();
    // A server that refuses the body (503 when its budget is spent) may
    // answer and close before it is all sent: its answer is still read.
    let _ = write!(
        stream,
        "POST /api/render HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .and_then(|()| stream.write_all(body.as_bytes()));
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut status = [0u8; 12];
    match stream.read_exact(&mut status) {
        Ok(()) => (stream, String::from_utf8_lossy(&status).into_owned()),
        Err(e) => (stream, format!("no answer: {e}")),
    }
}

fn echo_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("echo.prompt.jinja"),
        "---\nversion: 1.0.0\nparameters:\n  q: string\n---\nuser:\n{{ q }}\n",
    )
    .unwrap();
    dir
}

/// A client that stops reading its response is closed after the write
/// timeout, which frees what the response holds; before, the connection
/// and its response stayed for as long as the client wanted.
#[test]
fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
    use std::io::Read;
    let dir = echo_root();
    let server = Server::start_with(dir.path(), &["--write-timeout", "1"], None);
    let (mut stream, status) = stalled_render(&server, 7 << 20);
    assert_eq!(status, "HTTP/1.1 200");
    // Wait past the timeout without reading, then read what is left: the
    // kernel's buffers, then the end of a closed connection, well short of
    // the 7 MB the response held.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let mut rest = Vec::new();
    let started = std::time::Instant::now();
    let read = stream.read_to_end(&mut rest);
    assert!(
        started.elapsed() < WAIT,
        "the connection was not closed: read blocked"
    );
    let _ = read;
    assert!(
        rest.len() < 7 << 20,
        "the whole response came: {}",
        rest.len()
    );
    // The server still serves.
    let (status, _) = post_render(&server, &json!({"template": "echo", "inputs": {"q": "hi"}}));
    assert_eq!(status, StatusCode::OK);
}

/// Responses waiting for clients that stopped reading share the server's
/// memory budget with request bodies (256 MiB): past it, renders get 503
/// with `Retry-After`, and the server's memory stays near the budget.
/// Before, every stalled response was held (48 of 48 here, 516 MiB; 270
/// clients held 2.2 GB in the attack that found it).
#[test]
fn stalled_responses_are_held_within_the_memory_budget() {
    let dir = echo_root();
    let server = Server::start_with(dir.path(), &["--write-timeout", "60"], None);
    let mut held = Vec::new();
    let mut busy = 0;
    for _ in 0..48 {
        let (stream, status) = stalled_render(&server, 7 << 20);
        match status.as_str() {
            "HTTP/1.1 200" => held.push(stream),
            "HTTP/1.1 503" => busy += 1,
            // Refused while its body was still being sent.
            other if other.starts_with("no answer") => busy += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    let peak_mib = peak_rss_kib(server.pid()) / 1024;
    eprintln!("{} held, {busy} refused, peak {peak_mib} MiB", held.len());
    // Each response is a little over 7 MiB: at most 256 MiB of them held.
    assert!(busy > 0, "all 48 responses were held");
    assert!(held.len() <= 36, "{} responses held", held.len());
    assert!(
        peak_mib < 640,
        "{peak_mib} MiB held for {} stalled responses",
        held.len()
    );
    // Once the stalled clients go, the budget is free again.
    drop(held);
    let ok = (0..50).any(|_| {
        let (_, status) = stalled_render(&server, 7 << 20);
        std::thread::sleep(std::time::Duration::from_millis(100));
        status == "HTTP/1.1 200"
    });
    assert!(ok, "the budget was not given back");
}

/// The playground's Send: which providers have keys (never a key), and an
/// answer streamed as JSON lines with the validated output, from a fake
/// provider on loopback.
#[cfg(feature = "dispatch")]
#[test]
fn send_streams_the_answer_and_never_shows_a_key() {
    #[path = "fake/mod.rs"]
    mod fake;
    let fake = fake::FakeProvider::start(vec![fake::Reply::Sse({
        let mut sse = String::new();
        for piece in [
            "{\"vendor\": {\"name\": \"ACME\"}, \"date\": \"2026-11-30\", ",
            "\"currency\": \"EUR\", \"lines\": [{\"description\": \"tea\", \"quantity\": 2, \"unit_price\": 5.5}], ",
            "\"total\": 11, \"notes\": null}",
        ] {
            let chunk = json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": {"content": piece}}]});
            sse.push_str(&format!("data: {chunk}\n\n"));
        }
        let last = json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        sse.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
        sse
    })]);
    let dir = tempfile::tempdir().unwrap();
    copy_tree(Path::new("templates"), dir.path());
    let key = "sk-playground-SENTINEL-4242";
    let base = format!("{}/v1", fake.url);
    let server = Server::start_env(
        dir.path(),
        &[],
        None,
        &[("OPENAI_API_KEY", key), ("OPENAI_BASE_URL", &base)],
    );
    let http = client();
    let providers = http
        .get(format!("{}/api/providers", server.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!providers.contains(key), "{providers}");
    let v: Value = serde_json::from_str(&providers).unwrap();
    let ready = |name: &str| {
        v["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["key"].clone())
    };
    assert_eq!(ready("openai"), Some(json!(true)));
    assert_eq!(ready("anthropic"), Some(json!(false)));

    let res = http
        .post(format!("{}/api/send", server.url))
        .json(&json!({"template": "extract/invoice", "inputs": {"document": "ACME, tea"}}))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/x-ndjson")
    );
    let body = res.text().unwrap();
    assert!(!body.contains(key));
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"text"));
    assert!(kinds.contains(&"output"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"done"));
    let done = &lines.last().unwrap()["response"];
    assert_eq!(done["output"]["total"], 11);
    assert!(done["output"].get("notes").is_none(), "{done}");
    // The key went to the provider, not to the page.
    assert_eq!(
        fake.requests()[0].headers["authorization"],
        format!("Bearer {key}").as_str()
    );

    // A cross-site page cannot send.
    let res = http
        .post(format!("{}/api/send", server.url))
        .header("origin", "https://evil.example")
        .json(&json!({"template": "extract/invoice", "inputs": {"document": "x"}}))
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // A provider without its key: a JSON error line, no request made.
    let res = http
        .post(format!("{}/api/send", server.url))
        .json(
            &json!({"template": "extract/invoice", "inputs": {"document": "x"},
                      "model": "anthropic:claude-sonnet-4-5"}),
        )
        .send()
        .unwrap();
    let body = res.text().unwrap();
    assert!(body.contains("\"type\":\"error\""), "{body}");
    assert!(body.contains("ANTHROPIC_API_KEY"), "{body}");
    assert_eq!(fake.count(), 1);
}
