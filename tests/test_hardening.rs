//! Hostile templates, hostile inputs and bad files: errors, never hangs,
//! crashes or escapes.

use std::fs;
use std::time::{Duration, Instant};

use promptbook::{ErrorKind, Registry, RenderLimits};
use serde_json::json;

fn root(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

fn body(text: &str) -> String {
    format!("---\nversion: 1.0.0\n---\n{text}")
}

/// Runaway templates, each with the limit that must stop it.
const RUNAWAY: &[(&str, &str, &str)] = &[
    (
        "loop",
        "user:\n{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}",
        "RenderLimits::fuel",
    ),
    (
        "recursion",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}user:\n{{ f(0) }}",
        "RenderLimits::recursion",
    ),
    (
        "doubling",
        "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}user:\n{{ ns.s|length }}",
        "RenderLimits::fuel",
    ),
    (
        "repeat",
        "user:\n{{ 'ab' * 1000000000 }}",
        "RenderLimits::fuel",
    ),
    (
        "recursive_include",
        "user:\n{% include 'recursive_include@1' %}",
        "RenderLimits::recursion",
    ),
];

/// Each runaway template fails within a bounded wait (no hang), as a
/// `Limit` error naming the limit that stopped it and the template's line,
/// and the registry keeps serving.
#[test]
fn runaway_templates_fail_fast_naming_the_limit_and_the_registry_keeps_serving() {
    let mut files: Vec<(String, String)> = RUNAWAY
        .iter()
        .map(|(name, text, _)| (format!("{name}@1.0.0.prompt.jinja"), body(text)))
        .collect();
    files.push(("ok@1.0.0.prompt.jinja".into(), body("user:\nhello")));
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = root(&files);
    let registry = Registry::load(dir.path()).unwrap();
    for (name, _, limit) in RUNAWAY {
        let r = registry.clone();
        let started = Instant::now();
        let owned = name.to_string();
        let result = within_wait(name, move || r.render(&owned, &json!({})).map(|_| ()));
        let elapsed = started.elapsed();
        let e = result.expect_err(name);
        let text = e.to_string();
        assert_eq!(e.kind(), ErrorKind::Limit, "{name}: {text}");
        assert!(
            text.contains(limit),
            "{name}: not stopped by {limit}: {text}"
        );
        assert!(
            e.location()
                .is_some_and(|l| l.path().ends_with(format!("{name}@1.0.0.prompt.jinja"))
                    && l.line().is_some()),
            "{name}: no file and line: {text}"
        );
        eprintln!("{name}: {elapsed:?}: {text}");
        assert_eq!(
            registry.render("ok", &json!({})).unwrap().messages[0].text(),
            "hello"
        );
    }
}

#[test]
fn input_documents_have_size_and_depth_limits() {
    let dir = root(&[(
        "t@1.0.0.prompt.jinja",
        "---\nversion: 1.0.0\nparameters:\n  doc: {}\n---\nuser:\n{{ doc|tojson }}",
    )]);
    let registry = Registry::load(dir.path()).unwrap();

    // Nested deeper than the limit: refused before anything recurses.
    let mut deep = json!("leaf");
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let e = registry.render("t", &json!({"doc": deep})).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit, "{e}");
    assert!(
        e.to_string().contains("RenderLimits::max_input_depth"),
        "{e}"
    );
    assert_eq!(e.parameter(), Some("/doc"));

    // A Rust value with no bottom at all: only the depth limit, checked as
    // it is serialised, ends the descent (before it could reach the end of
    // the stack).
    struct Bottomless;
    impl serde::Serialize for Bottomless {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = s.serialize_seq(Some(1))?;
            seq.serialize_element(&Bottomless)?;
            seq.end()
        }
    }
    let e = registry
        .render("t", &std::collections::HashMap::from([("doc", Bottomless)]))
        .unwrap_err();
    assert_eq!((e.kind(), e.parameter()), (ErrorKind::Limit, Some("/doc")));

    // Bigger than the limit.
    let small = registry.with_limits(RenderLimits::new().max_input_bytes(1000));
    let e = small
        .render("t", &json!({"doc": "x".repeat(2000)}))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit);
    assert!(
        e.to_string().contains("RenderLimits::max_input_bytes"),
        "{e}"
    );
    assert!(small.render("t", &json!({"doc": "x".repeat(100)})).is_ok());

    // Output over its limit.
    let small = registry.with_limits(RenderLimits::new().max_output_bytes(50));
    let e = small
        .render("t", &json!({"doc": "x".repeat(100)}))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit);
    assert!(
        e.to_string().contains("RenderLimits::max_output_bytes"),
        "{e}"
    );
}

