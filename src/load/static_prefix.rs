//! The proof that a static cache breakpoint caches something static.
//!
//! A prompt cache hits only when the bytes before the breakpoint are the
//! same from call to call. Every byte before a static breakpoint must
//! therefore come from template text, or from parameters the template
//! declares `stable: true` (a tenant's name, a product's manual: values
//! that change rarely, each value its own cache entry). So, for every
//! breakpoint of a compiled source, each tag before it (`{{ }}` and
//! `{% %}`, and all of any template it includes there) is read for:
//!
//! - a declared parameter that is not `stable: true` (its value changes
//!   the prefix on every call, so the cache is written and never read);
//! - a call whose result varies by itself (`now()`, `random`, `uuid`).
//!
//! Either is reported naming the breakpoint's line, the tag's line and the
//! parameter. A breakpoint after a history splice is a *conversation*
//! breakpoint: its prefix grows with the conversation by design, and the
//! rule applies to the text before the first splice only.
//!
//! The analysis is lexical: a tag's identifiers are compared with the
//! parameter names (strings, attributes and filter names are not
//! identifiers here). A local variable named like a parameter is taken
//! for the parameter: the report errs towards saying too much.
//!
//! `Registry::load` reports these as warnings (the template still works,
//! it just pays full price); `promptbook lint` as errors.
//!
//! It also counts the static prefix's template text and warns when it is
//! under the model's minimum cacheable length: 1024 tokens for OpenAI's
//! models and most of Claude's, 2048 for Claude Haiku 3 and 3.5, 4096
//! for Claude Opus 4.5 and Haiku 4.5 (Anthropic's prompt caching guide;
//! OpenAI's prompt caching guide). The count covers the template's own
//! text only (what stable parameters add is not known at load), so it is
//! a lower bound; a render reports the real count
//! ([`CacheBreakpoint::tokens`](crate::CacheBreakpoint::tokens)).

use std::collections::HashSet;

use crate::body::{MARK_CLOSE, MARK_OPEN, SPLICE};
use crate::error::{Diagnostic, Location, line_col};
use crate::lex::{Tok, tokenize};
use crate::registry::{Entry, Index};

/// Functions and filters whose result varies from call to call (`debug()`
/// prints every input and the engine's state).
const VOLATILE: &[&str] = &[
    "now", "random", "uuid", "uuid4", "randint", "shuffle", "time", "debug",
];

/// The smallest prefix the model caches, in tokens.
pub(crate) fn min_cacheable_tokens(model: &str) -> usize {
    let name = model.rsplit_once(':').map_or(model, |(_, n)| n);
    let name = name.rsplit('/').next().unwrap_or(name);
    if name.starts_with("claude-opus-4-5") || name.starts_with("claude-haiku-4-5") {
        4096
    } else if name.starts_with("claude-3-5-haiku") || name.starts_with("claude-3-haiku") {
        2048
    } else {
        1024
    }
}

