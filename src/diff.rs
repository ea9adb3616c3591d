//! What changes for the model between two renders: messages matched by
//! role and text (a Myers diff over whole messages), a line diff inside
//! each changed message, and each message's token delta and the total's,
//! as `promptbook diff` prints it.

use std::fmt;

use serde::Serialize;

use crate::message::{Message, Role};
use crate::render::Rendered;

/// How one message fares between two renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MessageChange {
    /// Same role and text.
    Unchanged,
    /// Same place, different text (or role).
    Changed,
    /// Only in the second render.
    Added,
    /// Only in the first render.
    Removed,
}

/// One message of a [`RenderDiff`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MessageDiff {
    /// What happened to it.
    pub change: MessageChange,
    /// Its role in the first render (absent when added).
    pub old_role: Option<Role>,
    /// Its role in the second render (absent when removed).
    pub new_role: Option<Role>,
    /// Its index in the first render.
    pub old_index: Option<usize>,
    /// Its index in the second render.
    pub new_index: Option<usize>,
    /// Its tokens in the first render (0 when added).
    pub old_tokens: usize,
    /// Its tokens in the second render (0 when removed).
    pub new_tokens: usize,
    /// For a changed message: a unified line diff of its text; for an
    /// added or removed one: its text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl MessageDiff {
    /// `new_tokens - old_tokens`.
    pub fn delta(&self) -> i64 {
        self.new_tokens as i64 - self.old_tokens as i64
    }
}

/// Two renders compared, message by message, and their `model:` blocks.
/// `Display` prints it as `promptbook diff` does; it serialises as
/// `--json` prints it: `{"old": {"template", "tokens", "encoding"}, "new":
/// {...}, "messages": [{"change", "old_role", "new_role", "old_index",
/// "new_index", "old_tokens", "new_tokens", "diff"}], "model": [{"field",
/// "old", "new"}], "delta", "differs"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RenderDiff {
    /// The first render's side.
    pub old: Side,
    /// The second render's side.
    pub new: Side,
    /// Every message of both, in order.
    pub messages: Vec<MessageDiff>,
    /// The `model:` settings that differ (provider, name, each request
    /// parameter, fallbacks, connection), in field order; empty when none.
    pub model: Vec<ModelChange>,
    /// The total's change in tokens.
    pub delta: i64,
    /// Whether any message or model setting differs.
    pub differs: bool,
}

impl RenderDiff {
    /// This diff with `model` as its model changes (and `differs` to
    /// match): for callers that rendered both sides for one model, to
    /// compare like with like, and compare the templates' own `model:`
    /// blocks apart ([`model_changes`]).
    pub fn with_model_changes(mut self, model: Vec<ModelChange>) -> RenderDiff {
        self.model = model;
        self.differs = !self.model.is_empty()
            || self
                .messages
                .iter()
                .any(|m| m.change != MessageChange::Unchanged);
        self
    }
}

/// One `model:` setting that differs between two renders.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ModelChange {
    /// Its path: `name`, `provider`, `parameters.temperature`, ...
    pub field: String,
    /// Its value in the first (absent when unset there; JSON `null` is a
    /// value set to null).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<serde_json::Value>,
    /// Its value in the second (absent when unset there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<serde_json::Value>,
}

/// The settings that differ between two `model:` blocks, by path: each
/// request parameter on its own, every other field whole.
pub fn model_changes(
    old: Option<&crate::template::ModelConfig>,
    new: Option<&crate::template::ModelConfig>,
) -> Vec<ModelChange> {
    let fields = |m: Option<&crate::template::ModelConfig>| {
        let mut out: Vec<(String, serde_json::Value)> = Vec::new();
        let Some(serde_json::Value::Object(map)) = m.and_then(|m| serde_json::to_value(m).ok())
        else {
            return out;
        };
        for (k, v) in map {
            match v {
                serde_json::Value::Object(params) if k == "parameters" => {
                    out.extend(
                        params
                            .into_iter()
                            .map(|(p, v)| (format!("parameters.{p}"), v)),
                    );
                }
                v => out.push((k, v)),
            }
        }
        out
    };
    let (a, b) = (fields(old), fields(new));
    let mut keys: Vec<&String> = a.iter().map(|(k, _)| k).collect();
    for (k, _) in &b {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let get = |side: &[(String, serde_json::Value)], k: &str| {
        side.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone())
    };
    keys.into_iter()
        .filter_map(|k| {
            let (o, n) = (get(&a, k), get(&b, k));
            (o != n).then(|| ModelChange {
                field: k.clone(),
                old: o,
                new: n,
            })
        })
        .collect()
}

/// One render of a [`RenderDiff`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Side {
    /// `NAME@VERSION`.
    pub template: String,
    /// The prompt's tokens (with the chat format's overhead).
    pub tokens: usize,
    /// The counter (`o200k_base`).
    pub encoding: String,
    /// Whether the counts estimate a tokenizer that is not public.
    pub approximate: bool,
}

