//! Prompt changes reviewed like code: content hashes, the lockfile, tests
//! beside the templates (snapshots and cassettes), `diff`, `check
//! --semver`, `show` and `new`, through the real binary on real files.
#![cfg(all(feature = "cli", feature = "dispatch", feature = "server"))]

mod fake;
mod support;

use std::path::Path;
use std::process::Command;

use insta_cmd::get_cargo_bin;
use serde_json::Value;

fn cli(dir: &Path) -> Command {
    let mut cmd = Command::new(get_cargo_bin("promptbook"));
    cmd.env_remove("PROMPTBOOK_DIR")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env("PROMPTBOOK_DIR", dir);
    cmd
}

use support::{copy_tree, run};

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn shipped() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(Path::new("templates"), dir.path());
    dir
}

fn hashes(root: &Path) -> std::collections::BTreeMap<String, String> {
    let registry = promptbook::Registry::load(root).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for name in registry.names() {
        for t in registry.versions(name) {
            out.insert(t.id(), t.hash().to_string());
        }
    }
    out
}

/// The ids whose hash differs between two snapshots of `hashes`.
fn changed(
    a: &std::collections::BTreeMap<String, String>,
    b: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    a.iter()
        .filter(|(id, h)| b.get(*id) != Some(h))
        .map(|(id, _)| id.clone())
        .collect()
}

#[test]
fn a_change_moves_the_hash_of_exactly_the_templates_that_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "p@1.0.0.prompt.jinja",
        "---\nversion: 1.0.0\n---\nBe kind.\n",
    );
    write(
        root,
        "inc.prompt.jinja",
        "---\nversion: 1.0.0\n---\nsystem:\n{% include \"p@^1\" %}\nuser:\nhi\n",
    );
    write(
        root,
        "outer.prompt.jinja",
        "---\nversion: 1.0.0\n---\n{% include \"inc\" %}\n",
    );
    write(
        root,
        "base.prompt.jinja",
        "---\nversion: 1.0.0\nlabels: [production]\n---\nsystem:\n{% block a %}base{% endblock %}\n",
    );
    write(
        root,
        "child.prompt.yaml",
        "version: 1.0.0\nextends: base@^1\nblocks:\n  a: child\n",
    );
    write(
        root,
        "schemaed.prompt.jinja",
        "---\nversion: 1.0.0\ninput_schema: {$ref: s.json}\n---\n{{ x }}\n",
    );
    write(
        root,
        "s.json",
        r#"{"type": "object", "properties": {"x": {"type": "string"}}}"#,
    );
    write(
        root,
        "alone.prompt.jinja",
        "---\nversion: 1.0.0\n---\nalone\n",
    );
    let before = hashes(root);
    assert!(before.values().all(|h| h.len() == 64));

    // A partial: itself and everything that includes it, transitively.
    write(
        root,
        "p@1.0.0.prompt.jinja",
        "---\nversion: 1.0.0\n---\nBe very kind.\n",
    );
    let after = hashes(root);
    assert_eq!(
        changed(&before, &after),
        ["inc@1.0.0", "outer@1.0.0", "p@1.0.0"]
    );

    // A parent: itself and its child.
    write(
        root,
        "base.prompt.jinja",
        "---\nversion: 1.0.0\nlabels: [production]\n---\nsystem:\n{% block a %}Base{% endblock %}\n",
    );
    let after2 = hashes(root);
    assert_eq!(changed(&after, &after2), ["base@1.0.0", "child@1.0.0"]);

    // A `$ref` schema: the template that names it.
    write(
        root,
        "s.json",
        r#"{"type": "object", "properties": {"x": {"type": "string", "minLength": 1}}}"#,
    );
    let after3 = hashes(root);
    assert_eq!(changed(&after2, &after3), ["schemaed@1.0.0"]);

    // A label is not content; CR LF line endings are not content either.
    write(
        root,
        "base.prompt.jinja",
        "---\r\nversion: 1.0.0\r\nlabels:\r\n  - canary\r\n---\r\nsystem:\r\n{% block a %}Base{% endblock %}\r\n",
    );
    assert_eq!(changed(&after3, &hashes(root)), Vec::<String>::new());

    // A new version that an include resolves to changes the includer.
    write(
        root,
        "p@1.1.0.prompt.jinja",
        "---\nversion: 1.1.0\n---\nBe very kind.\n",
    );
    let after4 = hashes(root);
    assert_eq!(changed(&after3, &after4), ["inc@1.0.0", "outer@1.0.0"]);

    // The hash is shown where the issue says: list, render, show.
    let (code, out, err) = run(cli(root).args(["list", "--json"]));
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let inc = list
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "inc")
        .unwrap();
    assert_eq!(inc["versions"][0]["hash"], after4["inc@1.0.0"].as_str());
    let (_, out, _) = run(cli(root).args(["render", "inc", "--json"]));
    let rendered: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rendered["hash"], after4["inc@1.0.0"].as_str());
    let (code, out, err) = run(cli(root).args(["show", "p@=1.1.0"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&after4["p@1.1.0"]), "{out}");
    assert!(out.contains("used by:     inc@1.0.0, outer@1.0.0"), "{out}");
}

