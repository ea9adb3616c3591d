//! Role lines printed from data: the chat-history idiom of Prompty's v1
//! files, a loop that prints each turn's role as a line of its own,
//!
//! ```text
//! {% for item in chat_history %}
//! {{ item.role }}:
//! {{ item.content }}
//! {% endfor %}
//! ```
//!
//! In the runtimes those files were written for, each printed `user:` line
//! started a message; Prompty 2.1.0 refuses the render ("Nonce mismatch").
//! In promptbook role boundaries are structural (only a role line written
//! in the template makes one), so such a loop would put the whole history,
//! as text, into the message before it. It is found here, to be reported
//! where it is written (a load error, so the isolating load leaves the
//! template out, saying why and how to migrate), and rewritten by
//! `promptbook convert` into a splice where it has the common shape.

use crate::body::Grammar;
use crate::lex::{Tok, Token, stmt_keyword, tokenize};

/// A line that prints a role from data, alone on its line before a colon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RolePrint {
    /// Byte offset of the line's first non-blank character.
    pub at: usize,
    /// The line, trimmed.
    pub line: String,
    /// What the enclosing loop iterates, when the role printed is an
    /// attribute of its loop variable (`chat_history`).
    pub list: Option<String>,
    /// Whether that loop takes its list whole: a name, no `if` filter, not
    /// `recursive` (so splicing the list is the same conversation).
    pub whole: bool,
}

/// Every line of `body` that prints a role from data: a line made of
/// expression tags only (after a `#` in Prompty's grammar), one of which
/// reads a role (`item.role`, `item['role']`, `item.get('role')`, `role`,
/// `speaker_role`, through filters or a conditional), ending in a colon
/// (written after the tags, or printed by them: `{{ m.role ~ ":" }}`,
/// `{{ m.role }}{{ ":" }}`). Lines that print other values before a colon
/// (`{{ p.name }}:` in a product list) are text in every runtime and are
/// not reported.
pub(crate) fn find(body: &str, tokens: &[Token], grammar: Grammar) -> Vec<RolePrint> {
    let mut found = Vec::new();
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim();
        let lead = content.len() - content.trim_start().len();
        offset += line.len();
        let mut at = offset - line.len() + lead;
        let mut rest = trimmed;
        if grammar == Grammar::Prompty
            && let Some(r) = rest.strip_prefix('#')
        {
            at += rest.len() - r.trim_start().len();
            rest = r.trim_start();
        }
        let Some((tags, first_tag)) = expression_tags_before_colon(body, rest, at, tokens) else {
            continue;
        };
        let Some(var) = tags.iter().find_map(|t| role_read(t)) else {
            continue;
        };
        let (list, whole) = match enclosing_loop(body, tokens, first_tag) {
            Some((vars, list, whole)) if vars.contains(&var) => (Some(list.to_owned()), whole),
            _ => (None, false),
        };
        found.push(RolePrint {
            at,
            line: trimmed.to_owned(),
            list,
            whole,
        });
    }
    found
}

/// The inner expressions of the tags `rest` (a trimmed line starting at
/// `at`) is made of, when it is only expression tags followed by a colon,
/// or only tags the last of which prints a colon.
fn expression_tags_before_colon<'a>(
    body: &'a str,
    rest: &str,
    at: usize,
    tokens: &[Token],
) -> Option<(Vec<&'a str>, usize)> {
    let end = at + rest.len();
    let mut tags = Vec::new();
    let mut first_tag = at;
    let mut tail = "";
    for t in &tokens[tokens.partition_point(|t| t.end <= at)..] {
        if t.start >= end {
            break;
        }
        match t.kind {
            // Text, then a tag: `{{ m.role }}: {{ m.content }}` is one
            // line of text in every runtime.
            Tok::Expr if !tail.is_empty() => return None,
            Tok::Expr => {
                if tags.is_empty() {
                    first_tag = t.start;
                }
                let tag = &body[t.start..t.end.min(end)];
                let inner = tag.strip_prefix("{{")?.strip_suffix("}}")?;
                tags.push(inner.trim_matches(['-', '+', '~']).trim());
            }
            Tok::Text => {
                let text = body[t.start.max(at)..t.end.min(end)].trim();
                if !tail.is_empty() || !(text.is_empty() || text == ":") {
                    return None;
                }
                tail = text;
            }
            // Statements and comments print nothing: `{% for m in h %}{{
            // m.role }}:` on one line is a role line once rendered.
            Tok::Stmt | Tok::Comment => {}
            Tok::Raw => return None,
        }
    }
    let last = tags.last()?;
    let prints_colon = ["\":", "':'", "\": ", "': '", "\":\\n", "':\\n"]
        .iter()
        .any(|c| last.contains(c));
    (tail == ":" || prints_colon).then_some((tags, first_tag))
}