/// How long [`diff`] looks for the smallest diff before it settles for a
/// correct but coarser one (Myers's algorithm with a deadline): a render of
/// tens of thousands of changed lines would otherwise take minutes.
const DIFF_DEADLINE: std::time::Duration = std::time::Duration::from_millis(500);

/// Compares two renders. It takes at most about half a second (then the
/// line diffs are coarser, never wrong).
pub fn diff(old: &Rendered, new: &Rendered) -> RenderDiff {
    let deadline = std::time::Instant::now() + DIFF_DEADLINE;
    // Messages are equal when everything the model sees of them is.
    let key = |m: &Message| serde_json::to_string(m).unwrap_or_default();
    let old_keys: Vec<_> = old.messages.iter().map(key).collect();
    let new_keys: Vec<_> = new.messages.iter().map(key).collect();
    let tokens = |r: &Rendered, i: usize| r.tokens.messages.get(i).copied().unwrap_or(0);
    let mut messages = Vec::new();
    let entry = |change, o: Option<usize>, n: Option<usize>| {
        let om = o.map(|i| &old.messages[i]);
        let nm = n.map(|i| &new.messages[i]);
        let diff = match (change, om, nm) {
            (MessageChange::Changed, Some(a), Some(b)) => {
                // What differs besides the text, then the text by line.
                let mut out = String::new();
                for (field, x, y) in [
                    ("name", &a.name, &b.name),
                    ("tool_call_id", &a.tool_call_id, &b.tool_call_id),
                ] {
                    if x != y {
                        let show = |v: &Option<String>| {
                            v.as_ref().map_or("(none)".to_owned(), |s| format!("{s:?}"))
                        };
                        out.push_str(&format!("{field}: {} -> {}\n", show(x), show(y)));
                    }
                }
                out.push_str(
                    &similar::TextDiff::configure()
                        .deadline(deadline)
                        .diff_lines(
                            &visible(&a.content.display()),
                            &visible(&b.content.display()),
                        )
                        .unified_diff()
                        .context_radius(3)
                        .to_string(),
                );
                Some(out)
            }
            (MessageChange::Added, _, Some(m)) | (MessageChange::Removed, Some(m), _) => {
                Some(m.content.display().into_owned())
            }
            _ => None,
        };
        MessageDiff {
            change,
            old_role: om.map(|m| m.role),
            new_role: nm.map(|m| m.role),
            old_index: o,
            new_index: n,
            old_tokens: o.map_or(0, |i| tokens(old, i)),
            new_tokens: n.map_or(0, |i| tokens(new, i)),
            diff,
        }
    };
    for op in similar::capture_diff_slices_deadline(
        similar::Algorithm::Myers,
        &old_keys,
        &new_keys,
        Some(deadline),
    ) {
        match op {
            similar::DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => {
                for k in 0..len {
                    messages.push(entry(
                        MessageChange::Unchanged,
                        Some(old_index + k),
                        Some(new_index + k),
                    ));
                }
            }
            similar::DiffOp::Delete {
                old_index, old_len, ..
            } => {
                for k in 0..old_len {
                    messages.push(entry(MessageChange::Removed, Some(old_index + k), None));
                }
            }
            similar::DiffOp::Insert {
                new_index, new_len, ..
            } => {
                for k in 0..new_len {
                    messages.push(entry(MessageChange::Added, None, Some(new_index + k)));
                }
            }
            similar::DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                for k in 0..old_len.max(new_len) {
                    let (o, n) = (
                        (k < old_len).then_some(old_index + k),
                        (k < new_len).then_some(new_index + k),
                    );
                    let change = match (o, n) {
                        (Some(_), Some(_)) => MessageChange::Changed,
                        (Some(_), None) => MessageChange::Removed,
                        _ => MessageChange::Added,
                    };
                    messages.push(entry(change, o, n));
                }
            }
        }
    }
    let model = model_changes(old.model.as_deref(), new.model.as_deref());
    let side = |r: &Rendered| Side {
        template: r.template.clone(),
        tokens: r.tokens.total,
        encoding: r.tokens.encoding.clone(),
        approximate: r.tokens.approximate,
    };
    RenderDiff {
        delta: new.tokens.total as i64 - old.tokens.total as i64,
        old: side(old),
        new: side(new),
        messages,
        model: Vec::new(),
        differs: false,
    }
    .with_model_changes(model)
}

/// `text` for a line diff: ending in a newline, with carriage returns
/// shown as `\r` (a line that differs only in its ending would otherwise
/// print as two identical lines).
fn visible(text: &str) -> String {
    let mut t = text.replace('\r', "\\r");
    if !t.ends_with('\n') {
        t.push('\n');
    }
    t
}

fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

