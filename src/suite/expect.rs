//! Checking a test's assertions: on a render, on an expected error, on a
//! recorded answer. Each returns what failed, in words a reviewer reads
//! without opening the test file: what was expected and what was there.

use serde_json::Value;

use super::spec::{AnswerExpect, ErrorExpect, Expect, MessageExpect, TextExpect, Which};
use crate::error::Error;
use crate::message::Message;
use crate::registry::Registry;
use crate::render::{RenderOptions, Rendered};

/// The longest excerpt of a text a failure quotes.
const EXCERPT: usize = 200;

/// Checks `expect` against a successful render of `id`.
pub(crate) fn render(
    expect: &Expect,
    rendered: &Rendered,
    registry: &Registry,
    id: &str,
    inputs: &Value,
    failures: &mut Vec<String>,
) {
    if let Some(e) = &expect.error {
        failures.push(format!(
            "expected {} error{}, but it rendered",
            with_article(&super::spec::kind_name(e.kind)),
            e.parameter
                .as_deref()
                .map_or_else(String::new, |p| format!(" for `{p}`"))
        ));
        return;
    }
    if let Some(roles) = &expect.roles {
        let got: Vec<_> = rendered.messages.iter().map(|m| m.role).collect();
        if &got != roles {
            failures.push(format!(
                "roles: expected [{}], got [{}]",
                list(roles),
                list(&got)
            ));
        }
    }
    let whole = rendered
        .messages
        .iter()
        .map(|m| m.content.display())
        .collect::<Vec<_>>()
        .join("\n");
    text(&expect.text, &whole, "the prompt", failures);
    for m in &expect.messages {
        message(m, &rendered.messages, failures);
    }
    if let Some(t) = &expect.truncated {
        let dropped = rendered.truncation.as_ref().map_or(0, |t| t.dropped);
        match (t, dropped) {
            (false, n) if n > 0 => failures.push(format!(
                "truncation dropped {n} history message{} (to fit {} tokens); expected nothing dropped",
                if n == 1 { "" } else { "s" },
                rendered.truncation.as_ref().map_or(0, |t| t.budget)
            )),
            (true, 0) => failures.push("expected truncation to drop history, but nothing was dropped".into()),
            _ => {}
        }
    }
    if let Some(t) = &expect.tokens {
        let counted = match &t.model {
            None => Ok(rendered.tokens.clone()),
            Some(model) => registry
                .render_with(id, inputs, &RenderOptions::new().model(model.clone()))
                .map(|r| r.tokens),
        };
        match counted {
            Err(e) => failures.push(format!("counting for the test's model failed: {e}")),
            Ok(tokens) => {
                let shown = format!(
                    "{}{} tokens ({})",
                    if tokens.approximate { "~" } else { "" },
                    tokens.total,
                    tokens.encoding
                );
                if let Some(max) = t.max
                    && tokens.total as u64 > max
                {
                    failures.push(format!("tokens: {shown}, over the maximum of {max}"));
                }
                if let Some(min) = t.min
                    && (tokens.total as u64) < min
                {
                    failures.push(format!("tokens: {shown}, under the minimum of {min}"));
                }
            }
        }
    }
}