/// The name whose role an expression reads: `item` in `item.role`,
/// `item['role']`, `item.get('role')`; `role` or `speaker_role` read alone.
fn role_read(inner: &str) -> Option<&str> {
    for reads in [
        ".role",
        "['role']",
        "[\"role\"]",
        ".get('role')",
        ".get(\"role\")",
    ] {
        if let Some(i) = inner.find(reads) {
            let after = &inner[i + reads.len()..];
            // `.roles` or `.role_name` read something else.
            if reads == ".role" && after.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let before = &inner[..i];
            let start = before
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(0, |p| p + 1);
            return Some(&before[start..]);
        }
    }
    let base = inner.split('|').next()?.trim();
    (base == "role" || base.ends_with("_role")).then_some(base)
}

/// The innermost `{% for VARS in LIST %}` open at `at`: its loop
/// variables, what it iterates, and whether it takes the list whole.
fn enclosing_loop<'a>(
    body: &'a str,
    tokens: &[Token],
    at: usize,
) -> Option<(Vec<&'a str>, &'a str, bool)> {
    let mut open: Vec<Option<(Vec<&str>, &str, bool)>> = Vec::new();
    for t in tokens.iter().take_while(|t| t.end <= at) {
        if t.kind != Tok::Stmt {
            continue;
        }
        let tag = &body[t.start..t.end];
        match stmt_keyword(tag) {
            "for" => open.push(parse_for(tag)),
            "endfor" => {
                open.pop();
            }
            _ => {}
        }
    }
    open.pop().flatten()
}

/// `{% for a, b in xs if c %}`: (`[a, b]`, `xs`, whether the loop takes
/// `xs` whole: a name, with no filter and not `recursive`).
fn parse_for(tag: &str) -> Option<(Vec<&str>, &str, bool)> {
    let inner = tag
        .strip_prefix("{%")?
        .strip_suffix("%}")?
        .trim_matches(['-', '+', '~'])
        .trim();
    let inner = inner.strip_prefix("for")?.trim_start();
    let (vars, rest) = inner.split_once(" in ")?;
    let filtered = rest.contains(" if ") || rest.trim_end().ends_with("recursive");
    let list = rest
        .split(" if ")
        .next()?
        .trim()
        .trim_end_matches("recursive")
        .trim();
    let whole = !filtered && crate::reference::is_identifier(list);
    let vars = vars
        .trim()
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .collect();
    Some((vars, list, whole))
}

/// The body with every history loop of the common shape replaced by a
/// splice of the list it iterates, and the lists spliced. The common
/// shape: `{% for ITEM in LIST %}` alone on its line, LIST an input
/// (`is_input`) taken whole (no `if` filter, not `recursive`); then, blank
/// lines aside, a role line printed from `ITEM` and `{{ ITEM.content }}`
/// alone on its line; then `{% endfor %}` alone on its line. Other loops
/// are left as they are (the loader reports them, and so does convert).
pub(crate) fn rewrite_as_splices(
    body: &str,
    is_input: &dyn Fn(&str) -> bool,
) -> (String, Vec<String>) {
    let tokens = tokenize(body);
    let lines: Vec<(usize, &str)> = body
        .split_inclusive('\n')
        .scan(0, |offset, line| {
            let at = *offset;
            *offset += line.len();
            Some((at, line))
        })
        .collect();
    let prints = find(body, &tokens, Grammar::Prompty);
    let mut out = String::with_capacity(body.len());
    let mut lists = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        match loop_at(&lines, i, &tokens, &prints).filter(|(list, _)| is_input(list)) {
            Some((list, next)) => {
                let eol = if lines[i].1.ends_with("\r\n") {
                    "\r\n"
                } else {
                    "\n"
                };
                out.push_str(&format!("{{{{ {list} }}}}{eol}"));
                if !lists.contains(&list) {
                    lists.push(list);
                }
                i = next;
            }
            None => {
                out.push_str(lines[i].1);
                i += 1;
            }
        }
    }
    (out, lists)
}

