//! A template's dialect: the rules its file format renders by, as one
//! value.
//!
//! Loading and rendering ask the dialect for a rule, never which format a
//! file is. A new file format is one more [`Dialect`] value (and a parser
//! for its front matter), not edits wherever formats differ.

use crate::body::Grammar;
use crate::error::Severity;
use crate::message::Role;

/// Which Jinja environment renders a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Engine {
    /// Strict undefined, `trim_blocks` and `lstrip_blocks`.
    Native,
    /// Prompty's: Jinja2's default undefined, no block trimming, the trailing
    /// newline kept, Prompty's printing of `none`, booleans and floats.
    Prompty,
}

/// What a body's text before its first role line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum LeadingText {
    /// A load error (native: every message starts with a role line, or
    /// the body has none and is one user message).
    Error,
    /// A message of this role (Prompty: a system message).
    Message(Role),
}

/// How a message's text is trimmed, and which empty messages stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MessageText {
    /// All surrounding whitespace goes; an empty message is dropped.
    Trimmed,
    /// Only leading and trailing line breaks go; a message a role line
    /// opened stays when blank, unless the role line ended the body
    /// (Prompty's runtime).
    NewlinesTrimmed,
}

/// What a declared parameter the inputs leave out is when the template
/// reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AbsentInput {
    /// `none`: the template may test it and take attributes of it.
    None,
    /// Undefined, as in Prompty's runtime (Jinja2's default `Undefined`):
    /// printing or testing it is fine, an attribute or item of it is an
    /// error naming it.
    Undefined,
}

/// The rules a template renders by; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Dialect {
    /// How role lines are spelled.
    pub grammar: Grammar,
    /// Which environment renders.
    pub engine: Engine,
    /// Text before the first role line.
    pub leading_text: LeadingText,
    /// The role of a body without role lines, when it has one.
    pub body_without_roles: Option<Role>,
    /// Message trimming.
    pub message_text: MessageText,
    /// Whether inputs are validated against the input schema before a
    /// render.
    pub validates_inputs: bool,
    /// What a variable used but neither declared nor set is: an error, or
    /// a warning (it renders empty).
    pub undeclared: Severity,
    /// What a declared parameter left out of the inputs is.
    pub absent_input: AbsentInput,
}

impl Dialect {
    /// promptbook's own rules (`.prompt.yaml`, `.prompt.jinja`).
    pub(crate) const NATIVE: Dialect = Dialect {
        grammar: Grammar::Native,
        engine: Engine::Native,
        leading_text: LeadingText::Error,
        body_without_roles: Some(Role::User),
        message_text: MessageText::Trimmed,
        validates_inputs: true,
        undeclared: Severity::Error,
        absent_input: AbsentInput::None,
    };

    /// Prompty's rules (`.prompty`); `strict`
    /// (`metadata.promptbook.strict`) validates inputs and makes undeclared
    /// variables errors.
    pub(crate) const fn prompty(strict: bool) -> Dialect {
        Dialect {
            grammar: Grammar::Prompty,
            engine: Engine::Prompty,
            leading_text: LeadingText::Message(Role::System),
            body_without_roles: None,
            message_text: MessageText::NewlinesTrimmed,
            validates_inputs: strict,
            undeclared: if strict {
                Severity::Error
            } else {
                Severity::Warning
            },
            absent_input: AbsentInput::Undefined,
        }
    }
}

impl Default for Dialect {
    fn default() -> Dialect {
        Dialect::NATIVE
    }
}

impl MessageText {
    /// A message's text under this rule, or `None` when the message is
    /// dropped. `explicit`: a role line opened it.
    pub(crate) fn finish(self, text: &str, explicit: bool) -> Option<&str> {
        match self {
            MessageText::Trimmed => Some(trim(text)).filter(|t| !t.is_empty()),
            MessageText::NewlinesTrimmed => {
                let content = text.trim_matches(['\n', '\r']);
                // A marked message stays when blank, but not one with no
                // text at all (a marker on the last line). The marker
                // line's own newline is in the text.
                let raw = text
                    .strip_prefix("\r\n")
                    .or_else(|| text.strip_prefix('\n'))
                    .unwrap_or(text);
                let keep = if explicit {
                    !raw.is_empty()
                } else {
                    !content.trim().is_empty()
                };
                keep.then_some(content)
            }
        }
    }
}

/// `str::trim`, faster when the ends are ASCII (as they nearly always are:
/// the newlines around role lines).
fn trim(s: &str) -> &str {
    let t = s.trim_ascii();
    // What `trim` removes beyond ASCII whitespace: U+000B and non-ASCII.
    let more = |b: &u8| !b.is_ascii() || *b == 0x0B;
    match (t.as_bytes().first(), t.as_bytes().last()) {
        (Some(a), Some(z)) if more(a) || more(z) => t.trim(),
        _ => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_is_str_trim() {
        for s in [
            "",
            " ",
            "\n a \n",
            "\u{0B}a\u{0B}",
            "\u{A0}a\u{2003}",
            "a",
            "\t\r\n",
            "é ",
        ] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
    }

    #[test]
    fn message_text_rules() {
        let native = MessageText::Trimmed;
        assert_eq!(native.finish("\n  hi \n", true), Some("hi"));
        assert_eq!(native.finish("\n  \n", true), None);
        let prompty = MessageText::NewlinesTrimmed;
        assert_eq!(prompty.finish("\n  hi  \n", true), Some("  hi  "));
        assert_eq!(prompty.finish("\n\n", true), Some(""), "blank stays");
        assert_eq!(prompty.finish("", true), None, "marker on the last line");
        assert_eq!(prompty.finish("\n \n", false), None);
    }
}
