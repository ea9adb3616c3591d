//! Loading, references, inheritance and the public API, on real files.

use std::fs;
use std::path::Path;

use promptbook::{ErrorKind, Origin, Registry, Role};
use serde_json::json;

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn shipped_templates_load_lint_clean_and_render() {
    let registry = Registry::load("templates").unwrap();
    assert!(registry.warnings().is_empty(), "{:?}", registry.warnings());
    assert!(promptbook::lint("templates").unwrap().is_empty());

    let triage = registry
        .render("support/triage", &json!({"ticket": "I was charged twice."}))
        .unwrap();
    assert_eq!(triage.template, "support/triage@2.1.0");
    let roles: Vec<Role> = triage.messages.iter().map(|m| m.role).collect();
    use Role::*;
    assert_eq!(roles, [System, User, Assistant, User, Assistant, User]);
    assert!(
        triage.messages[0].text().contains("Be concise, warm"),
        "partial included"
    );
    assert_eq!(triage.messages[5].text(), "I was charged twice.");

    let chat = registry
        .render(
            "chat/assistant",
            &json!({"question": "And now?", "history": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello! How can I help?"}
            ]}),
        )
        .unwrap();
    assert_eq!(chat.messages.len(), 4);
    assert_eq!(
        chat.origin(1),
        Some(&Origin::History {
            parameter: "history".into(),
        })
    );
    assert_eq!(chat.origin(3), Some(&Origin::Template));
    assert!(
        chat.messages[0].text().contains("Be concise, warm"),
        "partial included"
    );

    let summary = registry
        .render(
            "summarize/article",
            &json!({"article": "Rust 2.0 shipped.", "bullets": 2}),
        )
        .unwrap();
    assert!(summary.messages[0].text().contains("careful analyst"));
    assert!(
        summary.messages[0]
            .text()
            .contains("at most 2 bullet points")
    );
    assert!(summary.messages[1].text().ends_with("Rust 2.0 shipped."));
}

#[test]
fn references_resolve_through_the_registry() {
    let registry = Registry::load("templates").unwrap();
    let id = |r: &str| registry.get(r).map(|t| t.id());
    assert_eq!(id("support/triage").unwrap(), "support/triage@2.1.0");
    assert_eq!(id("support/triage@^1").unwrap(), "support/triage@1.0.0");
    assert_eq!(id("support/triage@legacy").unwrap(), "support/triage@1.0.0");
    assert_eq!(
        id("support/triage@production").unwrap(),
        "support/triage@2.1.0"
    );
    assert_eq!(
        id("support/triage@>=1, <3").unwrap(),
        "support/triage@2.1.0"
    );

    let err = id("support/triage@^3").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Reference);
    assert!(
        err.to_string()
            .contains("available: 1.0.0 [legacy], 2.1.0 [production]"),
        "{err}"
    );
    let err = id("support/triage@nightly").unwrap_err();
    assert!(
        err.to_string()
            .contains("no version of `support/triage` matches"),
        "{err}"
    );
    let err = id("support/traige").unwrap_err();
    assert!(
        err.to_string().contains("did you mean `support/triage`"),
        "{err}"
    );
    assert!(id("../etc/passwd").is_err());
}

#[test]
fn children_inherit_parameters_model_and_context() {
    let registry = Registry::load("templates").unwrap();
    let t = registry.get("summarize/article").unwrap();
    assert_eq!(t.extends(), Some("personas/analyst@1.0.0"));
    let names: Vec<&str> = t.parameters().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["audience", "article", "bullets"]);
    let model = t.model().unwrap();
    assert_eq!(model.provider.as_deref(), Some("anthropic"));
    assert_eq!(model.parameters["max_tokens"], 400, "child overrides");
    assert_eq!(model.parameters["temperature"], 0.2, "parent's value kept");
    assert!(
        t.input_schema()["required"]
            .as_array()
            .unwrap()
            .contains(&json!("article"))
    );
}

