//! What a template's `{% include %}`, `{% import %}`, `{% from %}` and
//! `{% extends %}` tags name: found as the engine finds tags (not inside a
//! comment, a string or a `{% raw %}` block), and read as the engine reads
//! the name (the engine itself evaluates a name that reads no variable).
//!
//! A name that reads a variable is known only at render time: it is
//! [`Target::Computed`], and whatever depends on what a template includes
//! (the content hash, lint's "must resolve" check) treats it as possibly
//! any template whose name starts with its literal prefix.

use std::collections::HashSet;
use std::sync::LazyLock;

use minijinja::Environment;
use minijinja::value::ValueKind;

/// One include-like tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TagRef {
    /// The tag's byte offset in the source.
    pub offset: usize,
    /// What it names.
    pub target: Target,
    /// `ignore missing`: a name that does not resolve renders nothing.
    pub ignore_missing: bool,
}

/// What an include-like tag names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Known when loading: one name, or a list tried in order (the first
    /// that exists renders).
    Names(Vec<String>),
    /// Known only at render time. `prefix` is the literal text every name
    /// it can give starts with (`"tones/" ~ tone` gives `tones/`; empty
    /// when nothing is known).
    Computed { prefix: String },
}

/// An engine with nothing in it (no filters, tests or functions), to
/// evaluate names built from literals alone; the fuel bounds its work.
static LITERALS: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::empty();
    env.set_fuel(Some(100_000));
    env
});

/// Every include-like tag of `source`, in order. Memoised by source: a
/// load asks for each template's several times (hash, lint, isolation).
pub(crate) fn tag_refs(source: &str) -> std::sync::Arc<Vec<TagRef>> {
    static MEMO: crate::memo::Memo<std::sync::Arc<Vec<TagRef>>> = crate::memo::Memo::new(20_000);
    let key = crate::memo::key(&[source.as_bytes()]);
    if let Some(hit) = MEMO.get(key) {
        return hit;
    }
    let refs = std::sync::Arc::new(scan(source));
    MEMO.put(key, refs.clone());
    refs
}

fn scan(source: &str) -> Vec<TagRef> {
    include_tags(source)
        .filter_map(|(offset, args)| {
            let expr = target_expression(args);
            if expr.is_empty() {
                return None;
            }
            let rest = &args[args.find(expr).map_or(args.len(), |i| i + expr.len())..];
            Some(TagRef {
                offset,
                target: target(expr),
                ignore_missing: rest.split_whitespace().take(2).eq(["ignore", "missing"]),
            })
        })
        .collect()
}

/// The `{% include %}`, `{% import %}`, `{% from %}` and `{% extends %}`
/// statement tags of `source` as the engine finds them: each tag's offset
/// and the text after its keyword.
fn include_tags(source: &str) -> impl Iterator<Item = (usize, &str)> {
    crate::lex::tokenize(source)
        .into_iter()
        .filter(|t| t.kind == crate::lex::Tok::Stmt)
        .filter_map(move |token| {
            let tag = &source[token.start..token.end];
            let inner = tag[2..]
                .strip_suffix("%}")
                .unwrap_or(&tag[2..])
                .trim_start_matches(['-', '+', '~'])
                .trim_end_matches(['-', '+', '~'])
                .trim_start();
            let keyword_len = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            matches!(
                &inner[..keyword_len],
                "include" | "import" | "from" | "extends"
            )
            .then(|| (token.start, &inner[keyword_len..]))
        })
}

/// `(name, offset)` of every name the include-like tags of `source` give
/// when loading: each name of a [`Target::Names`].
pub(crate) fn static_refs(source: &str) -> Vec<(String, usize)> {
    tag_refs(source)
        .iter()
        .flat_map(|r| match &r.target {
            Target::Names(names) => names.iter().map(|n| (n.clone(), r.offset)).collect(),
            Target::Computed { .. } => Vec::new(),
        })
        .collect()
}

