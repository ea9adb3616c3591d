//! What a template declares about its answer: `output:` (a JSON Schema),
//! `tools:`, `tool_choice:` and `output_retries:`, in every file form, by
//! `$ref`, through `extends`, in the rendered document, the catalog, the
//! content hash, lint and the semver check.

use std::path::Path;

#[cfg(feature = "dispatch")]
mod fake;

use promptbook::{Registry, ToolChoice};
use serde_json::json;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const EXTRACT: &str = "version: 1.0.0
model: {provider: openai, name: gpt-4o-mini}
parameters:
  invoice: {type: string}
output:
  $ref: schemas/invoice.yaml
tools:
  - name: lookup_vendor
    description: Finds a vendor by name.
    parameters:
      type: object
      properties:
        name: {type: string}
      required: [name]
  - $ref: tools/refund.json
tool_choice: lookup_vendor
output_retries: 2
messages:
  - {role: user, content: '{{ invoice }}'}
";

const INVOICE: &str = "title: invoice
type: object
properties:
  total: {type: number}
  currency: {enum: [EUR, USD]}
  note: {type: string}
required: [total, currency]
";

const REFUND: &str = r#"{"name": "refund", "description": "Refunds an order.",
  "parameters": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}}"#;

fn extract_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "extract.prompt.yaml", EXTRACT);
    write(dir.path(), "schemas/invoice.yaml", INVOICE);
    write(dir.path(), "tools/refund.json", REFUND);
    dir
}

#[test]
fn declarations_reach_the_template_the_render_and_the_catalog() {
    let dir = extract_root();
    let registry = Registry::load(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let t = registry.get("extract").unwrap();
    let schema = t.output_schema().unwrap();
    assert_eq!(schema["title"], "invoice");
    assert_eq!(schema["required"], json!(["total", "currency"]));
    let names: Vec<&str> = t.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["lookup_vendor", "refund"]);
    assert_eq!(
        t.tools()[1].description.as_deref(),
        Some("Refunds an order.")
    );
    assert_eq!(
        t.tool_choice(),
        Some(&ToolChoice::Tool("lookup_vendor".into()))
    );
    assert_eq!(t.output_retries(), Some(2));

    let rendered = registry
        .render("extract", &json!({"invoice": "x"}))
        .unwrap();
    let doc = serde_json::to_value(&rendered).unwrap();
    assert_eq!(&doc["output_schema"], schema);
    assert_eq!(doc["tools"][1]["name"], "refund");
    assert_eq!(doc["tools"][1]["parameters"]["required"], json!(["order"]));
    assert_eq!(doc["tool_choice"], json!({"name": "lookup_vendor"}));
    assert_eq!(doc["output_retries"], 2);

    let catalog = serde_json::to_value(&registry).unwrap();
    let version = &catalog[0]["versions"][0];
    assert_eq!(&version["output_schema"], schema);
    assert_eq!(version["tools"].as_array().unwrap().len(), 2);

    // A template that declares nothing renders as before: no new keys.
    write(
        dir.path(),
        "plain.prompt.yaml",
        "version: 1.0.0\nmessages:\n  - {role: user, content: hi}\n",
    );
    let registry = Registry::load(dir.path()).unwrap();
    let doc = serde_json::to_value(registry.render("plain", &json!({})).unwrap()).unwrap();
    for key in ["output_schema", "tools", "tool_choice", "output_retries"] {
        assert!(doc.get(key).is_none(), "{key} in {doc}");
    }
}

#[test]
fn a_child_adds_and_replaces_tools_by_name_and_inherits_the_rest() {
    let dir = extract_root();
    write(
        dir.path(),
        "child.prompt.yaml",
        "version: 1.0.0
extends: extract@^1
tools:
  - name: refund
    description: Refunds part of an order.
    parameters: {type: object, properties: {order: {type: string}, amount: {type: number}}}
  - name: escalate
",
    );
    let registry = Registry::load(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let child = registry.get("child").unwrap();
    let names: Vec<&str> = child.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["lookup_vendor", "refund", "escalate"]);
    assert_eq!(
        child.tools()[1].description.as_deref(),
        Some("Refunds part of an order.")
    );
    // A tool without parameters takes none.
    assert_eq!(
        child.tools()[2].parameters,
        json!({"type": "object", "properties": {}})
    );
    assert_eq!(
        child.output_schema(),
        registry.get("extract").unwrap().output_schema()
    );
    assert_eq!(
        child.tool_choice(),
        Some(&ToolChoice::Tool("lookup_vendor".into()))
    );
    assert_eq!(child.output_retries(), Some(2));
}

