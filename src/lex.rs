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
///
/// As minijinja's lexer does, a closer counts only where every `(`, `[`
/// and `{` opened inside the tag is closed again (`{{ {'a': {'b': 1}} }}`
/// ends at the last `}}`), so that this pass and the engine always agree
/// on where a tag ends.
pub(crate) fn tag_end(src: &str, from: usize, closer: &[u8; 2]) -> usize {
    let b = src.as_bytes();
    let mut i = from;
    let mut quote: Option<u8> = None;
    let mut balance: isize = 0;
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
                if balance == 0 && c == closer[0] && b.get(i + 1) == Some(&closer[1]) {
                    return i + 2;
                }
                match c {
                    b'"' | b'\'' => quote = Some(c),
                    b'(' | b'[' | b'{' => balance += 1,
                    b')' | b']' | b'}' => balance -= 1,
                    _ => {}
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

/// The names a source assigns itself: `{% set a %}`, `{% set a, b = ... %}`,
/// `{% for x, y in ... %}`, `{% with a = ... %}`, `{% macro m(...) %}`,
/// `{% import "t" as m %}`, `{% from "t" import a, b as c %}`. Found
/// lexically, like everything here: good enough to tell a template's own
/// variables from the inputs it expects.
pub(crate) fn assigned_names(src: &str) -> std::collections::HashSet<String> {
    let mut names = std::collections::HashSet::new();
    let mut add_idents = |text: &str| {
        for part in text.split([',', '(', ')']) {
            let word = part.trim();
            if crate::reference::is_identifier(word) {
                names.insert(word.to_owned());
            }
        }
    };
    for t in tokenize(src) {
        if t.kind != Tok::Stmt {
            continue;
        }
        let tag = &src[t.start..t.end];
        let keyword = stmt_keyword(tag);
        let inner = tag
            .trim_start_matches("{%")
            .trim_end_matches("%}")
            .trim_matches(['-', '+', '~'])
            .trim();
        let rest = inner[keyword.len().min(inner.len())..].trim();
        match keyword {
            "set" => add_idents(
                rest.split('=')
                    .next()
                    .unwrap_or(rest)
                    .split('|')
                    .next()
                    .unwrap_or(""),
            ),
            "for" => add_idents(rest.split(" in ").next().unwrap_or("")),
            "with" => {
                for pair in rest.split(',') {
                    add_idents(pair.split('=').next().unwrap_or(""));
                }
            }
            "macro" => add_idents(rest.split('(').next().unwrap_or("")),
            "import" => {
                if let Some((_, alias)) = rest.rsplit_once(" as ") {
                    add_idents(alias);
                }
            }
            "from" => {
                if let Some((_, list)) = rest.split_once(" import ") {
                    for item in list.split(',') {
                        let item = item.trim();
                        add_idents(item.rsplit_once(" as ").map_or(item, |(_, a)| a));
                    }
                }
            }
            _ => {}
        }
    }
    names
}

/// The most operators one tag may chain. minijinja parses and compiles an
/// expression recursively, one stack frame or more per operator, so a tag
/// chaining tens of thousands (`{{ 1+1+...+1 }}`, `not not ... x`,
/// `x|lower|lower...`, `x.a.a...`) overflows a thread's stack and aborts
/// the process. 8,000 render in a debug build on an 8 MiB stack; this
/// leaves room for the 2 MiB stacks of worker threads. Real templates use
/// a few dozen.
pub(crate) const MAX_TAG_OPERATORS: usize = 1_000;

/// The first expression or statement tag of `src` that chains more than
/// [`MAX_TAG_OPERATORS`] operators: its offset and how many it has.
/// Counted lexically, outside quoted strings: the operator characters
/// `+ - * / % ~ | . [ ( < > = !` and the words `not and or in is if else`.
pub(crate) fn overlong_tag(src: &str) -> Option<(usize, usize)> {
    for t in tokenize(src) {
        if !matches!(t.kind, Tok::Expr | Tok::Stmt) {
            continue;
        }
        let b = &src.as_bytes()[t.start + 2..t.end.saturating_sub(2).max(t.start + 2)];
        let count = operator_count(b);
        if count > MAX_TAG_OPERATORS {
            return Some((t.start, count));
        }
    }
    None
}

/// How many operators an expression has, counted lexically outside quoted
/// strings: the characters `+ - * / % ~ | . [ ( < > = !` and the words
/// `not and or in is if else`.
pub(crate) fn operator_count(b: &[u8]) -> usize {
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut count = 0usize;
    // After a word, scanning resumes at its end.
    let mut skip_to = 0;
    for (i, c, _) in unquoted(b) {
        if i < skip_to {
            continue;
        }
        if b"+-*/%~|.[(<>=!".contains(&c) {
            count += 1;
        } else if ident(c) && (i == 0 || !ident(b[i - 1])) {
            let end = b[i..]
                .iter()
                .position(|&c| !ident(c))
                .map_or(b.len(), |p| i + p);
            if matches!(
                &b[i..end],
                b"not" | b"and" | b"or" | b"in" | b"is" | b"if" | b"else"
            ) {
                count += 1;
            }
            skip_to = end;
        }
    }
    count
}

/// The bytes of a Jinja expression outside its string literals, each with
/// its offset and the bracket depth it stands at (`(`, `[` and `{` count;
/// an opening bracket is at the depth outside it). Quote characters and
/// what they enclose are not given; a backslash in a string escapes the
/// next byte. What every top-level scan of an expression here builds on:
/// splitting at `,` or `|`, finding an assignment, counting operators.
pub(crate) fn unquoted(b: &[u8]) -> impl Iterator<Item = (usize, u8, isize)> + '_ {
    let mut depth = 0isize;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            let (at, c) = (i, b[i]);
            i += 1;
            if let Some(q) = quote {
                if c == b'\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
                continue;
            }
            match c {
                b'"' | b'\'' => quote = Some(c),
                b'(' | b'[' | b'{' => {
                    depth += 1;
                    return Some((at, c, depth - 1));
                }
                b')' | b']' | b'}' => {
                    depth -= 1;
                    return Some((at, c, depth));
                }
                _ => return Some((at, c, depth)),
            }
        }
        None
    })
}

