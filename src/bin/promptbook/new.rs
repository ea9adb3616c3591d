//! `promptbook new NAME`: a starter template and its test file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

/// Which file form `new` writes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum Form {
    /// `NAME.prompt.jinja`: front matter and a Jinja body.
    Jinja,
    /// `NAME.prompt.yaml`: a YAML manifest.
    Yaml,
}

pub(crate) fn new(dir: &Path, name: &str, form: Form) -> Result<ExitCode> {
    if let Err(e) = promptbook::Reference::parse(name) {
        bail!("`{name}` is not a template name: {e}");
    }
    if name.contains('@') {
        bail!("give the name without a version: `new` writes version 0.1.0");
    }
    // Editors find the schema through this line: `schemas/` beside the
    // root, where the shipped layout keeps it (`promptbook schema` writes
    // it).
    let depth = name.matches('/').count() + 1;
    let schema_rel = format!("{}schemas/template.schema.json", "../".repeat(depth));
    let schema_file = dir.join("..").join("schemas/template.schema.json");
    let schema_line = format!("# yaml-language-server: $schema={schema_rel}");
    let (file_name, text) = match form {
        Form::Jinja => (
            format!("{name}.prompt.jinja"),
            format!(
                "---\n{schema_line}\nversion: 0.1.0\ndescription: What this prompt is for.\n\
                 parameters:\n  question:\n    type: string\n    description: The user's question.\n\
                 ---\nsystem:\nYou are a helpful assistant. Answer in one paragraph.\n\
                 user:\n{{{{ question }}}}\n"
            ),
        ),
        Form::Yaml => (
            format!("{name}.prompt.yaml"),
            format!(
                "{schema_line}\nversion: 0.1.0\ndescription: What this prompt is for.\n\
                 parameters:\n  question:\n    type: string\n    description: The user's question.\n\
                 messages:\n  - role: system\n    content: You are a helpful assistant. Answer in one paragraph.\n\
                 \x20 - role: user\n    content: \"{{{{ question }}}}\"\n"
            ),
        ),
    };
    let template = dir.join(&file_name);
    let tests = dir.join(format!("{name}{}", promptbook::suite::TESTS_SUFFIX));
    // A new name, not a new version of one that exists (that is a copy of
    // its file with a new version, which `new` cannot know).
    if let Ok(registry) = promptbook::Registry::load_with(dir, &promptbook::LoadOptions::isolate())
    {
        let versions: Vec<String> = registry
            .versions(name)
            .map(|t| t.version().to_string())
            .collect();
        if !versions.is_empty() {
            bail!(
                "template `{name}` exists (versions {}); `new` starts new templates: for a new \
                 version, copy its latest file to `{name}@VERSION.prompt.jinja` and edit it",
                versions.join(", ")
            );
        }
    }
    for path in [&template, &tests] {
        if std::fs::symlink_metadata(path).is_ok() {
            bail!("{} exists; `new` never overwrites", path.display());
        }
    }
    let test_text = "# Tests of the template beside this file; run `promptbook test`.\n\
         tests:\n  - name: answers the question\n    inputs:\n      question: How do I reset my password?\n\
         \x20   expect:\n      roles: [system, user]\n      contains: reset my password\n\
         \x20     tokens: {max: 200}\n  - name: the question is required\n    inputs: {}\n\
         \x20   expect:\n      error: {kind: invalid_input, parameter: question}\n";
    if let Some(parent) = template.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the folder {}", parent.display()))?;
        // Inside the root, not through a link that leads out of it.
        let (root, at) = (dir.canonicalize()?, parent.canonicalize()?);
        if !at.starts_with(&root) {
            bail!(
                "{} leads outside {} (a link): `new` writes inside the root only",
                parent.display(),
                dir.display()
            );
        }
    }
    crate::files::write_new_file(&template, text.as_bytes(), false)?;
    if let Err(e) = crate::files::write_new_file(&tests, test_text.as_bytes(), false) {
        let _ = std::fs::remove_file(&template);
        return Err(e);
    }
    eprintln!("wrote {} and {}", template.display(), tests.display());
    if std::fs::metadata(&schema_file).is_err() {
        eprintln!(
            "note: its `$schema` line points at {}; write it with `promptbook schema > {}` so \
             editors check the file as you type",
            schema_file.display(),
            schema_file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