#[test]
fn limits_are_configurable() {
    let dir = root(&[(
        "t@1.0.0.prompt.jinja",
        &body("user:\n{% for i in range(1000) %}{{ i }}{% endfor %}"),
    )]);
    let registry = Registry::load(dir.path()).unwrap();
    assert!(registry.render("t", &json!({})).is_ok());
    let tight = registry.with_limits(RenderLimits::new().fuel(Some(500)));
    assert_eq!(tight.limits().fuel, Some(500));
    assert_eq!(
        tight.render("t", &json!({})).unwrap_err().kind(),
        ErrorKind::Limit
    );
    let unlimited = registry.with_limits(RenderLimits::new().fuel(None));
    assert!(unlimited.render("t", &json!({})).is_ok());
}

#[cfg(unix)]
#[test]
fn the_loader_never_reads_outside_the_root() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(
        outside.path().join("secret.prompt.yaml"),
        "version: 1.0.0\nmessages:\n  - role: user\n    content: TOP-SECRET\n",
    )
    .unwrap();
    let dir = root(&[(
        "ok.prompt.yaml",
        "version: 1.0.0\nmessages:\n  - role: user\n    content: hi\n",
    )]);
    std::os::unix::fs::symlink(
        outside.path().join("secret.prompt.yaml"),
        dir.path().join("leak.prompt.yaml"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("linked")).unwrap();
    match Registry::load(dir.path()) {
        Ok(registry) => {
            let names: Vec<&str> = registry.names().collect();
            assert_eq!(names, ["ok"], "a symlink out of the root was followed");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains("TOP-SECRET"));
            assert!(text.contains("outside"), "{text}");
        }
    }

    // An input schema `$ref` stays inside the root too.
    fs::write(
        outside.path().join("schema.json"),
        r#"{"type": "object", "properties": {"stolen": {"type": "string"}}}"#,
    )
    .unwrap();
    let rel = format!("{}/schema.json", pathdiff(outside.path(), dir.path()));
    for r in [
        rel.as_str(),
        outside.path().join("schema.json").to_str().unwrap(),
    ] {
        let d = root(&[
            (
                "ok.prompt.yaml",
                "version: 1.0.0\nmessages:\n  - role: user\n    content: hi\n",
            ),
            (
                "s.prompt.yaml",
                &format!(
                    "version: 1.0.0\ninput_schema: {{$ref: '{r}'}}\nmessages:\n  - role: user\n    content: hi\n"
                ),
            ),
        ]);
        let e = Registry::load(d.path()).unwrap_err();
        assert!(
            e.to_string().contains("outside the template root"),
            "{r}: {e}"
        );
    }

    // References and includes resolve only through the registry.
    let registry = Registry::load(
        root(&[(
            "ok.prompt.yaml",
            "version: 1.0.0\nmessages:\n  - role: user\n    content: hi\n",
        )])
        .path(),
    )
    .unwrap();
    for bad in [
        "../ok",
        "/etc/passwd",
        "a\\b",
        "ok\0",
        "./ok",
        "ok/..",
        "C:\\x",
    ] {
        let e = registry.render(bad, &json!({})).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Reference, "{bad:?}: {e}");
    }
    for include in ["../../etc/passwd", "/etc/passwd", "..\\\\x"] {
        let dir = root(&[(
            "t@1.0.0.prompt.jinja",
            &body(&format!("user:\n{{% include '{include}' %}}")),
        )]);
        let e = Registry::load(dir.path()).unwrap_err();
        assert!(!e.to_string().contains("root:x:0:0"), "{e}");
        assert!(e.problems()[0].location().is_some(), "{e}");
    }
}