/// `s` split at `sep` where it is outside strings and brackets.
pub(crate) fn split_top_level(s: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut from = 0;
    for (i, _, _) in unquoted(s.as_bytes()).filter(|&(_, c, depth)| c == sep && depth == 0) {
        parts.push(&s[from..i]);
        from = i + 1;
    }
    parts.push(&s[from..]);
    parts
}

/// A method call found in a tag: `receiver.method(`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MethodCall {
    /// Offset of the method's name.
    pub offset: usize,
    /// The first name of the dotted path it is called on (`user` in
    /// `user.name.strip()`); `None` when that is not a plain name (a
    /// literal, a call's result, a subscript).
    pub root: Option<String>,
    pub method: String,
}

/// Every `x.name(` in the expression and statement tags of `src`, outside
/// quoted strings. Lexical, like everything here.
pub(crate) fn method_calls(src: &str) -> Vec<MethodCall> {
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    for t in tokenize(src) {
        if !matches!(t.kind, Tok::Expr | Tok::Stmt) {
            continue;
        }
        let b = &src.as_bytes()[..t.end];
        let base = t.start + 2;
        // After a method name, scanning resumes at its end.
        let mut skip_to = 0;
        for (at, c, _) in unquoted(&b[base..]) {
            let i = base + at;
            if i < skip_to
                || c != b'.'
                || !b
                    .get(i + 1)
                    .is_some_and(|n| n.is_ascii_alphabetic() || *n == b'_')
            {
                continue;
            }
            let name_start = i + 1;
            let mut name_end = name_start;
            while name_end < b.len() && ident(b[name_end]) {
                name_end += 1;
            }
            let mut after = name_end;
            while after < b.len() && b[after].is_ascii_whitespace() {
                after += 1;
            }
            if b.get(after) == Some(&b'(') {
                // The dotted path before the dot, back to its first name.
                let mut start = i;
                while start > 0 && (ident(b[start - 1]) || b[start - 1] == b'.') {
                    start -= 1;
                }
                let path = &src[start..i];
                let first = path.split('.').next().unwrap_or("");
                let plain = !first.is_empty()
                    && !first.as_bytes()[0].is_ascii_digit()
                    && (start == 0 || !matches!(b[start - 1], b')' | b']' | b'"' | b'\''));
                out.push(MethodCall {
                    offset: name_start,
                    root: plain.then(|| first.to_owned()),
                    method: src[name_start..name_end].to_owned(),
                });
            }
            skip_to = name_end;
        }
    }
    out
}

