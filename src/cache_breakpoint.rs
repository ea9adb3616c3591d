//! Prompt-cache breakpoints: how a template writes one, the marker it
//! becomes, and where it lands among the rendered messages.
//!
//! In a body, a line holding only `{{ cache_breakpoint() }}` or
//! `{{ cache_breakpoint("1h") }}` (or `"5m"`); in a YAML manifest, a
//! `messages:` entry `{cache_breakpoint: 5m}` or `{cache_breakpoint: 1h}`
//! between messages. Like a role line, the line is found in the source
//! before Jinja compiles it and becomes a tagged marker (see
//! [`crate::body`]): it may sit inside `{% if %}` or a loop, and no input
//! can make one. Anywhere else (inside other text, in an expression),
//! `cache_breakpoint(...)` is a load error.
//!
//! A breakpoint goes between messages: it marks the end of everything
//! before it (the tools, the system messages, the messages so far). Text
//! after it in the same message is an error. One that follows a history
//! splice is a *conversation* breakpoint: what it caches grows with the
//! conversation, by design.
//!
//! Sources: Anthropic's prompt caching guide (`cache_control: {"type":
//! "ephemeral", "ttl": "5m" | "1h"}`, at most 4 per request, longer TTLs
//! before shorter ones); OpenAI's prompt caching guide
//! (`prompt_cache_key`, automatic caching from 1024 tokens).

use serde::Serialize;

/// At most this many breakpoints in one request (Anthropic's limit).
pub const MAX_BREAKPOINTS: usize = 4;

/// How long a cache entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum CacheTtl {
    /// Five minutes, refreshed on every hit: Anthropic's default.
    #[serde(rename = "5m")]
    FiveMinutes,
    /// One hour (costs more to write).
    #[serde(rename = "1h")]
    OneHour,
}

impl CacheTtl {
    /// `5m` or `1h`, as written and as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheTtl::FiveMinutes => "5m",
            CacheTtl::OneHour => "1h",
        }
    }

    /// `5m` or `1h`.
    pub(crate) fn parse(s: &str) -> Option<CacheTtl> {
        match s {
            "5m" => Some(CacheTtl::FiveMinutes),
            "1h" => Some(CacheTtl::OneHour),
            _ => None,
        }
    }
}

/// A breakpoint among a render's messages.
///
/// Serializes as `{"messages": N, "ttl": "1h", "conversation": true,
/// "tokens": N}` (`ttl` only when written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CacheBreakpoint {
    /// How many messages the cached prefix holds: `0` caches the tool
    /// definitions only, `1` the first message (usually the system
    /// prompt) too, and so on.
    pub messages: usize,
    /// The TTL written, if any (providers default to five minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<CacheTtl>,
    /// Whether a history splice came before it: its prefix grows with the
    /// conversation.
    pub conversation: bool,
    /// The tokens of the messages it caches, as the render counted them
    /// (0 when it counted none); compare with the model's minimum
    /// cacheable length (1024, 2048 or 4096).
    pub tokens: usize,
}

/// The letter of a breakpoint marker.
pub(crate) const LETTER: char = 'c';

/// The marker of a breakpoint line: tagged like a splice, with the TTL
/// (or nothing) as its code, and `+h` when a history splice comes before
/// it in the source (a conversation breakpoint: decided where the proof of
/// [`crate::load::static_prefix`] decides it, so a render and lint agree
/// even when the splice sits in a branch that does not render).
pub(crate) fn marker(ttl: Option<CacheTtl>, conversation: bool) -> String {
    let code = format!(
        "{}{}",
        ttl.map_or("", CacheTtl::as_str),
        if conversation { CONVERSATION } else { "" }
    );
    format!(
        "{}{LETTER}{}{code}{}",
        crate::body::MARK_OPEN,
        crate::body::marker_tag(LETTER, &code),
        crate::body::MARK_CLOSE
    )
}

/// The suffix of a conversation breakpoint's marker code.
pub(crate) const CONVERSATION: &str = "+h";