#[test]
fn loading_reports_every_bad_file_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ok.prompt.yaml",
        "version: 1.0.0\nmessages:\n  - {role: user, content: fine}\n",
    );
    write(
        dir.path(),
        "a/bad_yaml.prompt.yaml",
        "version: 1.0.0\nmessages: [\n",
    );
    write(
        dir.path(),
        "b/bad_jinja.prompt.jinja",
        "---\nversion: 1.0.0\n---\nuser:\n{{ oops( }}\n",
    );
    write(
        dir.path(),
        "c/bad_role.prompt.yaml",
        "version: 1.0.0\nmessages:\n  - {role: wizard, content: x}\n",
    );
    fs::write(dir.path().join("d.prompt.yaml"), b"version: 1.0.0\n\xff\n").unwrap();
    write(dir.path(), "notes.md", "not a template, ignored");

    let err = Registry::load(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Load);
    let problems = err.problems();
    assert_eq!(problems.len(), 4, "{err}");
    let at: Vec<String> = problems
        .iter()
        .map(|p| {
            let loc = p.location().unwrap();
            format!(
                "{}:{}",
                loc.path().strip_prefix(dir.path()).unwrap().display(),
                loc.line().unwrap()
            )
        })
        .collect();
    assert_eq!(
        at,
        [
            "a/bad_yaml.prompt.yaml:2",
            "b/bad_jinja.prompt.jinja:5",
            "c/bad_role.prompt.yaml:3",
            "d.prompt.yaml:2"
        ]
    );
}

#[test]
fn invalid_input_names_the_parameter_and_rule() {
    let registry = Registry::load("templates").unwrap();
    let err = registry
        .render(
            "support/triage",
            &json!({"ticket": "x", "examples": [{"ticket": "t", "answer": {"queue": "q", "priority": "asap"}}]}),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.parameter(), Some("/examples/0/answer/priority"));
    assert_eq!(err.rule(), Some("enum"));

    let err = registry.render("support/triage", &json!({})).unwrap_err();
    assert_eq!(err.parameter(), Some("/ticket"));
    assert_eq!(err.rule(), Some("required"));

    let err = registry
        .render("support/triage", &json!(["not", "a", "map"]))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn nothing_is_read_from_disk_after_loading() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p/part.prompt.jinja",
        "---\nversion: 1.0.0\n---\npart text\n",
    );
    write(
        dir.path(),
        "main.prompt.jinja",
        "---\nversion: 1.0.0\nparameters:\n  which: {type: string, default: p/part@^1}\n---\nuser:\n{% include which %}\n",
    );
    let registry = Registry::load(dir.path()).unwrap();
    fs::remove_dir_all(dir.path().join("p")).unwrap();
    fs::remove_file(dir.path().join("main.prompt.jinja")).unwrap();
    let r = registry.render("main", &json!({})).unwrap();
    assert_eq!(r.messages[0].text(), "part text");
    // A dynamic include still resolves only through the registry.
    let err = registry
        .render("main", &json!({"which": "../secrets"}))
        .unwrap_err();
    assert!(err.to_string().contains("invalid reference"), "{err}");
}

#[cfg(unix)]
#[test]
fn symlinks_out_of_the_root_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    write(
        outside.path(),
        "x.prompt.yaml",
        "version: 1.0.0\nmessages:\n  - {role: user, content: secret}\n",
    );
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("x.prompt.yaml"),
        dir.path().join("x.prompt.yaml"),
    )
    .unwrap();
    let err = Registry::load(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("symlink leads outside the template root"),
        "{err}"
    );

    // A symlink that stays inside is fine.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "real/y.prompt.yaml",
        "version: 1.0.0\nmessages:\n  - {role: user, content: hi}\n",
    );
    std::os::unix::fs::symlink(
        dir.path().join("real/y.prompt.yaml"),
        dir.path().join("alias.prompt.yaml"),
    )
    .unwrap();
    let registry = Registry::load(dir.path()).unwrap();
    assert_eq!(registry.names().collect::<Vec<_>>(), ["alias", "real/y"]);
}

#[test]
fn a_missing_root_is_an_io_error() {
    let err = Registry::load("does/not/exist").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.to_string().contains("does/not/exist"), "{err}");
}