/// Checks that a failed render failed as `expected`.
pub(crate) fn error(expected: Option<&ErrorExpect>, error: &Error, failures: &mut Vec<String>) {
    let Some(e) = expected else {
        failures.push(format!("render failed: {error}"));
        return;
    };
    let kind = super::spec::kind_name(error.kind());
    if error.kind() != e.kind {
        failures.push(format!(
            "expected {} error, got {} error: {error}",
            with_article(&super::spec::kind_name(e.kind)),
            with_article(&kind)
        ));
        return;
    }
    // `parameter: history` names `/history` and everything inside it
    // (`/history/0/role`); a pointer names itself.
    let names = |p: &str, got: &str| {
        let want = if p.starts_with('/') {
            p.to_owned()
        } else {
            format!("/{p}")
        };
        got == want || got.starts_with(&format!("{want}/")) || got == p
    };
    if let Some(p) = &e.parameter
        && !error.parameter().is_some_and(|got| names(p, got))
    {
        failures.push(format!(
            "expected the error to name parameter `{p}`, it names {}: {error}",
            error
                .parameter()
                .map_or_else(|| "none".to_owned(), |p| format!("`{p}`"))
        ));
    }
    if let Some(r) = &e.rule
        && error.rule() != Some(r.as_str())
    {
        failures.push(format!(
            "expected the error to break rule `{r}`, it breaks {}: {error}",
            error
                .rule()
                .map_or_else(|| "none".to_owned(), |r| format!("`{r}`"))
        ));
    }
    if let Some(c) = &e.contains
        && !error.to_string().contains(c.as_str())
    {
        failures.push(format!(
            "expected the error message to contain {c:?}, it is: {error}"
        ));
    }
}

/// Checks a recorded answer (the `response` of a cassette).
pub(crate) fn answer(
    expect: &AnswerExpect,
    request: &Value,
    response: &Value,
    rendered: &crate::render::Rendered,
    failures: &mut Vec<String>,
) {
    let reply = response.get("text").and_then(Value::as_str).unwrap_or("");
    text(&expect.text, reply, "the answer", failures);
    if expect.valid {
        valid(&request["body"], response, reply, rendered, failures);
    }
    if let Some(schema) = &expect.schema {
        match serde_json::from_str::<Value>(reply) {
            Err(e) => failures.push(format!("the answer is not JSON ({e}): {}", excerpt(reply))),
            Ok(value) => {
                for e in schema.iter_errors(&value).take(5) {
                    let at = e.instance_path().to_string();
                    failures.push(format!(
                        "the answer breaks its schema at `{}`: {e}",
                        if at.is_empty() { "/" } else { &at }
                    ));
                }
            }
        }
    }
    let called: Vec<&str> = response
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    for tool in &expect.tool_called {
        if !called.contains(&tool.as_str()) {
            failures.push(format!(
                "expected a call of tool `{tool}`; the answer calls {}",
                if called.is_empty() {
                    "no tool".to_owned()
                } else {
                    called.join(", ")
                }
            ));
        }
    }
    if let Some(want) = &expect.finish_reason {
        let got = response.get("finish_reason").and_then(Value::as_str);
        if got != Some(want.as_str()) {
            failures.push(format!(
                "expected finish reason `{want}`, got {}",
                got.map_or_else(|| "none".to_owned(), |g| format!("`{g}`"))
            ));
        }
    }
}

fn message(m: &MessageExpect, messages: &[Message], failures: &mut Vec<String>) {
    let (found, said) = match m.which {
        Which::At(i) => {
            let index = if i < 0 {
                usize::try_from(i.unsigned_abs())
                    .ok()
                    .and_then(|back| messages.len().checked_sub(back))
            } else {
                usize::try_from(i).ok()
            };
            (
                index.and_then(|i| Some((i, messages.get(i)?))),
                format!("message {i}"),
            )
        }
        Which::Role(role) => (
            messages
                .iter()
                .enumerate()
                .find(|(_, msg)| msg.role == role),
            format!("the first {role} message"),
        ),
    };
    let Some((index, msg)) = found else {
        failures.push(format!(
            "{said}: there is none (the render has {} message{})",
            messages.len(),
            if messages.len() == 1 { "" } else { "s" }
        ));
        return;
    };
    let said = format!("{said} (#{index}, {})", msg.role);
    if let Some(role) = m.role
        && msg.role != role
    {
        failures.push(format!("{said}: expected role {role}"));
    }
    let shown = msg.content.display();
    if let Some(want) = &m.equals
        && shown != *want
    {
        failures.push(format!(
            "{said}: expected exactly {}, got {}",
            excerpt(want),
            excerpt(&shown)
        ));
    }
    text(&m.text, &shown, &said, failures);
}

