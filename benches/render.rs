//! Rendering a realistic few-shot prompt (~3.3 KB out) through the registry
//! (defaults, validation, role splitting; tokens off and on) against bare
//! minijinja rendering the same source with the same inputs (with and
//! without the fuel limit the registry sets); and input validation alone.
//! `bench/compare` runs Python Jinja2 and Prompty on the same template and
//! inputs and prints the ratios. `examples/render_loop.rs` runs the same
//! renders a fixed number of times, for instruction counts.

use criterion::{Criterion, criterion_group, criterion_main};
use promptbook::{Registry, RenderOptions};

#[path = "common/triage.rs"]
mod triage;
use triage::{WithDefaults, bare_env, inputs};

fn bench(c: &mut Criterion) {
    let registry = Registry::load("templates").unwrap();
    let inputs = inputs();
    let no_tokens = RenderOptions::new().count_tokens(false);
    let out = registry
        .render_with("support/triage", &inputs, &no_tokens)
        .unwrap();
    let bytes: usize = out.messages.iter().map(|m| m.text().len()).sum();
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
            bare.render(minijinja::value::Serde(&WithDefaults::of(&inputs)))
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
                .render(minijinja::value::Serde(&WithDefaults::of(&inputs)))
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
