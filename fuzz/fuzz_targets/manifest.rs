//! Any bytes, as a YAML manifest or a front-matter Jinja file, load or give
//! errors that say where; never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn root() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fuzz_target!(|data: &[u8]| {
    let Some((&form, bytes)) = data.split_first() else {
        return;
    };
    let dir = root();
    let (name, other) = if form % 2 == 0 {
        ("t.prompt.yaml", "t.prompt.jinja")
    } else {
        ("t.prompt.jinja", "t.prompt.yaml")
    };
    let _ = std::fs::remove_file(dir.join(other));
    std::fs::write(dir.join(name), bytes).unwrap();
    match promptbook::Registry::load(dir) {
        Ok(registry) => {
            for t in registry.templates() {
                let _ = registry.render(&t.id(), &serde_json::json!({}));
            }
        }
        Err(e) => {
            for p in e.problems() {
                assert!(p.location().is_some(), "an error without a location: {p}");
            }
        }
    }
    let _ = promptbook::lint(dir);
});
