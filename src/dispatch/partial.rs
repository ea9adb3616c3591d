//! The structured answer parsed so far while it streams: the text received
//! up to now read by jiter (pydantic's JSON parser) in its partial mode,
//! which closes unfinished strings, arrays and objects.
//!
//! Bounds: each parse reads the whole text so far, and each value given is
//! the whole value so far, so parses are spaced out as the text grows. Up
//! to [`SMALL`] bytes, a parse happens once at least [`EVERY`] more bytes
//! arrived, or 8 and a piece ends a value (`,` `}` `]`); past it, only once the
//! text grew by half since the last parse, so the work and the values
//! given stay within a small multiple of the answer's length. None past
//! [`MAX_BYTES`] (the answer still streams, and `Done` still carries the
//! validated value). jiter's own recursion limit (200) bounds nesting.

use serde_json::Value;

/// Parse again after at least this many new bytes ...
const EVERY: usize = 64;
/// ... while the text is this short; then after it grew by half ...
const SMALL: usize = 4096;
/// ... and not past this many in all.
const MAX_BYTES: usize = 1 << 20;

/// Tracks one stream's answer.
#[derive(Debug, Default)]
pub(crate) struct Partial {
    parsed_at: usize,
    last: Option<Value>,
}

impl Partial {
    /// The value `text` (the whole answer so far) makes, when it is time
    /// to parse again and the value changed since the last one given.
    pub(crate) fn next(&mut self, text: &str) -> Option<Value> {
        if text.len() > MAX_BYTES {
            return None;
        }
        let fresh = &text[self.parsed_at.min(text.len())..];
        let due = if text.len() <= SMALL {
            fresh.len() >= EVERY || (fresh.len() >= 8 && fresh.contains([',', '}', ']']))
        } else {
            fresh.len() >= self.parsed_at / 2
        };
        if !due {
            return None;
        }
        self.parsed_at = text.len();
        let value = parse(text)?;
        if self.last.as_ref() == Some(&value) {
            return None;
        }
        self.last = Some(value.clone());
        Some(value)
    }
}

/// `text` (a prefix of a JSON document, leading whitespace allowed) as the
/// value it makes so far, the last string included as far as it goes.
pub(crate) fn parse(text: &str) -> Option<Value> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    jiter::JsonValue::parse_with_config(text.as_bytes(), false, jiter::PartialMode::TrailingStrings)
        .ok()
        .map(|v| to_serde(&v))
}

fn to_serde(v: &jiter::JsonValue<'_>) -> Value {
    use jiter::JsonValue as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Int(i) => Value::from(*i),
        J::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        J::Str(s) => Value::String(s.to_string()),
        J::Array(items) => Value::Array(items.iter().map(to_serde).collect()),
        J::Object(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), to_serde(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_prefix_of_a_document_reads_as_what_it_holds_so_far() {
        assert_eq!(
            parse(r#"{"total": 11.5, "curr"#),
            Some(json!({"total": 11.5}))
        );
        assert_eq!(
            parse(r#"{"vendor": {"name": "AC"#),
            Some(json!({"vendor": {"name": "AC"}}))
        );
        assert_eq!(
            parse(r#"{"lines": [{"qty": 2}, {"q"#),
            Some(json!({"lines": [{"qty": 2}, {}]}))
        );
        assert_eq!(parse("  "), None);
        assert_eq!(parse(r#"{"a": 1}"#), Some(json!({"a": 1})));
        // Every prefix of a document parses without a panic.
        let doc = r#"{"a": [1, 2.5, "x\"y", true, null, {"b": "é"}], "c": -3e2}"#;
        for end in (0..=doc.len()).filter(|&i| doc.is_char_boundary(i)) {
            let _ = parse(&doc[..end]);
        }
    }

    #[test]
    fn values_are_given_when_they_change_and_at_most_every_few_bytes() {
        let mut p = Partial::default();
        assert_eq!(p.next(r#"{"a""#), None, "too little, no value boundary");
        assert_eq!(p.next(r#"{"a": 1,"#), Some(json!({"a": 1})), "a value ends");
        assert_eq!(p.next(r#"{"a": 1, "b"#), None);
        assert_eq!(p.next(r#"{"a": 1, "b": 2}"#), Some(json!({"a": 1, "b": 2})));
        assert_eq!(p.next(r#"{"a": 1, "b": 2} "#), None, "unchanged");
    }

    /// A long answer arriving in small pieces is parsed a few dozen times,
    /// not once per piece.
    #[test]
    fn a_long_answer_is_parsed_a_logarithmic_number_of_times() {
        let mut p = Partial::default();
        let mut text = String::from("[");
        let mut given = 0;
        let mut bytes_given = 0;
        while text.len() < 200_000 {
            text.push_str("1,");
            if let Some(v) = p.next(&text) {
                given += 1;
                bytes_given += v.to_string().len();
            }
        }
        assert!(given < 600, "{given} values given");
        assert!(bytes_given < 20 * text.len(), "{bytes_given} bytes given");
    }
}