/// The aliases a source binds with `{% import "t" as m %}`: names whose
/// dotted calls are macros, not methods.
pub(crate) fn import_aliases(src: &str) -> std::collections::HashSet<String> {
    let mut names = std::collections::HashSet::new();
    for t in tokenize(src) {
        if t.kind != Tok::Stmt {
            continue;
        }
        let tag = &src[t.start..t.end];
        if stmt_keyword(tag) != "import" {
            continue;
        }
        let inner = tag
            .trim_start_matches("{%")
            .trim_end_matches("%}")
            .trim_matches(['-', '+', '~'])
            .trim();
        if let Some((_, alias)) = inner.rsplit_once(" as ") {
            let alias = alias.split_whitespace().next().unwrap_or("");
            if crate::reference::is_identifier(alias) {
                names.insert(alias.to_owned());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {

    #[test]
    fn top_level_scans_skip_strings_and_count_brackets() {
        assert_eq!(
            split_top_level(r#"a, f(b, c), "d, \" e", [g, h], 'i,j'"#, b','),
            ["a", " f(b, c)", r#" "d, \" e""#, " [g, h]", " 'i,j'"]
        );
        assert_eq!(split_top_level("", b','), [""]);
        let seen: Vec<(u8, isize)> = unquoted(br#"x["y"](z)"#).map(|(_, c, d)| (c, d)).collect();
        assert_eq!(
            seen,
            [
                (b'x', 0),
                (b'[', 0),
                (b']', 0),
                (b'(', 0),
                (b'z', 1),
                (b')', 0)
            ]
        );
        // An unclosed string hides the rest.
        assert_eq!(
            unquoted(b"a 'b, c").filter(|&(_, c, _)| c == b',').count(),
            0
        );
    }

    use super::*;

    #[test]
    fn method_calls_are_found_outside_strings() {
        let src = "{{ user.name.strip() }}{{ 'a.b(c)'.upper() }}{% for k, v in d.items() %}\
                   {% endfor %}{{ (x or y).lower () }}{{ 1.5 }}{{ m.sig(1) }}{# c.d() #}x.y()";
        let calls = method_calls(src);
        let got: Vec<(Option<&str>, &str)> = calls
            .iter()
            .map(|c| (c.root.as_deref(), c.method.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("user"), "strip"),
                (None, "upper"),
                (Some("d"), "items"),
                (None, "lower"),
                (Some("m"), "sig"),
            ]
        );
        let calls = method_calls("{{ a.b() }}");
        assert_eq!(&"{{ a.b() }}"[calls[0].offset..calls[0].offset + 1], "b");
        assert!(method_calls("{{ a.").is_empty());
        assert!(method_calls("{{ a.b").is_empty());
    }

    #[test]
    fn tags_end_where_minijinja_ends_them() {
        // A `}}` inside an open brace does not end an expression tag.
        let src = "{{ {'a': {'b': 1}} ~ \"{% x\" }}{% set ns.me = ns %}{{ \"y %}\" }}";
        let kinds: Vec<(Tok, &str)> = tokenize(src)
            .iter()
            .map(|t| (t.kind, &src[t.start..t.end]))
            .collect();
        assert_eq!(
            kinds,
            [
                (Tok::Expr, "{{ {'a': {'b': 1}} ~ \"{% x\" }}"),
                (Tok::Stmt, "{% set ns.me = ns %}"),
                (Tok::Expr, "{{ \"y %}\" }}"),
            ]
        );
        // An unclosed bracket runs to the end, as the engine reads it.
        assert_eq!(tokenize("{{ [1 }} x").len(), 1);
    }

    #[test]
    fn overlong_tags_are_found_and_strings_do_not_count() {
        let chain = |op: &str, n: usize| format!("{{{{ x{} }}}}", op.repeat(n));
        assert_eq!(overlong_tag(&chain("+1", 1_000)), None);
        assert_eq!(overlong_tag(&chain("+1", 1_001)), Some((0, 1_001)));
        assert!(overlong_tag(&chain("|lower", 5_000)).is_some());
        assert!(overlong_tag(&chain(".a", 5_000)).is_some());
        let nots = format!("text {{% if {}x %}}{{% endif %}}", "not ".repeat(2_000));
        // The `if` counts too.
        assert_eq!(overlong_tag(&nots), Some((5, 2_001)));
        // Operators inside strings, and in text, are not operators.
        let quoted = format!("{{{{ '{}' }}}} {}", "+".repeat(5_000), "+".repeat(5_000));
        assert_eq!(overlong_tag(&quoted), None);
        // Words that merely contain `in` or `or` are not operators.
        assert_eq!(
            overlong_tag(&format!("{{{{ {} }}}}", "index order ".repeat(2_000))),
            None
        );
    }

    #[test]
    fn import_aliases_are_found() {
        let src =
            "{% import 'x@1' as m %}{%- import \"y\" as n with context -%}{% from 'z' import q %}";
        let mut got: Vec<String> = import_aliases(src).into_iter().collect();
        got.sort();
        assert_eq!(got, ["m", "n"]);
    }

    #[test]
    fn assigned_names_are_found() {
        let src = "{% set ns = namespace() %}{% set a, b = 1, 2 %}{% set cap %}x{% endset %}\
                   {% for k, v in d|items %}{% endfor %}{%- with w = 1, z = 2 -%}{% endwith %}\
                   {% macro shot(q) %}{% endmacro %}{% import 'm' as m %}\
                   {% from 'f' import one, two as deux %}{{ read_only }}{% if cond %}{% endif %}";
        let mut got: Vec<String> = assigned_names(src).into_iter().collect();
        got.sort();
        assert_eq!(
            got,
            [
                "a", "b", "cap", "deux", "k", "m", "ns", "one", "shot", "v", "w", "z"
            ]
        );
    }
}