/// The findings for one template: `Diagnostic::lint_error`s for prefixes
/// that are not static, warnings for short ones.
pub(crate) fn check(entry: &Entry, index: &Index, path: &std::path::Path) -> Vec<Diagnostic> {
    let source = &entry.source;
    let markers = markers(source);
    let breakpoints: Vec<usize> = markers
        .iter()
        .filter(|(_, l)| *l == crate::cache_breakpoint::LETTER)
        .map(|(at, _)| *at)
        .collect();
    if breakpoints.is_empty() {
        return inherited(entry, index, path);
    }
    let first_splice = markers
        .iter()
        .find(|(_, l)| *l == SPLICE)
        .map(|(at, _)| *at);
    let t = &entry.template;
    let volatile_params: HashSet<&str> = t
        .parameters
        .iter()
        .filter(|p| p.schema.get("stable").and_then(|s| s.as_bool()) != Some(true))
        .map(|p| p.name.as_str())
        .collect();
    let at = |offset: usize| {
        let (l, c) = line_col(source, offset);
        Location::at(
            path,
            l,
            (entry.form == crate::template::FileForm::Body).then_some(c),
        )
    };
    let line = |offset: usize| line_col(source, offset).0;
    let mut out = layout(entry, source, &markers, &at);
    let mut reported = HashSet::new();
    for &b in &breakpoints {
        let conversation = first_splice.is_some_and(|s| s < b);
        let end = if conversation {
            first_splice.unwrap_or(b)
        } else {
            b
        };
        let mut text = String::new();
        for finding in scan(source, end, &volatile_params, index, 0, &mut text) {
            if !reported.insert((finding.offset, finding.what.clone())) {
                continue;
            }
            let what = match &finding.what {
                What::Parameter(p) => format!(
                    "interpolates `{p}`, which is not `stable: true`: its value changes the \
                     cached prefix, so the cache is written on every call and never read. Move \
                     it below the breakpoint, or declare it `stable: true` if it changes rarely"
                ),
                What::Volatile(f) => format!(
                    "calls `{f}`, whose result varies: the cached prefix changes on every call. \
                     Move it below the breakpoint"
                ),
            };
            let via = finding
                .via
                .as_ref()
                .map(|inc| format!(" (in `{inc}`, included here)"))
                .unwrap_or_default();
            let kind = if conversation {
                "conversation cache breakpoint"
            } else {
                "cache breakpoint"
            };
            out.push(Diagnostic::lint_error(
                at(finding.offset),
                format!(
                    "the {kind} on line {} caches this line, which {what}{via}",
                    line(b)
                ),
            ));
        }
        if !conversation && let Some(model) = t.model.as_ref().and_then(|m| m.name.as_deref()) {
            let counter = crate::tokens::counter_for_model(Some(model));
            let tokens = counter.count(&text);
            let min = min_cacheable_tokens(model);
            if tokens < min {
                out.push(Diagnostic::new(
                    crate::error::Severity::Warning,
                    at(b),
                    format!(
                        "the prefix of this cache breakpoint is about {tokens} tokens of template \
                         text; {model} caches prefixes of at least {min} tokens, so unless stable \
                         parameters add {} more, nothing is cached",
                        min - tokens
                    ),
                ));
            }
        }
    }
    out
}

/// Layouts that cannot render, or cache nothing, found in the source
/// rather than at render time: text after a breakpoint in the same
/// message, two breakpoints in a row, a 1h breakpoint after a 5m one, and
/// a breakpoint before the first message (it caches the tools) in a
/// template without tools.
fn layout(
    entry: &Entry,
    source: &str,
    markers: &[(usize, char)],
    at: &dyn Fn(usize) -> Location,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut last_ttl: Option<(usize, &str)> = None;
    for (k, &(b, letter)) in markers.iter().enumerate() {
        if letter != crate::cache_breakpoint::LETTER {
            continue;
        }
        let end = source[b..]
            .find(MARK_CLOSE)
            .map_or(source.len(), |c| b + c + MARK_CLOSE.len_utf8());
        let ttl = if source[b..end].contains("1h") {
            "1h"
        } else {
            "5m"
        };
        if let Some((prev, "5m")) = last_ttl
            && ttl == "1h"
        {
            out.push(Diagnostic::lint_error(
                at(b),
                format!(
                    "this 1h cache breakpoint comes after a 5m one (line {}): Anthropic requires \
                     longer TTLs first, so the render fails; make the earlier one 1h or this one 5m",
                    line_col(source, prev).0
                ),
            ));
        }
        last_ttl = Some((b, ttl));
        let next = markers.get(k + 1).map_or(source.len(), |m| m.0);
        let between = &source[end..next];
        let text_after = tokenize(between)
            .iter()
            .any(|t| t.kind == Tok::Text && !between[t.start..t.end].trim().is_empty());
        match markers.get(k + 1) {
            Some(&(n, l)) if l == crate::cache_breakpoint::LETTER && between.trim().is_empty() => {
                out.push(Diagnostic::lint_error(
                    at(n),
                    "two cache breakpoints in a row mark the same place, and the render fails; \
                     keep one"
                        .to_owned(),
                ));
            }
            _ if text_after => out.push(Diagnostic::lint_error(
                at(b),
                "text follows this cache breakpoint in the same message, and the render fails: a \
                 breakpoint goes between messages (right before a role line, a history splice or \
                 the end)"
                    .to_owned(),
            )),
            _ => {}
        }
        let first = markers
            .iter()
            .all(|&(m, l)| m >= b || l == crate::cache_breakpoint::LETTER);
        if first && entry.template.tools.is_empty() {
            out.push(Diagnostic::new(
                crate::error::Severity::Warning,
                at(b),
                "a cache breakpoint before the first message caches the tool definitions, and \
                 this template declares none: it caches nothing"
                    .to_owned(),
            ));
        }
    }
    out
}

