//! Token counting: OpenAI's BPE encodings, the model table, chat overhead,
//! and a per-process cache of message counts.
//!
//! Counts equal OpenAI's `tiktoken` `encode_ordinary` exactly: text that
//! looks like a special token (`<|endoftext|>`) is ordinary text. The
//! engine is GitHub's `bpe-openai`; its tables are built into the binary and
//! loaded once per process on first use.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex};

use serde::Serialize;

use crate::content::{Content, Part, Source};
use crate::message::Message;

/// An OpenAI BPE encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// GPT-4, GPT-3.5-turbo and their embeddings.
    Cl100kBase,
    /// GPT-4o, GPT-4.1, GPT-5 and the o-series.
    O200kBase,
}

impl Encoding {
    /// The encoding's name as tiktoken spells it (`o200k_base`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::O200kBase => "o200k_base",
        }
    }

    /// Counts the tokens of `text`. Special-token look-alikes count as
    /// ordinary text.
    pub fn count(self, text: &str) -> usize {
        count_memoized(self.tokenizer(), text)
    }

    fn tokenizer(self) -> &'static bpe_openai::Tokenizer {
        match self {
            Encoding::Cl100kBase => bpe_openai::cl100k_base(),
            Encoding::O200kBase => bpe_openai::o200k_base(),
        }
    }

    /// Counts tokens, stopping early: `None` as soon as `text` is known to
    /// need more than `limit` tokens.
    pub fn count_till_limit(self, text: &str, limit: usize) -> Option<usize> {
        let tokenizer = self.tokenizer();
        tokenizer.count_till_limit(&tokenizer.normalize(text), limit)
    }
}

/// Counts pre-token by pre-token, remembering the count of each short
/// pre-token seen in this call: text repeats words, and a hash lookup is
/// cheaper than encoding a word again. Exact: a pre-token's count does not
/// depend on its neighbours. (cl100k_base and o200k_base do no Unicode
/// normalisation, so pre-tokenizing the raw text is what `count` does.)
fn count_memoized(tokenizer: &bpe_openai::Tokenizer, text: &str) -> usize {
    const SMALL_TEXT: usize = 2048;
    const LONG_PIECE: usize = 48;
    const MEMO_LIMIT: usize = 1 << 17;
    if text.len() < SMALL_TEXT {
        return tokenizer.count(text);
    }
    let mut memo: HashMap<&str, u32, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(4096, foldhash::fast::RandomState::default());
    let mut total = 0;
    for piece in tokenizer.split(text) {
        if piece.len() > LONG_PIECE {
            total += tokenizer.bpe.count(piece.as_bytes());
            continue;
        }
        total += match memo.get(piece) {
            Some(&n) => n as usize,
            None => {
                let n = tokenizer.bpe.count(piece.as_bytes());
                if memo.len() < MEMO_LIMIT {
                    memo.insert(piece, n as u32);
                }
                n
            }
        };
    }
    total
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Encoding, String> {
        match s {
            "cl100k_base" => Ok(Encoding::Cl100kBase),
            "o200k_base" => Ok(Encoding::O200kBase),
            _ => Err(format!(
                "unknown encoding `{s}` (expected cl100k_base or o200k_base)"
            )),
        }
    }
}

/// What promptbook knows of a model: its tokenizer (when public) and its
/// context window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelInfo {
    /// The model's encoding, when its tokenizer is public.
    pub encoding: Option<Encoding>,
    /// The context window in tokens, when known.
    pub context_window: Option<u64>,
}

/// The one table of models: name prefix, encoding, context window. The
/// first matching prefix wins, so longer prefixes come first.
const MODELS: &[(&str, Option<Encoding>, Option<u64>)] = {
    use Encoding::{Cl100kBase as C, O200kBase as O};
    &[
        ("gpt-4o", Some(O), Some(128_000)),
        ("chatgpt-4o", Some(O), Some(128_000)),
        ("gpt-4.1", Some(O), Some(1_047_576)),
        ("gpt-4.5", Some(O), Some(128_000)),
        ("gpt-5", Some(O), Some(400_000)),
        ("o1-mini", Some(O), Some(128_000)),
        ("o1", Some(O), Some(200_000)),
        ("o3", Some(O), Some(200_000)),
        ("o4", Some(O), Some(200_000)),
        ("gpt-4-turbo", Some(C), Some(128_000)),
        ("gpt-4-1106", Some(C), Some(128_000)),
        ("gpt-4-0125", Some(C), Some(128_000)),
        ("gpt-4-32k", Some(C), Some(32_768)),
        ("gpt-4", Some(C), Some(8_192)),
        ("gpt-3.5-turbo-instruct", Some(C), Some(4_096)),
        ("gpt-3.5", Some(C), Some(16_385)),
        ("text-embedding-3", Some(C), Some(8_191)),
        ("text-embedding-ada-002", Some(C), Some(8_191)),
        ("claude-3-5-haiku", None, Some(200_000)),
        ("claude", None, Some(200_000)),
        ("qwen-turbo", None, Some(1_000_000)),
        ("qwen-plus", None, Some(131_072)),
        ("qwen-max", None, Some(32_768)),
        ("qwen", None, None),
    ]
};