/// The variables the include-like tags of `source` read (filters, tests
/// and attributes are not variables).
pub(crate) fn target_variables(source: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for (_, args) in include_tags(source) {
        let expr = target_expression(args);
        if plain_string(expr).is_some() {
            continue;
        }
        if let Ok(e) = LITERALS.compile_expression(expr) {
            out.extend(e.undeclared_variables(false));
        }
    }
    out
}

/// The template expression at the start of a tag's arguments: up to the
/// first top-level `ignore`, `with`, `without`, `as` or `import` word.
fn target_expression(args: &str) -> &str {
    let b = args.as_bytes();
    let mut cut = b.len();
    for (i, _, depth) in crate::lex::unquoted(b) {
        if depth != 0 || i == 0 {
            continue;
        }
        let before = b[i - 1];
        if !(before.is_ascii_whitespace() || matches!(before, b'"' | b'\'' | b')' | b']')) {
            continue;
        }
        let word_end = args[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(args.len(), |e| i + e);
        if matches!(
            &args[i..word_end],
            "ignore" | "with" | "without" | "as" | "import"
        ) {
            cut = i;
            break;
        }
    }
    args[..cut].trim()
}

/// What an expression names: evaluated by the engine when it reads no
/// variable, filter, test or function (so escapes, `~`, `+`, slices,
/// conditionals and subscripts of literals read as at render time) and
/// gives a string or a list of strings; otherwise computed.
fn target(expr: &str) -> Target {
    // The common case, a plain string: read without the engine.
    if let Some(name) = plain_string(expr) {
        return Target::Names(vec![name.to_owned()]);
    }
    let computed = || Target::Computed {
        prefix: literal_prefix(expr),
    };
    // `*` repeats a string: a literal times a large number would take
    // unbounded memory to evaluate. Such a name is treated as computed.
    if crate::lex::unquoted(expr.as_bytes()).any(|(_, c, _)| c == b'*') {
        return computed();
    }
    let Ok(compiled) = LITERALS.compile_expression(expr) else {
        return computed();
    };
    if !compiled.undeclared_variables(false).is_empty() {
        return computed();
    }
    let Ok(value) = compiled.eval(minijinja::context! {}) else {
        return computed();
    };
    let name = |v: &minijinja::Value| v.as_str().map(str::to_owned);
    let names = match value.kind() {
        ValueKind::String => name(&value).into_iter().collect(),
        ValueKind::Seq => match value.try_iter() {
            Ok(items) => items.map(|v| name(&v)).collect::<Option<Vec<_>>>(),
            Err(_) => None,
        }
        .unwrap_or_default(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        computed()
    } else {
        Target::Names(names)
    }
}

/// The text of `expr` when it is one string literal without escapes
/// (`"partials/tone@^1"`): what the engine would make of it, without it.
fn plain_string(expr: &str) -> Option<&str> {
    let quote = expr.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let inner = expr[1..].strip_suffix(quote)?;
    (!inner.contains([quote, '\\'])).then_some(inner)
}

/// The literal text at the start of `expr` when it starts with a string
/// joined to something else (`"tones/" ~ tone`): every name it gives
/// starts with it. Empty otherwise.
fn literal_prefix(expr: &str) -> String {
    let e = expr.trim_start();
    let Some(quote) = e.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return String::new();
    };
    let b = e.as_bytes();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            c if c == quote as u8 => break,
            _ => i += 1,
        }
    }
    if i >= b.len() {
        return String::new();
    }
    let joined = e[i + 1..].trim_start();
    if !(joined.starts_with('~') || joined.starts_with('+')) {
        return String::new();
    }
    match LITERALS
        .compile_expression(&e[..=i])
        .and_then(|c| c.eval(minijinja::context! {}))
    {
        Ok(v) => v.as_str().unwrap_or_default().to_owned(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str) -> Vec<String> {
        static_refs(src).into_iter().map(|(r, _)| r).collect()
    }

    fn computed(src: &str) -> Vec<String> {
        tag_refs(src)
            .iter()
            .filter_map(|r| match &r.target {
                Target::Computed { prefix } => Some(prefix.clone()),
                Target::Names(_) => None,
            })
            .collect()
    }

    #[test]
    fn literal_names_in_every_form_the_engine_accepts() {
        let src = "{% include \"a@^1\" %}{%- import 'm' as m -%}{% from \"f\" import x %}";
        assert_eq!(names(src), ["a@^1", "m", "f"]);
        assert_eq!(names("{%include\"p@^1\"%}"), ["p@^1"]);
        assert_eq!(names("{% include (\"p\") %}"), ["p"]);
        assert_eq!(names("{% include ((\"p\")) ignore missing %}"), ["p"]);
        assert_eq!(names("{% include [\"a\", 'b',] %}"), ["a", "b"]);
        assert_eq!(
            names("{% include (\"a\", \"b\") with context %}"),
            ["a", "b"]
        );
        assert_eq!(names("{% from\"m\"import f %}"), ["m"]);
        assert_eq!(names("{%- extends \"base\" -%}"), ["base"]);
        assert_eq!(names("{% include \"a\\\"b\" %}"), ["a\"b"]);
        // Escapes, joins, numbers, subscripts, slices, conditionals.
        assert_eq!(names("{% include \"p@\\u005e1\" %}"), ["p@^1"]);
        assert_eq!(names("{% include \"p\" ~ '@^1' %}"), ["p@^1"]);
        assert_eq!(names("{% include \"p@^\" ~ 1 %}"), ["p@^1"]);
        assert_eq!(names("{% include (\"p@^1\",)[0] %}"), ["p@^1"]);
        assert_eq!(names("{% include {\"a\": \"p@^1\"}.a %}"), ["p@^1"]);
        assert_eq!(names("{% include \"xp@^1\"[1:] %}"), ["p@^1"]);
        assert_eq!(names("{% include \"p@^1\" if true else \"x\" %}"), ["p@^1"]);
        // Not tags: in a comment, a string, a raw block.
        assert_eq!(
            names("{# {% #}{% include \"a\" %}{{ \"{%\" }}{% include 'b' %}"),
            ["a", "b"]
        );
        assert!(
            names("{% raw %}{% include \"no\" %}{% endraw %}{# {% include \"no\" %} #}").is_empty()
        );
        // Unclosed or odd tags: no panic (the engine refuses the template
        // itself).
        assert!(names("{% include \"x").is_empty());
        let _ = names("{% include \"x\" 你");
        assert_eq!(names("{% include \"x\" ignore missing 你"), ["x"]);
        assert!(names("{%").is_empty());
        assert!(names("{% included \"x\" %}").is_empty());
    }

    #[test]
    fn names_known_only_at_render_time_are_computed_with_their_prefix() {
        assert_eq!(computed("{% include \"tones/\" ~ tone %}"), ["tones/"]);
        assert_eq!(computed("{% include name %}"), [""]);
        assert_eq!(computed("{% include \"a\" | lower %}"), [""]);
        assert_eq!(computed("{% include range(3) %}"), [""]);
        assert_eq!(computed("{% include [\"a\", x] %}"), [""]);
        assert_eq!(computed("{% include \"p\" * 100000000000 %}"), [""]);
        let vars = target_variables(
            "{% include \"tones/\" ~ tone %}{% include [a.b, 'c' ~ d] %}{% include \"x\"|lower %}",
        );
        let mut vars: Vec<String> = vars.into_iter().collect();
        vars.sort();
        assert_eq!(vars, ["a", "d", "tone"]);
    }

    #[test]
    fn ignore_missing_is_read() {
        let refs = tag_refs("{% include \"a\" ignore missing %}{% include \"b\" %}");
        assert!(refs[0].ignore_missing);
        assert!(!refs[1].ignore_missing);
    }
}
