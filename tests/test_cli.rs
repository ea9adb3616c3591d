//! The `promptbook` binary, run for real.

use std::process::Command;

use insta_cmd::{assert_cmd_snapshot, get_cargo_bin};
use serde_json::Value;

fn cli() -> Command {
    let mut cmd = Command::new(get_cargo_bin("promptbook"));
    cmd.env_remove("PROMPTBOOK_DIR");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn render_text_shows_each_message_under_its_role() {
    assert_cmd_snapshot!(cli().args([
        "render",
        "support/triage",
        "--var",
        "ticket=My invoice is wrong"
    ]));
}

#[test]
fn render_json_prints_the_rendered_document() {
    let (code, stdout, stderr) = run(cli().args([
        "render",
        "summarize/article@^1",
        "--json",
        "--var",
        "article=Rust 2.0 shipped.",
        "--var",
        "bullets:=2",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["template"], "summarize/article@1.2.0");
    assert_eq!(v["messages"][0]["role"], "system");
    assert!(
        v["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("at most 2 bullet")
    );
    assert_eq!(v["messages"][1]["role"], "user");
    assert_eq!(v["model"]["parameters"]["max_tokens"], 400);
}

#[test]
fn inputs_come_from_a_file_or_stdin_and_vars_win() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.yaml");
    std::fs::write(&file, "question: from file\ncustomer_name: Ann\n").unwrap();
    let (code, stdout, stderr) = run(cli()
        .args(["render", "chat/assistant", "--json", "--input"])
        .arg(&file)
        .args(["--var", "question=from var"]));
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["messages"][1]["content"], "from var");
    assert!(
        v["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("talking to Ann")
    );

    assert_cmd_snapshot!(
        cli().args(["render", "chat/assistant", "--input", "-"]).pass_stdin(
            r#"{"question": "Is it fixed?", "history": [{"role": "user", "content": "My VM is down"}, {"role": "assistant", "content": "Looking into it."}]}"#
        )
    );
}

#[test]
fn invalid_input_fails_with_nothing_on_stdout() {
    assert_cmd_snapshot!(cli().args([
        "render",
        "support/triage",
        "--var",
        "ticket=",
        "--var",
        "queues:=[]"
    ]));
    assert_cmd_snapshot!(cli().args(["render", "support/triage@^9", "--var", "ticket=x"]));
    assert_cmd_snapshot!(cli().args(["render", "support/triage", "--var", "ticket:=not json"]));
}

#[test]
fn list_shows_versions_and_labels() {
    assert_cmd_snapshot!(cli().arg("list"));
    let (code, stdout, _) = run(cli().args(["list", "--json"]));
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let triage = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "support/triage")
        .unwrap();
    let versions: Vec<&str> = triage["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.0.0", "2.1.0"]);
    assert_eq!(triage["versions"][1]["labels"][0], "production");
    assert_eq!(
        triage["versions"][1]["input_schema"]["required"][0],
        "ticket"
    );
}

#[test]
fn lint_prints_diagnostics_and_fails_on_errors() {
    let (code, stdout, stderr) = run(cli().args(["lint", "--dir", "tests/fixtures/lint"]));
    assert_eq!(code, 1);
    assert!(
        stdout
            .lines()
            .all(|l| l.starts_with("tests/fixtures/lint/")),
        "{stdout}"
    );
    assert!(
        stdout.contains(":7:31: error: `weekday` is used"),
        "{stdout}"
    );
    assert!(stderr.contains("6 errors, 2 warnings"), "{stderr}");

    let (code, stdout, _) = run(cli().arg("lint").env("PROMPTBOOK_DIR", "templates"));
    assert_eq!((code, stdout.as_str()), (0, ""));
}

#[test]
fn schema_prints_the_checked_in_schema() {
    let (code, stdout, _) = run(cli().arg("schema"));
    assert_eq!(code, 0);
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    let on_disk: Value =
        serde_json::from_str(&std::fs::read_to_string("schemas/template.schema.json").unwrap())
            .unwrap();
    assert_eq!(printed, on_disk);
}

#[test]
fn a_broken_root_reports_every_file() {
    let (code, stdout, stderr) = run(cli().args(["render", "x", "--dir", "tests/cases/err_cycle"]));
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("a.prompt.yaml:2:10: inheritance cycle"),
        "{stderr}"
    );
    assert!(
        stderr.contains("c.prompt.yaml:2:10: `extends: nope@^1`"),
        "{stderr}"
    );
}
