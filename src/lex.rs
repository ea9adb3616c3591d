//! A lexical pass over Jinja source: text, `{% raw %}` text, statement
//! tags, expression tags and comments, told apart without parsing.
//!
//! Good enough to find role lines (text) and statements to rewrite
//! (`{% set %}`) before minijinja compiles a body; quoted strings inside
//! tags are skipped, so `{{ "}}" }}` is one tag.

/// What a stretch of source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    /// Template text.
    Text,
    /// The text between `{% raw %}` and `{% endraw %}`.
    Raw,
    /// `{% ... %}`.
    Stmt,
    /// `{{ ... }}`.
    Expr,
    /// `{# ... #}`.
    Comment,
}

/// One stretch of source: its kind and its byte range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token {
    pub kind: Tok,
    pub start: usize,
    pub end: usize,
}

/// Finds the end of a tag opened at `from` (just after `{%` or `{{`),
/// skipping quoted strings. Returns the offset just past the closer.
pub(crate) fn tag_end(src: &str, from: usize, closer: &[u8; 2]) -> usize {
    let b = src.as_bytes();
    let mut i = from;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) => {
                if c == b'\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => {
                if c == b'"' || c == b'\'' {
                    quote = Some(c);
                } else if c == closer[0] && b.get(i + 1) == Some(&closer[1]) {
                    return i + 2;
                }
            }
        }
        i += 1;
    }
    b.len()
}

/// The keyword of a statement tag (`{%- block x -%}` -> `block`).
pub(crate) fn stmt_keyword(tag: &str) -> &str {
    let inner = tag
        .trim_start_matches("{%")
        .trim_start_matches(['-', '+', '~'])
        .trim_start();
    let end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    &inner[..end]
}

/// A lexical pass over Jinja source, good enough to tell text from tags.
pub(crate) fn tokenize(src: &str) -> Vec<Token> {
    let b = src.as_bytes();
    let mut tokens = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] != b'{' || !matches!(b[i + 1], b'{' | b'%' | b'#') {
            i += 1;
            continue;
        }
        if text_start < i {
            tokens.push(Token {
                kind: Tok::Text,
                start: text_start,
                end: i,
            });
        }
        let (kind, end) = match b[i + 1] {
            b'#' => (
                Tok::Comment,
                src[i + 2..].find("#}").map_or(b.len(), |p| i + 2 + p + 2),
            ),
            b'%' => (Tok::Stmt, tag_end(src, i + 2, b"%}")),
            _ => (Tok::Expr, tag_end(src, i + 2, b"}}")),
        };
        tokens.push(Token {
            kind,
            start: i,
            end,
        });
        i = end;
        if kind == Tok::Stmt
            && stmt_keyword(&src[tokens.last().map_or(0, |t| t.start)..end]) == "raw"
        {
            // Everything up to `{% endraw %}` is literal text.
            let mut j = end;
            let raw_end = loop {
                match src[j..].find("{%") {
                    Some(p) => {
                        let tag_start = j + p;
                        let tag_stop = tag_end(src, tag_start + 2, b"%}");
                        if stmt_keyword(&src[tag_start..tag_stop]) == "endraw" {
                            break tag_start;
                        }
                        j = tag_start + 2;
                    }
                    None => break b.len(),
                }
            };
            if end < raw_end {
                tokens.push(Token {
                    kind: Tok::Raw,
                    start: end,
                    end: raw_end,
                });
            }
            i = raw_end;
        }
        text_start = i;
    }
    if text_start < b.len() {
        tokens.push(Token {
            kind: Tok::Text,
            start: text_start,
            end: b.len(),
        });
    }
    tokens
}
