//! Rich requests: rendering a prompt with a 5 MB inline image (target:
//! under 5 ms; the image's bytes are copied once, into the render's
//! inputs), and cache-aware truncation against drop-oldest over a
//! simulated 300-turn conversation (the share of requests whose prefix
//! through the conversation breakpoint is byte-identical to the previous
//! request's, printed, and the render time of each).

use criterion::{Criterion, criterion_group, criterion_main};
use promptbook::{Registry, RenderOptions, Strategy};
use serde_json::{Value, json};

/// A PNG of `w` x `h` pixels as far as its header says, padded to about
/// `bytes` bytes, as a data URL.
fn png_data_url(w: u32, h: u32, bytes: usize) -> String {
    use base64::Engine as _;
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend(w.to_be_bytes());
    png.extend(h.to_be_bytes());
    png.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
    let mut x: u32 = 0x9E37_79B9;
    png.extend((png.len()..bytes).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

const CHAT: &str = "---\nversion: 1.0.0\nparameters:\n  history: {type: messages, default: []}\n  question: string\ncontext: {max_tokens: 3000, reserve_output: 500}\n---\nsystem:\nYou are the support assistant of a cloud provider. Answer briefly.\n{{ cache_breakpoint(\"1h\") }}\n{{ history }}\n{{ cache_breakpoint() }}\nuser:\n{{ question }}\n";

/// The history after `turns` turns of the simulated conversation.
fn history(turns: usize) -> Vec<Value> {
    let mut h = Vec::new();
    for turn in 0..turns {
        let question = format!(
            "Question {turn}: {}",
            "why is it slow ".repeat(3 + turn % 7)
        );
        h.push(json!({"role": "user", "content": question}));
        h.push(json!({"role": "assistant",
            "content": format!("Answer {turn}: {}", "check the dashboard ".repeat(2 + turn % 5))}));
    }
    h
}

/// The share of consecutive requests whose prefix through the
/// conversation breakpoint is unchanged, over `turns` turns.
fn hit_share(registry: &Registry, strategy: Strategy, turns: usize) -> f64 {
    let options = RenderOptions::new().model("gpt-4o").strategy(strategy);
    let (mut hits, mut previous) = (0, None::<Vec<Value>>);
    for turn in 0..turns {
        let inputs = json!({"history": history(turn), "question": format!("Question {turn}")});
        let r = registry.render_with("chat", &inputs, &options).unwrap();
        let messages: Vec<Value> = r
            .messages
            .iter()
            .map(|m| serde_json::to_value(m).unwrap())
            .collect();
        if let Some(prev) = &previous
            && messages.len() >= prev.len()
            && messages[..prev.len()] == prev[..]
        {
            hits += 1;
        }
        previous = Some(messages[..r.cache_breakpoints[1].messages].to_vec());
    }
    f64::from(hits) / (turns - 1) as f64
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("see.prompt.jinja"),
        "---\nversion: 1.0.0\nparameters:\n  photo: {type: image}\n  question: string\n---\nsystem:\nDescribe pictures.\nuser:\n{{ question }}\n{{ photo }}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("chat.prompt.jinja"), CHAT).unwrap();
    let registry = Registry::load(dir.path()).unwrap();

    let image = json!({"photo": png_data_url(2048, 2048, 5 << 20), "question": "What is this?"});
    let r = registry.render("see", &image).unwrap();
    eprintln!(
        "5 MB image: {} bytes of base64, {} tokens for the image",
        image["photo"].as_str().unwrap().len(),
        r.tokens.media[0].tokens
    );
    let mut g = c.benchmark_group("rich");
    g.bench_function("render, 5 MB inline image", |b| {
        b.iter(|| registry.render("see", &image).unwrap())
    });
    let no_tokens = RenderOptions::new().count_tokens(false);
    g.bench_function("render, 5 MB inline image (no tokens)", |b| {
        b.iter(|| registry.render_with("see", &image, &no_tokens).unwrap())
    });

    const TURNS: usize = 300;
    let oldest = hit_share(&registry, Strategy::DropOldest, TURNS);
    let aware = hit_share(&registry, Strategy::CACHE_AWARE, TURNS);
    eprintln!(
        "conversation prefix hits over {TURNS} turns (budget 2500 tokens): drop-oldest {:.1}%, cache-aware (20%) {:.1}%",
        oldest * 100.0,
        aware * 100.0
    );
    let long = json!({"history": history(TURNS), "question": "And now?"});
    for (name, strategy) in [
        ("drop-oldest", Strategy::DropOldest),
        ("cache-aware", Strategy::CACHE_AWARE),
    ] {
        let options = RenderOptions::new().model("gpt-4o").strategy(strategy);
        g.bench_function(format!("render 300 turns into 2500 tokens, {name}"), |b| {
            b.iter(|| registry.render_with("chat", &long, &options).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
