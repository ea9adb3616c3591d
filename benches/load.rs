//! Loading a 10,000-template root (mixed YAML and Jinja files, with
//! extends and includes): the first load in a fresh process (nothing
//! memoised), a reload, `lint` in a fresh process (what a CI job runs) and
//! after a load, and resident memory per template.
//! `harness = false`: a cold load happens once per process, which criterion
//! cannot repeat; this prints its own figures.

use std::time::Instant;

mod common;

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Lints `dir` in this fresh process and prints the milliseconds it took.
fn cold_lint(dir: &str) {
    let started = Instant::now();
    let diagnostics = promptbook::lint(std::path::Path::new(dir)).unwrap();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    println!("{ms:.1} {}", diagnostics.len());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--cold-lint") {
        cold_lint(&args[i + 1]);
        return;
    }
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

    // The same lint in a process of its own, as `promptbook lint` runs.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--cold-lint")
        .arg(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let cold_lint_ms: f64 = out
        .split_whitespace()
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(f64::NAN);

    println!("templates: {count}");
    println!(
        "cold load (fresh process): {:.1} ms",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "reload (memoised):         {:.1} ms",
        warm.as_secs_f64() * 1e3
    );
    println!("lint (fresh process):      {cold_lint_ms:.1} ms");
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
