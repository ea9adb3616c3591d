//! The playground page in a real browser: headless Chromium driven over
//! WebDriver (chromedriver), against `promptbook serve` on 127.0.0.1.
//!
//! Needs Debian's `chromium` and `chromium-driver`, so it is ignored by a
//! plain `cargo test` (and reported as ignored, never as a pass): run it
//! with `cargo test --test test_playground -- --ignored`, as `.ci/run` does
//! after installing them. Run without them, it fails saying what is
//! missing. Set `PROMPTBOOK_SCREENSHOT=path.png` to keep a screenshot of
//! the page.
#![cfg(feature = "server")]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use support::{Server, WAIT, copy_tree, eventually};

fn find(env: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    path.exists().then_some(path)
}

/// chromedriver and chromium, or a failure saying what to install.
fn browser() -> (PathBuf, PathBuf) {
    let (Some(chromedriver), Some(chromium)) = (
        find("CHROMEDRIVER", "/usr/bin/chromedriver"),
        find("CHROMIUM", "/usr/bin/chromium"),
    ) else {
        panic!(
            "no /usr/bin/chromium and /usr/bin/chromedriver (apt install chromium chromium-driver, \
             or set CHROMIUM and CHROMEDRIVER)"
        );
    };
    (chromedriver, chromium)
}

/// chromedriver on a free loopback port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
    http: Client,
}

impl Driver {
    fn start(chromedriver: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: Client::builder().timeout(WAIT).build().unwrap(),
        };
        eventually("chromedriver to be ready", || {
            let res = driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .ok()?;
            let v: Value = res.json().ok()?;
            v["value"]["ready"].as_bool().filter(|r| *r)
        });
        driver
    }

    fn session(&self, chromium: &Path, profile: &Path) -> Session<'_> {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let v = self.call("POST", "/session", Some(&caps));
        let id = v["sessionId"].as_str().expect("a session id").to_owned();
        Session { driver: self, id }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(body.unwrap_or(&json!({}))),
        };
        let v: Value = req.send().unwrap().json().unwrap();
        let value = v["value"].clone();
        if let Some(e) = value.get("error") {
            panic!("WebDriver {method} {path}: {e}: {}", value["message"]);
        }
        value
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.driver.call(
            method,
            &format!("/session/{}{path}", self.id),
            body.as_ref(),
        )
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    /// The element for a CSS selector, waiting (bounded) for it to exist.
    fn element(&self, css: &str) -> String {
        eventually(&format!("element {css}"), || {
            let found = self.script(
                "return document.querySelector(arguments[0]) !== null",
                json!([css]),
            );
            found.as_bool().filter(|f| *f)
        });
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("an element id")
            .to_owned()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), None);
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        );
    }

    fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The rendered messages as the page shows them: (role, tokens label,
    /// content).
    fn messages(&self) -> Vec<(String, String, String)> {
        let v = self.script(
            "return [...document.querySelectorAll('#messages .message')].map(m => \
             [m.dataset.role, m.querySelector('.tokens').textContent, \
              m.querySelector('.content').textContent])",
            json!([]),
        );
        serde_json::from_value(v).unwrap_or_default()
    }

    fn screenshot(&self, path: &Path) {
        let v = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        fs::write(path, png).unwrap();
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .http
            .delete(format!("{}/session/{}", self.driver.url, self.id))
            .send();
    }
}

#[test]
#[ignore = "needs Chromium and chromedriver (apt install chromium chromium-driver); .ci/run runs it with --ignored"]
fn the_playground_renders_and_follows_edits_live() {
    let (chromedriver, chromium) = browser();
    let dir = tempfile::tempdir().unwrap();
    copy_tree(Path::new("templates"), dir.path());
    let profile = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let driver = Driver::start(&chromedriver);
    let page = driver.session(&chromium, profile.path());
    page.goto(&format!("{}/", server.url));

    // Pick the template and fill its one required input.
    page.click("#template option[value='support/triage']");
    page.type_into("#input-ticket", "My invoice shows the wrong VAT number");
    let messages = eventually("the rendered messages", || {
        let m = page.messages();
        m.last()
            .filter(|(_, _, content)| content == "My invoice shows the wrong VAT number")
            .map(|_| m.clone())
    });
    let roles: Vec<&str> = messages.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "user", "assistant", "user"]
    );
    assert!(messages[0].2.contains("support triage assistant"));
    for (_, tokens, _) in &messages {
        let n: u32 = tokens.trim_end_matches(" tokens").parse().unwrap();
        assert!(n > 0, "{tokens}");
    }
    let summary = page.script(
        "return document.getElementById('summary').textContent",
        json!([]),
    );
    assert!(
        summary.as_str().unwrap().contains("support/triage@2.1.0"),
        "{summary}"
    );
    // Nothing reloads the page from here on: this stays set.
    page.script("window.notReloaded = true", json!([]));

    // Edit the file on disk: the page shows the new text by itself.
    let file = dir.path().join("support/triage@2.1.0.prompt.jinja");
    let source = fs::read_to_string(&file).unwrap();
    fs::write(
        &file,
        source.replace(
            "You are a support triage assistant",
            "You are the night-shift triage desk",
        ),
    )
    .unwrap();
    eventually("the edited system message", || {
        page.messages()
            .first()
            .filter(|(_, _, c)| c.contains("night-shift triage desk"))
            .map(|_| ())
    });
    let kept = page.script(
        "return [window.notReloaded, document.getElementById('input-ticket').value]",
        json!([]),
    );
    assert_eq!(kept, json!([true, "My invoice shows the wrong VAT number"]));
    if let Some(path) = std::env::var_os("PROMPTBOOK_SCREENSHOT") {
        page.screenshot(Path::new(&path));
    }

    // A broken save shows the load error, file and line, on the page.
    fs::write(&file, source.replace("version: 2.1.0", "version: [")).unwrap();
    let shown = eventually("the load error", || {
        let v = page.script(
            "const e = document.getElementById('errors'); \
             return e.hidden ? null : e.textContent",
            json!([]),
        );
        v.as_str().map(str::to_owned)
    });
    assert!(shown.contains("triage@2.1.0.prompt.jinja:"), "{shown}");
}