/// `to` relative to `from`'s folder, with `..`s (both absolute).
fn pathdiff(to: &std::path::Path, from: &std::path::Path) -> String {
    let depth = from.components().count() - 1;
    let mut out = "../".repeat(depth);
    out.push_str(to.strip_prefix("/").unwrap().to_str().unwrap());
    out
}

#[test]
fn malformed_files_are_errors_with_their_file() {
    let cases: &[(&str, &[u8])] = &[
        ("utf8.prompt.yaml", b"version: 1.0.0\nmessages:\n  - role: user\n    content: \xff\xfe\n"),
        ("nul.prompt.jinja", b"---\nversion: 1.0.0\n---\nuser:\nhello\0world\n"),
        ("bom_only.prompt.yaml", b"\xef\xbb\xbf"),
        ("empty.prompt.jinja", b""),
        (
            "bomb.prompt.yaml",
            b"version: 1.0.0\na: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\ni: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\nmessages: *i\n",
        ),
        ("deep.prompt.yaml", &[b'['; 100_000]),
        // Operator chains minijinja would recurse on too deeply: a body,
        // a manifest's content, a `.prompty` body.
        (
            "plus.prompt.jinja",
            format!("---\nversion: 1.0.0\n---\nuser:\n{{{{ 1{} }}}}\n", "+1".repeat(30_000)).leak().as_bytes(),
        ),
        (
            "nots.prompt.yaml",
            format!("version: 1.0.0\nmessages:\n  - role: user\n    content: \"{{{{ {}true }}}}\"\n", "not ".repeat(30_000)).leak().as_bytes(),
        ),
        (
            "filters.prompty",
            format!("---\nname: f\n---\nuser:\n{{{{ 'a'{} }}}}\n", "|lower".repeat(50_000)).leak().as_bytes(),
        ),
        (
            "nested_if.prompt.jinja",
            format!("---\nversion: 1.0.0\n---\nuser:\n{}x{}", "{% if true %}".repeat(5000), "{% endif %}".repeat(5000)).leak().as_bytes(),
        ),
    ];
    for (name, bytes) in cases {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(name), bytes).unwrap();
        let path = dir.path().to_owned();
        let result = within_wait(name, move || Registry::load(&path).map(|_| ()));
        let e = result.expect_err(name);
        let problem = e.problems()[0].to_string();
        assert!(problem.contains(name), "{name}: {problem}");
    }
}

#[test]
fn odd_unicode_in_inputs_is_data() {
    let registry = Registry::load("templates").unwrap();
    for odd in [
        "\u{202E}gnp.exe\u{202C}",
        "zero\u{200B}width\u{FEFF}joiner\u{200D}",
        "\u{FFFD}\u{FFFF}\u{10FFFF}",
        "line\u{2028}sep\u{2029}para\u{85}nel",
        "e\u{301}\u{301}\u{301}",
    ] {
        let r = registry
            .render("support/triage", &json!({"ticket": odd}))
            .unwrap();
        assert_eq!(r.messages.last().unwrap().text(), odd.trim());
        assert_eq!(r.messages.len(), 6);
    }
}

#[cfg(feature = "cli")]
#[test]
fn lone_surrogates_and_bad_json_inputs_are_errors_not_panics() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    // (input, what stderr must say; `None`: it renders, with the ticket's
    // text in the output).
    let cases: [(&str, Option<&str>, &str); 8] = [
        (
            r#"{"ticket": "\ud800"}"#,
            Some("unexpected end of hex escape"),
            "",
        ),
        (
            r#"{"ticket": "\udc00x"}"#,
            Some("lone leading surrogate"),
            "",
        ),
        (
            &format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)),
            Some("recursion limit"),
            "",
        ),
        ("", Some("EOF while parsing"), ""),
        ("[1, 2]", Some("must hold a JSON object"), ""),
        // A raw control character inside a string is not JSON; escaped,
        // a NUL is data.
        ("{\"ticket\": \"a\u{0}b\"}", Some("control character"), ""),
        (r#"{"ticket": "a\u0000b"}"#, None, "a\u{0}b"),
        // A byte-order mark before the document is not content.
        ("\u{feff}{\"ticket\": \"with a BOM\"}", None, "with a BOM"),
    ];
    for (input, error, shown) in cases {
        let mut child = Command::new(env!("CARGO_BIN_EXE_promptbook"))
            .args([
                "render",
                "support/triage",
                "--dir",
                "templates",
                "--input",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shown_input: String = input.chars().take(40).collect();
        assert!(!stderr.contains("panicked"), "{shown_input:?}: {stderr}");
        match error {
            Some(says) => {
                assert_eq!(out.status.code(), Some(1), "{shown_input:?}: {stderr}");
                assert!(stdout.is_empty(), "{shown_input:?}: {stdout}");
                assert!(
                    stderr.starts_with("error: input - "),
                    "{shown_input:?}: {stderr}"
                );
                assert!(stderr.contains(says), "{shown_input:?}: {stderr}");
            }
            None => {
                assert!(out.status.success(), "{shown_input:?}: {stderr}");
                assert!(stdout.contains(shown), "{shown_input:?}: {stdout}");
            }
        }
    }
}

/// Runs `f` on a 2 MiB-stack thread and waits at most `WAIT` for it: a hang
/// fails the test instead of hanging it.
fn within_wait<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    const WAIT: Duration = Duration::from_secs(20);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("{what}: no answer within {WAIT:?} ({e})"))
}

