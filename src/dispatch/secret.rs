//! API keys: read from the environment when a call is made, sent only in
//! request headers marked sensitive, and kept out of everything we print.
//!
//! Provider text that reaches an error message (an error body, a stream's
//! error event, a transport error) goes through [`redact`]: every
//! occurrence of the key is replaced first, and so is every run of
//! [`MIN_ECHO`] or more characters that is part of the key (a provider
//! echoing all but the last character, or a masked `sk-abc...****wxyz`);
//! then the text is cut to [`MAX_MESSAGE_CHARS`], then a start of the key
//! left at a cut (the read cap or the shortening may split an echo) is
//! removed too. Scrubbing before cutting is the point: cutting first could
//! leave half a key that no longer matches the whole. Last, control
//! characters are shown as escapes (`\u{1b}`), so provider text cannot
//! drive the terminal it is printed to (retitle it, write the clipboard,
//! erase the line and print a fake one).

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
        Some(k) if !k.0.is_empty() => strip_key_parts(&text.replace(&k.0, "[redacted]"), &k.0),
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
    visible(&out)
}

/// The shortest part of a key removed wherever it appears: long enough
/// not to match ordinary words, short enough to catch a masked echo.
const MIN_ECHO: usize = 8;

/// `text` with every run of at least [`MIN_ECHO`] bytes that occurs in
/// `key` replaced by `[redacted]`.
fn strip_key_parts(text: &str, key: &str) -> String {
    if key.len() < MIN_ECHO {
        return text.to_owned();
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i + MIN_ECHO <= b.len() {
        if !text.is_char_boundary(i)
            || memchr::memmem::find(key.as_bytes(), &b[i..i + MIN_ECHO]).is_none()
        {
            i += 1;
            continue;
        }
        let mut end = i + MIN_ECHO;
        while end < b.len() && memchr::memmem::find(key.as_bytes(), &b[i..=end]).is_some() {
            end += 1;
        }
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        out.push_str(&text[copied..i]);
        out.push_str("[redacted]");
        copied = end;
        i = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// `text` with control characters (but line breaks and tabs) written as
/// `\u{..}` escapes.
pub(crate) fn visible(text: &str) -> String {
    if !text.chars().any(is_hidden) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if is_hidden(c) {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn is_hidden(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
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
    fn parts_of_the_key_are_removed_wherever_they_appear() {
        let k = key();
        // All but the last character, all but the first, a masked echo.
        for (text, shown) in [
            (
                format!("key {} end", &KEY[..KEY.len() - 1]),
                "key [redacted] end",
            ),
            (format!("key {} end", &KEY[1..]), "key [redacted] end"),
            (
                format!("got {}****ghij", &KEY[..20]),
                "got [redacted]****ghij",
            ),
        ] {
            assert_eq!(redact(&text, Some(&k), false), shown, "{text}");
        }
        // Seven characters of it, or text that merely looks alike, stay.
        assert_eq!(redact("code sk-test", Some(&k), false), "code sk-test");
        assert_eq!(
            redact("an ordinary message", Some(&k), false),
            "an ordinary message"
        );
    }

    #[test]
    fn control_characters_cannot_drive_the_terminal() {
        let shown = redact(
            "bad \u{1b}]0;PWNED\u{7}\u{1b}[2J\r\nfake: line\ttab",
            None,
            false,
        );
        assert_eq!(
            shown,
            "bad \\u{1b}]0;PWNED\\u{7}\\u{1b}[2J\\u{d}\nfake: line\ttab"
        );
        assert!(!shown.contains('\u{1b}'));
        assert_eq!(redact("\u{202e}gnp.exe", None, false), "\\u{202e}gnp.exe");
    }

    #[test]
    fn nothing_prints_the_key() {
        let k = key();
        assert_eq!(format!("{k:?}"), "[redacted]");
    }
}
