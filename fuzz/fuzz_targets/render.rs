//! A Jinja body and a JSON input document from the fuzzer: rendering gives
//! messages or an error, never a panic or a hang, and no rendered message
//! carries a role marker.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn root() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (body, inputs) = text.split_once("\u{1}").unwrap_or((text, "{}"));
    let Ok(inputs) = serde_json::from_str::<serde_json::Value>(inputs) else {
        return;
    };
    let dir = root();
    let file = format!(
        "---\nversion: 1.0.0\nparameters:\n  x: {{default: ''}}\n  history: {{type: messages, default: []}}\n---\n{body}"
    );
    std::fs::write(dir.join("t.prompt.jinja"), file).unwrap();
    let Ok(registry) = promptbook::Registry::load(dir) else {
        return;
    };
    if let Ok(rendered) = registry.render("t", &inputs) {
        for m in &rendered.messages {
            assert!(!m.content.contains(['\u{FDD0}', '\u{FDD1}']), "{m:?}");
        }
    }
});