/// Looks a model up in the table (`gpt-4o-mini`, `openai:gpt-4o`,
/// `claude-sonnet-4-5`). Unknown models have neither encoding nor window.
pub fn model_info(model: &str) -> ModelInfo {
    let name = model.rsplit_once(':').map_or(model, |(_, n)| n);
    let name = name.rsplit('/').next().unwrap_or(name); // `openai/gpt-4o` style ids
    MODELS
        .iter()
        .find(|(prefix, _, _)| name.starts_with(prefix))
        .map_or(
            ModelInfo {
                encoding: None,
                context_window: None,
            },
            |(_, encoding, context_window)| ModelInfo {
                encoding: *encoding,
                context_window: *context_window,
            },
        )
}

/// Counts tokens. Implement it to plug in another tokenizer.
pub trait TokenCounter: Send + Sync {
    /// Tokens in `text`.
    fn count(&self, text: &str) -> usize;

    /// A name for the report (`o200k_base`).
    fn name(&self) -> &str;

    /// Whether counts only estimate the model's real tokenizer.
    fn approximate(&self) -> bool {
        false
    }

    /// A key under which counts may be cached for the life of the process,
    /// or `None` (the default) to never cache. Two counters that return the
    /// same key must count alike.
    fn cache_key(&self) -> Option<&str> {
        None
    }

    /// `tokens` of chat framing ([`TOKENS_PER_MESSAGE`],
    /// [`TOKENS_PER_NAME`], [`REPLY_PRIMING`]: OpenAI's constants) as this
    /// counter counts them. The default is `tokens`; an estimate scales
    /// them as it scales text, so that the whole count errs the same way.
    fn overhead(&self, tokens: usize) -> usize {
        tokens
    }

    /// Whose rule counts images: OpenAI's tiles (the default), or
    /// Anthropic's pixels / 750 (see [`ImageRule`]).
    fn image_rule(&self) -> ImageRule {
        ImageRule::OpenAiTiles
    }
}

pub use crate::media_tokens::ImageRule;

impl TokenCounter for Encoding {
    fn count(&self, text: &str) -> usize {
        Encoding::count(*self, text)
    }

    fn name(&self) -> &str {
        Encoding::name(*self)
    }

    fn cache_key(&self) -> Option<&str> {
        Some(Encoding::name(*self))
    }
}

/// The estimate used for models whose tokenizer is not public (Claude,
/// Qwen, unknown models): the `cl100k_base` count times 1.25, rounded up.
/// It errs high on purpose, so a prompt that fits by this count fits the
/// real window; the report marks it `approximate`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Approximate;

impl TokenCounter for Approximate {
    fn count(&self, text: &str) -> usize {
        let exact = Encoding::Cl100kBase.count(text);
        exact + exact.div_ceil(4)
    }

    fn name(&self) -> &str {
        "approximate (cl100k_base x 1.25)"
    }

    fn approximate(&self) -> bool {
        true
    }

    fn cache_key(&self) -> Option<&str> {
        Some("approximate-cl100k-1.25")
    }

    /// The framing scaled like text: 3 becomes 4, 1 becomes 2.
    fn overhead(&self, tokens: usize) -> usize {
        tokens + tokens.div_ceil(4)
    }
}

/// [`Approximate`] for Claude models: the same text estimate, and
/// Anthropic's rule for images.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClaudeEstimate;

impl TokenCounter for ClaudeEstimate {
    fn count(&self, text: &str) -> usize {
        Approximate.count(text)
    }

    fn name(&self) -> &str {
        Approximate.name()
    }

    fn approximate(&self) -> bool {
        true
    }

    fn cache_key(&self) -> Option<&str> {
        Some("approximate-cl100k-1.25-claude")
    }

    fn overhead(&self, tokens: usize) -> usize {
        Approximate.overhead(tokens)
    }

    fn image_rule(&self) -> ImageRule {
        ImageRule::AnthropicPixels
    }
}