fn text(expect: &TextExpect, text: &str, what: &str, failures: &mut Vec<String>) {
    for needle in &expect.contains {
        if !text.contains(needle.as_str()) {
            failures.push(format!(
                "{what} does not contain {needle:?}: {}",
                excerpt(text)
            ));
        }
    }
    for needle in &expect.not_contains {
        if let Some(at) = text.find(needle.as_str()) {
            failures.push(format!(
                "{what} contains {needle:?} (at byte {at}): {}",
                excerpt(&text[floor(text, at.saturating_sub(40))..])
            ));
        }
    }
    for pattern in &expect.matches {
        match super::spec::compiled(pattern) {
            Ok(r) if r.is_match(text) => {}
            Ok(_) => failures.push(format!(
                "{what} does not match /{pattern}/: {}",
                excerpt(text)
            )),
            Err(e) => failures.push(format!("/{pattern}/ does not compile: {e}")),
        }
    }
}

/// `answer: {valid: true}`: the recorded answer as the template declares
/// it: its output (unless the model called tools instead) against the
/// template's own `output:` schema, as sending checks it (a `null` the
/// strict form allowed for an optional property is absent, when the
/// recorded request `body` sent that form), and each tool call's arguments
/// against its tool's parameters.
fn valid(
    body: &Value,
    response: &Value,
    reply: &str,
    rendered: &crate::render::Rendered,
    failures: &mut Vec<String>,
) {
    let calls: Vec<&Value> = response
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    if rendered.output_schema.is_none() && rendered.tools.is_empty() {
        failures.push(
            "`valid: true`, but the template declares no `output:` schema and no `tools:` to check the answer against"
                .to_owned(),
        );
        return;
    }
    let first_error = |schema: &Value, value: &Value| -> Option<String> {
        crate::schema::first_violation(schema, value).map(|(at, _, message)| {
            format!("at `{}`: {message}", if at.is_empty() { "/" } else { &at })
        })
    };
    if let Some(schema) = rendered.output_schema.as_deref()
        && (!reply.trim().is_empty() || calls.is_empty())
    {
        match serde_json::from_str::<Value>(reply.trim()) {
            Err(e) => failures.push(format!("the answer is not JSON ({e}): {}", excerpt(reply))),
            Ok(mut value) => {
                if crate::strict::nulls_added_in(body, None) {
                    crate::strict::drop_added_nulls(schema, &mut value);
                }
                if let Some(e) = first_error(schema, &value) {
                    failures.push(format!(
                        "the answer breaks the template's output schema {e}"
                    ));
                }
            }
        }
    }
    for call in calls {
        let name = call.get("name").and_then(Value::as_str).unwrap_or("");
        let Some(tool) = rendered.tools.iter().find(|t| t.name == name) else {
            failures.push(format!(
                "the answer calls `{name}`, which is not a declared tool"
            ));
            continue;
        };
        let arguments = call.get("arguments").and_then(Value::as_str).unwrap_or("");
        let nulls_added = crate::strict::nulls_added_in(body, Some(name));
        if let Err(problem) = tool.check_arguments(arguments, nulls_added) {
            failures.push(format!("the call of `{name}`: {problem}"));
        }
    }
}

/// `word` after `a` or `an`, as its first letter says.
fn with_article(word: &str) -> String {
    let an = word.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {word}", if an { "an" } else { "a" })
}

fn list(roles: &[crate::message::Role]) -> String {
    roles
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `text` quoted, cut at [`EXCERPT`] bytes.
fn excerpt(text: &str) -> String {
    if text.len() <= EXCERPT {
        format!("{text:?}")
    } else {
        format!("{:?}...", &text[..floor(text, EXCERPT)])
    }
}

/// The largest char boundary of `text` at or below `at`.
fn floor(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}
