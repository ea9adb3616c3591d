//! Snapshot tests over `tests/cases/*`: each case is a template root with a
//! `render.json` (`{"reference": ..., "inputs": ...}`). The snapshot is the
//! rendered JSON, or the error's display for cases named `err_*`.

use std::path::Path;

use promptbook::Registry;
use serde_json::Value;

fn run_case(render_json: &Path) -> (bool, String) {
    let dir = render_json.parent().unwrap();
    // Paths in messages are relative to the crate, as a user would see them.
    let rel = dir
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(dir)
        .to_owned();
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(render_json).unwrap()).unwrap();
    let reference = spec["reference"].as_str().unwrap();
    let registry = match Registry::load(&rel) {
        Ok(r) => r,
        Err(e) => return (false, e.to_string()),
    };
    match registry.render(reference, &spec["inputs"]) {
        Ok(rendered) => (true, serde_json::to_string_pretty(&rendered).unwrap()),
        Err(e) => (false, e.to_string()),
    }
}

#[test]
fn cases() {
    // insta's glob runs relative to this file.
    insta::glob!("cases/*/render.json", |path| {
        let name = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let (ok, output) = run_case(path);
        assert_eq!(
            ok,
            !name.starts_with("err_"),
            "case {name}: success does not match its name:\n{output}"
        );
        insta::assert_snapshot!(output);
    });
}