/// The counter for a model name: its encoding when public, else
/// [`Approximate`] ([`ClaudeEstimate`] for `claude*`). No model at all
/// counts with `o200k_base`, marked approximate since the model is unknown.
pub fn counter_for_model(model: Option<&str>) -> Arc<dyn TokenCounter> {
    let bare = model.map(|m| {
        let name = m.rsplit_once(':').map_or(m, |(_, n)| n);
        name.rsplit('/').next().unwrap_or(name)
    });
    if bare.is_some_and(|n| n.starts_with("claude")) {
        return Arc::new(ClaudeEstimate);
    }
    match model.map(model_info) {
        Some(ModelInfo {
            encoding: Some(e), ..
        }) => Arc::new(e),
        Some(_) => Arc::new(Approximate),
        None => Arc::new(Unspecified),
    }
}

/// `o200k_base`, reported as approximate because no model was named.
#[derive(Debug, Clone, Copy)]
struct Unspecified;

impl TokenCounter for Unspecified {
    fn count(&self, text: &str) -> usize {
        Encoding::O200kBase.count(text)
    }

    fn name(&self) -> &str {
        "o200k_base"
    }

    fn approximate(&self) -> bool {
        true
    }

    fn cache_key(&self) -> Option<&str> {
        Some("o200k_base")
    }
}

/// Tokens a chat adds around each message (OpenAI's published formula:
/// `<|start|>{role}<|message|>...<|end|>` costs 3 plus the role).
pub const TOKENS_PER_MESSAGE: usize = 3;
/// Tokens a `name` field adds beyond its own text.
pub const TOKENS_PER_NAME: usize = 1;
/// Tokens that prime the reply (`<|start|>assistant<|message|>`).
pub const REPLY_PRIMING: usize = 3;

/// The token counts of a rendered prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TokenReport {
    /// The counter's name (`o200k_base`).
    pub encoding: String,
    /// Whether counts estimate a tokenizer that is not public.
    pub approximate: bool,
    /// Each message's tokens, overhead included.
    pub messages: Vec<usize>,
    /// All messages plus the reply priming.
    pub total: usize,
    /// The images, files and audio among the messages, with their tokens
    /// (already in [`messages`](TokenReport::messages)); serialized only
    /// when there are some.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<MediaTokens>,
}

/// The tokens of one image, file or audio part.
///
/// Serializes as `{"message", "part", "kind", "tokens", "approximate",
/// "width", "height"}` (`width` and `height` for images whose size was
/// read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MediaTokens {
    /// The message's index.
    pub message: usize,
    /// The part's index in the message.
    pub part: usize,
    /// `image`, `file` or `audio`.
    pub kind: &'static str,
    /// Its tokens, by the rules of [`ImageRule`] and the module docs.
    pub tokens: usize,
    /// Whether the count is an estimate (an image without a readable size,
    /// Anthropic's rule, any file or audio).
    pub approximate: bool,
    /// An image's width in pixels, from its header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u64>,
    /// An image's height in pixels, from its header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
}

/// The media parts of `messages` with their tokens.
fn media_tokens(counter: &dyn TokenCounter, messages: &[Message]) -> Vec<MediaTokens> {
    let rule = counter.image_rule();
    let text = |t: &str| counter.count(t);
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let Content::Parts(parts) = &m.content else {
            continue;
        };
        for (j, p) in parts.iter().enumerate() {
            if !p.is_media() {
                continue;
            }
            let c = crate::media_tokens::part_tokens(p, rule, &text);
            out.push(MediaTokens {
                message: i,
                part: j,
                kind: p.kind(),
                tokens: c.tokens,
                approximate: c.approximate,
                width: c.size.map(|s| s.0),
                height: c.size.map(|s| s.1),
            });
        }
    }
    out
}

impl TokenReport {
    pub(crate) fn empty() -> TokenReport {
        TokenReport {
            encoding: String::new(),
            approximate: false,
            messages: Vec::new(),
            total: 0,
            media: Vec::new(),
        }
    }
}

