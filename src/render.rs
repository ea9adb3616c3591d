//! Rendering: inputs in, role-tagged messages out.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::body::{self, Piece};
use crate::error::{Error, ErrorKind};
use crate::message::{Message, Role};
use crate::registry::{Registry, jinja_error};
use crate::template::{ContextConfig, ModelConfig};

/// Where a rendered message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// Written by the template.
    Template,
    /// Spliced from a `messages` parameter (conversation history).
    History {
        /// The parameter's name.
        parameter: String,
    },
}

/// The result of a render: the messages, and the settings a caller needs to
/// send them.
///
/// Serializes as
/// `{"template": "NAME@VERSION", "messages": [{"role": ..., "content": ...}], "model": {...}, "context": {...}}`
/// (`model` and `context` only when the template has them).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Rendered {
    /// `NAME@VERSION` of the template that rendered.
    pub template: String,
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// The template's `model:` block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelConfig>,
    /// The template's `context:` block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextConfig>,
    #[serde(skip)]
    origins: Vec<Origin>,
}

impl Rendered {
    /// Where message `i` came from (template text or a history parameter).
    pub fn origin(&self, i: usize) -> Option<&Origin> {
        self.origins.get(i)
    }

    /// The messages with their origins.
    pub fn messages_with_origin(&self) -> impl Iterator<Item = (&Message, &Origin)> {
        self.messages.iter().zip(&self.origins)
    }
}

impl Registry {
    /// Renders a template.
    ///
    /// `reference` is `NAME`, `NAME@REQ` or `NAME@LABEL`. `inputs` is anything
    /// that serializes to a JSON object (a struct, a map, `serde_json::json!`).
    /// Defaults are applied, then the inputs are checked against the
    /// template's input schema; nothing renders unless they pass.
    ///
    /// # Errors
    /// - [`ErrorKind::Reference`] when the reference does not resolve;
    /// - [`ErrorKind::InvalidInput`] naming the parameter path and the rule
    ///   when the inputs do not satisfy the schema (see
    ///   [`Error::parameter`] and [`Error::rule`]);
    /// - [`ErrorKind::Template`] with file and line when Jinja fails.
    pub fn render(&self, reference: &str, inputs: &impl Serialize) -> Result<Rendered, Error> {
        let entry = self.entry(reference)?;
        let t = &entry.template;
        let id = t.id();
        let mut inputs = match serde_json::to_value(inputs) {
            Ok(Value::Object(map)) => map,
            Ok(Value::Null) => Map::new(),
            Ok(other) => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "invalid input for {id}: inputs must be a map of parameter names to values, not {}",
                        crate::schema::json_kind(&other)
                    ),
                )
                .with_parameter("", "type"));
            }
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("invalid input for {id}: cannot serialize inputs"),
                )
                .with_source(e));
            }
        };
        for p in &entry.schema.parameters {
            if let (Some(d), false) = (&p.default, inputs.contains_key(&p.name)) {
                inputs.insert(p.name.clone(), d.clone());
            }
        }
        let inputs = Value::Object(inputs);
        entry.schema.validate(&inputs, &id)?;

        // What Jinja sees: every declared parameter present (null when
        // optional and absent), and no string able to carry a role marker.
        let mut ctx = inputs.clone();
        if let Value::Object(map) = &mut ctx {
            for p in &entry.schema.parameters {
                map.entry(p.name.clone()).or_insert(Value::Null);
            }
        }
        body::sanitize(&mut ctx);
        let ctx = minijinja::Value::from(minijinja::value::Serde(&ctx));

        let name = format!("{}@={}", t.name, t.version);
        let template = self
            .env()
            .get_template(&name)
            .map_err(|e| jinja_error(&e, self.index()))?;
        let output = template
            .render(ctx)
            .map_err(|e| jinja_error(&e, self.index()))?;

        let (messages, origins) =
            assemble(&output, &inputs, entry.implicit_user).map_err(|msg| {
                Error::new(ErrorKind::Template, msg)
                    .with_location(crate::error::Location::file(&t.path))
            })?;
        Ok(Rendered {
            template: id,
            messages,
            model: t.model.clone(),
            context: t.context.clone(),
            origins,
        })
    }
}

/// Cuts rendered output into messages and splices history.
fn assemble(
    output: &str,
    inputs: &Value,
    implicit_user: bool,
) -> Result<(Vec<Message>, Vec<Origin>), String> {
    let mut messages = Vec::new();
    let mut origins = Vec::new();
    let mut current: Option<(Role, String)> = implicit_user.then(|| (Role::User, String::new()));
    // The role text continues with after a splice that no role line follows.
    let mut resume: Option<Role> = None;

    fn flush(
        current: &mut Option<(Role, String)>,
        messages: &mut Vec<Message>,
        origins: &mut Vec<Origin>,
    ) {
        if let Some((role, text)) = current.take() {
            let content = text.trim();
            if !content.is_empty() {
                messages.push(Message::new(role, content));
                origins.push(Origin::Template);
            }
        }
    }

    for piece in body::split_output(output)? {
        match piece {
            Piece::Role(role) => {
                flush(&mut current, &mut messages, &mut origins);
                current = Some((role, String::new()));
                resume = None;
            }
            Piece::Text(text) => match &mut current {
                Some((_, buf)) => buf.push_str(text),
                None => match resume {
                    Some(role) => current = Some((role, text.to_owned())),
                    None if text.trim().is_empty() => {}
                    None => {
                        return Err(
                            "the template wrote text before its first role line (an include or macro may be the cause)"
                                .into(),
                        );
                    }
                },
            },
            Piece::Splice(param) => {
                let role = current.as_ref().map(|(r, _)| *r).or(resume);
                flush(&mut current, &mut messages, &mut origins);
                resume = role;
                let list = inputs.get(param).cloned().unwrap_or(Value::Null);
                let history: Vec<Message> = match list {
                    Value::Null => Vec::new(),
                    other => serde_json::from_value(other)
                        .map_err(|e| format!("history parameter `{param}`: {e}"))?,
                };
                for m in history {
                    messages.push(m);
                    origins.push(Origin::History {
                        parameter: param.to_owned(),
                    });
                }
            }
        }
    }
    flush(&mut current, &mut messages, &mut origins);
    Ok((messages, origins))
}