#[test]
fn every_bad_declaration_is_an_error_with_file_and_line() {
    // (fields, what the error says, the line it points at: the field's,
    // or a list's first entry's)
    let cases: &[(&str, &str, u32)] = &[
        (
            "tools:\n  - name: a\n  - name: a\n",
            "tool `a` is declared twice",
            3,
        ),
        (
            "tools:\n  - name: has space\n",
            "tool name `has space` must be",
            3,
        ),
        (
            "tools:\n  - name: a\n    paramters: {}\n",
            "unknown field `paramters`",
            3,
        ),
        ("tools: {name: a}\n", "`tools` is a list", 2),
        (
            "tools:\n  - name: a\n    parameters: {type: string}\n",
            "must have `type: object`",
            3,
        ),
        (
            "tools:\n  - name: a\ntool_choice: b\n",
            "`tool_choice: b` is not `auto`, `none`, `required` or a declared tool (a)",
            4,
        ),
        (
            "tool_choice: lookup\n",
            "the template declares no `tools:`",
            2,
        ),
        ("output: [a]\n", "output must be a JSON Schema (a map)", 2),
        ("output: {type: object, requried: [a]}\n", "requried", 2),
        (
            "output: {type: object, properties: {a: {type: strng}}}\n",
            "strng",
            2,
        ),
        ("output_retries: 11\n", "from 0 to 10", 2),
        (
            "output:\n  $ref: ../outside.json\n",
            "outside the template root",
            3,
        ),
        ("output:\n  $ref: missing.json\n", "no such file", 3),
        (
            "output:\n  $ref: s.json\n  title: x\n",
            "must hold nothing but the `$ref`",
            3,
        ),
    ];
    for (fields, says, line) in cases {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        write(&root, "s.json", "{\"type\": \"object\"}");
        write(dir.path(), "outside.json", "{\"type\": \"object\"}");
        write(
            &root,
            "t.prompt.yaml",
            &format!("version: 1.0.0\n{fields}messages:\n  - {{role: user, content: hi}}\n"),
        );
        let e = Registry::load(&root).unwrap_err();
        let shown = format!("{e:#}");
        assert!(
            shown.contains(says),
            "{fields:?}: expected {says:?} in {shown}"
        );
        assert!(
            shown.contains(&format!("t.prompt.yaml:{line}:")),
            "{fields:?}: not at line {line}: {shown}"
        );
    }
}

#[test]
fn the_hash_covers_the_output_and_tool_files() {
    let dir = extract_root();
    write(
        dir.path(),
        "child.prompt.yaml",
        "version: 1.0.0\nextends: extract@^1\n",
    );
    write(
        dir.path(),
        "other.prompt.yaml",
        "version: 1.0.0\nmessages:\n  - {role: user, content: hi}\n",
    );
    let hashes = || -> Vec<String> {
        let r = Registry::load(dir.path()).unwrap();
        ["extract", "child", "other"]
            .iter()
            .map(|n| r.get(n).unwrap().hash().to_string())
            .collect()
    };
    let before = hashes();
    for (file, from, to) in [
        (
            "schemas/invoice.yaml",
            "note: {type: string}",
            "note: {type: string, maxLength: 9}",
        ),
        (
            "tools/refund.json",
            "Refunds an order.",
            "Refunds an order in full.",
        ),
    ] {
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace(from, to)).unwrap();
        let after = hashes();
        assert_ne!(after[0], before[0], "{file}: the declaring template");
        assert_ne!(after[1], before[1], "{file}: its child");
        assert_eq!(after[2], before[2], "{file}: an unrelated template");
        std::fs::write(&path, text).unwrap();
        assert_eq!(hashes(), before, "{file}: restored");
    }
}

#[test]
fn prompty_outputs_and_function_tools_map_onto_the_declarations() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "structured.prompty",
        "tools_function.prompty",
        "tools_mcp.prompty",
    ] {
        std::fs::copy(
            Path::new("tests/prompty/spec-fixtures").join(f),
            dir.path().join(f),
        )
        .unwrap();
    }
    let registry = Registry::load(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let schema = registry.get("structured").unwrap().output_schema().unwrap();
    assert_eq!(schema["properties"]["temperature"]["type"], "integer");
    assert_eq!(
        schema["required"],
        json!(["temperature", "condition", "city"])
    );
    let tools = registry.get("tools_function").unwrap().tools();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].name, "get_weather");
    assert_eq!(
        tools[0].parameters["properties"]["unit"]["enum"],
        json!(["celsius", "fahrenheit"])
    );
    // An MCP tool is not a function: left out, with a warning.
    assert!(registry.get("tools_mcp").unwrap().tools().is_empty());
    let warnings: Vec<String> = promptbook::lint(dir.path())
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("tools_mcp.prompty")
                && w.contains("tool `filesystem` is of kind `mcp`")),
        "{warnings:#?}"
    );
}

#[test]
fn lint_names_what_the_providers_strict_mode_would_not_enforce() {
    let lint = |provider: &str| -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "t.prompt.yaml",
            &format!(
                "version: 1.0.0
model: {{provider: {provider}, name: m, parameters: {{response_format: {{type: json_schema, json_schema: {{name: x, schema: {{type: object}}}}}}}}}}
output:
  type: object
  properties:
    name: {{type: string, maxLength: 40}}
    age: {{type: integer, minimum: 0}}
messages:
  - {{role: user, content: hi}}
"
            ),
        );
        promptbook::lint(dir.path())
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let openai = lint("openai");
    let has = |all: &[String], says: &str| all.iter().any(|w| w.contains(says));
    assert!(
        has(
            &openai,
            "output schema at `/properties/name`: `maxLength` is not enforced by OpenAI's strict mode"
        ),
        "{openai:#?}"
    );
    assert!(!has(&openai, "`minimum`"), "{openai:#?}");
    assert!(
        has(
            &openai,
            "`model.parameters.response_format` is passed through as written"
        ),
        "{openai:#?}"
    );
    let anthropic = lint("anthropic");
    assert!(
        has(
            &anthropic,
            "`/properties/age`: `minimum` is not enforced by Anthropic's strict mode"
        ),
        "{anthropic:#?}"
    );
}