/// A history loop of the common shape starting at line `i`: the list it
/// iterates and the index of the line after its `{% endfor %}`.
fn loop_at(
    lines: &[(usize, &str)],
    i: usize,
    tokens: &[Token],
    prints: &[RolePrint],
) -> Option<(String, usize)> {
    let whole_tag = |(at, line): (usize, &str), keyword: &str| -> Option<Token> {
        let trimmed = line.trim();
        let start = at + (line.len() - line.trim_start().len());
        let t = *tokens.get(tokens.partition_point(|t| t.end <= start))?;
        (t.kind == Tok::Stmt
            && t.start == start
            && t.end == start + trimmed.len()
            && stmt_keyword(trimmed) == keyword)
            .then_some(t)
    };
    let (at, line) = lines[i];
    whole_tag((at, line), "for")?;
    let (vars, list, whole) = parse_for(line.trim())?;
    let [var] = vars[..] else { return None };
    if !whole {
        return None;
    }
    let mut body = lines[i + 1..]
        .iter()
        .enumerate()
        .filter(|(_, (_, l))| !l.trim().is_empty());
    let (_, role) = body.next()?;
    let print = prints
        .iter()
        .find(|p| p.at >= role.0 && p.at < role.0 + role.1.len())?;
    if print.list.as_deref() != Some(list) {
        return None;
    }
    let (_, content) = body.next()?;
    let content_tag = content.1.trim();
    let inner = content_tag
        .strip_prefix("{{")?
        .strip_suffix("}}")?
        .trim_matches(['-', '+', '~'])
        .trim();
    let content_ok = [
        format!("{var}.content"),
        format!("{var}['content']"),
        format!("{var}[\"content\"]"),
    ]
    .contains(&inner.to_owned());
    let (j, end) = body.next()?;
    if !content_ok || whole_tag(*end, "endfor").is_none() {
        return None;
    }
    Some((list.to_owned(), i + 1 + j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prints(body: &str, grammar: Grammar) -> Vec<(String, Option<String>)> {
        find(body, &tokenize(body), grammar)
            .into_iter()
            .map(|p| (p.line, p.list))
            .collect()
    }

    fn rewrite(body: &str) -> (String, Vec<String>) {
        rewrite_as_splices(body, &|n| ["chat_history", "h", "history"].contains(&n))
    }

    #[test]
    fn role_lines_printed_from_data_are_found_with_their_list() {
        let body = "system:\nHi\n{% for item in chat_history %}\n{{item.role}}:\n{{item.content}}\n{% endfor %}\n";
        assert_eq!(
            prints(body, Grammar::Prompty),
            [("{{item.role}}:".to_owned(), Some("chat_history".to_owned()))]
        );
        for line in [
            "{{ m['role'] }}:",
            "{{ m[\"role\"]|lower }} :",
            "{{- m.role -}}:",
            "# {{ m.role }}:",
            "{{ m.get('role') }}:",
            "{{ 'user' if m.role == 'user' else 'assistant' }}:",
            "{{ m.role ~ \":\" }}",
            "{{ m.role }}{{ ':' }}",
            "{{ m.role + \":\\n\" + m.content }}",
            "{{ m.role }}:{# a comment #}",
            "{{ m.role }}{% if true %}:{% endif %}",
        ] {
            let body = format!(
                "{{% for m in history if m.content %}}\n{line}\n{{{{ m.content }}}}\n{{% endfor %}}\n"
            );
            let found = prints(&body, Grammar::Prompty);
            assert_eq!(found.len(), 1, "{line}");
            assert_eq!(found[0].1.as_deref(), Some("history"), "{line}");
        }
        // The loop opened on the same line.
        assert_eq!(
            prints(
                "{% for m in history %}{{ m.role }}:\n{{ m.content }}\n{% endfor %}\n",
                Grammar::Native
            ),
            [(
                "{% for m in history %}{{ m.role }}:".to_owned(),
                Some("history".to_owned())
            )]
        );
        // Outside a loop, or a role from elsewhere: found, with no list.
        assert_eq!(
            prints("{{ speaker_role }}:\nhi\n", Grammar::Native),
            [("{{ speaker_role }}:".to_owned(), None)]
        );
        // A `#` line is Prompty's only.
        assert!(prints("# {{ m.role }}:\n", Grammar::Native).is_empty());
    }

    #[test]
    fn other_values_before_a_colon_are_text() {
        for body in [
            "{% for p in products %}\n{{ p.name }}:\n{{ p.text }}\n{% endfor %}\n",
            "{{ m.role }}: {{ m.content }}\n",
            "Role {{ m.role }}:\n",
            "{# {{ m.role }}: #}\n",
            "{% raw %}\n{{ m.role }}:\n{% endraw %}\n",
            "{{ m.roles }}:\n",
            "{{ m.role_name }}:\n",
            "{{ m.role }}: {{ m.content }}\n",
            "{{ m.role }}\n",
        ] {
            assert!(prints(body, Grammar::Prompty).is_empty(), "{body}");
        }
    }

    #[test]
    fn the_common_shape_becomes_a_splice() {
        let body = "system:\nYou help.\n\n{% for item in chat_history %}\n{{item.role}}:\n\n{{item.content}}\n{% endfor %}\n\nuser:\n{{question}}\n";
        let (out, lists) = rewrite(body);
        assert_eq!(
            out,
            "system:\nYou help.\n\n{{ chat_history }}\n\nuser:\n{{question}}\n"
        );
        assert_eq!(lists, ["chat_history"]);
        let crlf = body.replace('\n', "\r\n");
        assert_eq!(rewrite(&crlf).0, out.replace('\n', "\r\n"));
        let trimmed = "{%- for m in h -%}\n# {{ m['role'] }}:\n{{ m['content'] }}\n{%- endfor %}\n";
        assert_eq!(rewrite(trimmed).0, "{{ h }}\n");
    }

    #[test]
    fn other_loops_are_left_as_they_are() {
        for body in [
            // More than the role and the content.
            "{% for m in h %}\n{{ m.role }}:\n{{ m.content }}\n({{ m.time }})\n{% endfor %}\n",
            // Another variable's content.
            "{% for m in h %}\n{{ m.role }}:\n{{ x.content }}\n{% endfor %}\n",
            // Not a plain list name.
            "{% for m in h[-5:] %}\n{{ m.role }}:\n{{ m.content }}\n{% endfor %}\n",
            // Tags that share their lines.
            "{% for m in h %}{{ m.role }}:\n{{ m.content }}\n{% endfor %}\n",
            "{% for m in h %}\n{{ m.role }}:\n{{ m.content }}{% endfor %}\n",
            // A filter: splicing the list would send what it leaves out.
            "{% for m in h if m.role != 'system' %}\n{{ m.role }}:\n{{ m.content }}\n{% endfor %}\n",
            // Not an input: a loop variable of an outer loop, an alias.
            "{% for turn in h %}{% for m in turn %}\n{{ m.role }}:\n{{ m.content }}\n{% endfor %}{% endfor %}\n",
            "{% set hist = h %}\n{% for m in hist %}\n{{ m.role }}:\n{{ m.content }}\n{% endfor %}\n",
        ] {
            let (out, lists) = rewrite(body);
            assert_eq!(out, body);
            assert!(lists.is_empty(), "{body}");
        }
    }
}
