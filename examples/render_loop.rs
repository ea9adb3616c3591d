//! Renders the few-shot triage prompt N times in one process: for
//! instruction counts under callgrind (`valgrind --tool=callgrind
//! --toggle-collect='*render_loop::run*'`), where timings are too noisy to
//! compare small changes. `render_loop [registry|validate|bare|bare-fuel|tokens|history] [N]`.
//!
//! `render_loop paired [SECONDS]` times the registry and bare minijinja
//! interleaved instead: short batches of each in turn, the order rotating
//! every round, and prints each one's median time per render. On a shared
//! machine whose speed drifts, both sides see the same drift, so their
//! ratio holds where two benchmarks run one after the other do not.

use promptbook::{Registry, RenderOptions};

#[path = "../benches/common/triage.rs"]
mod triage;
use triage::{WithDefaults, bare_env, inputs};

#[inline(never)]
fn run(n: usize, f: &mut dyn FnMut() -> usize) -> usize {
    (0..n).map(|_| f()).sum()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "registry".into());
    let arg = args.next();
    let registry = Registry::load("templates").expect("the shipped templates load");
    let inputs = inputs();
    let no_tokens = RenderOptions::new().count_tokens(false);
    let env = bare_env();
    let bare = env.get_template("triage").expect("present");
    // The same, with the fuel limit the registry renders under.
    let mut fueled_env = env.clone();
    fueled_env.set_fuel(promptbook::RenderLimits::default().fuel);
    let fueled = fueled_env.get_template("triage").expect("present");
    // The renders compared: each alone (under callgrind), or all paired.
    let mut sides: [Side<'_>; 3] = [
        (
            "registry",
            Box::new(|| {
                let r = registry.render_with("support/triage", &inputs, &no_tokens);
                r.expect("renders").messages.len()
            }),
        ),
        (
            "bare",
            Box::new(|| {
                let ctx = WithDefaults::of(&inputs);
                bare.render(minijinja::value::Serde(&ctx))
                    .expect("renders")
                    .len()
            }),
        ),
        (
            "bare-fuel",
            Box::new(|| {
                let ctx = WithDefaults::of(&inputs);
                fueled
                    .render(minijinja::value::Serde(&ctx))
                    .expect("renders")
                    .len()
            }),
        ),
    ];
    if what == "paired" {
        let seconds: f64 = arg.map_or(20.0, |s| s.parse().expect("seconds"));
        paired(&mut sides, std::time::Duration::from_secs_f64(seconds));
        return;
    }
    let n: usize = arg.map_or(1000, |s| s.parse().expect("a count"));
    if let Some((_, f)) = sides.iter_mut().find(|(name, _)| *name == what) {
        let total = run(n, f);
        println!("{what}: {n} iterations ({total})");
        return;
    }
    let total = match what.as_str() {
        "tokens" => run(n, &mut || {
            let r = registry.render("support/triage", &inputs);
            r.expect("renders").messages.len()
        }),
        "validate" => run(n, &mut || {
            registry.validate("support/triage", &inputs).expect("valid");
            1
        }),
        "history" => {
            // A 10,000-message history, fitted into gpt-4o-mini's window.
            let dir = std::env::temp_dir().join(format!("render-loop-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            std::fs::write(
                dir.join("chat.prompt.yaml"),
                "version: 1.0.0\nparameters:\n  history: {type: messages}\n  q: string\nmessages:\n  - role: system\n    content: You are a helpful assistant.\n  - history: history\n  - role: user\n    content: \"{{ q }}\"\n",
            )
            .expect("writable");
            let chat = Registry::load(&dir).expect("loads");
            let history: Vec<_> = (0..10_000)
                .map(|i| {
                    serde_json::json!({
                        "role": if i % 2 == 0 { "user" } else { "assistant" },
                        "content": format!("turn {i}: alpha deploy the server token budget fn 42"),
                    })
                })
                .collect();
            let inputs = serde_json::json!({"history": history, "q": "And now?"});
            let options = RenderOptions::new().model("gpt-4o-mini");
            chat.render_with("chat", &inputs, &options)
                .expect("renders");
            let total = run(n, &mut || {
                let r = chat.render_with("chat", &inputs, &options);
                r.expect("renders").messages.len()
            });
            let _ = std::fs::remove_dir_all(&dir);
            total
        }
        other => panic!("unknown variant {other}"),
    };
    println!("{what}: {n} iterations ({total})");
}

/// A named render to time.
type Side<'a> = (&'static str, Box<dyn FnMut() -> usize + 'a>);

/// Times the sides interleaved: rounds of one 200-render batch each, the
/// order rotated every round, for about `budget`; prints each side's
/// median nanoseconds per render over the rounds.
fn paired(sides: &mut [Side<'_>], budget: std::time::Duration) {
    const BATCH: usize = 200;
    for (_, f) in sides.iter_mut() {
        run(BATCH * 5, f); // warm caches and the allocator
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let start = std::time::Instant::now();
    let mut round = 0;
    while start.elapsed() < budget || round < 10 {
        for k in 0..sides.len() {
            let i = (round + k) % sides.len();
            let t = std::time::Instant::now();
            std::hint::black_box(run(BATCH, &mut sides[i].1));
            times[i].push(t.elapsed().as_nanos() as f64 / BATCH as f64);
        }
        round += 1;
    }
    for ((name, _), t) in sides.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        println!(
            "{name}: {:.0} ns median over {round} rounds",
            t[t.len() / 2]
        );
    }
}
