//! Renders the few-shot triage prompt N times in one process: for
//! instruction counts under callgrind (`valgrind --tool=callgrind
//! --toggle-collect='*render_loop::run*'`), where timings are too noisy to
//! compare small changes. `render_loop [registry|validate|bare|bare-fuel|tokens|history] [N]`.

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
    let n: usize = args.next().map_or(1000, |s| s.parse().expect("a count"));
    let registry = Registry::load("templates").expect("the shipped templates load");
    let inputs = inputs();
    let no_tokens = RenderOptions::new().count_tokens(false);
    let env = bare_env();
    let bare = env.get_template("triage").expect("present");
    // The same, with the fuel limit the registry renders under.
    let mut fueled_env = env.clone();
    fueled_env.set_fuel(promptbook::RenderLimits::default().fuel);
    let fueled = fueled_env.get_template("triage").expect("present");
    let total = match what.as_str() {
        "registry" => run(n, &mut || {
            let r = registry.render_with("support/triage", &inputs, &no_tokens);
            r.expect("renders").messages.len()
        }),
        "tokens" => run(n, &mut || {
            let r = registry.render("support/triage", &inputs);
            r.expect("renders").messages.len()
        }),
        "validate" => run(n, &mut || {
            registry.validate("support/triage", &inputs).expect("valid");
            1
        }),
        "bare" => run(n, &mut || {
            let ctx = WithDefaults::of(&inputs);
            bare.render(minijinja::value::Serde(&ctx))
                .expect("renders")
                .len()
        }),
        "bare-fuel" => run(n, &mut || {
            let ctx = WithDefaults::of(&inputs);
            fueled
                .render(minijinja::value::Serde(&ctx))
                .expect("renders")
                .len()
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
