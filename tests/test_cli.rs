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
    // Every broken file is said (as left out), then the reference fails.
    assert!(
        stderr.contains("a.prompt.yaml:2:10: error: inheritance cycle"),
        "{stderr}"
    );
    assert!(
        stderr.contains("c.prompt.yaml:2:10: error: `extends: nope@^1`"),
        "{stderr}"
    );
    assert!(stderr.contains("no template named `x`"), "{stderr}");
}

#[test]
fn tokens_prints_the_bare_count_tiktoken_gives() {
    let corpus: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/data/tokens/corpus.json").unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for t in corpus["texts"].as_array().unwrap().iter().take(12) {
        let text = t["text"].as_str().unwrap();
        let file = dir.path().join("text.txt");
        std::fs::write(&file, text).unwrap();
        for (args, key) in [
            (vec!["tokens", "--encoding", "cl100k_base"], "cl100k_base"),
            (vec!["tokens", "--model", "gpt-4o-mini"], "o200k_base"),
            (vec!["tokens"], "o200k_base"),
        ] {
            let (code, stdout, stderr) = run(cli().args(&args).arg(&file));
            assert_eq!(code, 0, "{stderr}");
            assert_eq!(stdout, format!("{}\n", t[key]), "{args:?} on {}", t["name"]);
        }
    }
    let out = std::process::Command::new(get_cargo_bin("promptbook"))
        .args(["tokens", "--encoding", "cl100k_base", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"hello <|endoftext|> world")?;
            child.wait_with_output()
        })
        .unwrap();
    // OpenAI's tiktoken (`encode_ordinary`) gives 8: the look-alike is plain text.
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "8\n");

    let (code, _, stderr) = run(cli().args(["tokens", "--encoding", "p50k_base", "Cargo.toml"]));
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown encoding `p50k_base`"), "{stderr}");
}

#[test]
fn render_reports_tokens_and_truncation() {
    let (code, stdout, stderr) = run(cli().args([
        "render",
        "chat",
        "--dir",
        "tests/cases/truncate_drop_oldest",
        "--input",
        "tests/cases/truncate_drop_oldest/render.json",
        "--var",
        "q=What about Rome?",
    ]));
    // render.json nests the inputs; --input wants them flat, so this fails...
    assert_ne!(code, 0, "{stdout}");
    assert!(stderr.contains("/inputs: not a parameter"), "{stderr}");

    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string("tests/cases/truncate_drop_oldest/render.json").unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in.json");
    std::fs::write(&inputs, spec["inputs"].to_string()).unwrap();
    let (code, stdout, stderr) = run(cli()
        .args([
            "render",
            "chat",
            "--dir",
            "tests/cases/truncate_drop_oldest",
            "--input",
        ])
        .arg(&inputs));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("# chat@1.0.0 | 48 tokens (o200k_base)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("# dropped the 2 oldest history messages to fit a budget of 60 tokens"),
        "{stdout}"
    );

    // Another model: another tokenizer, marked approximate.
    let (code, stdout, _) = run(cli()
        .args([
            "render",
            "chat",
            "--dir",
            "tests/cases/truncate_drop_oldest",
            "--model",
            "anthropic:claude-3-5-haiku-latest",
            "--json",
            "--input",
        ])
        .arg(&inputs));
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["tokens"]["approximate"], true);
}

/// `--var k=v` takes the parameter's declared type; a value that does not
/// convert is an error that suggests `k:=JSON`.
#[test]
fn vars_are_converted_by_the_parameters_type() {
    let (code, stdout, stderr) = run(cli().args([
        "render",
        "summarize/article@^1",
        "--json",
        "--var",
        "article=Rust 2.0 shipped.",
        "--var",
        "bullets=2",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        v["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("at most 2 bullet")
    );
    let (code, stdout, stderr) = run(cli().args([
        "render",
        "summarize/article@^1",
        "--var",
        "article=x",
        "--var",
        "bullets=two",
    ]));
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(stderr.contains("`bullets` is an integer"), "{stderr}");
    assert!(stderr.contains("--var bullets:=JSON"), "{stderr}");

    // Types said by `enum`, `const` or `anyOf` instead of `type`, and an
    // integer written `2.0`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.prompt.yaml"),
        "version: 1.0.0\nparameters:\n  e: {enum: [1, 2, 3]}\n  c: {const: 5}\n  \
         a: {anyOf: [{type: integer}, {type: boolean}]}\n  i: integer\n  \
         s: {enum: ['1', '2']}\nmessages:\n  - role: user\n    content: \"{{ e }} {{ c }} {{ a }} {{ i }} {{ s }}\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(cli()
        .args(["render", "t", "--json", "--dir"])
        .arg(dir.path())
        .args([
            "--var", "e=2", "--var", "c=5", "--var", "a=true", "--var", "i=2.0", "--var", "s=1",
        ]));
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["messages"][0]["content"], "2 5 True 2 1");
    let (code, _, stderr) = run(cli().args(["render", "t", "--dir"]).arg(dir.path()).args([
        "--var", "e=9", "--var", "c=5", "--var", "a=1", "--var", "i=1", "--var", "s=1",
    ]));
    assert_eq!(code, 1);
    assert!(stderr.contains("/e: 9 is not one of 1, 2 or 3"), "{stderr}");
}

/// One broken file does not stop `render`, `list` or `send` from using the
/// others; what was left out is said on stderr. `lint` stays strict.
#[test]
fn a_broken_file_leaves_the_others_usable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ok.prompt.jinja"),
        "---\nversion: 1.0.0\n---\nuser:\nhello\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("broken.prompt.jinja"),
        "---\nversion: 1.0.0\n---\nuser:\n{% if %}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(cli().args(["render", "ok", "--dir"]).arg(dir.path()));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("hello"), "{stdout}");
    assert!(stderr.contains("left out"), "{stderr}");
    assert!(stderr.contains("broken.prompt.jinja:5"), "{stderr}");

    let (code, stdout, _) = run(cli().args(["list", "--dir"]).arg(dir.path()));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("ok") && !stdout.contains("broken"),
        "{stdout}"
    );

    let (code, _, stderr) = run(cli().args(["render", "broken", "--dir"]).arg(dir.path()));
    assert_eq!(code, 1);
    assert!(stderr.contains("did not load"), "{stderr}");

    let (code, stdout, _) = run(cli().args(["lint", "--dir"]).arg(dir.path()));
    assert_eq!(code, 1);
    assert!(stdout.contains("broken.prompt.jinja:5"), "{stdout}");
}