#[cfg(feature = "cli")]
#[test]
fn check_semver_holds_outputs_and_tools_to_their_promise() {
    let run = |root: &Path| -> (i32, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_promptbook"))
            .args(["check", "--semver", "--dir"])
            .arg(root)
            .env_remove("PROMPTBOOK_DIR")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let version = |v: &str, output: &str, tools: &str| {
        format!(
            "version: {v}\noutput: {output}\n{tools}messages:\n  - {{role: user, content: hi}}\n"
        )
    };
    let base =
        "{type: object, properties: {a: {type: string}, b: {type: integer}}, required: [a, b]}";
    // (the minor release's output, its tools, what must be said or None)
    let cases: &[(&str, &str, Option<&str>)] = &[
        (
            "{type: object, properties: {a: {type: string}}, required: [a]}",
            "",
            Some("output `/b`: removed"),
        ),
        (
            "{type: object, properties: {a: {type: string}, b: {type: [integer, \"null\"]}}, required: [a, b]}",
            "",
            Some("output `/b`: type widened"),
        ),
        (
            "{type: object, properties: {a: {type: string}, b: {type: integer}, c: {type: string}}, required: [a, b, c]}",
            "",
            None,
        ),
        (
            base,
            "tools:\n  - name: extra\n",
            Some("tool `extra` added"),
        ),
    ];
    for (output, tools, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "t@1.0.0.prompt.yaml",
            &version("1.0.0", base, ""),
        );
        write(
            dir.path(),
            "t@1.1.0.prompt.yaml",
            &version("1.1.0", output, tools),
        );
        let (code, err) = run(dir.path());
        match says {
            Some(says) => {
                assert_eq!(code, 1, "{output} {tools}: {err}");
                assert!(err.contains(says), "expected {says:?} in {err}");
                assert!(err.contains("t 1.0.0 -> 1.1.0"), "{err}");
            }
            None => assert_eq!(code, 0, "{output} {tools}: {err}"),
        }
        // The same change in a major release passes.
        std::fs::remove_file(dir.path().join("t@1.1.0.prompt.yaml")).unwrap();
        write(
            dir.path(),
            "t@2.0.0.prompt.yaml",
            &version("2.0.0", output, tools),
        );
        assert_eq!(run(dir.path()).0, 0);
    }
}

/// The Rust type an `extract` answer deserializes into.
#[derive(Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
struct Invoice {
    total: f64,
    currency: Currency,
    note: Option<String>,
}

#[derive(Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
enum Currency {
    #[serde(rename = "EUR")]
    Eur,
    #[serde(rename = "USD")]
    Usd,
}

/// `Invoice` after a rename the template did not follow (only its schema
/// is read).
#[allow(dead_code)]
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RenamedInvoice {
    amount: f64,
    currency: String,
}

#[test]
fn check_output_type_finds_drift_between_a_rust_type_and_the_output_schema() {
    let dir = extract_root();
    let registry = Registry::load(dir.path()).unwrap();
    let fits = registry.check_output_type::<Invoice>("extract").unwrap();
    assert!(fits.is_empty(), "{fits:?}");
    let drift: Vec<String> = registry
        .check_output_type::<RenamedInvoice>("extract")
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        drift.contains(&"/amount: required by the Rust type, not in the output schema".to_owned()),
        "{drift:?}"
    );
    assert!(
        drift
            .iter()
            .any(|d| d.starts_with("/total: the output may hold it")),
        "{drift:?}"
    );
    // No output schema at all is drift too.
    write(
        dir.path(),
        "plain.prompt.yaml",
        "version: 1.0.0\nmessages:\n  - {role: user, content: hi}\n",
    );
    let registry = Registry::load(dir.path()).unwrap();
    assert_eq!(
        registry
            .check_output_type::<Invoice>("plain")
            .unwrap()
            .len(),
        1
    );
}

/// Sending and receiving, against the fake provider on loopback speaking
/// both wire formats.
#[cfg(feature = "dispatch")]
mod wire {
    use super::*;

    use super::fake::{self, FakeProvider, Reply};
    use promptbook::dispatch::{Client, ErrorKind, RetryPolicy};

    const KEY_ENV: &str = "PROMPTBOOK_TEST_KEY";

    fn client(fake: &FakeProvider) -> Client {
        Client::builder()
            .provider("openai", fake.openai(KEY_ENV))
            .provider("anthropic", fake.anthropic(KEY_ENV))
            .retry(RetryPolicy::retries(0))
            .build()
            .unwrap()
    }

