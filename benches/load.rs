//! Loading a 10,000-template root (mixed YAML and Jinja files, with
//! extends and includes): the first load in a fresh process (nothing
//! memoised), a reload, `lint`, and resident memory per template.
//! `harness = false`: a cold load happens once per process, which criterion
//! cannot repeat; this prints its own figures.

use std::time::Instant;

mod common;

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() {
    let n = std::env::var("PROMPTBOOK_BENCH_TEMPLATES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    common::make_root(dir.path(), n);
    let before = rss_bytes();

    let started = Instant::now();
    let registry = promptbook::Registry::load(dir.path()).unwrap();
    let cold = started.elapsed();
    let after = rss_bytes();
    let count = registry.templates().count();

    let started = Instant::now();
    let again = promptbook::Registry::load(dir.path()).unwrap();
    let warm = started.elapsed();
    drop(again);

    let started = Instant::now();
    let diagnostics = promptbook::lint(dir.path()).unwrap();
    let lint = started.elapsed();

    println!("templates: {count}");
    println!(
        "cold load (fresh process): {:.1} ms",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "reload (memoised):         {:.1} ms",
        warm.as_secs_f64() * 1e3
    );
    println!(
        "lint (memoised):           {:.1} ms ({} findings)",
        lint.as_secs_f64() * 1e3,
        diagnostics.len()
    );
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "resident memory per template: {:.1} KiB (registry and memos)",
            (a.saturating_sub(b)) as f64 / count as f64 / 1024.0
        );
    }
}