/// Cost of one message by OpenAI's published formula (the cookbook's
/// `num_tokens_from_messages`): 3, plus the tokens of every field's text
/// (role, content, name, tool_call_id), plus 1 for a name. Tool calls count
/// as their JSON text, an estimate the formula does not cover. Images,
/// files and audio count by the counter's [`ImageRule`] and the rules in
/// [`crate::media_tokens`] ([`TokenReport::media`] says which counts are
/// estimates).
pub fn message_tokens(counter: &dyn TokenCounter, m: &Message) -> usize {
    let content = match &m.content {
        Content::Text(t) => counter.count(t),
        Content::Parts(parts) => {
            let rule = counter.image_rule();
            let text = |t: &str| counter.count(t);
            parts
                .iter()
                .map(|p| crate::media_tokens::part_tokens(p, rule, &text).tokens)
                .sum()
        }
    };
    let mut n = counter.overhead(TOKENS_PER_MESSAGE) + counter.count(m.role.as_str()) + content;
    if let Some(name) = &m.name {
        n += counter.count(name) + counter.overhead(TOKENS_PER_NAME);
    }
    if let Some(id) = &m.tool_call_id {
        n += counter.count(id);
    }
    if let Some(calls) = &m.tool_calls {
        n += counter.count(&serde_json::to_string(calls).unwrap_or_default());
    }
    n
}

/// Counts of recently seen messages, keyed by counter and a 128-bit hash of
/// the message, so a conversation that grew by one message costs one count.
struct Cache {
    /// Counter key -> message hash -> count.
    map: HashMap<String, HashMap<u128, u32, foldhash::fast::RandomState>>,
    len: usize,
}

const CACHE_LIMIT: usize = 250_000;

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| {
    Mutex::new(Cache {
        map: HashMap::new(),
        len: 0,
    })
});

fn message_hash(m: &Message) -> u128 {
    use xxhash_rust::xxh3::xxh3_128_with_seed;
    // One pass over the content, seeded by the role; the rarer fields mix in
    // their own hashes.
    let role = m.role as u64;
    let mut h = match &m.content {
        Content::Text(t) => xxh3_128_with_seed(t.as_bytes(), role),
        Content::Parts(_) => xxh3_128_with_seed(b"parts", role),
    };
    let mut mix = |tag: u64, bytes: &[u8]| {
        h = h.rotate_left(17) ^ xxh3_128_with_seed(bytes, tag);
    };
    if let Content::Parts(parts) = &m.content {
        // A media part's count depends on its kind, its detail, and its
        // bytes (an image's size is in its header; a file's pages and
        // audio's length anywhere): hashed whole, as text is.
        for p in parts {
            match p {
                Part::Text(t) => mix(0x74, t.as_bytes()),
                other => {
                    let media = other.media().expect("a media part");
                    mix(0x6d, other.kind().as_bytes());
                    mix(0x64, media.detail.map_or("", |d| d.as_str()).as_bytes());
                    match &media.source {
                        Source::Url(u) => mix(0x75, u.as_bytes()),
                        Source::Data { media_type, data } => {
                            mix(0x6d74, media_type.as_bytes());
                            mix(0x64a7, data.as_str().as_bytes());
                        }
                    }
                }
            }
        }
    }
    if let Some(name) = &m.name {
        mix(0x6e61_6d65, name.as_bytes());
    }
    if let Some(id) = &m.tool_call_id {
        mix(0x6964, id.as_bytes());
    }
    if let Some(calls) = &m.tool_calls {
        mix(
            0x7463,
            serde_json::to_string(calls).unwrap_or_default().as_bytes(),
        );
    }
    h
}

/// Counts every message (using and filling the cache when the counter
/// allows it) and totals them with the reply priming.
pub fn count_messages(counter: &dyn TokenCounter, messages: &[Message]) -> TokenReport {
    let counts = match counter.cache_key() {
        None => messages
            .iter()
            .map(|m| message_tokens(counter, m))
            .collect(),
        Some(key) => cached_counts(counter, key, messages),
    };
    let total = counts.iter().sum::<usize>() + counter.overhead(REPLY_PRIMING);
    let media = media_tokens(counter, messages);
    TokenReport {
        encoding: counter.name().to_owned(),
        approximate: counter.approximate() || media.iter().any(|m| m.approximate),
        messages: counts,
        total,
        media,
    }
}