#[test]
fn lock_check_fails_on_each_kind_of_unrecorded_change_and_names_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let t = |v: &str, labels: &str, body: &str| {
        format!("---\nversion: {v}\nlabels: [{labels}]\n---\n{body}\n")
    };
    write(root, "t@1.0.0.prompt.jinja", &t("1.0.0", "", "one"));
    write(
        root,
        "t@2.0.0.prompt.jinja",
        &t("2.0.0", "production", "two"),
    );
    write(
        root,
        "t@3.0.0-rc.1.prompt.jinja",
        &t("3.0.0-rc.1", "", "three"),
    );
    let check = || run(cli(root).args(["lock", "--check"]));
    let (code, _, err) = check();
    assert_eq!(code, 1, "no lockfile yet: {err}");
    assert!(err.contains("does not exist"), "{err}");
    let (code, _, err) = run(cli(root).arg("lock"));
    assert_eq!(code, 0, "{err}");
    let lock = std::fs::read_to_string(root.join("promptbook.lock")).unwrap();
    assert!(lock.contains("t@production -> 2.0.0"), "{lock}");
    assert_eq!(check().0, 0);

    let cases: [(&str, &str, &str, &str); 4] = [
        // A released version edited in place.
        (
            "t@1.0.0.prompt.jinja",
            &t("1.0.0", "", "one!"),
            "t@1.0.0 changed after release",
            "",
        ),
        // A label moved.
        (
            "t@1.0.0.prompt.jinja",
            &t("1.0.0", "production", "one"),
            "label t@production moved from 2.0.0 to 1.0.0",
            "t@2.0.0.prompt.jinja",
        ),
        // A version appeared.
        (
            "t@2.1.0.prompt.jinja",
            &t("2.1.0", "", "new"),
            "t@2.1.0 is new",
            "",
        ),
        // A version went.
        (
            "",
            "",
            "t@1.0.0 is in the lock but no longer exists",
            "t@1.0.0.prompt.jinja",
        ),
    ];
    for (file, text, says, remove) in cases {
        let saved: Vec<(String, String)> = ["t@1.0.0.prompt.jinja", "t@2.0.0.prompt.jinja"]
            .iter()
            .map(|f| {
                (
                    f.to_string(),
                    std::fs::read_to_string(root.join(f)).unwrap(),
                )
            })
            .collect();
        if !remove.is_empty() {
            if remove == "t@2.0.0.prompt.jinja" {
                write(root, remove, &t("2.0.0", "", "two"));
            } else {
                std::fs::remove_file(root.join(remove)).unwrap();
            }
        }
        if !file.is_empty() {
            write(root, file, text);
        }
        let (code, _, err) = check();
        assert_eq!(code, 1, "{says}: {err}");
        assert!(err.contains(says), "expected {says:?} in:\n{err}");
        for (f, text) in saved {
            write(root, &f, &text);
        }
        let _ = std::fs::remove_file(root.join("t@2.1.0.prompt.jinja"));
        assert_eq!(check().0, 0, "restored after {says}");
    }

    // A pre-release may change: a note, not a failure.
    write(
        root,
        "t@3.0.0-rc.1.prompt.jinja",
        &t("3.0.0-rc.1", "", "three!"),
    );
    let (code, _, err) = check();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("note: t@3.0.0-rc.1 changed"), "{err}");

    // A lockfile that is not one says where.
    write(root, "promptbook.lock", "lockfile 1\nt@1.0.0 sha256:xyz\n");
    let (code, _, err) = check();
    assert_eq!(code, 1);
    assert!(err.contains("promptbook.lock:2:1"), "{err}");
}