#[test]
#[ignore = "needs Chromium and chromedriver (apt install chromium chromium-driver); .ci/run runs it with --ignored"]
fn the_playground_compares_two_versions_and_runs_the_tests() {
    let (chromedriver, chromium) = browser();
    let dir = tempfile::tempdir().unwrap();
    copy_tree(Path::new("templates"), dir.path());
    let profile = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let driver = Driver::start(&chromedriver);
    let page = driver.session(&chromium, profile.path());
    page.goto(&format!("{}/", server.url));
    page.click("#template option[value='support/triage']");
    page.type_into("#input-ticket", "I was charged twice");

    // Compare 2.1.0 (shown) with the `legacy` label (1.0.0).
    page.click("#compare option[value='support/triage@legacy']");
    let rows: Vec<(String, String)> = eventually("the comparison", || {
        let v = page.script(
            "if (document.getElementById('comparison').hidden) return null; \
             return [...document.querySelectorAll('#diff-rows .diff-head')] \
               .map(h => [h.dataset.change, h.textContent])",
            json!([]),
        );
        serde_json::from_value::<Vec<(String, String)>>(v)
            .ok()
            .filter(|r| !r.is_empty())
    });
    let changes: Vec<&str> = rows.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        changes,
        ["changed", "added", "added", "added", "added", "unchanged"]
    );
    // The deltas the page shows are the server's diff of the same renders.
    let expected: Value = Client::new()
        .post(format!("{}/api/diff", server.url))
        .json(
            &json!({"old": "support/triage@legacy", "new": "support/triage@=2.1.0",
                      "inputs": {"ticket": "I was charged twice"}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let d = &expected["diff"];
    for (i, (_, text)) in rows.iter().enumerate() {
        let m = &d["messages"][i];
        let delta = m["new_tokens"].as_i64().unwrap() - m["old_tokens"].as_i64().unwrap();
        let shown = if delta > 0 {
            format!("(+{delta})")
        } else {
            format!("({delta})")
        };
        assert!(text.ends_with(&shown), "{text} vs {m}");
    }
    let summary = page.script(
        "return document.getElementById('diff-summary').textContent",
        json!([]),
    );
    let total = format!(
        "{} → {} tokens",
        d["old"]["tokens"].as_u64().unwrap(),
        d["new"]["tokens"].as_u64().unwrap()
    );
    assert!(summary.as_str().unwrap().contains(&total), "{summary}");
    if let Some(path) = std::env::var_os("PROMPTBOOK_SCREENSHOT_COMPARE") {
        page.screenshot(Path::new(&path));
    }

    // Run the tests of this version from the page.
    page.click("#run-tests");
    let outcomes: Vec<(String, String)> = eventually("the test results", || {
        let v = page.script(
            "return [...document.querySelectorAll('#test-results .test')] \
               .map(t => [t.dataset.outcome, t.textContent])",
            json!([]),
        );
        serde_json::from_value::<Vec<(String, String)>>(v)
            .ok()
            .filter(|r| !r.is_empty())
    });
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert!(outcomes.iter().all(|(o, _)| o == "passed"), "{outcomes:?}");

    // A failing test shows why, on the page.
    let tests = dir.path().join("support/triage@2.1.0.tests.yaml");
    fs::write(
        &tests,
        "tests:\n  - name: wrong\n    inputs: {ticket: hi}\n    expect:\n      contains: refund policy\n",
    )
    .unwrap();
    page.click("#run-tests");
    let failed = eventually("the failed test", || {
        let v = page.script(
            "const t = document.querySelector('#test-results .test'); \
             return t && t.dataset.outcome === 'failed' ? t.textContent : null",
            json!([]),
        );
        v.as_str().map(str::to_owned)
    });
    assert!(
        failed.contains("does not contain \"refund policy\""),
        "{failed}"
    );
}

#[cfg(feature = "dispatch")]
#[path = "fake/mod.rs"]
mod fake;

#[cfg(feature = "dispatch")]
#[test]
#[ignore = "needs Chromium and chromedriver (apt install chromium chromium-driver); .ci/run runs it with --ignored"]
fn the_playground_sends_and_shows_the_validated_output() {
    let (chromedriver, chromium) = browser();
    // The page streams: both answers are server-sent events.
    let call = json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "issue_refund", "arguments": "{\"order_id\": \"A-1\", \"amount_cents\": 100, \"reason\": \"late\"}"}}]},
            "finish_reason": "tool_calls"}]});
    let calls = format!("data: {call}\n\ndata: [DONE]\n\n");
    let mut sse = String::new();
    for piece in [
        "{\"vendor\": {\"name\": \"ACME\"}, \"date\": \"2026-11-30\", \"currency\": \"EUR\", ",
        "\"lines\": [{\"description\": \"tea\", \"quantity\": 2, \"unit_price\": 5.5}], \"total\": \"eleven\"}",
    ] {
        let chunk = json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": piece}}]});
        sse.push_str(&format!("data: {chunk}\n\n"));
    }
    sse.push_str("data: [DONE]\n\n");
    let provider = fake::FakeProvider::start(vec![fake::Reply::Sse(sse), fake::Reply::Sse(calls)]);
    let dir = tempfile::tempdir().unwrap();
    copy_tree(Path::new("templates"), dir.path());
    let base = format!("{}/v1", provider.url);
    let server = Server::start_env(
        dir.path(),
        &[],
        None,
        &[
            ("OPENAI_API_KEY", "sk-browser-test"),
            ("OPENAI_BASE_URL", &base),
        ],
    );
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(&chromedriver);
    let page = driver.session(&chromium, profile.path());
    page.goto(&format!("{}/?template=extract/invoice", server.url));
    page.type_into("#input-document", "ACME Ltd, 2 x tea");
    // Send is offered: the server holds OpenAI's key.
    eventually("the Send button", || {
        page.script("return !document.getElementById('send').hidden", json!([]))
            .as_bool()
            .filter(|shown| *shown)
    });
    page.click("#send");
    let error = eventually("the invalid output", || {
        let v = page.script(
            "const e = document.getElementById('answer-error'); \
             return e.hidden ? null : document.getElementById('answer-error-text').textContent",
            json!([]),
        );
        v.as_str().map(str::to_owned)
    });
    assert!(error.starts_with("at /total · rule type"), "{error}");
    let text = page.script(
        "return document.getElementById('answer-text').textContent",
        json!([]),
    );
    assert!(text.as_str().unwrap().contains("\"eleven\""), "{text}");
    // The key never reached the page.
    let html = page.script("return document.documentElement.outerHTML", json!([]));
    assert!(!html.as_str().unwrap().contains("sk-browser-test"));

    // A tool call with invalid arguments is shown as such.
    page.click("#template option[value='support/agent']");
    page.type_into("#input-question", "Refund A-1");
    let shown = eventually("the agent's render", || {
        let v = page.script(
            "const s = document.getElementById('summary').textContent; \
             return s.startsWith('support/agent') && document.getElementById('render-error').hidden ? s : null",
            json!([]),
        );
        v.as_str().map(str::to_owned)
    });
    assert!(shown.contains("2 messages"), "{shown}");
    eventually("the Send button", || {
        page.script("return !document.getElementById('send').hidden", json!([]))
            .as_bool()
            .filter(|shown| *shown)
    });
    page.click("#send");
    let call = eventually("the tool call", || {
        let v = page.script(
            "const c = document.querySelector('#answer-calls [data-tool]'); \
             return c && c.classList.contains('failed') && c.querySelector('li') ? c.textContent : null",
            json!([]),
        );
        v.as_str().map(str::to_owned)
    });
    assert!(call.contains("issue_refund"), "{call}");
    assert!(call.contains("/order_id"), "{call}");
    if let Some(path) = std::env::var_os("PROMPTBOOK_SCREENSHOT_SEND") {
        page.screenshot(Path::new(&path));
    }
}

