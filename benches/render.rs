//! Rendering a realistic few-shot prompt (~3.3 KB out) through the registry
//! (defaults, validation, role splitting; tokens off and on) against bare
//! minijinja rendering the same source with the same inputs (with and
//! without the fuel limit the registry sets); and input validation alone.
//! `bench/compare` runs Python Jinja2 and Prompty on the same template and
//! inputs and prints the ratios. `examples/render_loop.rs` runs the same
//! renders a fixed number of times, for instruction counts.

use criterion::{Criterion, criterion_group, criterion_main};
use promptbook::{Registry, RenderOptions};
use serde::Serialize;

#[derive(Serialize, Clone)]
pub struct Answer {
    queue: &'static str,
    priority: &'static str,
}

#[derive(Serialize, Clone)]
pub struct Example {
    ticket: String,
    answer: Answer,
}

#[derive(Serialize, Clone)]
pub struct Inputs {
    ticket: String,
    examples: Vec<Example>,
}

/// Eight few-shot examples: the rendered prompt is about 3.3 KB.
pub fn inputs() -> Inputs {
    let queues = ["billing", "technical", "account", "other"];
    let priorities = ["low", "normal", "high", "urgent"];
    Inputs {
        ticket: "Since this morning every invoice PDF I download from the billing page is blank, \
                 and our accountant needs last quarter's invoices by Friday."
            .into(),
        examples: (0..8)
            .map(|i| Example {
                ticket: format!(
                    "Example ticket {i}: the customer writes a few sentences about a problem with \
                     their cloud account, mentions the product area involved and how urgent it \
                     feels to them, and asks what happens next."
                ),
                answer: Answer {
                    queue: queues[i % 4],
                    priority: priorities[(i / 2) % 4],
                },
            })
            .collect(),
    }
}

/// The inputs plus the default the registry fills in.
#[derive(Serialize)]
struct WithDefaults<'a> {
    #[serde(flatten)]
    inputs: &'a Inputs,
    queues: [&'static str; 4],
}

/// The same template and partial, rendered by a bare minijinja environment
/// configured as the registry's (trim and lstrip blocks, no escaping).
fn bare_env() -> minijinja::Environment<'static> {
    let body = |path: &str| {
        let text = std::fs::read_to_string(path).unwrap();
        text.splitn(3, "---\n").nth(2).unwrap().to_owned()
    };
    let triage = body("templates/support/triage@2.1.0.prompt.jinja");
    let tone = body("templates/partials/tone@1.0.0.prompt.jinja");
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .unwrap(),
    );
    env.add_template_owned("triage", triage).unwrap();
    env.add_template_owned("partials/tone@^1", tone).unwrap();
    env
}

fn bench(c: &mut Criterion) {
    let registry = Registry::load("templates").unwrap();
    let inputs = inputs();
    let no_tokens = RenderOptions::new().count_tokens(false);
    let out = registry
        .render_with("support/triage", &inputs, &no_tokens)
        .unwrap();
    let bytes: usize = out.messages.iter().map(|m| m.content.len()).sum();
    eprintln!(
        "rendered {} messages, {bytes} bytes of content",
        out.messages.len()
    );

    let env = bare_env();
    let bare = env.get_template("triage").unwrap();
    // The defaults the registry applies, given explicitly to the bare render.
    let mut full = serde_json::to_value(&inputs).unwrap();
    full["queues"] = serde_json::json!(["billing", "technical", "account", "other"]);
    let prebuilt = minijinja::Value::from(minijinja::value::Serde(&full));

    // Settle the heap and caches before anything is timed: the registry's
    // load just made and freed a great deal, and without this whichever
    // function runs first measures that.
    let settle = std::time::Instant::now();
    while settle.elapsed() < std::time::Duration::from_secs(2) {
        registry
            .render_with("support/triage", &inputs, &no_tokens)
            .unwrap();
        bare.render(&prebuilt).unwrap();
    }

    let mut g = c.benchmark_group("render");
    g.bench_function("promptbook (no tokens)", |b| {
        b.iter(|| {
            registry
                .render_with("support/triage", &inputs, &no_tokens)
                .unwrap()
        })
    });
    g.bench_function("promptbook (with tokens)", |b| {
        b.iter(|| registry.render("support/triage", &inputs).unwrap())
    });
    g.bench_function("minijinja (serde struct)", |b| {
        b.iter(|| {
            bare.render(minijinja::value::Serde(&WithDefaults {
                inputs: &inputs,
                queues: ["billing", "technical", "account", "other"],
            }))
            .unwrap()
        })
    });
    g.bench_function("minijinja (prebuilt value)", |b| {
        b.iter(|| bare.render(&prebuilt).unwrap())
    });
    // Bare minijinja under the fuel limit the registry renders with: what
    // that hardening costs by itself.
    let mut fueled_env = env.clone();
    fueled_env.set_fuel(promptbook::RenderLimits::default().fuel);
    let fueled = fueled_env.get_template("triage").unwrap();
    g.bench_function("minijinja (serde struct, fuel)", |b| {
        b.iter(|| {
            fueled
                .render(minijinja::value::Serde(&WithDefaults {
                    inputs: &inputs,
                    queues: ["billing", "technical", "account", "other"],
                }))
                .unwrap()
        })
    });

    // The same prompt as a Prompty file: what `bench/compare` times
    // Prompty's own `prepare()` on.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        "benches/data/triage.prompty",
        dir.path().join("triage.prompty"),
    )
    .unwrap();
    let prompty = Registry::load(dir.path()).unwrap();
    let out = prompty.render_with("triage", &inputs, &no_tokens).unwrap();
    assert_eq!(out.messages.len(), 18);
    g.bench_function("promptbook .prompty (no tokens)", |b| {
        b.iter(|| prompty.render_with("triage", &inputs, &no_tokens).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("validate");
    g.bench_function("support/triage", |b| {
        b.iter(|| registry.validate("support/triage", &inputs).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