#[test]
fn the_shipped_templates_pass_their_tests_and_their_lock() {
    let (code, out, err) = run(cli(Path::new("templates")).arg("test"));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("test result: ok."), "{out}");
    assert!(!out.contains(" 0 passed"), "{out}");
    let (code, _, err) = run(cli(Path::new("templates")).args(["lock", "--check"]));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(cli(Path::new("templates")).args(["check", "--semver"]));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn failed_assertions_say_what_was_expected_and_what_was_there() {
    let dir = shipped();
    let root = dir.path();
    write(
        root,
        "support/triage@2.1.0.tests.yaml",
        r#"tests:
  - name: wrong on purpose
    inputs: {ticket: My card was declined.}
    expect:
      roles: [system, user]
      contains: refund policy
      not_contains: Acme Cloud
      matches: "^Nope"
      messages:
        - at: 9
        - role: tool
      tokens: {max: 10}
  - name: expects an error that does not come
    inputs: {ticket: fine}
    expect:
      error: {kind: invalid_input, parameter: ticket}
  - name: expects another error
    inputs: {ticket: ""}
    expect:
      error: {kind: budget}
"#,
    );
    let (code, out, _) = run(cli(root).args(["test", "support/triage@2"]));
    assert_eq!(code, 1, "{out}");
    for says in [
        "roles: expected [system, user], got [system, user, assistant, user, assistant, user]",
        "the prompt does not contain \"refund policy\"",
        "the prompt contains \"Acme Cloud\"",
        "the prompt does not match /^Nope/",
        "message 9: there is none (the render has 6 messages)",
        "the first tool message: there is none",
        "over the maximum of 10",
        "expected an invalid_input error for `ticket`, but it rendered",
        "expected a budget error, got an invalid_input error",
        "test result: FAILED. 0 passed; 3 failed",
    ] {
        assert!(out.contains(says), "expected {says:?} in:\n{out}");
    }
    // Only the named template's tests ran.
    assert!(!out.contains("chat/assistant"), "{out}");
}

#[test]
fn a_changed_render_fails_its_snapshot_with_a_diff_until_updated() {
    let dir = shipped();
    let root = dir.path();
    let file = root.join("support/triage@2.1.0.prompt.jinja");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("Reply with JSON only", "Reply with JSON, only"),
    )
    .unwrap();
    let (code, out, _) = run(cli(root).arg("test"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the render differs from its snapshot"),
        "{out}"
    );
    assert!(
        out.contains("-      \"content\": \"You are a support triage"),
        "{out}"
    );
    assert!(out.contains("Reply with JSON, only"), "{out}");
    let (code, out, _) = run(cli(root).args(["test", "--update"]));
    // The cassette is stale now (the template changed): still a failure.
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("wrote snapshot"), "{out}");
    assert!(out.contains("wrote 1 snapshot: review them"), "{out}");
    assert!(out.contains("STALE"), "{out}");
    let (_, out, _) = run(cli(root).arg("test"));
    assert!(!out.contains("differs from its snapshot"), "{out}");
}

#[test]
fn test_files_are_checked_with_file_and_line() {
    let dir = shipped();
    let root = dir.path();
    write(
        root,
        "support/triage@2.1.0.tests.yaml",
        "tests:\n  - name: a\n    inputs: {ticket: x}\n    expect:\n      contians: typo\n",
    );
    write(
        root,
        "chat/assistant.tests.yaml",
        "tests:\n  - name: ok\n    inputs: {question: hi}\n  - name: bad inputs\n    inputs: {question: 5}\n",
    );
    write(root, "nothing.tests.yaml", "tests: []\n");
    write(
        root,
        "summarize/article.tests.yaml",
        "tests:\n  - name: r\n    inputs: {article: x}\n    expect:\n      matches: \"(\"\n",
    );
    let (code, _, err) = run(cli(root).arg("test"));
    assert_eq!(code, 1);
    for says in [
        "support/triage@2.1.0.tests.yaml:5:7",
        "contians",
        "chat/assistant.tests.yaml:4:5",
        "test `bad inputs`: its inputs break the schema",
        "nothing.tests.yaml:1:1: error: no template file",
        "no template file",
        "summarize/article.tests.yaml:5:16",
        "`(` is not a regular expression: unclosed group",
    ] {
        assert!(err.contains(says), "expected {says:?} in:\n{err}");
    }
    // Naming a template shows the problems of its test files only.
    let (code, _, err) = run(cli(root).args(["test", "chat/assistant"]));
    assert_eq!(code, 1);
    assert!(err.contains("chat/assistant.tests.yaml:4:5"), "{err}");
    assert!(!err.contains("triage"), "{err}");
    assert!(!err.contains("nothing.tests.yaml"), "{err}");
}