#[test]
fn the_checked_in_template_schema_is_current() {
    let on_disk: serde_json::Value =
        serde_json::from_str(&fs::read_to_string("schemas/template.schema.json").unwrap()).unwrap();
    assert_eq!(
        on_disk,
        promptbook::template_file_schema(),
        "schemas/template.schema.json is stale: run `cargo run -- schema > schemas/template.schema.json`"
    );
}

#[test]
fn shipped_templates_satisfy_the_template_schema() {
    // Editors validate files against the schema: it must accept ours.
    let schema = promptbook::template_file_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for entry in walkdir::WalkDir::new("templates") {
        let entry = entry.unwrap();
        let path = entry.path();
        let text = fs::read_to_string(path).unwrap_or_default();
        let yaml = if path.to_string_lossy().ends_with(".prompt.yaml") {
            text
        } else if path.to_string_lossy().ends_with(".prompt.jinja") {
            text.split("\n---\n")
                .next()
                .unwrap()
                .trim_start_matches("---\n")
                .to_owned()
        } else {
            continue;
        };
        let value: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    }
}

#[derive(serde::Serialize, schemars::JsonSchema)]
#[allow(dead_code)]
struct TriageInput {
    ticket: String,
    queues: Vec<String>,
}

#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct DriftedInput {
    ticket: Option<String>,
    queues: Vec<u32>,
    urgency: String,
}

#[test]
fn typed_inputs_are_checked_against_the_template() {
    let registry = Registry::load("templates").unwrap();
    assert_eq!(
        registry
            .check_input_type::<TriageInput>("support/triage")
            .unwrap(),
        []
    );
    let input = TriageInput {
        ticket: "Card declined".into(),
        queues: vec!["billing".into()],
    };
    assert!(registry.render("support/triage", &input).is_ok());

    let drift: Vec<String> = registry
        .check_input_type::<DriftedInput>("support/triage")
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        drift,
        [
            "/ticket: required by the template, optional in the Rust type",
            "/queues/items: the Rust type allows integer but the template wants string",
            "/urgency: in the Rust type, but the template does not accept it",
        ]
    );
}

/// Counts words, and how often it was asked to count.
struct CountingCounter(std::sync::atomic::AtomicUsize);

impl promptbook::tokens::TokenCounter for CountingCounter {
    fn count(&self, text: &str) -> usize {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        text.split_whitespace().count()
    }
    fn name(&self) -> &str {
        "words"
    }
    fn cache_key(&self) -> Option<&str> {
        Some("test-words-counter")
    }
}

#[test]
fn a_grown_conversation_counts_only_its_new_message() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let registry = Registry::load("templates").unwrap();
    let counter = Arc::new(CountingCounter(Default::default()));
    let options = promptbook::RenderOptions::new().counter(counter.clone());
    let mut history = vec![];
    for i in 0..50 {
        history.push(json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("turn {i} of the chat")}));
    }
    let inputs = |h: &Vec<serde_json::Value>| json!({"question": "and now?", "history": h});
    let first = registry
        .render_with("chat/assistant", &inputs(&history), &options)
        .unwrap();
    assert_eq!(first.tokens.encoding, "words");
    let calls_before = counter.0.load(Ordering::SeqCst);
    history.push(json!({"role": "user", "content": "one more turn"}));
    let second = registry
        .render_with("chat/assistant", &inputs(&history), &options)
        .unwrap();
    // One new message: its role and its content are counted, nothing else.
    assert_eq!(counter.0.load(Ordering::SeqCst) - calls_before, 2);
    assert_eq!(
        second.tokens.messages.len(),
        first.tokens.messages.len() + 1
    );
    assert_eq!(second.tokens.total, first.tokens.total + 3 + 1 + 3);
}

mod arbitrary_templates {
    use super::*;
    use proptest::prelude::*;