/// A template that extends a parent with a static breakpoint: the blocks
/// it overrides that the parent renders before that breakpoint are read
/// like the parent's own text (a child's `{{ secret }}` in such a block is
/// in the cached prefix).
fn inherited(entry: &Entry, index: &Index, path: &std::path::Path) -> Vec<Diagnostic> {
    let Some(parent) = entry
        .template
        .extends
        .as_deref()
        .and_then(|p| index.resolve(p).ok())
    else {
        return Vec::new();
    };
    let psrc = &parent.source;
    let pmarkers = markers(psrc);
    let first_splice = pmarkers.iter().find(|(_, l)| *l == SPLICE).map(|m| m.0);
    let Some(last_static) = pmarkers
        .iter()
        .filter(|&&(at, l)| {
            l == crate::cache_breakpoint::LETTER && first_splice.is_none_or(|s| at < s)
        })
        .map(|m| m.0)
        .next_back()
    else {
        return Vec::new();
    };
    let before: HashSet<&str> = blocks(psrc)
        .into_iter()
        .filter(|b| b.tag < last_static)
        .map(|b| b.name)
        .collect();
    let params: HashSet<&str> = entry
        .template
        .parameters
        .iter()
        .filter(|p| p.schema.get("stable").and_then(|s| s.as_bool()) != Some(true))
        .map(|p| p.name.as_str())
        .collect();
    let source = &entry.source;
    let mut out = Vec::new();
    let mut text = String::new();
    for block in blocks(source)
        .into_iter()
        .filter(|b| before.contains(b.name))
    {
        let inner = &source[block.start..block.end];
        for f in scan(inner, inner.len(), &params, index, 0, &mut text) {
            let offset = block.start + if f.via.is_some() { 0 } else { f.offset };
            let (l, c) = line_col(source, offset);
            let what = match &f.what {
                What::Parameter(p) => format!("interpolates `{p}`, which is not `stable: true`"),
                What::Volatile(v) => format!("calls `{v}`, whose result varies"),
            };
            out.push(Diagnostic::lint_error(
                Location::at(
                    path,
                    l,
                    (entry.form == crate::template::FileForm::Body).then_some(c),
                ),
                format!(
                    "block `{}` renders before the cache breakpoint of `{}` (line {}), and this \
                     line {what}: the cached prefix changes on every call",
                    block.name,
                    parent.id,
                    line_col(psrc, last_static).0
                ),
            ));
        }
    }
    out
}

/// A `{% block NAME %}`: its name, where its tag starts, where its body
/// starts and ends.
struct Block<'a> {
    name: &'a str,
    tag: usize,
    start: usize,
    end: usize,
}