/// Test files read YAML 1.2: `NO`, `y` and `on` are strings; a value that
/// is not a string where one is expected says to quote it.
#[test]
fn test_files_read_yaml_words_as_the_strings_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "t.prompt.jinja",
        "---\nversion: 1.0.0\nparameters:\n  answer: {type: string}\n---\nuser:\n{{ answer }}\n",
    );
    write(
        root,
        "t.tests.yaml",
        "tests:\n  - name: norway\n    inputs: {answer: NO}\n    expect:\n      contains: NO\n      not_contains: [y, on, off]\n",
    );
    let (code, out, err) = run(cli(root).arg("test"));
    assert_eq!(code, 0, "{out}\n{err}");
    write(
        root,
        "t.tests.yaml",
        "tests:\n  - name: n\n    inputs: {answer: x}\n    expect:\n      contains: 42\n",
    );
    let (code, _, err) = run(cli(root).arg("test"));
    assert_eq!(code, 1);
    assert!(err.contains("t.tests.yaml:5:"), "{err}");
    assert!(
        err.contains("a string or a list of strings (quote"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn misnamed_and_linked_test_files_are_never_skipped_silently() {
    let dir = shipped();
    let root = dir.path();
    // Near misses of `.tests.yaml` fail, naming the right name.
    write(root, "chat/assistant.tests.yml", "tests: []\n");
    write(root, "summarize/article.test.yaml", "tests: []\n");
    let (code, _, err) = run(cli(root).arg("test"));
    assert_eq!(code, 1, "{err}");
    for says in [
        "chat/assistant.tests.yml",
        "rename it `assistant.tests.yaml`",
        "summarize/article.test.yaml",
        "rename it `article.tests.yaml`",
    ] {
        assert!(err.contains(says), "expected {says:?} in:\n{err}");
    }
    std::fs::remove_file(root.join("chat/assistant.tests.yml")).unwrap();
    std::fs::remove_file(root.join("summarize/article.test.yaml")).unwrap();

    // A link to a file inside the root runs like the file.
    let kept = root.join("suites/assistant.yaml");
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::rename(root.join("chat/assistant.tests.yaml"), &kept).unwrap();
    std::os::unix::fs::symlink(
        "../suites/assistant.yaml",
        root.join("chat/assistant.tests.yaml"),
    )
    .unwrap();
    let (code, out, err) = run(cli(root).args(["test", "chat/assistant"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("the history is spliced between the system message and the question"),
        "{out}"
    );

    // A link out of the root is refused, not skipped.
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(&kept, outside.path().join("t.yaml")).unwrap();
    std::fs::remove_file(root.join("chat/assistant.tests.yaml")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("t.yaml"),
        root.join("chat/assistant.tests.yaml"),
    )
    .unwrap();
    let (code, _, err) = run(cli(root).arg("test"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("chat/assistant.tests.yaml"), "{err}");
    assert!(
        err.contains("symlink leads outside the template root"),
        "{err}"
    );
}

#[test]
fn a_recorded_answer_replays_offline_and_goes_stale_when_the_template_changes() {
    let answer = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"{\"queue\": \"technical\", \"priority\": \"urgent\"}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":150,"completion_tokens":12,"total_tokens":162}}"#;
    let fake = fake::FakeProvider::start(vec![fake::Reply::json(answer)]);
    let dir = shipped();
    let root = dir.path();
    let cassette =
        root.join("support/triage@2.1.0.cassettes/the-recorded-answer-is-valid-triage-json.json");
    std::fs::remove_file(&cassette).unwrap();
    let (code, out, err) = run(cli(root)
        .args(["test", "--record", "support/triage"])
        .env("OPENAI_BASE_URL", format!("{}/v1", fake.url))
        .env("OPENAI_API_KEY", "sk-test-recording"));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("recorded "), "{err}");
    assert_eq!(fake.count(), 1, "only the test that records is sent");
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(&cassette).unwrap()).unwrap();
    // The body stored is the body sent, byte for byte as JSON; no key.
    assert_eq!(recorded["request"]["body"], fake.requests()[0].body);
    assert_eq!(recorded["request"]["provider"], "openai");
    assert!(
        !std::fs::read_to_string(&cassette)
            .unwrap()
            .contains("sk-test")
    );
    assert_eq!(recorded["response"]["finish_reason"], "stop");
    let registry = promptbook::Registry::load(root).unwrap();
    assert_eq!(
        recorded["hash"],
        registry.get("support/triage@2").unwrap().hash().to_string()
    );

    // Offline, no key: the answer's assertions run against the cassette.
    let (code, out, _) = run(cli(root).arg("test"));
    assert_eq!(code, 0, "{out}");
    // An answer that breaks the test's schema fails it.
    let text = std::fs::read_to_string(&cassette).unwrap();
    std::fs::write(&cassette, text.replace("urgent", "whenever")).unwrap();
    let (code, out, _) = run(cli(root).arg("test"));
    assert_eq!(code, 1);
    assert!(
        out.contains("the answer breaks its schema at `/priority`"),
        "{out}"
    );
    std::fs::write(&cassette, &text).unwrap();

    // So does a change to the test's inputs: the answer was to another
    // prompt.
    let tests_file = root.join("support/triage@2.1.0.tests.yaml");
    let tests = std::fs::read_to_string(&tests_file).unwrap();
    std::fs::write(
        &tests_file,
        tests.replace("The dashboard has been down", "The dashboard has been up"),
    )
    .unwrap();
    let (code, out, _) = run(cli(root).arg("test"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the test's render differs from the one recorded"),
        "{out}"
    );
    std::fs::write(&tests_file, &tests).unwrap();
    assert_eq!(run(cli(root).arg("test")).0, 0);

    // A change to what the template includes makes the cassette stale.
    let partial = root.join("partials/tone@1.0.0.prompt.jinja");
    let tone = std::fs::read_to_string(&partial).unwrap();
    std::fs::write(&partial, tone.replace("warm", "kind")).unwrap();
    let (code, out, _) = run(cli(root).arg("test"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("STALE"), "{out}");
    assert!(out.contains("1 stale"), "{out}");
}

/// OpenAI's chat-format count, as tiktoken's cookbook gives it: 3 per
/// message, plus its role and content (and 1 for a name).
fn tiktoken_message_tokens(m: &Value) -> usize {
    let bpe = tiktoken_rs::o200k_base().unwrap();
    let count = |s: &str| bpe.encode_with_special_tokens(s).len();
    3 + count(m["role"].as_str().unwrap()) + count(m["content"].as_str().unwrap_or(""))
}

#[test]
fn diff_shows_messages_changed_with_token_deltas_equal_to_tiktoken() {
    let root = Path::new("templates");
    let (code, out, err) = run(cli(root).args([
        "diff",
        "support/triage@=1.0.0",
        "support/triage@production",
        "--json",
        "--var",
        "ticket=I was charged twice.",
        "--model",
        "gpt-4o",
    ]));
    assert_eq!(code, 0, "{err}");
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["differs"], true);
    let render = |r: &str| -> Value {
        let (_, out, _) = run(cli(root).args([
            "render",
            r,
            "--json",
            "--model",
            "gpt-4o",
            "--var",
            "ticket=I was charged twice.",
        ]));
        serde_json::from_str(&out).unwrap()
    };
    let (old, new) = (
        render("support/triage@=1.0.0"),
        render("support/triage@=2.1.0"),
    );
    let mut delta = 0i64;
    for m in d["messages"].as_array().unwrap() {
        let side = |idx: &str, r: &Value| {
            m[idx]
                .as_u64()
                .map_or(0, |i| tiktoken_message_tokens(&r["messages"][i as usize]))
        };
        assert_eq!(
            m["old_tokens"].as_u64().unwrap() as usize,
            side("old_index", &old),
            "{m}"
        );
        assert_eq!(
            m["new_tokens"].as_u64().unwrap() as usize,
            side("new_index", &new),
            "{m}"
        );
        delta += m["new_tokens"].as_i64().unwrap() - m["old_tokens"].as_i64().unwrap();
    }
    assert_eq!(d["delta"].as_i64().unwrap(), delta);
    assert_eq!(
        d["new"]["tokens"].as_i64().unwrap() - d["old"]["tokens"].as_i64().unwrap(),
        delta
    );

    // Text form; `--exit-code` makes a difference exit 1, sameness 0.
    let (code, out, _) = run(cli(root).args([
        "diff",
        "support/triage@=1.0.0",
        "support/triage@production",
        "--tests",
        "--exit-code",
    ]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("## test: a billing ticket"), "{out}");
    assert!(out.contains("total: "), "{out}");
    let (code, _, _) = run(cli(root).args([
        "diff",
        "support/triage@production",
        "support/triage@=2.1.0",
        "--tests",
        "--exit-code",
    ]));
    assert_eq!(code, 0);
    // An error is not a difference: 2.
    let (code, _, err) = run(cli(root).args([
        "diff",
        "support/triage@=9.9.9",
        "support/triage@production",
        "--exit-code",
    ]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn check_semver_refuses_a_stricter_minor_release_and_allows_a_major_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let t = |v: &str, params: &str| {
        format!("---\nversion: {v}\nparameters:\n{params}\n---\n{{{{ q }}}}\n")
    };
    write(
        root,
        "t@1.0.0.prompt.jinja",
        &t(
            "1.0.0",
            "  q: {type: string}\n  n: {type: number, default: 1}",
        ),
    );
    // Compatible: a new optional parameter, a widened type.
    write(
        root,
        "t@1.1.0.prompt.jinja",
        &t(
            "1.1.0",
            "  q: {type: [string, \"null\"]}\n  n: {type: number, default: 1}\n  extra: {type: string, default: x}",
        ),
    );
    let (code, _, err) = run(cli(root).args(["check", "--semver"]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 minor or patch release compared"), "{err}");
    // Breaking in a minor: a new required parameter, a narrowed type.
    write(
        root,
        "t@1.2.0.prompt.jinja",
        &t(
            "1.2.0",
            "  q: {type: string}\n  n: {type: integer, default: 1}\n  extra: {type: string, default: x}\n  must: {type: string}",
        ),
    );
    let (code, _, err) = run(cli(root).args(["check", "--semver"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("t 1.1.0 -> 1.2.0: input `/must`: newly required (was absent)"),
        "{err}"
    );
    assert!(
        err.contains("t 1.1.0 -> 1.2.0: input `/n`: type narrowed from number to integer"),
        "{err}"
    );
    assert!(err.contains("input `/q`: type narrowed"), "{err}");
    // Pre-releases promise nothing; a release answers to the release
    // before it.
    write(
        root,
        "t@1.3.0-rc.1.prompt.jinja",
        &t("1.3.0-rc.1", "  q: {type: string}\n  new: {type: string}"),
    );
    let (code, _, err) = run(cli(root).args(["check", "--semver"]));
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("1.3.0-rc.1"), "{err}");
    std::fs::remove_file(root.join("t@1.3.0-rc.1.prompt.jinja")).unwrap();
    // As a major release it is fine.
    std::fs::remove_file(root.join("t@1.2.0.prompt.jinja")).unwrap();
    write(
        root,
        "t@2.0.0.prompt.jinja",
        &t("2.0.0", "  q: {type: string}\n  must: {type: string}"),
    );
    let (code, _, err) = run(cli(root).args(["check", "--semver"]));
    assert_eq!(code, 0, "{err}");

    // Against a git revision: a released version edited in place.
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .current_dir(root)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "base"]);
    write(
        root,
        "t@1.0.0.prompt.jinja",
        &t(
            "1.0.0",
            "  q: {type: string}\n  n: {type: number, default: 2}",
        ),
    );
    let (code, _, err) = run(cli(root).args(["check", "--semver", "--against", "HEAD"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("t@1.0.0: a released version changed in place"),
        "{err}"
    );
    for hostile in ["--output=x", "HEAD\nHEAD", ""] {
        let against = format!("--against={hostile}");
        let (code, _, err) = run(cli(root).args(["check", "--semver", &against]));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("is not a revision"), "{err}");
    }
    // A version only at the base is the one before: 1.1.0 removed here,
    // 1.0.5 added must still accept what 1.0.0 did.
    git(&["checkout", "-q", "--", "."]);
    write(
        root,
        "t@1.0.5.prompt.jinja",
        &t(
            "1.0.5",
            "  q: {type: string, maxLength: 3}\n  n: {type: number, default: 1}",
        ),
    );
    let (code, _, err) = run(cli(root).args(["check", "--semver", "--against", "HEAD"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("t 1.0.0 -> 1.0.5: input `/q`: `maxLength` added"),
        "{err}"
    );
}

#[test]
fn new_writes_a_template_and_its_passing_tests_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for form in ["jinja", "yaml"] {
        let name = format!("team/{form}-starter");
        let (code, _, err) = run(cli(root).args(["new", &name, "--form", form]));
        assert_eq!(code, 0, "{err}");
        // Not a new version of a template that exists.
        let (code, _, err) = run(cli(root).args(["new", &name, "--form", form]));
        assert_eq!(code, 1);
        assert!(err.contains("exists (versions 0.1.0)"), "{err}");
    }
    // Never over a file.
    write(root, "team/other.tests.yaml", "tests: []\n");
    let (code, _, err) = run(cli(root).args(["new", "team/other"]));
    assert_eq!(code, 1);
    assert!(err.contains("never overwrites"), "{err}");
    std::fs::remove_file(root.join("team/other.tests.yaml")).unwrap();
    // Not through a link.
    let outside = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        let (code, _, err) = run(cli(root).args(["new", "out/x"]));
        assert_eq!(code, 1);
        assert!(err.contains("leads outside"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        std::fs::remove_file(root.join("out")).unwrap();
    }
    let (code, out, err) = run(cli(root).arg("test"));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("4 passed"), "{out}");
    let (code, out, _) = run(cli(root).arg("lint"));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn diff_deltas_match_the_committed_tiktoken_corpus() {
    let corpus: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/data/tokens/corpus.json").unwrap())
            .unwrap();
    // Texts a message carries as they are (rendering trims a message's
    // surrounding line breaks).
    let texts: Vec<(&str, u64)> = corpus["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["text"].as_str().unwrap(),
                t["o200k_base"].as_u64().unwrap(),
            )
        })
        .filter(|(text, _)| !text.is_empty() && text.trim() == *text)
        .collect();
    assert!(texts.len() >= 5, "{}", texts.len());
    let registry = promptbook::Registry::from_files([
        (
            "t@1.0.0.prompt.jinja",
            "---\nversion: 1.0.0\nparameters: {a: string, b: string}\nmodel: {name: gpt-4o}\n---\nsystem:\nSame.\nuser:\n{{ a }}\n",
        ),
        (
            "t@2.0.0.prompt.jinja",
            "---\nversion: 2.0.0\nparameters: {a: string, b: string}\nmodel: {name: gpt-4o}\n---\nsystem:\nSame.\nuser:\n{{ b }}\n",
        ),
    ])
    .unwrap();
    for pair in texts.windows(2) {
        let ((a, na), (b, nb)) = (pair[0], pair[1]);
        let inputs = serde_json::json!({"a": a, "b": b});
        let old = registry.render("t@=1.0.0", &inputs).unwrap();
        let new = registry.render("t@=2.0.0", &inputs).unwrap();
        let d = promptbook::diff(&old, &new);
        let user = d.messages.last().unwrap();
        assert_eq!(
            user.change,
            promptbook::MessageChange::Changed,
            "{a:?} -> {b:?}"
        );
        // The chat format's overhead is the same on both sides.
        assert_eq!(user.delta(), nb as i64 - na as i64, "{a:?} -> {b:?}");
        assert_eq!(d.delta, nb as i64 - na as i64);
        assert_eq!(d.messages[0].change, promptbook::MessageChange::Unchanged);
    }
}