    fn body() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("{{ x }}"),
                Just("{{ x|upper }}"),
                Just("{% for i in [1, 2] %}"),
                Just("{% endfor %}"),
                Just("{% if x %}"),
                Just("{% endif %}"),
                Just("{% raw %}"),
                Just("{% endraw %}"),
                Just("{# c #}"),
                Just("{{"),
                Just("%}"),
                Just("\nuser:\n"),
                Just("\nassistant:\n"),
                Just("\n{{ history }}\n"),
                Just("{% include \"p\" %}"),
                Just("text "),
                Just("\n"),
            ],
            0..16,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// Whatever the body, loading and rendering give a result or an
        /// error with a location; never a panic.
        #[test]
        fn loading_and_rendering_never_panic(body in body(), x in ".{0,12}") {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), "p.prompt.jinja", "---\nversion: 1.0.0\nparameters:\n  x: {type: string, default: ''}\n---\npartial {{ x }}\n");
            write(
                dir.path(),
                "t.prompt.jinja",
                &format!("---\nversion: 1.0.0\nparameters:\n  x: string\n  history: {{type: messages, default: []}}\n---\n{body}"),
            );
            match Registry::load(dir.path()) {
                Ok(registry) => {
                    let history = json!([{"role": "user", "content": x}]);
                    match registry.render("t", &json!({"x": x, "history": history})) {
                        Ok(r) => prop_assert_eq!(r.tokens.messages.len(), r.messages.len()),
                        Err(e) => prop_assert!(e.location().is_some() || e.kind() == ErrorKind::InvalidInput, "{e}"),
                    }
                }
                Err(e) => {
                    for p in e.problems() {
                        prop_assert!(p.location().is_some(), "{p}");
                    }
                }
            }
        }
    }
}

/// An isolating load leaves out a broken template with everything that
/// extends or includes it, serves the rest, and says what was left out and
/// why; resolution never quietly falls back to another version.
#[test]
fn an_isolating_load_leaves_out_what_does_not_load_and_says_why() {
    let body = |text: &str| format!("---\nversion: 1.0.0\n---\n{text}");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "ok.prompt.jinja", &body("user:\nhello"));
    write(d, "broken.prompt.jinja", &body("user:\n{{ oops"));
    write(
        d,
        "includes_broken.prompt.jinja",
        &body("user:\n{% include 'broken' %}"),
    );
    write(
        d,
        "child_of_broken.prompt.yaml",
        "version: 1.0.0\nextends: broken@^1\n",
    );
    write(
        d,
        "chain.prompt.jinja",
        &body("user:\n{% include 'includes_broken' %}"),
    );
    // Two versions of a partial: the newer one is broken. A template that
    // asks for `^1` must not quietly get 1.0.0.
    write(d, "p@1.0.0.prompt.jinja", &body("user:\nold partial"));
    write(
        d,
        "p@1.1.0.prompt.jinja",
        "---\nversion: 1.1.0\n---\nuser:\n{{ broken",
    );
    write(
        d,
        "uses_p.prompt.jinja",
        &body("user:\n{% include 'p@^1' %}"),
    );
    write(
        d,
        "pins_old_p.prompt.jinja",
        &body("user:\n{% include 'p@1.0.0' %}"),
    );
    // A file so broken its version is unknown.
    write(d, "q.prompt.jinja", "no front matter at all");
    write(d, "uses_q.prompt.jinja", &body("user:\n{% include 'q' %}"));

    // Strict: the whole load fails, listing every problem.
    assert_eq!(Registry::load(d).unwrap_err().kind(), ErrorKind::Load);

    let registry = Registry::load_with(d, &promptbook::LoadOptions::isolate()).unwrap();
    let names: Vec<&str> = registry.names().collect();
    assert_eq!(names, ["ok", "p", "pins_old_p"], "what loads");
    assert_eq!(
        registry.render("ok", &json!({})).unwrap().messages[0].text(),
        "hello"
    );
    assert_eq!(
        registry.render("pins_old_p", &json!({})).unwrap().messages[0].text(),
        "old partial"
    );
    // Why each one is out, with its file.
    let said: Vec<String> = registry
        .diagnostics()
        .iter()
        .map(ToString::to_string)
        .collect();
    for (file, why) in [
        ("broken.prompt.jinja", "error"),
        ("includes_broken.prompt.jinja", "includes `broken`"),
        ("child_of_broken.prompt.yaml", "extends `broken`"),
        ("chain.prompt.jinja", "includes `includes_broken`"),
        ("uses_p.prompt.jinja", "includes `p@^1`"),
        ("uses_q.prompt.jinja", "`q` did not load"),
    ] {
        assert!(
            said.iter().any(|d| d.contains(file) && d.contains(why)),
            "nothing says {file} is out ({why}): {said:#?}"
        );
    }
    // Asking for a left-out template says why it did not load.
    let e = registry.render("broken", &json!({})).unwrap_err();
    assert!(e.to_string().contains("did not load"), "{e}");
    assert!(e.to_string().contains("broken.prompt.jinja"), "{e}");
    // As for a template's include, `p@^1` (and `p`) would be the broken
    // 1.1.0: an error saying so, not the older version; `p@1.0.0` is fine.
    for reference in ["p@^1", "p"] {
        let e = registry.render(reference, &json!({})).unwrap_err();
        assert!(
            e.to_string().contains("did not load") && e.to_string().contains("p@1.1.0"),
            "{reference}: {e}"
        );
    }
    assert_eq!(
        registry.render("p@1.0.0", &json!({})).unwrap().messages[0].text(),
        "old partial"
    );
}

