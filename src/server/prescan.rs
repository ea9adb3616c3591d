//! What a JSON request body would take in memory, counted before it is
//! parsed.
//!
//! A 16 MiB body of `[{},{},...]` is five million objects: parsed into
//! `serde_json::Value`s it takes some 400 MB. So the server first walks
//! the body with serde's `IgnoredAny`-style visitor, which allocates
//! nothing, and refuses a body whose strings plus [`PER_VALUE`] bytes per
//! value exceed the render limits' `max_input_bytes`; only then does it
//! build the values (under a render slot).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// What one parsed value costs beyond its string bytes: about what a
/// `serde_json::Value` in an array or a map takes (its enum, and its share
/// of the container's storage).
pub(crate) const PER_VALUE: u64 = 64;

/// Why a body was refused before parsing.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Its values would take more than the budget.
    TooBig { budget: u64 },
    /// It is not JSON (serde_json's message).
    Invalid(String),
}

/// Counts what `body` would take once parsed; refuses it past `budget`.
pub(crate) fn check(body: &[u8], budget: u64) -> Result<(), Refused> {
    let mut cost = Cost { spent: 0, budget };
    let mut de = serde_json::Deserializer::from_slice(body);
    match (&mut cost).deserialize(&mut de).and_then(|()| de.end()) {
        Ok(()) => Ok(()),
        Err(_) if cost.spent > budget => Err(Refused::TooBig { budget }),
        Err(e) => Err(Refused::Invalid(e.to_string())),
    }
}

struct Cost {
    spent: u64,
    budget: u64,
}

impl Cost {
    fn add<E: de::Error>(&mut self, n: u64) -> Result<(), E> {
        self.spent = self.spent.saturating_add(n);
        if self.spent > self.budget {
            Err(E::custom("over budget"))
        } else {
            Ok(())
        }
    }
}

impl<'de> DeserializeSeed<'de> for &mut Cost {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Cost {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.add(PER_VALUE)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.add(PER_VALUE)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.add(PER_VALUE)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.add(PER_VALUE)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.add(PER_VALUE + s.len() as u64)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.add(PER_VALUE)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.add(PER_VALUE)?;
        while seq.next_element_seed(&mut *self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.add(PER_VALUE)?;
        while map.next_key_seed(&mut *self)?.is_some() {
            map.next_value_seed(&mut *self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_pass_and_many_small_values_do_not() {
        assert!(check(br#"{"template": "t", "inputs": {"q": "hi"}}"#, 10_000).is_ok());
        // 100,000 empty objects: tiny text, 6.4 MB of values.
        let many = format!("{{\"x\": [{}{{}}]}}", "{},".repeat(99_999));
        assert!(matches!(
            check(many.as_bytes(), 1 << 20),
            Err(Refused::TooBig { .. })
        ));
        assert!(check(many.as_bytes(), 64 << 20).is_ok());
        // Long strings count by their length.
        let long = format!("{{\"x\": \"{}\"}}", "a".repeat(2_000_000));
        assert!(matches!(
            check(long.as_bytes(), 1 << 20),
            Err(Refused::TooBig { .. })
        ));
    }

    #[test]
    fn invalid_json_is_invalid_not_too_big() {
        assert!(matches!(
            check(b"{\"x\": ", 1 << 20),
            Err(Refused::Invalid(_))
        ));
        assert!(matches!(check(b"{} {}", 1 << 20), Err(Refused::Invalid(_))));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            check(deep.as_bytes(), 1 << 30),
            Err(Refused::Invalid(_))
        ));
    }
}