#[test]
#[ignore = "needs Chromium and chromedriver (apt install chromium chromium-driver); .ci/run runs it with --ignored"]
fn the_playground_shows_image_inputs_as_thumbnails_with_their_tokens() {
    // A 1x1 PNG.
    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let data_url = format!("data:image/png;base64,{PNG}");
    let (chromedriver, chromium) = browser();
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("describe.prompt.jinja"),
        "---\nversion: 1.0.0\nparameters:\n  photo: {type: image}\n---\nsystem:\nDescribe images.\n\
         {{ cache_breakpoint(\"1h\") }}\nuser:\nWhat is in this picture?\n{{ photo }}\n",
    )
    .unwrap();
    let png_file = dir.path().join("pixel.png");
    fs::write(
        &png_file,
        base64::engine::general_purpose::STANDARD
            .decode(PNG)
            .unwrap(),
    )
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let driver = Driver::start(&chromedriver);
    let page = driver.session(&chromium, profile.path());
    page.goto(&format!("{}/", server.url));
    page.click("#template option[value='describe']");
    // The image parameter has a file picker beside its text field.
    let accept = page.script(
        "const f = document.querySelector('#form input[type=file]'); return f && f.accept",
        json!([]),
    );
    assert_eq!(accept, json!("image/png,image/jpeg,image/gif,image/webp"));

    // A data URL typed in (set by script, as a paste would): a thumbnail
    // of it, with the tokens the server counted for it.
    let set_photo = "const i = document.getElementById('input-photo'); i.value = arguments[0]; \
                     i.dispatchEvent(new Event('input', {bubbles: true})); return true";
    page.script(set_photo, json!([data_url]));
    let thumb = |want: &str| {
        eventually("the image thumbnail", || {
            let v = page.script(
                "const img = document.querySelector('#messages .message img'); \
                 if (!img || img.getAttribute('src') !== arguments[0]) return null; \
                 const label = img.parentElement.querySelector('.media-tokens'); \
                 return [img.getAttribute('src'), label ? label.textContent : '']",
                json!([want]),
            );
            serde_json::from_value::<(String, String)>(v).ok()
        })
    };
    let (src, label) = thumb(&data_url);
    assert!(src.starts_with("data:image/png;base64,"), "{src}");
    assert!(label.contains("tokens"), "{label}");
    let expected: Value = Client::new()
        .post(format!("{}/api/render", server.url))
        .json(&json!({"template": "describe", "inputs": {"photo": data_url}}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let counted = &expected["tokens"]["media"][0];
    assert_eq!(counted["message"], 1, "{expected}");
    assert_eq!(counted["part"], 1, "{expected}");
    let tilde = if counted["approximate"] == true {
        "~"
    } else {
        ""
    };
    let shown = format!("{tilde}{} tokens", counted["tokens"]);
    assert!(label.starts_with(&shown), "{label} vs {counted}");
    // The cache breakpoint after the system message is a marker between
    // the two messages.
    let mark = page.script(
        "const c = document.querySelector('#messages .cache-mark'); \
         return c && [c.previousElementSibling.dataset.role, c.nextElementSibling.dataset.role, c.textContent]",
        json!([]),
    );
    let mark: (String, String, String) = serde_json::from_value(mark).unwrap();
    assert_eq!((mark.0.as_str(), mark.1.as_str()), ("system", "user"));
    assert!(mark.2.starts_with("cache breakpoint (1h)"), "{}", mark.2);
    if let Some(path) = std::env::var_os("PROMPTBOOK_SCREENSHOT_MEDIA") {
        page.screenshot(Path::new(&path));
    }

    // An http(s) image is never loaded: a placeholder names its URL.
    page.script(set_photo, json!(["https://example.com/cat.png"]));
    let placeholder = eventually("the image placeholder", || {
        let v = page.script(
            "const p = document.querySelector('#messages .placeholder'); return p && p.textContent",
            json!([]),
        );
        v.as_str().map(str::to_owned)
    });
    assert!(
        placeholder.contains("https://example.com/cat.png"),
        "{placeholder}"
    );

    // A file chosen in the picker (WebDriver sends its path): read in the
    // page into a data URL, rendered as a thumbnail again.
    page.type_into("#file-photo", png_file.to_str().unwrap());
    let (src, label) = thumb(&data_url);
    assert!(src.starts_with("data:image/png;base64,"), "{src}");
    assert!(label.contains("tokens"), "{label}");
    let field = page.script(
        "return document.getElementById('input-photo').value",
        json!([]),
    );
    assert_eq!(field, json!(data_url));

    // Nothing on the page points at or was fetched from anywhere else.
    let remote = page.script(
        "return [...document.images].map(i => i.getAttribute('src') || '').filter(s => /^https?:/i.test(s)) \
           .concat(performance.getEntriesByType('resource').map(e => e.name) \
           .filter(n => /^https?:/i.test(n) && !n.startsWith(location.origin + '/')))",
        json!([]),
    );
    assert_eq!(remote, json!([]));
}
