//! API keys: read from the environment when a call is made, sent only in
//! request headers marked sensitive, and kept out of everything we print.
//!
//! Provider text that reaches an error message (an error body, a stream's
//! error event, a transport error) goes through [`redact`]: every
//! occurrence of the key is replaced first, then the text is cut to
//! [`MAX_MESSAGE_CHARS`], then a start of the key left at a cut (the read
//! cap or the shortening may split an echo) is removed too. Scrubbing
//! before cutting is the point: cutting first could leave half a key that
//! no longer matches the whole.

/// An API key, only ever printed as `[redacted]`.
pub(crate) struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl ApiKey {
    /// The key from the environment variable `var`; `None` when it is unset
    /// or blank. Surrounding whitespace (a pasted newline) is dropped.
    pub(crate) fn from_env(var: &str) -> Option<ApiKey> {
        let key = std::env::var(var).ok()?;
        let key = key.trim();
        (!key.is_empty()).then(|| ApiKey(key.to_owned()))
    }

    /// The key itself, for the one header that carries it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

/// The most characters of provider text an error message keeps.
pub(crate) const MAX_MESSAGE_CHARS: usize = 500;

/// The shortest start of a key removed from the end of cut text: shorter
/// ones are common prefixes (`sk-`) that say nothing.
const MIN_PARTIAL: usize = 4;

/// `text` (provider text, perhaps already cut at `cut`) made safe to show;
/// see the module docs.
pub(crate) fn redact(text: &str, key: Option<&ApiKey>, cut: bool) -> String {
    let mut out = match key {
        Some(k) if !k.0.is_empty() => text.replace(&k.0, "[redacted]"),
        _ => text.to_owned(),
    };
    let mut cut = cut;
    if let Some((i, _)) = out.char_indices().nth(MAX_MESSAGE_CHARS) {
        out.truncate(i);
        cut = true;
    }
    if cut {
        if let Some(k) = key {
            strip_partial_key(&mut out, &k.0);
        }
        out.push('…');
    }
    out
}

/// Removes from the end of `text` the longest start of `key` (of at least
/// [`MIN_PARTIAL`] bytes) it ends with.
fn strip_partial_key(text: &mut String, key: &str) {
    let longest = (MIN_PARTIAL..key.len())
        .rev()
        .filter(|&n| key.is_char_boundary(n))
        .find(|&n| text.ends_with(&key[..n]));
    if let Some(n) = longest {
        text.truncate(text.len() - n);
        text.push_str("[redacted]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-test-0123456789abcdefghij";

    fn key() -> ApiKey {
        ApiKey(KEY.to_owned())
    }

    #[test]
    fn the_key_is_removed_before_the_text_is_cut() {
        // An echo straddling the 500-character cut: scrubbed whole first.
        for pad in 470..500 {
            let text = format!("{}{KEY} trailing", "x".repeat(pad));
            let shown = redact(&text, Some(&key()), false);
            assert!(!shown.contains(&KEY[..MIN_PARTIAL + 1]), "{pad}: {shown}");
            assert!(shown.chars().count() <= MAX_MESSAGE_CHARS + 1);
        }
    }

    #[test]
    fn a_start_of_the_key_at_a_cut_is_removed() {
        // The read cap cut an echo: only a start of the key arrived.
        for n in MIN_PARTIAL..KEY.len() {
            let text = format!("invalid key {}", &KEY[..n]);
            let shown = redact(&text, Some(&key()), true);
            assert_eq!(shown, "invalid key [redacted]…", "{n}");
        }
        // Text that is not cut keeps its ending.
        assert_eq!(redact("code sk-t", Some(&key()), false), "code sk-t");
        assert_eq!(redact("short", None, false), "short");
        assert_eq!(redact(KEY, Some(&key()), false), "[redacted]");
    }

    #[test]
    fn nothing_prints_the_key() {
        let k = key();
        assert_eq!(format!("{k:?}"), "[redacted]");
    }
}
