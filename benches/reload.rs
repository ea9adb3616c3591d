//! Reload latency of a watched 1,000-template root: from a file save to the
//! new generation being served. Criterion reports the mean; the bench also
//! prints p50/p99 over all its samples, which is what the README quotes.

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

mod common;
use promptbook::{ReloadEvent, WatchedRegistry};

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
    common::make_root(dir.path(), 1000);
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