impl fmt::Display for RenderDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let approx = |s: &Side| if s.approximate { "~" } else { "" };
        writeln!(
            f,
            "--- {} ({}{} tokens, {})",
            self.old.template,
            approx(&self.old),
            self.old.tokens,
            self.old.encoding
        )?;
        writeln!(
            f,
            "+++ {} ({}{} tokens, {})",
            self.new.template,
            approx(&self.new),
            self.new.tokens,
            self.new.encoding
        )?;
        for m in &self.messages {
            let role = m
                .new_role
                .or(m.old_role)
                .map(|r| r.to_string())
                .unwrap_or_default();
            let at = match (m.old_index, m.new_index) {
                (Some(o), Some(n)) if o == n => format!("#{o}"),
                (Some(o), Some(n)) => format!("#{o} -> #{n}"),
                (Some(o), None) => format!("#{o}"),
                (None, Some(n)) => format!("#{n}"),
                (None, None) => String::new(),
            };
            match m.change {
                MessageChange::Unchanged => {
                    writeln!(f, "  [{role}] {at}: unchanged, {} tokens", m.new_tokens)?
                }
                MessageChange::Changed => {
                    let role = match (m.old_role, m.new_role) {
                        (Some(a), Some(b)) if a != b => format!("{a} -> {b}"),
                        _ => role,
                    };
                    writeln!(
                        f,
                        "~ [{role}] {at}: changed, {} -> {} tokens ({})",
                        m.old_tokens,
                        m.new_tokens,
                        signed(m.delta())
                    )?;
                }
                MessageChange::Added => writeln!(
                    f,
                    "+ [{role}] {at}: added, {} tokens ({})",
                    m.new_tokens,
                    signed(m.delta())
                )?,
                MessageChange::Removed => writeln!(
                    f,
                    "- [{role}] {at}: removed, {} tokens ({})",
                    m.old_tokens,
                    signed(m.delta())
                )?,
            }
            if let Some(diff) = &m.diff {
                let mark = match m.change {
                    MessageChange::Added => "+",
                    MessageChange::Removed => "-",
                    _ => "",
                };
                for line in diff.lines() {
                    writeln!(f, "    {mark}{line}")?;
                }
            }
        }
        for c in &self.model {
            let show = |v: &Option<serde_json::Value>| {
                v.as_ref().map_or("(unset)".to_owned(), |v| v.to_string())
            };
            writeln!(
                f,
                "~ model.{}: {} -> {}",
                c.field,
                show(&c.old),
                show(&c.new)
            )?;
        }
        writeln!(
            f,
            "total: {} -> {} tokens ({})",
            self.old.tokens,
            self.new.tokens,
            signed(self.delta)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_matched_whole_and_changes_diffed_by_line() {
        let registry = crate::Registry::from_files([
            (
                "t@1.0.0.prompt.jinja",
                "---\nversion: 1.0.0\n---\nsystem:\nBe brief.\nuser:\nline one\nline two\n",
            ),
            (
                "t@2.0.0.prompt.jinja",
                "---\nversion: 2.0.0\n---\nsystem:\nBe brief.\nuser:\nline one\nline 2\nassistant:\nok\n",
            ),
        ])
        .unwrap();
        let a = registry.render("t@=1.0.0", &serde_json::json!({})).unwrap();
        let b = registry.render("t@=2.0.0", &serde_json::json!({})).unwrap();
        let d = diff(&a, &b);
        let changes: Vec<_> = d.messages.iter().map(|m| m.change).collect();
        assert_eq!(
            changes,
            [
                MessageChange::Unchanged,
                MessageChange::Changed,
                MessageChange::Added
            ]
        );
        assert!(d.differs);
        let sum: i64 = d.messages.iter().map(MessageDiff::delta).sum();
        assert_eq!(d.delta, sum);
        let text = d.to_string();
        assert!(text.contains("-line two"), "{text}");
        assert!(text.contains("+line 2"), "{text}");
        assert!(!diff(&a, &a).differs);
    }

    #[test]
    fn model_settings_names_and_line_endings_are_differences_a_reader_sees() {
        let registry = crate::Registry::from_files([
            (
                "t@1.0.0.prompt.yaml",
                "version: 1.0.0\nmodel: {name: gpt-4o, parameters: {temperature: 0.2}}\nmessages:\n  - {role: user, name: ann, content: \"a\\nb\"}\n",
            ),
            (
                "t@2.0.0.prompt.yaml",
                "version: 2.0.0\nmodel: {name: gpt-4o-mini, parameters: {temperature: 0.2, top_p: 0.5}}\nmessages:\n  - {role: user, name: bob, content: \"a\\r\\nb\"}\n",
            ),
        ])
        .unwrap();
        let a = registry.render("t@=1.0.0", &serde_json::json!({})).unwrap();
        let b = registry.render("t@=2.0.0", &serde_json::json!({})).unwrap();
        let d = diff(&a, &b);
        assert!(d.differs);
        let fields: Vec<&str> = d.model.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["name", "parameters.top_p"]);
        let text = d.to_string();
        assert!(
            text.contains("~ model.name: \"gpt-4o\" -> \"gpt-4o-mini\""),
            "{text}"
        );
        assert!(
            text.contains("~ model.parameters.top_p: (unset) -> 0.5"),
            "{text}"
        );
        assert!(text.contains("name: \"ann\" -> \"bob\""), "{text}");
        assert!(text.contains("+a\\r"), "{text}");
    }
}
