//! Prompt caching: the static-prefix proof (`promptbook::lint` and load
//! warnings), breakpoints on both wires, requests whose cached prefix is
//! byte-identical across renders, and cache-aware truncation measured over
//! a long conversation.

mod fake;

use std::fs;

use promptbook::{Registry, RenderOptions, Severity, Strategy};
use serde_json::{Value, json};

fn root(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

/// `(severity, line, message)` of the lint findings about cache
/// breakpoints.
fn cache_findings(dir: &std::path::Path) -> Vec<(Severity, u32, String)> {
    promptbook::lint(dir)
        .unwrap()
        .into_iter()
        .filter(|d| d.message().contains("cache"))
        .map(|d| {
            (
                d.severity(),
                d.location().line().unwrap_or(0),
                d.message().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_parameter_before_a_static_breakpoint_is_a_lint_error_naming_it() {
    let dir = root(&[(
        "t.prompt.jinja",
        "---\nversion: 1.0.0\nparameters:\n  tenant: {type: string, stable: true}\n  question: string\n---\nsystem:\nYou help {{ tenant }} customers.\nToday's question: {{ question }}\n{{ cache_breakpoint() }}\nuser:\n{{ question }}\n",
    )]);
    let found = cache_findings(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    let (severity, line, message) = &found[0];
    assert_eq!((*severity, *line), (Severity::Error, 9));
    assert!(message.contains("`question`"), "{message}");
    assert!(message.contains("on line 10"), "{message}");
    assert!(!message.contains("`tenant`"), "stable: {message}");
    // Loading still works, with the same finding as a warning.
    let registry = Registry::load(dir.path()).unwrap();
    let w: Vec<_> = registry
        .warnings()
        .iter()
        .filter(|d| d.message().contains("`question`"))
        .collect();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].severity(), Severity::Warning);
}

#[test]
fn conditions_filters_includes_and_conversation_breakpoints() {
    let dir = root(&[
        (
            "partials/intro@1.0.0.prompt.jinja",
            "---\nversion: 1.0.0\nparameters:\n  mood: string\n---\nBe {{ mood }}.\n",
        ),
        (
            "t.prompt.jinja",
            "---\nversion: 1.0.0\nparameters:\n  verbose: {type: boolean, default: false}\n  mood: string\n  history: {type: messages, default: []}\n  question: string\n---\nsystem:\n{% if verbose %}Explain at length.{% endif %}\nPick one: {{ ['a', 'b']|random }}\n{% include 'partials/intro' %}\n{{ cache_breakpoint() }}\n{{ history }}\n{{ cache_breakpoint() }}\nuser:\n{{ question }}\n",
        ),
        (
            "conv.prompt.jinja",
            "---\nversion: 1.0.0\nparameters:\n  topic: string\n  history: {type: messages, default: []}\n  question: string\n---\nsystem:\nYou help with {{ topic }}.\n{{ history }}\nuser:\n{{ question }}\n{{ cache_breakpoint() }}\n",
        ),
    ]);
    let found = cache_findings(dir.path());
    let lines: Vec<(u32, bool)> = found
        .iter()
        .filter(|(s, _, _)| *s == Severity::Error)
        .map(|(_, l, m)| (*l, m.contains("conversation")))
        .collect();
    // t: `verbose` (line 10), `random` (11), the include's `mood` (12),
    // each reported once (before the static breakpoint on line 13; the
    // conversation one on line 15 covers the same lines). conv: `topic`
    // (line 9) before its splice, for its conversation breakpoint.
    assert_eq!(
        lines,
        [(9, true), (10, false), (11, false), (12, false)],
        "{found:#?}"
    );
    assert!(found.iter().any(|(_, _, m)| m.contains("`verbose`")));
    assert!(found.iter().any(|(_, _, m)| m.contains("`random`")));
    assert!(
        found
            .iter()
            .any(|(_, _, m)| m.contains("`mood`") && m.contains("partials/intro@1.0.0"))
    );
    // conv.prompt.jinja: `question` comes after the splice: fine.
    assert!(found.iter().any(|(_, _, m)| m.contains("`topic`")));
    assert!(
        !found.iter().any(|(_, _, m)| m.contains("`question`")),
        "{found:#?}"
    );
}

#[test]
fn a_short_static_prefix_is_reported_against_the_models_minimum() {
    let dir = root(&[(
        "t.prompt.yaml",
        "version: 1.0.0\nmodel: {name: claude-haiku-4-5}\nmessages:\n  - role: system\n    content: Short rules.\n  - cache_breakpoint: 5m\n  - role: user\n    content: Hi\n",
    )]);
    let found = cache_findings(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, Severity::Warning);
    assert!(
        found[0].2.contains("at least 4096 tokens"),
        "{}",
        found[0].2
    );
    // A render reports the real prefix count.
    let r = Registry::load(dir.path())
        .unwrap()
        .render("t", &json!({}))
        .unwrap();
    assert_eq!(r.cache_breakpoints.len(), 1);
    assert_eq!(r.cache_breakpoints[0].tokens, r.tokens.messages[0]);
}

/// Cache-aware truncation over a simulated 300-turn conversation under a
/// fixed budget: never over budget, never a history that starts with an
/// orphan turn or splits a tool exchange, never a change to the messages
/// before the static breakpoint; and the share of consecutive requests
/// whose prefix through the conversation breakpoint is byte-identical
/// beats dropping the oldest first.
#[test]
fn cache_aware_truncation_keeps_the_conversation_prefix() {
    let in_template = CHAT.replace(
        "reserve_output: 500}",
        "reserve_output: 500, truncation: cache_aware}",
    );
    let dir = root(&[
        ("chat.prompt.jinja", CHAT),
        ("aware.prompt.jinja", &in_template),
    ]);
    let registry = Registry::load(dir.path()).unwrap();
    let oldest = conversation(&registry, "chat", Some(Strategy::DropOldest));
    let aware = conversation(&registry, "chat", Some(Strategy::CACHE_AWARE));
    // The template's `context.truncation` chooses the same strategy.
    assert_eq!(conversation(&registry, "aware", None), aware);
    eprintln!(
        "hit share over {TURNS} turns: drop-oldest {:.1}%, cache-aware {:.1}%",
        oldest * 100.0,
        aware * 100.0
    );
    assert!(aware > 0.7, "cache-aware hit share {aware}");
    assert!(
        oldest < aware,
        "drop-oldest {oldest} vs cache-aware {aware}"
    );
}

const TURNS: usize = 300;

/// A template whose system prompt is cached, then the conversation so far.
const CHAT: &str = "---\nversion: 1.0.0\nparameters:\n  history: {type: messages, default: []}\n  question: string\ncontext: {max_tokens: 3000, reserve_output: 500}\n---\nsystem:\nYou are the support assistant of a cloud provider. Answer briefly.\n{{ cache_breakpoint(\"1h\") }}\n{{ history }}\n{{ cache_breakpoint() }}\nuser:\n{{ question }}\n";

/// Runs the conversation and returns the hit share, checking the
/// invariants on every turn.
fn conversation(registry: &Registry, name: &str, strategy: Option<Strategy>) -> f64 {
    let mut history: Vec<Value> = Vec::new();
    let mut previous: Option<Vec<Value>> = None;
    let (mut hits, mut pairs) = (0, 0);
    let mut options = RenderOptions::new().model("gpt-4o");
    if let Some(strategy) = strategy {
        options = options.strategy(strategy);
    }
    let mut system: Option<Value> = None;
    for turn in 0..TURNS {
        // Turns of varied length; every fifth one calls a tool.
        let question = format!(
            "Question {turn}: {}",
            "why is it slow ".repeat(3 + turn % 7)
        );
        let r = registry
            .render_with(
                name,
                &json!({"history": history, "question": question}),
                &options,
            )
            .unwrap();
        assert!(r.tokens.total <= 2500, "over budget at turn {turn}");
        let messages: Vec<Value> = r
            .messages
            .iter()
            .map(|m| serde_json::to_value(m).unwrap())
            .collect();
        // The static prefix never changes.
        let first = messages[0].clone();
        assert_eq!(system.get_or_insert_with(|| first.clone()), &first);
        assert_eq!(r.cache_breakpoints[0].messages, 1);
        // The history starts with a user turn, and every tool call keeps
        // its results right after it.
        assert_eq!(messages[1]["role"], "user", "turn {turn}");
        for (i, m) in messages.iter().enumerate() {
            if m["role"] == "tool" {
                let before = &messages[i - 1];
                assert!(
                    before["role"] == "tool" || before.get("tool_calls").is_some(),
                    "turn {turn}: an orphan tool result at {i}"
                );
            }
        }
        let through = r.cache_breakpoints[1].messages;
        if let Some(prev) = &previous {
            pairs += 1;
            if messages.len() >= prev.len() && messages[..prev.len()] == prev[..] {
                hits += 1;
            }
        }
        previous = Some(messages[..through].to_vec());
        history.push(json!({"role": "user", "content": question}));
        if turn % 5 == 4 {
            let id = format!("call_{turn}");
            history.push(json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": id, "type": "function", "function": {"name": "status", "arguments": "{}"}}]}));
            history.push(json!({"role": "tool", "tool_call_id": id, "content": "all regions up"}));
        }
        history.push(json!({"role": "assistant",
            "content": format!("Answer {turn}: {}", "check the dashboard ".repeat(2 + turn % 5))}));
    }
    hits as f64 / pairs as f64
}

#[cfg(feature = "dispatch")]
mod wire {
    use super::*;
    use fake::{FakeProvider, Reply, fixture, recorded_body};
    use promptbook::dispatch::{Client, SendOptions};

    const KEY_ENV: &str = "PROMPTBOOK_TEST_KEY";

    /// A template with tools, a breakpoint before the first message (the
    /// tools), one after the system message (1h) and one after the history.
    fn template(model: &str) -> String {
        format!(
            "---\nversion: 1.0.0\nparameters:\n  tenant: {{type: string, stable: true}}\n  history: {{type: messages, default: []}}\n  question: string\nmodel: {{name: {model}, parameters: {{max_tokens: 20}}}}\ntools:\n  - name: lookup\n    description: Looks an order up.\n    parameters: {{type: object, properties: {{id: {{type: string}}}}}}\n---\n{{{{ cache_breakpoint(\"1h\") }}}}\nsystem:\nYou help {{{{ tenant }}}} customers. Policies follow.\n{{{{ cache_breakpoint(\"1h\") }}}}\n{{{{ history }}}}\n{{{{ cache_breakpoint() }}}}\nuser:\n{{{{ question }}}}\n"
        )
    }

    fn client(fake: &FakeProvider) -> Client {
        Client::builder()
            .provider("openai", fake.openai(KEY_ENV))
            .provider("anthropic", fake.anthropic(KEY_ENV))
            .build()
            .unwrap()
    }

    fn inputs(question: &str) -> Value {
        json!({"tenant": "Acme", "question": question, "history": [
            {"role": "user", "content": "My VM is down"},
            {"role": "assistant", "content": "Which region?"}
        ]})
    }

    #[tokio::test]
    async fn anthropic_marks_the_last_block_before_each_breakpoint() {
        let dir = root(&[("t.prompt.jinja", &template("claude-sonnet-4-5"))]);
        let registry = Registry::load(dir.path()).unwrap();
        let rendered = registry.render("t", &inputs("Still down?")).unwrap();
        let fake = FakeProvider::start(vec![Reply::json(&recorded_body(
            "anthropic-recorded-text.json",
        ))]);
        client(&fake).send(&rendered).await.unwrap();
        let [request] = fake.requests().try_into().unwrap();
        let b = &request.body;
        assert_eq!(
            b["tools"][0]["cache_control"],
            json!({"type": "ephemeral", "ttl": "1h"})
        );
        assert_eq!(
            b["system"],
            json!([{"type": "text", "text": "You help Acme customers. Policies follow.",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"}}])
        );
        assert_eq!(
            b["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "My VM is down"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Which region?",
                    "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": [{"type": "text", "text": "Still down?"}]}
            ])
        );
        assert!(b.get("prompt_cache_key").is_none());
    }

    #[tokio::test]
    async fn openai_gets_a_prompt_cache_key_and_nothing_else_changes() {
        let dir = root(&[("t.prompt.jinja", &template("gpt-4o"))]);
        let registry = Registry::load(dir.path()).unwrap();
        let rendered = registry.render("t", &inputs("Still down?")).unwrap();
        let fake = FakeProvider::start(vec![Reply::json(&fixture("openai-chat.json"))]);
        client(&fake).send(&rendered).await.unwrap();
        let [request] = fake.requests().try_into().unwrap();
        let key = request.body["prompt_cache_key"].as_str().unwrap();
        assert!(key.starts_with("t@1.0.0:") && key.len() <= 64, "{key}");
        assert!(!request.body.to_string().contains("cache_control"));
        assert_eq!(
            request.body["messages"][0],
            json!({"role": "system", "content": "You help Acme customers. Policies follow."})
        );
        // Another tenant has another static prefix, so another key; the same
        // tenant with another question shares it.
        let other = registry
            .render("t", &json!({"tenant": "Globex", "question": "Still down?"}))
            .unwrap();
        let same = registry.render("t", &inputs("And now?")).unwrap();
        let body = |r| {
            client(&fake)
                .request_body(r, &SendOptions::default())
                .unwrap()
                .body
        };
        assert_ne!(body(&other)["prompt_cache_key"], key);
        assert_eq!(body(&same)["prompt_cache_key"], key);
        // A key in the template's parameters wins.
        let with_key =
            template("gpt-4o").replace("max_tokens: 20", "max_tokens: 20, prompt_cache_key: mine");
        let dir = root(&[("t.prompt.jinja", &with_key)]);
        let r = Registry::load(dir.path())
            .unwrap()
            .render("t", &inputs("x"))
            .unwrap();
        assert_eq!(body(&r)["prompt_cache_key"], "mine");
    }

    /// Two renders with different values of the inputs that are not stable
    /// produce request bodies that are byte-identical up to the last static
    /// breakpoint, on both wires.
    #[test]
    fn the_static_prefix_is_byte_identical_across_renders() {
        for model in ["gpt-4o", "claude-sonnet-4-5"] {
            let dir = root(&[("t.prompt.jinja", &template(model))]);
            let registry = Registry::load(dir.path()).unwrap();
            let fake = FakeProvider::start(vec![]);
            let client = client(&fake);
            let body = |inputs: Value| {
                let r = registry.render("t", &inputs).unwrap();
                client
                    .request_body(&r, &SendOptions::default())
                    .unwrap()
                    .body
            };
            let a = body(inputs("Still down?"));
            let b = body(
                json!({"tenant": "Acme", "question": "Different question entirely",
                "history": [{"role": "user", "content": "Another conversation"}]}),
            );
            let prefix = |b: &Value| -> Vec<u8> {
                let mut out = serde_json::to_vec(&b["tools"]).unwrap();
                if model.starts_with("claude") {
                    out.extend(serde_json::to_vec(&b["system"]).unwrap());
                } else {
                    out.extend(serde_json::to_vec(&b["messages"][0]).unwrap());
                }
                out
            };
            assert_eq!(prefix(&a), prefix(&b), "{model}");
            assert_ne!(a, b);
        }
    }
}

/// Layouts the render would refuse, found by lint from the source: two
/// breakpoints in a row, text after one in the same message, 5m before
/// 1h; `debug()` before a static breakpoint; a child's block that its
/// parent renders before its breakpoint.
#[test]
fn lint_finds_breakpoint_layouts_debug_and_inherited_blocks() {
    let dir = root(&[
        (
            "twice.prompt.jinja",
            "---\nversion: 1.0.0\n---\nsystem:\nRules.\n{{ cache_breakpoint() }}\n{{ cache_breakpoint() }}\nuser:\nHi\n",
        ),
        (
            "after.prompt.jinja",
            "---\nversion: 1.0.0\n---\nsystem:\nRules.\n{{ cache_breakpoint() }}\nMore rules.\nuser:\nHi\n",
        ),
        (
            "order.prompt.jinja",
            "---\nversion: 1.0.0\n---\nsystem:\nRules.\n{{ cache_breakpoint(\"5m\") }}\nuser:\nHi\n{{ cache_breakpoint(\"1h\") }}\nassistant:\nHello\n",
        ),
        (
            "dbg.prompt.jinja",
            "---\nversion: 1.0.0\nparameters:\n  q: string\n---\nsystem:\nStatic. {{ debug() }}\n{{ cache_breakpoint() }}\nuser:\n{{ q }}\n",
        ),
        (
            "base@1.0.0.prompt.jinja",
            "---\nversion: 1.0.0\n---\nsystem:\nBase\n{% block extra %}{% endblock %}\n{{ cache_breakpoint() }}\nuser:\nHi\n",
        ),
        (
            "child.prompt.jinja",
            "---\nversion: 1.0.0\nextends: base@^1\nparameters:\n  secret: string\n---\n{% block extra %}More {{ secret }}{% endblock %}\n",
        ),
    ]);
    let found = cache_findings(dir.path());
    let errors = |file: &str, needle: &str| {
        found
            .iter()
            .any(|(s, _, m)| *s == Severity::Error && m.contains(needle))
            && promptbook::lint(dir.path())
                .unwrap()
                .iter()
                .any(|d| d.location().path().ends_with(file) && d.message().contains(needle))
    };
    assert!(
        errors("twice.prompt.jinja", "two cache breakpoints in a row"),
        "{found:#?}"
    );
    assert!(
        errors("after.prompt.jinja", "text follows this cache breakpoint"),
        "{found:#?}"
    );
    assert!(
        errors(
            "order.prompt.jinja",
            "1h cache breakpoint comes after a 5m one"
        ),
        "{found:#?}"
    );
    assert!(errors("dbg.prompt.jinja", "`debug`"), "{found:#?}");
    assert!(errors("child.prompt.jinja", "block `extra`"), "{found:#?}");
    assert!(
        found
            .iter()
            .any(|(_, _, m)| m.contains("`secret`") && m.contains("base@1.0.0")),
        "{found:#?}"
    );
}
