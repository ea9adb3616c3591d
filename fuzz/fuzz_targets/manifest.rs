//! Template files from the fuzzer, as text: every form (a YAML manifest, a
//! front-matter Jinja file, a `.prompty` file) and a second file the first
//! may extend or include, loaded in memory both strictly and isolating.
//! They load, or give errors that say where; every template that loads
//! renders or gives an error; never a panic.
//!
//! The input is UTF-8 text (libFuzzer's bytes are taken as `&str`, so runs
//! reach the YAML, front-matter and Jinja parsers instead of stopping at
//! the UTF-8 check): its first character picks the forms, and a U+0001
//! splits the first file from the second. `fuzz/seed` writes a seed corpus
//! in that encoding into `fuzz/corpus/manifest/` (not committed) from the
//! shipped templates, the snapshot cases and the Prompty test files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptbook::{LoadOptions, Registry};

const FORMS: [&str; 3] = ["t.prompt.yaml", "t.prompt.jinja", "t.prompty"];
const SECOND: [&str; 3] = [
    "partials/p.prompt.yaml",
    "partials/p.prompt.jinja",
    "base.prompt.jinja",
];

fuzz_target!(|text: &str| {
    let mut chars = text.chars();
    let Some(pick) = chars.next() else {
        return;
    };
    let pick = pick as usize;
    let rest = chars.as_str();
    let (first, second) = rest.split_once('\u{1}').unwrap_or((rest, ""));
    let mut files = vec![(FORMS[pick % 3].to_owned(), first.to_owned())];
    if !second.is_empty() {
        files.push((SECOND[(pick / 3) % 3].to_owned(), second.to_owned()));
    }
    match Registry::from_files(files.clone()) {
        Ok(registry) => render_all(&registry),
        Err(e) => {
            for p in e.problems() {
                assert!(p.location().is_some(), "an error without a location: {p}");
            }
        }
    }
    if let Ok(registry) = Registry::from_files_with(files, &LoadOptions::isolate()) {
        render_all(&registry);
    }
});

fn render_all(registry: &Registry) {
    for t in registry.templates() {
        let _ = registry.render(&t.id(), &serde_json::json!({}));
    }
}