    fn openai_answer(content: &str, finish: &str) -> Reply {
        Reply::json(
            &json!({"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5}})
            .to_string(),
        )
    }

    fn openai_tool_call(name: &str, arguments: &str) -> Reply {
        Reply::json(
            &json!({"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": name, "arguments": arguments}}]},
                "finish_reason": "tool_calls"}]})
            .to_string(),
        )
    }

    fn extract() -> (tempfile::TempDir, promptbook::Rendered) {
        let dir = extract_root();
        let registry = Registry::load(dir.path()).unwrap();
        let rendered = registry
            .render("extract", &json!({"invoice": "2 x tea"}))
            .unwrap();
        (dir, rendered)
    }

    #[tokio::test]
    async fn openai_gets_the_strict_form_and_a_valid_answer_comes_back_typed() {
        let fake = FakeProvider::start(vec![openai_answer(
            r#"{"total": 11.0, "currency": "EUR", "note": null}"#,
            "stop",
        )]);
        let (_dir, rendered) = extract();
        let response = client(&fake).send(&rendered).await.unwrap();
        // The optional `note` the model set to null is absent, as the
        // original schema has it.
        assert_eq!(
            response.output,
            Some(json!({"total": 11.0, "currency": "EUR"}))
        );
        assert_eq!(response.repairs, 0);
        let body = &fake.requests()[0].body;
        assert_eq!(
            body["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "invoice", "strict": true,
                "schema": {"title": "invoice", "type": "object",
                    "properties": {"total": {"type": "number"},
                        "currency": {"enum": ["EUR", "USD"]},
                        "note": {"type": ["string", "null"]}},
                    "required": ["total", "currency", "note"],
                    "additionalProperties": false}}})
        );
        assert_eq!(
            body["tools"][0],
            json!({"type": "function", "function": {"name": "lookup_vendor",
                "description": "Finds a vendor by name.", "strict": true,
                "parameters": {"type": "object", "properties": {"name": {"type": "string"}},
                    "required": ["name"], "additionalProperties": false}}})
        );
        assert_eq!(body["tools"][1]["function"]["name"], "refund");
        assert_eq!(
            body["tool_choice"],
            json!({"type": "function", "function": {"name": "lookup_vendor"}})
        );
    }

    #[tokio::test]
    async fn send_as_returns_the_typed_value() {
        let fake = FakeProvider::start(vec![
            openai_answer(
                r#"{"total": 11.5, "currency": "USD", "note": "paid"}"#,
                "stop",
            ),
            openai_tool_call("lookup_vendor", r#"{"name": "Acme"}"#),
        ]);
        let (_dir, rendered) = extract();
        let client = client(&fake);
        let invoice: Invoice = client.send_as(&rendered).await.unwrap();
        assert_eq!(
            invoice,
            Invoice {
                total: 11.5,
                currency: Currency::Usd,
                note: Some("paid".into())
            }
        );
        let e = client.send_as::<Invoice>(&rendered).await.unwrap_err();
        assert_eq!(e.output_problem().unwrap().rule, "tool_calls");
    }

    #[tokio::test]
    async fn a_bad_answer_is_an_invalid_output_naming_pointer_and_rule_and_keeping_the_text() {
        for (content, finish, pointer, rule) in [
            ("not json at all", "stop", "", "json"),
            (
                r#"{"total": "eleven", "currency": "EUR"}"#,
                "stop",
                "/total",
                "type",
            ),
            (r#"{"total": 1}"#, "stop", "/currency", "required"),
            (
                r#"{"total": 1, "currency": "GBP"}"#,
                "stop",
                "/currency",
                "enum",
            ),
            (r#"{"total": 1, "curr"#, "length", "", "length"),
        ] {
            let fake = FakeProvider::start(vec![openai_answer(content, finish)]);
            let (_dir, mut rendered) = extract();
            rendered.output_retries = None;
            let e = client(&fake).send(&rendered).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidOutput, "{content}: {e}");
            let problem = e.output_problem().unwrap();
            assert_eq!(
                (problem.pointer.as_str(), problem.rule.as_str()),
                (pointer, rule),
                "{content}: {e}"
            );
            assert_eq!(e.partial().unwrap().text, content);
            assert!(!e.is_retryable());
            if rule == "length" {
                assert!(e.to_string().contains("cut off by `max_tokens`"), "{e}");
            }
        }
    }

    #[tokio::test]
    async fn repairs_ask_again_with_the_error_and_count_themselves() {
        let fake = FakeProvider::start(vec![
            openai_answer(r#"{"total": "x", "currency": "EUR"}"#, "stop"),
            openai_answer(r#"{"total": 3, "currency": "EUR"}"#, "stop"),
        ]);
        let (_dir, rendered) = extract(); // output_retries: 2
        let response = client(&fake).send(&rendered).await.unwrap();
        assert_eq!(response.repairs, 1);
        assert_eq!(
            response.output,
            Some(json!({"total": 3, "currency": "EUR"}))
        );
        let requests = fake.requests();
        assert_eq!(requests.len(), 2);
        let messages = requests[1].body["messages"].as_array().unwrap();
        let n = messages.len();
        assert_eq!(messages[n - 2]["role"], "assistant");
        assert_eq!(
            messages[n - 2]["content"],
            r#"{"total": "x", "currency": "EUR"}"#
        );
        assert_eq!(messages[n - 1]["role"], "user");
        assert!(
            messages[n - 1]["content"]
                .as_str()
                .unwrap()
                .contains("/total"),
            "{}",
            messages[n - 1]
        );

        // Out of repairs: the last error stands, after 1 + 2 calls.
        let bad = || openai_answer(r#"{"total": "x", "currency": "EUR"}"#, "stop");
        let fake = FakeProvider::start(vec![bad(), bad(), bad(), bad()]);
        let e = client(&fake).send(&rendered).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidOutput);
        assert_eq!(fake.count(), 3);
    }

    #[tokio::test]
    async fn tool_calls_are_checked_against_their_tools() {
        let (_dir, rendered) = extract();
        for (name, arguments, problem) in [
            ("lookup_vendor", r#"{"name": "Acme"}"#, None),
            ("lookup_vendor", r#"{"nam": "Acme"}"#, Some("/name")),
            ("lookup_vendor", "{not json", Some("not JSON")),
            ("delete_everything", "{}", Some("not a declared tool")),
        ] {
            let fake = FakeProvider::start(vec![openai_tool_call(name, arguments)]);
            let response = client(&fake).send(&rendered).await.unwrap();
            let call = &response.tool_calls[0];
            match problem {
                None => {
                    assert_eq!(call.problem, None);
                    assert_eq!(call.input, Some(json!({"name": "Acme"})));
                }
                Some(says) => {
                    let p = call.problem.as_deref().unwrap_or_default();
                    assert!(p.contains(says), "{name} {arguments}: {p}");
                }
            }
            // A call instead of an answer: no output, no error.
            assert_eq!(response.output, None);
        }
    }

    /// An OpenAI stream whose text pieces are `pieces`.
    fn openai_stream(pieces: &[&str]) -> Reply {
        let mut sse = String::new();
        for p in pieces {
            let chunk = json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": {"content": p}}]});
            sse.push_str(&format!("data: {chunk}\n\n"));
        }
        let last = json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        sse.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
        Reply::Sse(sse)
    }

    #[tokio::test]
    async fn a_streamed_answer_shows_its_value_as_it_grows_then_the_validated_one() {
        use futures_util::StreamExt;
        use promptbook::dispatch::StreamEvent;
        let fake = FakeProvider::start(vec![openai_stream(&[
            "{\"total\": 11.5,",
            " \"currency\": \"EU",
            "R\", \"note\": \"paid in ",
            "full\"}",
        ])]);
        let (_dir, rendered) = extract();
        let client = client(&fake);
        let mut stream = client.stream(&rendered);
        let (mut outputs, mut done) = (Vec::new(), None);
        while let Some(event) = stream.next().await {
            match event.unwrap() {
                StreamEvent::Output(v) => outputs.push(v),
                StreamEvent::Done(r) => done = Some(r),
                _ => {}
            }
        }
        assert_eq!(outputs.first(), Some(&json!({"total": 11.5})));
        assert!(
            outputs.contains(&json!({"total": 11.5, "currency": "EUR", "note": "paid in "})),
            "{outputs:?}"
        );
        let done = done.unwrap();
        assert_eq!(
            done.output,
            Some(json!({"total": 11.5, "currency": "EUR", "note": "paid in full"}))
        );
        // Done carries the whole value, validated (the last pieces may not
        // have made an `output` event of their own).
        assert!(outputs.len() >= 2, "{outputs:?}");

        // A streamed answer that breaks the schema ends in the error.
        let fake = FakeProvider::start(vec![openai_stream(&[
            "{\"total\": \"x\", \"currency\": \"EUR\"}",
        ])]);
        let client2 = super::wire::client(&fake);
        let mut stream = client2.stream(&rendered);
        let mut last = None;
        while let Some(event) = stream.next().await {
            last = Some(event);
        }
        let e = last.unwrap().unwrap_err();
        assert_eq!(e.output_problem().unwrap().pointer, "/total");
    }

    /// `text` as the only template of a fresh root (`t.prompt.yaml`),
    /// rendered without inputs.
    fn rendered_from(text: &str) -> (tempfile::TempDir, promptbook::Rendered) {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "t.prompt.yaml", text);
        let rendered = Registry::load(dir.path())
            .unwrap()
            .render("t", &json!({}))
            .unwrap();
        (dir, rendered)
    }

    /// What an attack found: optional tool arguments, tools the template
    /// does not declare, a preamble beside a tool call, refusals, `anyOf`
    /// branches, the usage of repaired answers, free-form schemas.
    #[tokio::test]
    async fn answers_at_the_edges_are_judged_as_declared() {
        let dir = extract_root();
        let registry = Registry::load(dir.path()).unwrap();
        let rendered = registry
            .render("extract", &json!({"invoice": "x"}))
            .unwrap();

        // An optional argument the strict form made the model send as null.
        let (_dir2, tools_only) = rendered_from(
            "version: 1.0.0\nmodel: {provider: openai, name: m}\ntools:\n  - name: search\n    parameters: {type: object, properties: {q: {type: string}, limit: {type: integer}}, required: [q]}\nmessages:\n  - {role: user, content: hi}\n",
        );
        let fake = FakeProvider::start(vec![openai_tool_call(
            "search",
            r#"{"q": "x", "limit": null}"#,
        )]);
        let r = client(&fake).send(&tools_only).await.unwrap();
        assert_eq!(r.tool_calls[0].problem, None, "{:?}", r.tool_calls[0]);
        assert_eq!(r.tool_calls[0].input, Some(json!({"q": "x"})));

        // A template with an output schema and no tools: a tool call is no
        // answer, and the call is marked.
        let (_dir3, output_only) = rendered_from(
            "version: 1.0.0\nmodel: {provider: openai, name: m}\noutput: {type: object, properties: {a: {type: string}}, required: [a]}\nmessages:\n  - {role: user, content: hi}\n",
        );
        let fake = FakeProvider::start(vec![openai_tool_call("delete_everything", "not json")]);
        let e = client(&fake).send(&output_only).await.unwrap_err();
        assert_eq!(e.output_problem().unwrap().rule, "tool_calls");
        let call = &e.partial().unwrap().tool_calls[0];
        assert!(
            call.problem
                .as_deref()
                .unwrap_or_default()
                .contains("declares no tools")
        );

        // A preamble beside a call of a declared tool is a tool turn.
        let fake = FakeProvider::start(vec![Reply::json(
            &json!({"id": "c", "object": "chat.completion", "model": "m", "choices": [{"index": 0,
                "message": {"role": "assistant", "content": "Let me look that up.",
                    "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "lookup_vendor", "arguments": "{\"name\": \"Acme\"}"}}]},
                "finish_reason": "tool_calls"}]})
            .to_string(),
        )]);
        let r = client(&fake).send(&rendered).await.unwrap();
        assert_eq!((r.output, r.tool_calls.len()), (None, 1));

        // A refusal is a refusal, and not repaired.
        let fake = FakeProvider::start(vec![Reply::json(
            &json!({"id": "c", "object": "chat.completion", "model": "m", "choices": [{"index": 0,
                "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."},
                "finish_reason": "stop"}]})
            .to_string(),
        )]);
        let e = client(&fake).send(&rendered).await.unwrap_err();
        assert_eq!(e.output_problem().unwrap().rule, "refusal");
        assert!(e.to_string().contains("I can't help with that."), "{e}");
        assert_eq!(fake.count(), 1, "a refusal is not repaired");

        // Repairs: the usage of every call.
        let fake = FakeProvider::start(vec![
            openai_answer(r#"{"total": "x", "currency": "EUR"}"#, "stop"),
            openai_answer(r#"{"total": 3, "currency": "EUR"}"#, "stop"),
        ]);
        let r = client(&fake).send(&rendered).await.unwrap();
        let u = r.usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (20, 10));

        // Optional properties inside `anyOf` branches, sent in strict form.
        let (_dir4, shapes) = rendered_from(
            "version: 1.0.0\nmodel: {provider: openai, name: m}\noutput:\n  type: object\n  properties:\n    shape:\n      anyOf:\n        - {type: object, properties: {kind: {const: circle}, radius: {type: number}, label: {type: string}}, required: [kind, radius]}\n        - {type: object, properties: {kind: {const: square}, side: {type: number}}, required: [kind, side]}\n  required: [shape]\nmessages:\n  - {role: user, content: hi}\n",
        );
        let fake = FakeProvider::start(vec![openai_answer(
            r#"{"shape": {"kind": "circle", "radius": 2, "label": null}}"#,
            "stop",
        )]);
        let r = client(&fake).send(&shapes).await.unwrap();
        assert_eq!(
            r.output,
            Some(json!({"shape": {"kind": "circle", "radius": 2}}))
        );
        assert_eq!(
            fake.requests()[0].body["response_format"]["json_schema"]["strict"],
            true
        );

        // A free-form object has no strict form: sent as written, and then
        // a null is the model's answer, checked as it is.
        let (_dir5, free) = rendered_from(
            "version: 1.0.0\nmodel: {provider: openai, name: m}\noutput:\n  type: object\n  properties:\n    name: {type: string}\n    extra: {type: object}\n  required: [extra]\nmessages:\n  - {role: user, content: hi}\n",
        );
        let fake = FakeProvider::start(vec![
            openai_answer(r#"{"extra": {"any": 1}}"#, "stop"),
            openai_answer(r#"{"extra": {}, "name": null}"#, "stop"),
        ]);
        let r = client(&fake).send(&free).await.unwrap();
        assert_eq!(r.output, Some(json!({"extra": {"any": 1}})));
        let spec = &fake.requests()[0].body["response_format"]["json_schema"];
        assert_eq!(spec["strict"], false);
        assert!(
            spec["schema"]["properties"]["extra"]
                .get("additionalProperties")
                .is_none()
        );
        let e = client(&fake).send(&free).await.unwrap_err();
        let p = e.output_problem().unwrap();
        assert_eq!((p.pointer.as_str(), p.rule.as_str()), ("/name", "type"));

        // Anthropic keeps optional properties optional: a null is checked.
        let dir6 = extract_root();
        let text = std::fs::read_to_string(dir6.path().join("extract.prompt.yaml")).unwrap();
        std::fs::write(
            dir6.path().join("extract.prompt.yaml"),
            text.replace(
                "{provider: openai, name: gpt-4o-mini}",
                "{provider: anthropic, name: claude-sonnet-4-5}",
            )
            .replace("output_retries: 2", "output_retries: 0"),
        )
        .unwrap();
        let claude = Registry::load(dir6.path())
            .unwrap()
            .render("extract", &json!({"invoice": "x"}))
            .unwrap();
        let fake = FakeProvider::start(vec![Reply::json(
            &json!({"id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                "content": [{"type": "text", "text": "{\"total\": 1, \"currency\": \"EUR\", \"note\": null}"}],
                "stop_reason": "end_turn"})
            .to_string(),
        )]);
        let e = client(&fake).send(&claude).await.unwrap_err();
        assert_eq!(e.output_problem().unwrap().pointer, "/note");
    }

    /// Servers without `json_schema` say so in `providers.yaml`; the
    /// answer is validated on our side whatever the mode.
    #[tokio::test]
    async fn servers_without_json_schema_get_the_schema_another_way() {
        use promptbook::dispatch::StructuredOutput;
        let (_dir, rendered) = extract();
        let with = |fake: &FakeProvider, mode| {
            Client::builder()
                .provider("openai", fake.openai(KEY_ENV).with_structured_output(mode))
                .retry(RetryPolicy::retries(0))
                .build()
                .unwrap()
        };
        // JSON mode: json_object, and the schema in the system message.
        let fake = FakeProvider::start(vec![openai_answer(
            r#"{"total": 2, "currency": "USD"}"#,
            "stop",
        )]);
        let r = with(&fake, StructuredOutput::JsonObject)
            .send(&rendered)
            .await
            .unwrap();
        assert_eq!(r.output, Some(json!({"total": 2, "currency": "USD"})));
        let body = &fake.requests()[0].body;
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
        let system = body["messages"][0]["content"].as_str().unwrap();
        assert!(system.contains("matches this JSON Schema"), "{system}");
        assert!(system.contains("\"currency\""), "{system}");
        // None: only the instruction.
        let fake = FakeProvider::start(vec![openai_answer("{\"total\": 1}", "stop")]);
        let mut once = rendered.clone();
        once.output_retries = Some(0);
        let e = with(&fake, StructuredOutput::None).send(&once).await;
        assert!(fake.requests()[0].body.get("response_format").is_none());
        // ... and the answer is still validated: `currency` is missing.
        assert_eq!(
            e.unwrap_err().output_problem().unwrap().pointer,
            "/currency"
        );
        // Tool: a forced tool carries the answer.
        let fake = FakeProvider::start(vec![openai_tool_call(
            "invoice",
            r#"{"total": 5, "currency": "EUR", "note": null}"#,
        )]);
        let r = with(&fake, StructuredOutput::Tool)
            .send(&rendered)
            .await
            .unwrap();
        assert_eq!(r.output, Some(json!({"total": 5, "currency": "EUR"})));
        assert!(r.tool_calls.is_empty(), "{:?}", r.tool_calls);
        let body = &fake.requests()[0].body;
        assert_eq!(
            body["tool_choice"],
            json!({"type": "function", "function": {"name": "invoice"}})
        );
        let names: Vec<&str> = body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["lookup_vendor", "refund", "invoice"]);
    }

    fn anthropic_answer(content: serde_json::Value, stop: &str) -> Reply {
        Reply::json(
            &json!({"id": "msg_1", "type": "message", "role": "assistant",
                "model": "claude-sonnet-4-5", "content": content, "stop_reason": stop,
                "usage": {"input_tokens": 10, "output_tokens": 5}})
            .to_string(),
        )
    }

    /// The same template sent to Anthropic: invalid answers, a cut, a
    /// repair, tool use, and a stream, on Anthropic's wire.
    #[tokio::test]
    async fn anthropic_answers_are_checked_as_openai_answers_are() {
        let dir = extract_root();
        let text = std::fs::read_to_string(dir.path().join("extract.prompt.yaml")).unwrap();
        std::fs::write(
            dir.path().join("extract.prompt.yaml"),
            text.replace(
                "{provider: openai, name: gpt-4o-mini}",
                "{provider: anthropic, name: claude-sonnet-4-5}",
            ),
        )
        .unwrap();
        let registry = Registry::load(dir.path()).unwrap();
        let rendered = registry
            .render("extract", &json!({"invoice": "x"}))
            .unwrap();
        let mut once = rendered.clone();
        once.output_retries = Some(0);
        let textual = |t: &str| json!([{"type": "text", "text": t}]);
        for (answer, stop, pointer, rule) in [
            ("no json", "end_turn", "", "json"),
            (
                r#"{"total": 1, "currency": "GBP"}"#,
                "end_turn",
                "/currency",
                "enum",
            ),
            (r#"{"total": 1, "cur"#, "max_tokens", "", "length"),
            (
                r#"{"total": 1, "cur"#,
                "model_context_window_exceeded",
                "",
                "length",
            ),
            ("I will not help with that.", "refusal", "", "refusal"),
        ] {
            let fake = FakeProvider::start(vec![anthropic_answer(textual(answer), stop)]);
            let e = client(&fake).send(&once).await.unwrap_err();
            let p = e.output_problem().unwrap();
            assert_eq!(
                (p.pointer.as_str(), p.rule.as_str()),
                (pointer, rule),
                "{answer}: {e}"
            );
            assert_eq!(e.partial().unwrap().text, answer);
            if rule == "refusal" {
                assert!(e.to_string().contains("I will not help"), "{e}");
            }
        }
        // A repair on Anthropic's wire: the bad answer and the error go
        // back as turns.
        let fake = FakeProvider::start(vec![
            anthropic_answer(textual(r#"{"total": "x", "currency": "EUR"}"#), "end_turn"),
            anthropic_answer(textual(r#"{"total": 4, "currency": "EUR"}"#), "end_turn"),
        ]);
        let r = client(&fake).send(&rendered).await.unwrap();
        assert_eq!(
            (r.repairs, r.output),
            (1, Some(json!({"total": 4, "currency": "EUR"})))
        );
        let turns = fake.requests()[1].body["messages"].clone();
        let n = turns.as_array().unwrap().len();
        assert_eq!(turns[n - 2]["role"], "assistant");
        assert_eq!(turns[n - 1]["role"], "user");
        // Tool use: arguments checked against the tool.
        let fake = FakeProvider::start(vec![anthropic_answer(
            json!([{"type": "tool_use", "id": "toolu_1", "name": "refund", "input": {"order": 7}}]),
            "tool_use",
        )]);
        let r = client(&fake).send(&rendered).await.unwrap();
        let problem = r.tool_calls[0].problem.as_deref().unwrap_or_default();
        assert!(
            problem.contains("/order") && problem.contains("type"),
            "{problem}"
        );
        // A stream: the value as it grows, then the validated one.
        let mut sse = String::from(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        );
        for piece in ["{\"total\": 9,", " \"currency\": \"USD\"}"] {
            let delta = json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": piece}});
            sse.push_str(&format!("event: content_block_delta\ndata: {delta}\n\n"));
        }
        sse.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":6}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        let fake = FakeProvider::start(vec![Reply::Sse(sse)]);
        use futures_util::StreamExt;
        let c = client(&fake);
        let mut stream = c.stream(&rendered);
        let (mut outputs, mut done) = (Vec::new(), None);
        while let Some(event) = stream.next().await {
            match event.unwrap() {
                promptbook::dispatch::StreamEvent::Output(v) => outputs.push(v),
                promptbook::dispatch::StreamEvent::Done(r) => done = Some(r),
                _ => {}
            }
        }
        assert_eq!(outputs.first(), Some(&json!({"total": 9})));
        assert_eq!(
            done.unwrap().output,
            Some(json!({"total": 9, "currency": "USD"}))
        );
        assert!(fake.requests()[0].body["output_config"].is_object());
    }

    #[tokio::test]
    async fn anthropic_gets_output_config_as_the_official_sdk_sends_it() {
        let recorded: serde_json::Value =
            serde_json::from_str(&fake::fixture("anthropic-structured-output.json")).unwrap();
        let exchange = &recorded[0];
        let sent_schema = &exchange["request"]["body"]["output_config"]["format"]["schema"];
        let mut schema = sent_schema.clone();
        schema
            .as_object_mut()
            .unwrap()
            .remove("additionalProperties");
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "order.prompt.yaml",
            &format!(
                "version: 1.0.0\nmodel: {{provider: anthropic, name: claude-sonnet-4-5}}\noutput: {schema}\ntools:\n  - {{name: refund, parameters: {{type: object, properties: {{order: {{type: string}}}}}}}}\ntool_choice: required\nmessages:\n  - {{role: user, content: 'Extract: I want to order 2 Green Tea at $5.50 each'}}\n"
            ),
        );
        let registry = Registry::load(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
        let rendered = registry.render("order", &json!({})).unwrap();
        let fake = FakeProvider::start(vec![Reply::json(&fake::recorded_body(
            "anthropic-structured-output.json",
        ))]);
        let response = client(&fake).send(&rendered).await.unwrap();
        assert_eq!(
            response.output,
            Some(json!({"product_name": "Green Tea", "price": 5.5, "quantity": 2}))
        );
        let body = &fake.requests()[0].body;
        assert_eq!(
            body["output_config"],
            exchange["request"]["body"]["output_config"]
        );
        assert!(fake.requests()[0].headers.get("anthropic-beta").is_none());
        assert_eq!(
            body["tools"],
            json!([{"name": "refund", "input_schema": {"type": "object",
                "properties": {"order": {"type": "string"}}}}])
        );
        assert_eq!(body["tool_choice"], json!({"type": "any"}));
    }
}

/// `answer: {valid: true}` in a test file checks a recorded answer against
/// the template's own output schema and tools, offline.
#[cfg(feature = "cli")]
#[test]
fn a_recorded_answer_is_checked_against_the_declared_schema() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let copy = |rel: &str| {
        let to = root.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(Path::new("templates").join(rel), to).unwrap();
    };
    for rel in [
        "extract/invoice.prompt.yaml",
        "extract/invoice.schema.json",
        "extract/invoice.tests.yaml",
        "extract/cases/acme.json",
        "extract/invoice.cassettes/the-recorded-answer-is-a-valid-invoice.json",
        "extract/invoice.snapshots/the-document-is-the-user-turn-and-the-schema-goes-with-it.json",
    ] {
        copy(rel);
    }
    let test = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_promptbook"))
            .args(["test", "--dir"])
            .arg(root)
            .env_remove("PROMPTBOOK_DIR")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = test();
    assert_eq!(code, Some(0), "{out}");
    let cassette =
        root.join("extract/invoice.cassettes/the-recorded-answer-is-a-valid-invoice.json");
    let text = std::fs::read_to_string(&cassette).unwrap();
    let broken = text.replace(r#"\"total\": 11.0"#, r#"\"total\": \"eleven\""#);
    assert_ne!(broken, text, "the cassette holds the total");
    std::fs::write(&cassette, broken).unwrap();
    let (code, out) = test();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the answer breaks the template's output schema at `/total`"),
        "{out}"
    );
}
