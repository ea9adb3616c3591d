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
}

/// Every line of `body` that prints a role from data: an expression tag
/// alone on its line (after a `#` in Prompty's grammar) followed by a
/// colon, whose expression reads a role (`item.role`, `item['role']`,
/// `role`, `speaker_role`, through filters such as `|lower`). Lines that
/// print other values before a colon (`{{ p.name }}:` in a product list)
/// are text in every runtime and are not reported.
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
        let Some(tag) = expression_alone_before_colon(rest, at, tokens) else {
            continue;
        };
        let Some(base) = role_expression(tag) else {
            continue;
        };
        let var = leading_identifier(base);
        let list = enclosing_loop(body, tokens, at)
            .filter(|(vars, _)| vars.contains(&var))
            .map(|(_, list)| list.to_owned());
        found.push(RolePrint {
            at,
            line: trimmed.to_owned(),
            list,
        });
    }
    found
}

/// The expression tag of `rest` (a trimmed line starting at `at`) when
/// the line is that one tag, then optional spaces, then `:`.
fn expression_alone_before_colon<'a>(
    rest: &'a str,
    at: usize,
    tokens: &[Token],
) -> Option<&'a str> {
    let before_colon = rest.strip_suffix(':')?.trim_end();
    if !(before_colon.starts_with("{{") && before_colon.ends_with("}}")) {
        return None;
    }
    let i = tokens.partition_point(|t| t.end <= at);
    let t = tokens.get(i)?;
    (t.kind == Tok::Expr && t.start == at && t.end == at + before_colon.len())
        .then_some(before_colon)
}

/// The expression of an expression tag, without its delimiters and
/// filters, when it reads a role.
fn role_expression(tag: &str) -> Option<&str> {
    let inner = tag[2..tag.len() - 2].trim_matches(['-', '+', '~']).trim();
    let base = inner.split('|').next()?.trim();
    let reads_role = base == "role"
        || base.ends_with("_role")
        || base.ends_with(".role")
        || base.ends_with("['role']")
        || base.ends_with("[\"role\"]");
    reads_role.then_some(base)
}

fn leading_identifier(expr: &str) -> &str {
    let end = expr
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(expr.len());
    &expr[..end]
}

/// The innermost `{% for VARS in LIST %}` open at `at`: its loop
/// variables and what it iterates.
fn enclosing_loop<'a>(
    body: &'a str,
    tokens: &[Token],
    at: usize,
) -> Option<(Vec<&'a str>, &'a str)> {
    let mut open: Vec<Option<(Vec<&str>, &str)>> = Vec::new();
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

/// `{% for a, b in xs if c %}`: (`[a, b]`, `xs`).
fn parse_for(tag: &str) -> Option<(Vec<&str>, &str)> {
    let inner = tag
        .strip_prefix("{%")?
        .strip_suffix("%}")?
        .trim_matches(['-', '+', '~'])
        .trim();
    let inner = inner.strip_prefix("for")?.trim_start();
    let (vars, rest) = inner.split_once(" in ")?;
    let list = rest
        .split(" if ")
        .next()?
        .trim()
        .trim_end_matches("recursive")
        .trim();
    let vars = vars
        .trim()
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .collect();
    Some((vars, list))
}

/// The body with every history loop of the common shape replaced by a
/// splice of the list it iterates, and the lists spliced. The common
/// shape: `{% for ITEM in LIST %}` alone on its line, LIST a name; then,
/// blank lines aside, a role line printed from `ITEM` and `{{ ITEM.content
/// }}` alone on its line; then `{% endfor %}` alone on its line. Other
/// loops are left as they are (the loader reports them).
pub(crate) fn rewrite_as_splices(body: &str) -> (String, Vec<String>) {
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
        match loop_at(&lines, i, &tokens, &prints) {
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
    let (vars, list) = parse_for(line.trim())?;
    let [var] = vars[..] else { return None };
    if !crate::reference::is_identifier(list) {
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
        ] {
            let body = format!(
                "{{% for m in history if m.content %}}\n{line}\n{{{{ m.content }}}}\n{{% endfor %}}\n"
            );
            let found = prints(&body, Grammar::Prompty);
            assert_eq!(found.len(), 1, "{line}");
            assert_eq!(found[0].1.as_deref(), Some("history"), "{line}");
        }
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
        ] {
            assert!(prints(body, Grammar::Prompty).is_empty(), "{body}");
        }
    }

    #[test]
    fn the_common_shape_becomes_a_splice() {
        let body = "system:\nYou help.\n\n{% for item in chat_history %}\n{{item.role}}:\n\n{{item.content}}\n{% endfor %}\n\nuser:\n{{question}}\n";
        let (out, lists) = rewrite_as_splices(body);
        assert_eq!(
            out,
            "system:\nYou help.\n\n{{ chat_history }}\n\nuser:\n{{question}}\n"
        );
        assert_eq!(lists, ["chat_history"]);
        let crlf = body.replace('\n', "\r\n");
        assert_eq!(rewrite_as_splices(&crlf).0, out.replace('\n', "\r\n"));
        let trimmed = "{%- for m in h -%}\n# {{ m['role'] }}:\n{{ m['content'] }}\n{%- endfor %}\n";
        assert_eq!(rewrite_as_splices(trimmed).0, "{{ h }}\n");
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
        ] {
            let (out, lists) = rewrite_as_splices(body);
            assert_eq!(out, body);
            assert!(lists.is_empty(), "{body}");
        }
    }
}
