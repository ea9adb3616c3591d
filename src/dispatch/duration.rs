//! Durations in `providers.yaml`, written as humantime reads them: `500ms`,
//! `30s`, `5m`, `1h`, `1m 30s`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration a setting may have: one day. Longer ones are
/// refused, as Redis refuses the expiry times they would make.
pub(crate) const LONGEST: Duration = Duration::from_secs(86_400);

/// Checks that setting `name` lies within (0, [`LONGEST`]].
pub(crate) fn check(name: &str, d: Duration) -> Result<(), String> {
    if d.is_zero() || d > LONGEST {
        return Err(format!(
            "{name} must be more than 0 and at most 1 day (it is {})",
            humantime::format_duration(d)
        ));
    }
    Ok(())
}

/// Reads a duration written as text.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write it as `500ms`, `30s` or `5m`")
    })
}

/// `deserialize_with` for a required duration.
pub(crate) fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// `deserialize_with` for an optional duration.
pub(crate) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    required(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written_and_mistakes_say_how_to_write_them() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse(" 1m 30s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        let e = parse("soon").unwrap_err();
        assert!(
            e.contains("`soon` is not a duration") && e.contains("30s"),
            "{e}"
        );
        assert!(parse("30").is_err(), "a bare number has no unit");
    }
}
