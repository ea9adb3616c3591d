//! Reload latency of a watched 1,000-template root: from a file save to the
//! new generation being served. Criterion reports the mean; the bench also
//! prints p50/p99 over all its samples, which is what the README quotes.

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use promptbook::{ReloadEvent, WatchedRegistry};

/// 1,000 templates in 20 folders: manifests with a history splice and an
/// include, bodies with few-shot loops, and children of a shared parent.
fn make_root(dir: &Path) {
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
    for i in 0..997 {
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

fn edit(dir: &Path, n: u64) {
    std::fs::write(
        dir.join("edited.prompt.yaml"),
        format!("version: 1.0.{n}\nmessages:\n  - role: user\n    content: edit {n}\n"),
    )
    .unwrap();
}

fn save_to_visible(
    dir: &Path,
    w: &WatchedRegistry,
    rx: &Receiver<ReloadEvent>,
    n: u64,
) -> Duration {
    let before = w.generation();
    let start = Instant::now();
    edit(dir, n);
    loop {
        let event = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("reload event");
        if event.generation > before {
            return start.elapsed();
        }
    }
}

fn reload(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    make_root(dir.path());
    edit(dir.path(), 0);
    let w = WatchedRegistry::watch(dir.path()).unwrap();
    assert_eq!(w.registry().templates().count(), 1_000);
    let rx = w.subscribe();
    let mut n = 0;
    let mut all = Vec::new();
    let mut group = c.benchmark_group("reload");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("1000-templates/save-to-visible", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let d = save_to_visible(dir.path(), &w, &rx, n);
                all.push(d);
                total += d;
            }
            total
        })
    });
    group.bench_function("1000-templates/load", |b| {
        b.iter(|| promptbook::Registry::load(dir.path()).unwrap())
    });
    group.finish();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "reload/1000-templates/save-to-visible: {} saves, p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        all.len(),
        pct(0.50),
        pct(0.99),
        all[all.len() - 1]
    );
}

criterion_group!(benches, reload);
criterion_main!(benches);