/// Templates can be loaded from memory (embedded with `include_str!`,
/// written by a test), `$ref` schemas included.
#[test]
fn templates_load_from_memory() {
    let registry = Registry::from_files([
        (
            "support/reply.prompt.yaml",
            "version: 1.0.0\ninput_schema: {$ref: ../schemas/reply.json}\nmessages:\n  - role: user\n    content: \"{{ name }}\"\n",
        ),
        (
            "schemas/reply.json",
            "{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\", \"minLength\": 2}}, \"required\": [\"name\"]}",
        ),
    ])
    .unwrap();
    let r = registry
        .render("support/reply", &json!({"name": "Ann"}))
        .unwrap();
    assert_eq!(r.messages[0].text(), "Ann");
    assert_eq!(
        registry
            .render("support/reply", &json!({"name": "A"}))
            .unwrap_err()
            .rule(),
        Some("minLength")
    );
    // Leaving the root is refused, in memory too.
    let e = Registry::from_files([(
        "t.prompt.yaml",
        "version: 1.0.0\ninput_schema: {$ref: ../../etc/passwd}\nmessages:\n  - role: user\n    content: x\n",
    )])
    .unwrap_err();
    assert!(e.to_string().contains("outside the template root"), "{e:#}");
}

/// `Vec<promptbook::Message>` fits a `messages` parameter exactly, so the
/// recommended drift test passes for templates with history.
#[test]
fn the_crates_own_message_fits_a_history_parameter() {
    #[derive(schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Chat {
        question: String,
        history: Vec<promptbook::Message>,
    }
    let registry = Registry::load("templates").unwrap();
    assert_eq!(
        registry.check_input_type::<Chat>("chat/assistant").unwrap(),
        []
    );
}

/// A model named at render time is the rendered result's model.
#[test]
fn a_model_override_is_carried_in_the_result() {
    let registry = Registry::load("templates").unwrap();
    let options = promptbook::RenderOptions::new().model("anthropic:claude-sonnet-4-5");
    let r = registry
        .render_with("support/triage", &json!({"ticket": "Refund"}), &options)
        .unwrap();
    let model = r.model.as_ref().unwrap();
    assert_eq!(model.provider.as_deref(), Some("anthropic"));
    assert_eq!(model.name.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(
        serde_json::to_value(&r).unwrap()["model"]["name"],
        "claude-sonnet-4-5"
    );
}

/// Template YAML reads YAML 1.2 booleans: `NO`, `y`, `on` are strings.
#[test]
fn yaml_words_that_yaml_1_1_took_for_booleans_are_strings() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("c.prompt.yaml"),
        "version: 1.0.0\nparameters:\n  country: {enum: [NO, SE, DK], default: NO}\n  flag: {enum: [y, n, on, off], default: on}\nmessages:\n  - {role: user, content: '{{ country }} {{ flag }}'}\n",
    )
    .unwrap();
    let registry = Registry::load(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let t = registry.get("c").unwrap();
    assert_eq!(
        t.parameters()[0].schema["enum"],
        serde_json::json!(["NO", "SE", "DK"])
    );
    let rendered = registry.render("c", &serde_json::json!({})).unwrap();
    assert_eq!(rendered.messages[0].text(), "NO on");
}
