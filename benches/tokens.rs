//! Token counting throughput and history fitting.
//!
//! `count`: an 8 MiB mix of code, prose, YAML, CJK and emoji (this
//! repository's own text files, repeated), counted by promptbook
//! (`bpe-openai`) and by `tiktoken-rs` in the same run. The corpus is written
//! to `target/bench/corpus-8mib.txt` so that `benches/compare_tiktoken.py`
//! can time OpenAI's Python tiktoken on the very same bytes. `count-stdlib`:
//! the same on 8 MiB that does not repeat (Python's standard library), when
//! the script wrote `target/bench/stdlib-8mib.txt`.
//!
//! `fit`: a rendered prompt with a 10,000-message history fitted into a
//! 100,000-token budget, counts already cached (the steady state of a chat
//! that grows by one message per turn).

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use promptbook::tokens::Encoding;
use promptbook::{Registry, RenderOptions, Strategy};
use serde_json::json;

const CORPUS_BYTES: usize = 8 << 20;

fn text_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            text_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rs" | "md" | "yaml" | "jinja" | "json" | "toml" | "py")
        ) {
            out.push(path);
        }
    }
}

/// The same 8 MiB every run: sorted repository text files, repeated.
fn corpus() -> String {
    let mut files = Vec::new();
    for dir in ["src", "templates", "tests", "benches"] {
        text_files(Path::new(dir), &mut files);
    }
    files.push(PathBuf::from("README.md"));
    let unit: String = files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect::<Vec<_>>()
        .join("\n");
    let mut text = String::with_capacity(CORPUS_BYTES + unit.len());
    while text.len() < CORPUS_BYTES {
        text.push_str(&unit);
    }
    let mut cut = CORPUS_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    let path = Path::new("target/bench/corpus-8mib.txt");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, &text).unwrap();
    text
}

fn count_corpus(c: &mut Criterion, group_name: &str, text: &str) {
    let mut group = c.benchmark_group(group_name);
    group.sample_size(10);
    group.throughput(Throughput::Bytes(text.len() as u64));
    // Load the tables outside the timing.
    let _ = Encoding::O200kBase.count("warm up");
    let _ = Encoding::Cl100kBase.count("warm up");
    let tk_o200k = tiktoken_rs::o200k_base_singleton();
    let tk_cl100k = tiktoken_rs::cl100k_base_singleton();
    group.bench_function("promptbook/o200k_base", |b| {
        b.iter(|| Encoding::O200kBase.count(black_box(text)))
    });
    group.bench_function("tiktoken-rs/o200k_base", |b| {
        b.iter(|| tk_o200k.encode_ordinary(black_box(text)).len())
    });
    group.bench_function("promptbook/cl100k_base", |b| {
        b.iter(|| Encoding::Cl100kBase.count(black_box(text)))
    });
    group.bench_function("tiktoken-rs/cl100k_base", |b| {
        b.iter(|| tk_cl100k.encode_ordinary(black_box(text)).len())
    });
    group.finish();
}

fn count(c: &mut Criterion) {
    count_corpus(c, "count", &corpus());
    // A second, non-repeating corpus when benches/compare_tiktoken.py made
    // one (8 MiB of the running Python's standard library).
    if let Ok(text) = std::fs::read_to_string("target/bench/stdlib-8mib.txt") {
        count_corpus(c, "count-stdlib", &text);
    }
}

fn fit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("chat.prompt.yaml"),
        "version: 1.0.0\nparameters:\n  history: {type: messages}\n  q: string\nmessages:\n  - role: system\n    content: You are a helpful assistant.\n  - history: history\n  - role: user\n    content: \"{{ q }}\"\n",
    )
    .unwrap();
    let registry = Registry::load(dir.path()).unwrap();
    // 10,000 turns of 20-60 words each: about 500k tokens in all.
    let words = [
        "alpha", "deploy", "the", "server", "token", "budget", "请", "🚀", "fn", "42",
    ];
    let history: Vec<_> = (0..10_000)
        .map(|i| {
            let n = 20 + (i * 7) % 41;
            let content: Vec<&str> = (0..n).map(|j| words[(i + j * 3) % words.len()]).collect();
            json!({
                "role": if i % 2 == 0 { "user" } else { "assistant" },
                "content": format!("turn {i}: {}", content.join(" ")),
            })
        })
        .collect();
    let inputs = json!({"history": history, "q": "And now?"});
    let rendered = registry.render("chat", &inputs).unwrap();
    assert!(rendered.tokens.total > 200_000);

    let counter = Encoding::O200kBase;
    let mut group = c.benchmark_group("fit");
    group.bench_function("10k-history-into-100k-budget/cached", |b| {
        b.iter_batched(
            || rendered.clone(),
            |mut r| {
                r.recount(&counter);
                let report = r.fit(100_000, Strategy::DropOldest).unwrap();
                black_box(report);
                r // dropped outside the timing
            },
            BatchSize::LargeInput,
        )
    });
    // The two halves of the above, to see where the time goes.
    group.bench_function("10k-history/recount-cached", |b| {
        b.iter_batched(
            || rendered.clone(),
            |mut r| {
                r.recount(&counter);
                r
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("10k-history/drop-oldest", |b| {
        b.iter_batched(
            || rendered.clone(),
            |mut r| {
                black_box(r.fit(100_000, Strategy::DropOldest).unwrap());
                r
            },
            BatchSize::LargeInput,
        )
    });
    // End to end through `render`: serialising and validating the 10,000
    // history messages, rendering, splicing, counting (cached) and fitting
    // the result into gpt-4o-mini's window.
    let for_model = RenderOptions::new().model("gpt-4o-mini");
    let fitted = registry.render_with("chat", &inputs, &for_model).unwrap();
    assert!(fitted.truncation.is_some());
    group.bench_function("10k-history/render-end-to-end", |b| {
        b.iter(|| registry.render_with("chat", &inputs, &for_model).unwrap())
    });
    group.finish();
}

criterion_group!(benches, count, fit);
criterion_main!(benches);
