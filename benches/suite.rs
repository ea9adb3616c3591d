//! `promptbook test` at scale: 1,000 tests beside 100 templates (each
//! test: a role sequence, `contains`, a regular expression, a token limit;
//! one in ten a snapshot), run offline. The target (issue: prompts
//! reviewed like code) is under 2 s for the whole run; this measures the
//! library's `Suite::run` (criterion) and the whole command in a fresh
//! process (load, read tests, run, print), which is what CI pays.
//! `bench/golden_jinja2.py` runs the same 1,000 renders and golden-file
//! comparisons hand-rolled in Python with Jinja2, what users do today.

use std::path::Path;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use promptbook::Registry;
use promptbook::suite::{Snapshots, Suite};

/// Templates, and tests per template.
const TEMPLATES: usize = 100;
const TESTS_EACH: usize = 10;

/// Writes the root: `t/NNN.prompt.jinja` including a shared partial, and
/// `t/NNN.tests.yaml` beside each.
pub fn make_suite_root(dir: &Path) {
    let write = |rel: String, text: String| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "partials/tone.prompt.jinja".into(),
        "---\nversion: 1.0.0\n---\nBe concise, warm and concrete.\n".into(),
    );
    for i in 0..TEMPLATES {
        write(
            format!("t/p{i:03}.prompt.jinja"),
            format!(
                "---\nversion: 1.0.0\nparameters:\n  ticket: {{type: string, minLength: 1}}\n  \
                 queues: {{type: array, items: {{type: string}}, default: [billing, technical, other]}}\n\
                 ---\nsystem:\nYou are triage assistant number {i}.\n{{% include \"partials/tone\" %}}\n\
                 Classify the ticket into one of: {{{{ queues|join(\", \") }}}}.\n\
                 user:\n{{{{ ticket }}}}\n"
            ),
        );
        let mut tests = String::from("tests:\n");
        for j in 0..TESTS_EACH {
            tests.push_str(&format!(
                "  - name: case {j}\n    inputs: {{ticket: \"Ticket {j}: I was charged twice for order {i}-{j}.\"}}\n    \
                 expect:\n      roles: [system, user]\n      contains: charged twice\n      \
                 matches: \"order \\\\d+-\\\\d+\"\n      not_contains: \"{{{{\"\n      \
                 tokens: {{max: 500}}\n{}",
                if j == 0 { "      snapshot: true\n" } else { "" }
            ));
        }
        write(format!("t/p{i:03}.tests.yaml"), tests);
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    make_suite_root(dir.path());
    let registry = Registry::load(dir.path()).unwrap();
    let suite = Suite::load(&registry);
    assert!(suite.problems().is_empty(), "{:?}", suite.problems());
    assert_eq!(suite.len(), TEMPLATES * TESTS_EACH);
    // The snapshots, written once.
    let report = suite.run(&registry, Snapshots::Update);
    assert!(report.passed());

    // The whole command in fresh processes: what CI pays.
    let exe = env!("CARGO_BIN_EXE_promptbook");
    let mut runs = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let out = std::process::Command::new(exe)
            .args(["test", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        runs.push(started.elapsed().as_secs_f64());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    runs.sort_by(f64::total_cmp);
    eprintln!(
        "`promptbook test` over {} tests, fresh process: median {:.3} s, best {:.3} s",
        suite.len(),
        runs[runs.len() / 2],
        runs[0]
    );

    let mut g = c.benchmark_group("suite");
    g.sample_size(20);
    g.bench_function("run 1,000 tests", |b| {
        b.iter(|| {
            let report = suite.run(&registry, Snapshots::Check);
            assert!(report.passed());
            report
        })
    });
    g.bench_function("read 100 test files", |b| b.iter(|| Suite::load(&registry)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