/// A marker's code: the TTL, and whether it is a conversation breakpoint.
pub(crate) fn parse_code(code: &str) -> (Option<CacheTtl>, bool) {
    match code.strip_suffix(CONVERSATION) {
        Some(ttl) => (CacheTtl::parse(ttl), true),
        None => (CacheTtl::parse(code), false),
    }
}

/// The function's name.
pub(crate) const NAME: &str = "cache_breakpoint";

/// What the inside of an expression tag (`cache_breakpoint("1h")`, without
/// the braces) asks for: `None` when it is not a call of
/// `cache_breakpoint`, else the TTL or why the call is wrong.
pub(crate) fn parse_call(inner: &str) -> Option<Result<Option<CacheTtl>, String>> {
    let rest = inner.trim().strip_prefix(NAME)?.trim_start();
    let args = rest.strip_prefix('(')?.strip_suffix(')')?.trim();
    if args.is_empty() {
        return Some(Ok(None));
    }
    let quoted = args
        .strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .or_else(|| args.strip_prefix('\'').and_then(|a| a.strip_suffix('\'')));
    Some(match quoted.map(|q| (q, CacheTtl::parse(q))) {
        Some((_, Some(ttl))) => Ok(Some(ttl)),
        Some((q, None)) => Err(format!(
            "a cache breakpoint's TTL is \"5m\" or \"1h\" (what Anthropic offers), not {q:?}"
        )),
        None => Err(format!(
            "`{NAME}` takes nothing or a TTL written as a string, \"5m\" or \"1h\"; not `{args}`"
        )),
    })
}

/// Whether an expression or statement tag mentions `cache_breakpoint` as
/// a call (outside strings).
pub(crate) fn mentions_call(tag: &str) -> bool {
    let b = tag.as_bytes();
    crate::lex::unquoted(b).any(|(i, c, _)| {
        c == b'c'
            && tag[i..].starts_with(NAME)
            && (i == 0
                || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'.'))
            && tag[i + NAME.len()..].trim_start().starts_with('(')
    })
}

/// Checks the breakpoints of one render: at most [`MAX_BREAKPOINTS`], and
/// longer TTLs before shorter ones (Anthropic processes a 1h entry after a
/// 5m one as an error).
pub(crate) fn check(breakpoints: &[CacheBreakpoint]) -> Result<(), String> {
    if breakpoints.len() > MAX_BREAKPOINTS {
        return Err(format!(
            "the template marked {} cache breakpoints in one render; a request takes at most \
             {MAX_BREAKPOINTS} (Anthropic's limit)",
            breakpoints.len()
        ));
    }
    let ttl = |b: &CacheBreakpoint| b.ttl.unwrap_or(CacheTtl::FiveMinutes);
    if let Some(w) = breakpoints
        .windows(2)
        .find(|w| ttl(&w[0]) == CacheTtl::FiveMinutes && ttl(&w[1]) == CacheTtl::OneHour)
    {
        return Err(format!(
            "a 1h cache breakpoint (after message {}) follows a 5m one (after message {}): \
             Anthropic requires longer TTLs first",
            w[1].messages, w[0].messages
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_parse() {
        assert_eq!(parse_call("cache_breakpoint()"), Some(Ok(None)));
        assert_eq!(
            parse_call(" cache_breakpoint( '1h' ) "),
            Some(Ok(Some(CacheTtl::OneHour)))
        );
        assert_eq!(
            parse_call("cache_breakpoint(\"5m\")"),
            Some(Ok(Some(CacheTtl::FiveMinutes)))
        );
        assert!(matches!(
            parse_call("cache_breakpoint(\"2h\")"),
            Some(Err(_))
        ));
        assert!(matches!(parse_call("cache_breakpoint(ttl)"), Some(Err(_))));
        assert_eq!(parse_call("photo"), None);
        assert!(mentions_call("{{ 'x' ~ cache_breakpoint() }}"));
        assert!(!mentions_call("{{ 'cache_breakpoint()' }}"));
        assert!(!mentions_call("{{ my_cache_breakpoint() }}"));
    }
}
