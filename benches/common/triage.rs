//! The few-shot triage prompt's inputs, and a bare minijinja environment
//! rendering the same source: shared by `benches/render.rs` and
//! `examples/render_loop.rs`.

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
pub struct WithDefaults<'a> {
    #[serde(flatten)]
    pub inputs: &'a Inputs,
    pub queues: [&'static str; 4],
}

impl<'a> WithDefaults<'a> {
    /// `inputs` with the `queues` default the template declares.
    pub fn of(inputs: &'a Inputs) -> WithDefaults<'a> {
        WithDefaults {
            inputs,
            queues: ["billing", "technical", "account", "other"],
        }
    }
}

/// The same template and partial, rendered by a bare minijinja environment
/// configured as the registry's (trim and lstrip blocks, no escaping).
pub fn bare_env() -> minijinja::Environment<'static> {
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