fn cached_counts(counter: &dyn TokenCounter, key: &str, messages: &[Message]) -> Vec<usize> {
    let hashes: Vec<u128> = messages.iter().map(message_hash).collect();
    let mut counts: Vec<Option<usize>> = {
        let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        match cache.map.get(key) {
            Some(known) => hashes
                .iter()
                .map(|h| known.get(h).map(|&n| n as usize))
                .collect(),
            None => vec![None; hashes.len()],
        }
    };
    let mut fresh = Vec::new();
    for (i, slot) in counts.iter_mut().enumerate() {
        if slot.is_none() {
            let n = message_tokens(counter, &messages[i]);
            *slot = Some(n);
            fresh.push((hashes[i], n));
        }
    }
    if !fresh.is_empty() {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len + fresh.len() > CACHE_LIMIT {
            cache.map.clear();
            cache.len = 0;
        }
        let known = cache.map.entry(key.to_owned()).or_default();
        let before = known.len();
        for (h, n) in fresh {
            known.insert(h, u32::try_from(n).unwrap_or(u32::MAX));
        }
        let added = known.len() - before;
        cache.len += added;
    }
    counts.into_iter().map(|n| n.unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Role;

    #[test]
    fn model_table_picks_encodings() {
        let enc = |m: &str| model_info(m).encoding;
        assert_eq!(enc("gpt-4o-mini"), Some(Encoding::O200kBase));
        assert_eq!(enc("gpt-4.1-nano"), Some(Encoding::O200kBase));
        assert_eq!(enc("gpt-5"), Some(Encoding::O200kBase));
        assert_eq!(enc("o3-mini"), Some(Encoding::O200kBase));
        assert_eq!(enc("o4-mini"), Some(Encoding::O200kBase));
        assert_eq!(enc("gpt-4"), Some(Encoding::Cl100kBase));
        assert_eq!(enc("gpt-4-turbo-2024-04-09"), Some(Encoding::Cl100kBase));
        assert_eq!(enc("gpt-3.5-turbo"), Some(Encoding::Cl100kBase));
        assert_eq!(enc("openai:gpt-4o"), Some(Encoding::O200kBase));
        assert_eq!(enc("claude-sonnet-4-5"), None);
        assert_eq!(enc("qwen-max"), None);
        assert_eq!(enc("llama3"), None);
        assert_eq!(model_info("gpt-4").context_window, Some(8_192));
        assert_eq!(model_info("claude-3-opus").context_window, Some(200_000));
    }

    #[test]
    fn special_token_lookalikes_are_text() {
        // `<|endoftext|>` as ordinary text is several tokens, never one.
        assert!(Encoding::Cl100kBase.count("<|endoftext|>") > 1);
        assert!(Encoding::O200kBase.count("<|endoftext|>") > 1);
    }

    #[test]
    fn chat_overhead_follows_the_published_formula() {
        let c = Encoding::O200kBase;
        let plain = Message::new(Role::User, "hello world");
        assert_eq!(message_tokens(&c, &plain), 3 + 1 + 2);
        let mut named = plain.clone();
        named.name = Some("ann".into());
        assert_eq!(message_tokens(&c, &named), 3 + 1 + 2 + c.count("ann") + 1);
        let report = count_messages(&c, &[plain.clone(), plain]);
        assert_eq!(report.total, 6 + 6 + 3);
        assert!(!report.approximate);
    }

    #[test]
    fn the_cache_gives_the_same_counts() {
        let msgs: Vec<Message> = (0..50)
            .map(|i| Message::new(Role::User, format!("message number {i} 你好")))
            .collect();
        let first = count_messages(&Encoding::Cl100kBase, &msgs);
        let second = count_messages(&Encoding::Cl100kBase, &msgs);
        assert_eq!(first, second);
        let direct: Vec<usize> = msgs
            .iter()
            .map(|m| message_tokens(&Encoding::Cl100kBase, m))
            .collect();
        assert_eq!(first.messages, direct);
    }

    #[test]
    fn approximate_errs_high() {
        let text = "The quick brown fox jumps over the lazy dog.";
        assert!(Approximate.count(text) > Encoding::Cl100kBase.count(text));
        assert!(counter_for_model(Some("claude-3-5-sonnet")).approximate());
        assert!(!counter_for_model(Some("gpt-4o")).approximate());
    }

    /// The estimate scales the whole count, framing included: every
    /// message and the total are at least 1.25 times the exact
    /// `cl100k_base` count, and the reply priming is 4, not 3.
    #[test]
    fn approximate_scales_the_framing_too() {
        let mut named = Message::new(Role::Assistant, "Sure: here it is.");
        named.name = Some("helper".into());
        let msgs = [Message::new(Role::User, "hi"), named];
        let exact = count_messages(&Encoding::Cl100kBase, &msgs);
        let approx = count_messages(&Approximate, &msgs);
        for (e, a) in exact.messages.iter().zip(&approx.messages) {
            assert!(*a >= (e * 5).div_ceil(4), "{a} < 1.25 x {e}");
        }
        assert!(approx.total >= (exact.total * 5).div_ceil(4));
        assert_eq!(approx.total - approx.messages.iter().sum::<usize>(), 4);
        assert_eq!(exact.total - exact.messages.iter().sum::<usize>(), 3);
    }
}