/// The blocks of a source, nested ones included.
fn blocks(source: &str) -> Vec<Block<'_>> {
    let mut open: Vec<(&str, usize, usize)> = Vec::new();
    let mut out = Vec::new();
    for t in tokenize(source) {
        if t.kind != Tok::Stmt {
            continue;
        }
        let tag = &source[t.start..t.end];
        match crate::lex::stmt_keyword(tag) {
            "block" => {
                let name = tag
                    .trim_start_matches("{%")
                    .trim_start_matches(['-', '+', '~'])
                    .trim_start()
                    .trim_start_matches("block")
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .find(|w| !w.is_empty())
                    .unwrap_or("");
                open.push((name, t.start, t.end));
            }
            "endblock" => {
                if let Some((name, tag, start)) = open.pop() {
                    out.push(Block {
                        name,
                        tag,
                        start,
                        end: t.start,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// The byte offsets and letters of the (tagged or not) markers of a
/// compiled source.
fn markers(source: &str) -> Vec<(usize, char)> {
    source
        .match_indices(MARK_OPEN)
        .filter_map(|(i, m)| {
            let letter = source[i + m.len()..].chars().next()?;
            Some((i, letter))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum What {
    Parameter(String),
    Volatile(String),
}

struct Finding {
    offset: usize,
    what: What,
    /// The included template it is in.
    via: Option<String>,
}

/// The findings in `source[..end]`; appends its template text to `text`.
fn scan(
    source: &str,
    end: usize,
    params: &HashSet<&str>,
    index: &Index,
    depth: usize,
    text: &mut String,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in tokenize(source) {
        if t.start >= end {
            break;
        }
        let tag = &source[t.start..t.end.min(end)];
        match t.kind {
            Tok::Text | Tok::Raw => {
                // Template text, markers left out.
                let mut rest = tag;
                while let Some(i) = rest.find(MARK_OPEN) {
                    text.push_str(&rest[..i]);
                    rest = &rest[i..];
                    let close = rest.find(MARK_CLOSE).map(|c| c + MARK_CLOSE.len_utf8());
                    let skip = close.unwrap_or(rest.len()).min(rest.len());
                    rest = &rest[skip..];
                }
                text.push_str(rest);
            }
            Tok::Comment => {}
            Tok::Expr | Tok::Stmt => {
                for name in volatile_filters(tag) {
                    out.push(Finding {
                        offset: t.start,
                        what: What::Volatile(name.to_owned()),
                        via: None,
                    });
                }
                for name in identifiers(tag) {
                    if params.contains(name) {
                        out.push(Finding {
                            offset: t.start,
                            what: What::Parameter(name.to_owned()),
                            via: None,
                        });
                    } else if VOLATILE.contains(&name) {
                        out.push(Finding {
                            offset: t.start,
                            what: What::Volatile(name.to_owned()),
                            via: None,
                        });
                    }
                }
            }
        }
    }
    // What an include before the breakpoint renders is before it too.
    if depth < 8 {
        for r in super::targets::tag_refs(source).iter() {
            if r.offset >= end {
                continue;
            }
            let super::targets::Target::Names(names) = &r.target else {
                continue;
            };
            let Some(included) = names.iter().find_map(|n| index.resolve(n).ok()) else {
                continue;
            };
            let inner = &included.source;
            for mut f in scan(inner, inner.len(), params, index, depth + 1, text) {
                f.via.get_or_insert_with(|| included.id.clone());
                f.offset = r.offset;
                out.push(f);
            }
        }
    }
    out
}

/// The filters of a tag whose result varies (`|random`, `|shuffle`).
fn volatile_filters(tag: &str) -> Vec<&str> {
    let b = tag.as_bytes();
    crate::lex::unquoted(b)
        .filter(|&(_, c, _)| c == b'|')
        .filter_map(|(i, _, _)| {
            let rest = tag[i + 1..].trim_start();
            let name_len = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..name_len];
            VOLATILE.contains(&name).then_some(name)
        })
        .collect()
}

/// The identifiers a tag reads: names outside strings that are not an
/// attribute (`x.name`), a filter or test (`|upper`, `is defined`) or a
/// keyword argument's name (`f(name=...)`).
fn identifiers(tag: &str) -> Vec<&str> {
    let b = tag.as_bytes();
    let mut out = Vec::new();
    let mut skip_to = 0;
    for (i, c, _) in crate::lex::unquoted(b) {
        if i < skip_to || !(c.is_ascii_alphabetic() || c == b'_') {
            continue;
        }
        let end = tag[i..]
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .map_or(tag.len(), |n| i + n);
        skip_to = end;
        let before = tag[..i].trim_end();
        if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
            continue;
        }
        if before.ends_with('.') || before.ends_with('|') || before.ends_with(" is") {
            continue;
        }
        let after = tag[end..].trim_start();
        if after.starts_with('=') && !after.starts_with("==") {
            continue;
        }
        out.push(&tag[i..end]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_skip_attributes_filters_and_strings() {
        assert_eq!(
            identifiers("{{ user.name | upper ~ 'question' ~ question }}"),
            ["user", "question"]
        );
        assert_eq!(
            identifiers("{% for ex in examples %}"),
            ["for", "ex", "in", "examples"]
        );
        assert_eq!(identifiers("{{ f(name=tenant) }}"), ["f", "tenant"]);
    }

    #[test]
    fn minimum_lengths() {
        assert_eq!(min_cacheable_tokens("anthropic:claude-haiku-4-5"), 4096);
        assert_eq!(min_cacheable_tokens("claude-3-5-haiku-latest"), 2048);
        assert_eq!(min_cacheable_tokens("claude-sonnet-4-5"), 1024);
        assert_eq!(min_cacheable_tokens("gpt-4o"), 1024);
    }
}