/// Operations whose work grows with a string's length (comparing, indexing,
/// slicing, sorting, looking up, testing) are paid for by the byte: a loop
/// over one of them on a long string, built by the template or passed as
/// an input, runs out of fuel quickly instead of holding a core for
/// minutes (each took 50 s to days before the engine was patched; see
/// vendor/minijinja/PROMPTBOOK.md).
#[test]
fn work_on_long_strings_is_paid_for_by_the_byte() {
    let ops = [
        "{% if s[-1] %}{% endif %}",
        "{% if s[3999999] %}{% endif %}",
        "{% if s[-1:] %}{% endif %}",
        "{% if s == t %}{% endif %}",
        "{% if s != t %}{% endif %}",
        "{% if s < t %}{% endif %}",
        "{% if s in l %}{% endif %}",
        "{% if s in d %}{% endif %}",
        "{{ d[t] }}",
        "{% if d.get(t) %}{% endif %}",
        "{% if {s: 1} %}{% endif %}",
        "{% if {s: 1} == {t: 1} %}{% endif %}",
        "{% if [s] == [t] %}{% endif %}",
        "{% if loop.changed(s) %}{% endif %}",
        "{% if s is eq(t) %}{% endif %}",
        "{% if s is startingwith(t) %}{% endif %}",
        "{{ l|sort|length }}",
        "{{ l|unique|length }}",
        "{{ [{'a': s}, {'a': t}]|sort(attribute='a')|length }}",
        "{{ [{'a': s}, {'a': t}]|groupby('a')|length }}",
        "{{ {s: 1, t ~ 'x': 2}|dictsort|length }}",
        "{{ ([{'a': s}]|selectattr('a', 'equalto', t)|list)|length }}",
    ];
    for (source, setup) in [
        ("built", "{% set s = 'é' * 4000000 %}"),
        ("input", "{% set s = doc %}"),
    ] {
        let files: Vec<(String, String)> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| {
                (
                    format!("op{i}@1.0.0.prompt.jinja"),
                    format!(
                        "---\nversion: 1.0.0\nparameters:\n  doc: {{type: string, default: ''}}\n---\nuser:\n\
                         {setup}{{% set t = s ~ '' %}}{{% set l = [s, t, s, t, s, t, s, t] %}}\
                         {{% set d = {{t: 1}} %}}{{% for i in range(1000) %}}{{% for j in range(1000) %}}\
                         {op}{{% endfor %}}{{% endfor %}}done"
                    ),
                )
            })
            .collect();
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let dir = root(&files);
        let registry = Registry::load(dir.path()).unwrap();
        let doc = "é".repeat(4_000_000);
        for (i, op) in ops.iter().enumerate() {
            let r = registry.clone();
            let inputs = json!({"doc": doc});
            let what = format!("{source}: {op}");
            let result = within_wait(&what, move || {
                r.render(&format!("op{i}"), &inputs).map(|_| ())
            });
            let e = result.expect_err(&what);
            assert_eq!(e.kind(), ErrorKind::Limit, "{what}: {e}");
            assert!(e.to_string().contains("RenderLimits::fuel"), "{what}: {e}");
        }
    }
}