/// A message the template wrote that renders empty is dropped, and the
/// text output says so (the JSON carries `dropped_empty`).
#[test]
fn an_empty_message_is_dropped_and_said() {
    let dir = "tests/cases/empty_messages_dropped";
    let (code, stdout, stderr) = run(cli().args(["render", "t", "--dir", dir]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("# dropped an empty system message"),
        "{stdout}"
    );
    assert!(!stdout.contains("[system]"), "{stdout}");
    let (code, stdout, _) = run(cli().args(["render", "t", "--json", "--dir", dir]));
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        v["dropped_empty"],
        serde_json::json!([{"role": "system", "index": 0}])
    );
    // Nothing dropped: no note, and no key.
    let (_, stdout, _) =
        run(cli().args(["render", "t", "--json", "--var", "extra=hi", "--dir", dir]));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert!(v.get("dropped_empty").is_none(), "{v}");
}

/// `convert`, `tokens` and `--input` read only regular files of bounded
/// size: a FIFO or `/dev/zero` behind a link is refused at once (it blocked
/// forever, or read 7 GB); and `convert --force` never replaces a FIFO or
/// a device with a file.
#[cfg(unix)]
#[test]
fn only_regular_files_are_read_or_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("f.prompty");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let zero = dir.path().join("z.prompty");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for args in [
        vec!["convert".to_owned(), fifo.display().to_string()],
        vec![
            "convert".to_owned(),
            zero.display().to_string(),
            "-o".into(),
            "-".into(),
        ],
        vec!["tokens".to_owned(), zero.display().to_string()],
        vec![
            "render".to_owned(),
            "support/triage".into(),
            "--input".into(),
            zero.display().to_string(),
        ],
    ] {
        let (code, _, stderr) = run(cli().args(&args));
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stderr.contains("not a regular file"), "{args:?}: {stderr}");
    }
    // --force over a FIFO: refused, and the FIFO is still one.
    let source = dir.path().join("ok.prompty");
    std::fs::write(&source, "---\nname: ok\n---\nuser:\nhi\n").unwrap();
    let target = dir.path().join("target.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&target)
            .status()
            .unwrap()
            .success()
    );
    let (code, _, stderr) = run(cli().args([
        "convert".as_ref(),
        source.as_os_str(),
        "-o".as_ref(),
        target.as_os_str(),
        "--force".as_ref(),
    ]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

/// Small things a user types wrong get a message about what they typed: a
/// blank model name, a version written with `v`, a full version that
/// matches nothing (shown as typed).
#[test]
fn typos_in_references_and_models_are_named_as_typed() {
    let (code, _, stderr) = run(cli().args([
        "render",
        "support/triage",
        "--var",
        "ticket=x",
        "--model",
        " ",
    ]));
    assert_eq!(code, 1);
    assert!(stderr.contains("the model name \" \" is blank"), "{stderr}");
    let (code, _, stderr) =
        run(cli().args(["render", "support/triage@v1.0.0", "--var", "ticket=x"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("written without `v`"), "{stderr}");
    let (code, _, stderr) =
        run(cli().args(["render", "support/triage@9.9.9", "--var", "ticket=x"]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("matches `support/triage@9.9.9`"),
        "{stderr}"
    );
}

/// A reader that stops early (`promptbook list --json | head -1`) is its
/// choice, not an error: exit 0 and nothing on stderr, in every output
/// form, however the write failed.
#[test]
fn a_reader_that_closes_stdout_early_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // Far more output than a pipe holds, so the writer meets the closed end.
    for i in 0..400 {
        std::fs::write(
            dir.path().join(format!("t{i}.prompt.yaml")),
            format!(
                "version: 1.0.0\ndescription: {}\nmessages:\n  - {{role: user, content: hi}}\n",
                "a long description ".repeat(20)
            ),
        )
        .unwrap();
    }
    for args in [&["list", "--json"][..], &["list"][..]] {
        let mut child = cli()
            .args(args)
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Read a little, then close the pipe.
        {
            use std::io::Read;
            let mut first = [0u8; 16];
            child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// `lint` reads `providers.yaml` as `send` would: a provider named like
/// the reserved `state` key, an unknown key and a bad outage policy are
/// errors that say what to do; a good file passes.
#[cfg(feature = "dispatch")]
#[test]
fn lint_checks_providers_yaml_and_its_reserved_state_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.prompt.yaml"),
        "version: 1.0.0\nmessages:\n  - role: user\n    content: hi\n",
    )
    .unwrap();
    for (yaml, says) in [
        (
            "state:\n  kind: openai\n  base_url: http://127.0.0.1:1/v1\n",
            "`state` is reserved for shared dispatch state",
        ),
        (
            "local:\n  kind: openai\n  base_url: http://127.0.0.1:1/v1\n  circuit_breaker: {failures: 2, cooldown: soon}\n",
            "`soon` is not a duration",
        ),
        ("state:\n  on_outage: crash\n", "crash"),
        ("state:\n  lease_ttl: 400d\n", "at most 1 day"),
        (
            "local:\n  kind: openai\n  base_url: http://127.0.0.1:1/v1\n  circuit_breaker: {cooldown: 400d}\n",
            "circuit_breaker.cooldown must be more than 0 and at most 1 day",
        ),
        (
            "local:\n  kind: openai\n  base_url: http://127.0.0.1:1/v1\n  limits: {window: 0s}\n",
            "limits.window",
        ),
        ("state:\n  prefix: ''\n", "state.prefix"),
    ] {
        std::fs::write(dir.path().join("providers.yaml"), yaml).unwrap();
        let (code, stdout, stderr) = run(cli()
            .args(["lint", "--dir"])
            .arg(dir.path())
            .env_remove("PROMPTBOOK_REDIS_URL"));
        assert_eq!(code, 1, "{yaml}: {stdout}{stderr}");
        assert!(
            stdout.contains("providers.yaml") || stdout.contains("state."),
            "{stdout}"
        );
        assert!(stdout.contains(says), "{yaml}: {stdout}");
    }
    std::fs::write(
        dir.path().join("providers.yaml"),
        "local:\n  kind: openai\n  base_url: http://127.0.0.1:1/v1\n  limits: {requests_per_minute: 60, window: 10s}\n  circuit_breaker: {failures: 3, window: 30s, cooldown: 10s}\nstate:\n  on_outage: fail_closed\n  lease_ttl: 10s\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(cli()
        .args(["lint", "--dir"])
        .arg(dir.path())
        .env_remove("PROMPTBOOK_REDIS_URL"));
    assert_eq!(code, 0, "{stdout}{stderr}");
}

/// `--var k@=FILE` reads media from a file: an image as a data URL with
/// its media type from its first bytes, a document with its file name; a
/// file of no known kind is an error saying how to give it.
#[test]
fn media_inputs_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("dot.png");
    std::fs::write(
        &png,
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x04\0\0\0\x04\0\x08\x06\0\0\0\0\0\0\0",
    )
    .unwrap();
    let (code, stdout, stderr) = run(cli().args([
        "render",
        "vision/describe",
        "--json",
        "--var",
        &format!("photo@={}", png.display()),
    ]));
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let image = &v["messages"][1]["content"][1];
    assert_eq!(image["type"], "image");
    assert_eq!(image["media_type"], "image/png");
    // 1024x1024 at high detail: OpenAI's worked example.
    assert_eq!(v["tokens"]["media"][0]["tokens"], 765);

    let pdf = dir.path().join("terms.pdf");
    std::fs::write(&pdf, b"%PDF-1.4\n").unwrap();
    let (code, stdout, stderr) = run(cli().args([
        "render",
        "extract/document",
        "--json",
        "--var",
        &format!("document@={}", pdf.display()),
        "--var",
        "question=What is the notice period?",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let file = &v["messages"][1]["content"][0];
    assert_eq!(
        (&file["type"], &file["media_type"], &file["filename"]),
        (
            &"file".into(),
            &"application/pdf".into(),
            &"terms.pdf".into()
        )
    );

    let odd = dir.path().join("blob.bin");
    std::fs::write(&odd, [0u8, 159, 146, 150]).unwrap();
    let (code, _, stderr) = run(cli().args([
        "render",
        "vision/describe",
        "--var",
        &format!("photo@={}", odd.display()),
    ]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("cannot tell what kind of media"),
        "{stderr}"
    );
}
