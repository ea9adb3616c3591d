//! The generated template root the benchmarks share.
#![allow(dead_code)]

use std::path::Path;

/// `n` templates in 20 folders (plus a partial, a parent and an edited
/// file): manifests with a history splice and an
/// include, bodies with few-shot loops, and children of a shared parent.
pub fn make_root(dir: &Path, n: usize) {
    let write = |rel: String, text: String| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "partials/tone.prompt.jinja".into(),
        "---\nversion: 1.0.0\n---\nBe kind.\n".into(),
    );
    write(
        "base.prompt.jinja".into(),
        "---\nversion: 1.0.0\nparameters:\n  who: {type: string, default: you}\n---\nsystem:\n{% block a %}Base for {{ who }}.{% endblock %}\nuser:\n{% block b %}{% endblock %}\n".into(),
    );
    for i in 0..n.saturating_sub(3) {
        let group = i % 20;
        match i % 3 {
            0 => write(
                format!("g{group}/p{i}.prompt.yaml"),
                format!(
                    "version: 1.{}.0\ndescription: template {i}\nparameters:\n  q: {{type: string, minLength: 1}}\n  n: {{type: integer, default: {i}}}\n  history: {{type: messages, default: []}}\nmessages:\n  - role: system\n    content: |\n      You are assistant {i}.\n      {{% include \"partials/tone@^1\" %}}\n  - history: history\n  - role: user\n    content: \"{{{{ q }}}} ({{{{ n }}}})\"\n",
                    i % 5
                ),
            ),
            1 => write(
                format!("g{group}/p{i}.prompt.jinja"),
                format!(
                    "---\nversion: 2.0.{i}\nparameters:\n  items: {{type: array, items: {{type: string}}, default: [a, b]}}\n  q: string\n---\nsystem:\nTemplate {i}.\n{{% for it in items %}}\nuser:\n{{{{ it }}}}\nassistant:\nok {{{{ loop.index }}}}\n{{% endfor %}}\nuser:\n{{{{ q }}}}\n"
                ),
            ),
            _ => write(
                format!("g{group}/p{i}.prompt.jinja"),
                format!(
                    "---\nversion: 1.0.0\nextends: base@^1\nparameters:\n  text: string\n---\n{{% block b %}}Summarize #{i}: {{{{ text }}}}{{% endblock %}}\n"
                ),
            ),
        }
    }
}