/// Ways a template could make a value that holds itself (or nests without
/// end), crossed with every way the engine walks a value. Before the fix,
/// each walk overflowed the stack and aborted the process.
#[test]
fn self_referencing_values_are_errors_not_crashes() {
    let builds = [
        "{% set ns.me = ns %}",
        "{% set ns.l = [1, ns] %}",
        "{% set ns.d = {'k': [ns]} %}",
        "{% set ns.l = [1] + [ns] %}",
        "{% set other = namespace(inner=ns) %}{% set ns.o = other %}",
        "{% for x in [ns, ns] %}{% set ns.loop = loop %}{% endfor %}",
        "{% macro put(t, v) %}{% set t.v = v %}{% endmacro %}{{ put(ns, ns) }}",
        "{% include 'partial' %}",
        "{% for i in range(50000) %}{% set ns.deep = [ns.deep] %}{% endfor %}",
        "{%- set x, ns.me = 1, [ns] -%}",
        // `loop` stored while it holds no namespace: its `nextitem` is the
        // namespace one pass later.
        "{% for x in [1, 2, ns] %}{% if loop.first %}{% set ns.l = loop %}{% endif %}{% endfor %}",
        "{% for x in [1, ns] %}{% if loop.first %}{% set ns.l = {'k': [loop]} %}{% endif %}{% endfor %}",
        // A `}}` inside braces must not hide the `set` from the guard.
        "{{ {'a': {'b': 1}} ~ \"{% x\" }}{% set ns.me = ns %}{{ \"y %}\" }}",
    ];
    let walks = [
        "{{ ns }}",
        "{{ ns|tojson }}",
        "{{ ns|string }}",
        "{{ ns == ns }}",
        "{{ ns in [ns] }}",
        "{{ [ns, ns]|sort }}",
        "{{ ns|dictsort }}",
        "{{ ns|pprint }}",
        "{{ [ns, ns]|unique|list }}",
        "{{ ns.deep }}",
    ];
    let mut files = vec![(
        "partial@1.0.0.prompt.jinja".to_owned(),
        "---\nversion: 1.0.0\nparameters:\n  ns: {}\n---\n{% set ns.me = ns %}".to_owned(),
    )];
    for (b, build) in builds.iter().enumerate() {
        for (w, walk) in walks.iter().enumerate() {
            files.push((
                format!("t{b}_{w}@1.0.0.prompt.jinja"),
                body(&format!(
                    "user:\n{{% set ns = namespace(deep=[]) %}}{build}\n{walk}\n"
                )),
            ));
        }
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = root(&files);
    let registry = Registry::load(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    for (b, build) in builds.iter().enumerate() {
        for (w, walk) in walks.iter().enumerate() {
            let r = registry.clone();
            let name = format!("t{b}_{w}");
            let what = format!("{build} then {walk}");
            let result = within_wait(&what, move || r.render(&name, &json!({})).map(|_| ()));
            let e = result.expect_err(&what);
            assert_eq!(e.kind(), ErrorKind::Template, "{what}: {e}");
            let text = e.to_string();
            assert!(
                text.contains("cannot hold a namespace")
                    || text.contains("cannot hold `loop`")
                    || text.contains("may nest at most"),
                "{what}: {text}"
            );
        }
    }
    // Namespaces that hold plain values work as in Jinja.
    let dir = root(&[(
        "ok@1.0.0.prompt.jinja",
        &body(
            "user:\n{% set ns = namespace(n=0, seen=[]) %}{% for x in xs %}{% set ns.n = ns.n + x %}\
             {% set ns.seen = ns.seen + [x] %}{% endfor %}{{ ns.n }} {{ ns.seen|tojson }} {{ ns.seen == ns.seen }}",
        )
        .replace("version: 1.0.0\n", "version: 1.0.0\nparameters:\n  xs: {type: array}\n"),
    )]);
    let registry = Registry::load(dir.path()).unwrap();
    let r = registry.render("ok", &json!({"xs": [1, 2, 3]})).unwrap();
    assert_eq!(r.messages[0].text(), "6 [1, 2, 3] True");
}

/// Makes a FIFO at `path` (Unix).
#[cfg(unix)]
fn mkfifo(path: &std::path::Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo {} failed", path.display());
}

/// A FIFO named like a template, or used as a `$ref` schema, and a huge
/// template file: each is a prompt error naming the file, never a hang or
/// a memory spike, and the other templates are unaffected.
#[cfg(unix)]
#[test]
fn special_and_huge_files_are_refused_without_blocking() {
    let dir = root(&[
        ("ok@1.0.0.prompt.jinja", &body("user:\nhello")),
        (
            "refs@1.0.0.prompt.yaml",
            "version: 1.0.0\ninput_schema: {$ref: pipe.json}\nmessages:\n  - role: user\n    content: x\n",
        ),
    ]);
    mkfifo(&dir.path().join("fifo@1.0.0.prompt.jinja"));
    mkfifo(&dir.path().join("pipe.json"));
    let huge = fs::File::create(dir.path().join("huge@1.0.0.prompt.jinja")).unwrap();
    huge.set_len(2 << 30).unwrap(); // sparse: no disk used
    drop(huge);

    let path = dir.path().to_owned();
    let e = within_wait("loading a root with a FIFO", move || {
        Registry::load(&path).map(|_| ())
    })
    .unwrap_err();
    let problems: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    let find = |name: &str| {
        problems
            .iter()
            .find(|p| p.contains(name))
            .unwrap_or_else(|| panic!("nothing about {name}: {problems:#?}"))
    };
    assert!(find("fifo@1.0.0.prompt.jinja").contains("a FIFO"));
    assert!(find("refs@1.0.0.prompt.yaml").contains("a FIFO"));
    assert!(find("huge@1.0.0.prompt.jinja").contains("over 8 MiB"));
    let path = dir.path().to_owned();
    let lint = within_wait("lint", move || promptbook::lint(&path)).unwrap();
    assert_eq!(
        lint.iter()
            .filter(|d| d.severity() == promptbook::Severity::Error)
            .count(),
        3
    );
}

/// A file name that is not UTF-8 does not fail the load unless the file is
/// a template, and then only for that file.
#[cfg(target_os = "linux")]
#[test]
fn non_utf8_file_names_are_ignored_unless_they_are_templates() {
    use std::os::unix::ffi::OsStrExt;
    let dir = root(&[("ok@1.0.0.prompt.jinja", &body("user:\nhello"))]);
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(dir.path().join(latin1), "notes").unwrap();
    fs::create_dir(dir.path().join(std::ffi::OsStr::from_bytes(b"assets-\xff"))).unwrap();
    fs::write(
        dir.path()
            .join(std::ffi::OsStr::from_bytes(b"assets-\xff"))
            .join("logo.png"),
        "png",
    )
    .unwrap();
    let registry = Registry::load(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(registry.names().collect::<Vec<_>>(), ["ok"]);

    let bad = std::ffi::OsStr::from_bytes(b"caf\xe9@1.0.0.prompt.jinja");
    fs::write(dir.path().join(bad), body("user:\nhi")).unwrap();
    let e = Registry::load(dir.path()).unwrap_err();
    let problems = e.problems();
    assert_eq!(problems.len(), 1, "{e:#}");
    assert!(problems[0].to_string().contains("not valid UTF-8"), "{e:#}");
    assert!(problems[0].to_string().contains("caf"), "{e:#}");
}

/// Patterns are matched in linear time: the classic catastrophic pattern
/// `^(a+)+$` against 100,000 `a`s and a `b` answers (no match) within the
/// bounded wait, in a parameter and under `patternProperties`.
#[test]
fn patterns_cannot_make_validation_take_minutes() {
    let dir = root(&[(
        "p@1.0.0.prompt.yaml",
        "version: 1.0.0\nparameters:\n  s: {type: string, pattern: \"^(a+)+$\"}\n  m: {type: object, default: {}, patternProperties: {\"^(a|aa)+$\": {type: integer}}}\nmessages:\n  - role: user\n    content: \"{{ s }}\"\n",
    )]);
    let registry = Registry::load(dir.path()).unwrap();
    let evil = format!("{}b", "a".repeat(100_000));
    let r = registry.clone();
    let s = evil.clone();
    let e = within_wait("pattern", move || {
        r.render("p", &json!({"s": s})).map(|_| ())
    })
    .expect_err("no match");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(e.parameter(), Some("/s"));
    // The key does not match (it ends in `b`), so its value is free.
    let r = registry.clone();
    within_wait("patternProperties", move || {
        r.render("p", &json!({"s": "aaa", "m": {evil: "not an integer"}}))
            .map(|_| ())
    })
    .expect("a key the pattern does not match is not checked");
}

/// Values that share their parts (each `[x, x]` doubles a value without
/// copying it) or nest without end, built without any namespace, through
/// `set`, `with` and macro arguments: every walk of them (printing,
/// `tojson`, `==`, `sort`, `pprint`) is refused as a `Limit` error within
/// the bounded wait, never a hang, a crash or unbounded memory.
#[test]
fn shared_and_deep_values_are_bounded_wherever_they_are_bound() {
    let doubling = |name: &str| -> String {
        (1..=50)
            .map(|i| format!("{{% set {name}{i} = [{name}{p}, {name}{p}] %}}", p = i - 1))
            .collect()
    };
    let withs: String = (1..=50)
        .map(|i| format!("{{% with a{i} = [a{p}, a{p}] %}}", p = i - 1))
        .collect();
    // (before the walk, after it); the walk reads `a50` and `b50`.
    let builds = [
        (
            format!(
                "{{% set a0 = [1] %}}{{% set b0 = [1] %}}{}{}",
                doubling("a"),
                doubling("b")
            ),
            String::new(),
        ),
        (
            // 16 copies a level, 10 levels: within the recursion limit.
            format!(
                "{{% macro f(x, n) %}}{{% if n %}}{{{{ f([{}], n - 1) }}}}{{% else %}}{{% set a50 = x %}}{{% set b50 = x %}}",
                vec!["x"; 16].join(", ")
            ),
            "{% endif %}{% endmacro %}{{ f([1], 10) }}".to_owned(),
        ),
        (
            format!(
                "{{% set x = 1 %}}{}{{% set a50 = x %}}{{% set b50 = x %}}",
                "{% set x = [x] %}".repeat(20_000)
            ),
            String::new(),
        ),
        (
            format!("{{% set a0 = [1] %}}{withs}{{% set b50 = a50 %}}"),
            "{% endwith %}".repeat(50),
        ),
    ];
    let walks = [
        "{{ a50 }}",
        "{{ a50|tojson }}",
        "{{ a50 == b50 }}",
        "{{ [a50, b50]|sort }}",
        "{{ a50|pprint }}",
    ];
    let mut files = Vec::new();
    for (b, (before, after)) in builds.iter().enumerate() {
        for (w, walk) in walks.iter().enumerate() {
            files.push((
                format!("t{b}_{w}@1.0.0.prompt.jinja"),
                body(&format!("user:\n{before}{walk}{after}\n")),
            ));
        }
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = root(&files);
    let registry = Registry::load(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    for b in 0..builds.len() {
        for (w, walk) in walks.iter().enumerate() {
            let r = registry.clone();
            let name = format!("t{b}_{w}");
            let what = format!("build {b}, then {walk}");
            let e = within_wait(&what, move || r.render(&name, &json!({})).map(|_| ()))
                .expect_err(&what);
            assert_eq!(e.kind(), ErrorKind::Limit, "{what}: {e}");
            let text = e.to_string();
            assert!(
                text.contains("grew past") || text.contains("nest at most"),
                "{what}: {text}"
            );
        }
    }
}

/// A tag nested tens of thousands of parentheses deep around a history
/// parameter is refused at once for its size (it took 34 s to load when
/// the printed-history check unwrapped it one pair at a time).
#[test]
fn deeply_parenthesised_tags_are_refused_quickly() {
    let n = 40_000;
    let text = format!(
        "---\nversion: 1.0.0\nparameters:\n  history: {{type: messages, default: []}}\n---\nuser:\n{{{{ {}history{} }}}}\n",
        "(".repeat(n),
        ")".repeat(n)
    );
    let e = within_wait("deep parentheses", move || {
        Registry::from_files([("d.prompt.jinja", text)]).map(|_| ())
    })
    .expect_err("40,000 nested parentheses load");
    assert!(e.to_string().contains("40000 operators"), "{e}");
}
