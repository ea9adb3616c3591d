//! Values a render builds stay small enough to walk.
//!
//! minijinja shares values instead of copying them: `[a, a]` holds `a`
//! twice at the cost of two pointers. Fifty lines of `{% set aN = [aN-1,
//! aN-1] %}` (2 KB of template) therefore make a value of 2^50 items, and
//! every walk of it (printing, `tojson`, `==`, `sort`) runs until memory or
//! patience runs out: the engine charges fuel for the top of a value only.
//! Twenty thousand `{% set x = [x] %}` nest a value deeper than any thread's
//! stack, and printing it aborts the process.
//!
//! The invariant kept here: **a value bound to a name holds at most
//! [`MAX_VALUE_NODES`] values and nests at most `max_depth` deep**, where a
//! walk counts a shared part once per place it appears. Names are bound at
//! `{% set x = ... %}`, `{% with x = ... %}` and a macro's parameters;
//! [`guard_bindings`] rewrites the template source so that each bound value
//! passes through the `__bounded` filter (and a namespace attribute through
//! [`crate::namespace`]'s filter, which checks the same and more). A value
//! built inline in one expression from bound values is at most as large as
//! the expression is long times the bound. And a container is printed
//! (`{{ }}`, `tojson`, `pprint`, `string`) only when its printed form could
//! fit `RenderLimits::max_output_bytes`: checked by a walk that stops at
//! that budget, before anything is written.
//!
//! The inputs are data from outside, bounded in size and depth when they
//! came in, and trees (no shared parts): binding or printing counts an
//! input map as one value (binding or printing `documents` costs nothing),
//! while a template's list of them counts each reference.
//!
//! The checks walk with an explicit stack and charge one unit of fuel per
//! 16 values visited.

use std::borrow::Cow;

use minijinja::value::{Kwargs, ObjectRepr, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

use crate::input::InputMap;
use crate::lex::{Tok, stmt_keyword, tokenize};

/// The filter the rewrite inserts for a plain name.
const FILTER: &str = "__bounded";

/// The most values a bound value may hold (a shared part counted once per
/// place): a million, far above what a prompt template builds, far below
/// what takes a walk more than a fraction of a second.
pub(crate) const MAX_VALUE_NODES: u64 = 1_000_000;

/// Registers the binding filter and the bounded printing on `env`:
/// `max_depth` as [`crate::namespace::max_depth`] gives it, printing
/// bounded by `max_output_bytes`.
pub(crate) fn register(env: &mut Environment<'static>, max_depth: usize, max_output_bytes: usize) {
    env.add_filter(
        FILTER,
        move |state: &State, value: Value| -> Result<Value, Error> {
            check_bound(state, &value, max_depth)?;
            Ok(value)
        },
    );
    let budget = max_output_bytes as u64;
    // Printing a container is bounded before anything is written. (The
    // Prompty environment sets a formatter of its own that checks too.)
    env.set_formatter(move |out, state, value| {
        // A media value prints its marker: that is how it is placed.
        if let Some(marker) = crate::media_input::marker(value) {
            return out.write_str(&marker).map_err(minijinja::Error::from);
        }
        check_printable(state, value, budget)?;
        minijinja::escape_formatter(out, state, value)
    });
    env.add_filter(
        "tojson",
        move |state: &State,
              value: &Value,
              indent: Option<Value>,
              args: Kwargs|
              -> Result<Value, Error> {
            check_printable(state, value, budget)?;
            minijinja::filters::tojson(value, indent, args)
        },
    );
    env.add_filter(
        "pprint",
        move |state: &State, value: &Value| -> Result<String, Error> {
            check_printable(state, value, budget)?;
            Ok(minijinja::filters::pprint(value))
        },
    );
    env.add_filter(
        "string",
        move |state: &State, value: &Value| -> Result<Value, Error> {
            check_printable(state, value, budget)?;
            minijinja::filters::string(state, value)
        },
    );
}

/// Fails when `value` holds more than [`MAX_VALUE_NODES`] values or nests
/// deeper than `max_depth`; inputs count as one value.
pub(crate) fn check_bound(state: &State, value: &Value, max_depth: usize) -> Result<(), Error> {
    if value.as_object().is_none() {
        return Ok(());
    }
    let mut walk = Walk::new(state, value, MAX_VALUE_NODES);
    while let Some((v, level)) = walk.stack.pop() {
        if level > max_depth {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "a value may nest at most {max_depth} lists or maps deep (a list built \
                     from itself over and over, such as `{{% set x = [x] %}}` in a loop?)"
                ),
            ));
        }
        let Some(obj) = v.as_object() else { continue };
        if obj.downcast_ref::<InputMap>().is_some() {
            continue;
        }
        walk.children(&v, level, |_| 0)?;
    }
    walk.finish()
}

/// Fails when printing `value` would write more than `budget` bytes: each
/// value visited counts one byte, each string its length.
pub(crate) fn check_printable(state: &State, value: &Value, budget: u64) -> Result<(), Error> {
    if value.as_object().is_none() {
        return Ok(());
    }
    // An input map is a tree that came in bounded (`max_input_bytes`) and
    // cannot share its parts: printing one writes at most what came in.
    // What can grow without bound is a template's lists of them, counted
    // below, one unit each.
    let is_input = |v: &Value| {
        v.as_object()
            .is_some_and(|o| o.downcast_ref::<InputMap>().is_some())
    };
    if is_input(value) {
        return Ok(());
    }
    let mut walk = Walk::new(state, value, budget);
    while let Some((v, level)) = walk.stack.pop() {
        if is_input(&v) {
            continue;
        }
        walk.children(&v, level, |v| {
            v.as_str()
                .map_or(0, |s| u64::try_from(s.len()).unwrap_or(u64::MAX))
        })?;
    }
    walk.finish()
}

/// A walk over a value's containers with an explicit stack, counting what
/// it meets against a budget and charging fuel as it goes.
struct Walk<'a, 's, 'e> {
    state: &'a State<'s, 'e>,
    stack: Vec<(Value, usize)>,
    /// Units met so far.
    met: u64,
    budget: u64,
    /// Values met since fuel was last charged.
    unpaid: u64,
}

impl<'a, 's, 'e> Walk<'a, 's, 'e> {
    fn new(state: &'a State<'s, 'e>, root: &Value, budget: u64) -> Self {
        Walk {
            state,
            stack: vec![(root.clone(), 1)],
            met: 1,
            budget,
            unpaid: 1,
        }
    }

    /// Meets the items (and keys) of container `v`, `weight` units each on
    /// top of one; pushes those that are containers themselves.
    fn children(
        &mut self,
        v: &Value,
        level: usize,
        weight: impl Fn(&Value) -> u64,
    ) -> Result<(), Error> {
        let Some(obj) = v.as_object() else {
            return Ok(());
        };
        let items: Box<dyn Iterator<Item = Value>> = match obj.repr() {
            ObjectRepr::Seq | ObjectRepr::Iterable => match obj.try_iter() {
                Some(items) => Box::new(items),
                None => return Ok(()),
            },
            ObjectRepr::Map => match obj.try_iter_pairs() {
                Some(pairs) => Box::new(pairs.flat_map(|(k, v)| [k, v])),
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        for item in items {
            self.met = self.met.saturating_add(1 + weight(&item));
            self.unpaid += 1;
            if self.met > self.budget {
                return Err(too_big(self.budget));
            }
            if self.unpaid >= 4096 {
                self.state.consume_fuel(self.unpaid / 16)?;
                self.unpaid = 0;
            }
            if matches!(
                item.kind(),
                ValueKind::Map | ValueKind::Seq | ValueKind::Iterable
            ) {
                self.stack.push((item, level + 1));
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(), Error> {
        self.state.consume_fuel(self.unpaid / 16)
    }
}

fn too_big(budget: u64) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "a value grew past {budget} (values, or bytes to print): a list or map built from \
             itself over and over (each `[x, x]` doubles it) holds more than any prompt needs"
        ),
    )
}

/// Rewrites the template source so that every value bound to a name passes
/// through a bounding filter: `{% set x = E %}` becomes `{% set x = (E)|__bounded %}`
/// (`{% set ns.x = E %}` uses the namespace filter instead), each
/// assignment of `{% with a = E, b = F %}` likewise, and a macro's body
/// starts by re-binding each parameter through the filter. Block sets,
/// `{% raw %}` and text are kept; line breaks are never added or removed.
pub(crate) fn guard_bindings(source: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    for t in tokenize(source) {
        if t.kind != Tok::Stmt {
            continue;
        }
        let tag = &source[t.start..t.end];
        let Some((inner_from, inner_to, closer)) = tag_parts(tag) else {
            continue;
        };
        let keyword = stmt_keyword(tag);
        let kw_end = inner_from + tag[inner_from..].find(keyword).unwrap_or(0) + keyword.len();
        match keyword {
            "set" => {
                let body = &tag[kw_end..inner_to];
                let Some(eq) = top_level_eq(body) else {
                    continue;
                };
                let target = &body[..eq];
                let filter = if target.contains('.') {
                    crate::namespace::FILTER
                } else {
                    FILTER
                };
                let from = t.start + kw_end + eq + 1;
                out.push_str(&source[copied..from]);
                out.push_str(" (");
                out.push_str(&source[from..t.start + inner_to]);
                out.push_str(")|");
                out.push_str(filter);
                out.push(' ');
                copied = t.start + inner_to;
            }
            "with" => {
                let body_from = kw_end;
                let body = &tag[body_from..inner_to];
                let mut pieces = Vec::new();
                let mut at = 0;
                for part in crate::lex::split_top_level(body, b',') {
                    let Some(eq) = top_level_eq(part) else {
                        pieces.clear();
                        break;
                    };
                    pieces.push((at + eq + 1, at + part.len()));
                    at += part.len() + 1;
                }
                for (from, to) in pieces {
                    let (from, to) = (t.start + body_from + from, t.start + body_from + to);
                    out.push_str(&source[copied..from]);
                    out.push_str(" (");
                    out.push_str(&source[from..to]);
                    out.push_str(")|");
                    out.push_str(FILTER);
                    copied = to;
                }
            }
            "macro" => {
                let body = &tag[kw_end..inner_to];
                let Some(open) = body.find('(') else { continue };
                let Some(close) = body.rfind(')') else {
                    continue;
                };
                let params: Vec<&str> = crate::lex::split_top_level(&body[open + 1..close], b',')
                    .into_iter()
                    .filter_map(|p| {
                        let name = p.split('=').next().unwrap_or("").trim();
                        crate::reference::is_identifier(name).then_some(name)
                    })
                    .collect();
                if params.is_empty() {
                    continue;
                }
                // The re-bindings go right after the macro tag, and take
                // its closer (`-%}`, `+%}` or `%}`) so that the whitespace
                // after them is handled as the macro tag's would have been.
                let tag_end = t.end;
                let closer_at = t.start + inner_to;
                out.push_str(&source[copied..closer_at]);
                out.push_str("%}");
                for (i, p) in params.iter().enumerate() {
                    let last = i + 1 == params.len();
                    out.push_str("{% set ");
                    out.push_str(p);
                    out.push_str(" = ");
                    out.push_str(p);
                    out.push('|');
                    out.push_str(FILTER);
                    out.push(' ');
                    out.push_str(if last { closer } else { "%}" });
                }
                copied = tag_end;
            }
            _ => {}
        }
    }
    if copied == 0 {
        return Cow::Borrowed(source);
    }
    out.push_str(&source[copied..]);
    Cow::Owned(out)
}

/// A statement tag's inner range (after `{%` and its whitespace control,
/// before its closer) and its closer (`%}`, `-%}`, `+%}`); `None` for an
/// unterminated tag.
fn tag_parts(tag: &str) -> Option<(usize, usize, &str)> {
    let before_close = tag.strip_suffix("%}")?.len();
    let (inner_to, closer) = match tag.as_bytes().get(before_close.checked_sub(1)?) {
        Some(b'-' | b'+') => (before_close - 1, &tag[before_close - 1..]),
        _ => (before_close, &tag[before_close..]),
    };
    let mut inner_from = 2;
    if matches!(tag.as_bytes().get(2), Some(b'-' | b'+')) {
        inner_from = 3;
    }
    (inner_from <= inner_to).then_some((inner_from, inner_to, closer))
}

/// The offset of the first `=` at the top level of `s` that is an
/// assignment (not `==`, `<=`, `>=`, `!=`), outside strings and brackets.
fn top_level_eq(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    crate::lex::unquoted(b)
        .find(|&(i, c, depth)| {
            let prev = i.checked_sub(1).map(|j| b[j]);
            c == b'='
                && depth == 0
                && b.get(i + 1) != Some(&b'=')
                && !matches!(prev, Some(b'=' | b'<' | b'>' | b'!'))
        })
        .map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment<'static> {
        let mut env = Environment::new();
        env.set_fuel(Some(2_000_000));
        crate::namespace::register(&mut env, 64);
        register(&mut env, 128, 8 << 20);
        env
    }

    fn render(src: &str) -> Result<String, Error> {
        let src = guard_bindings(src).into_owned();
        env().render_str(&src, ())
    }

    #[test]
    fn bindings_are_rewritten_and_lines_kept() {
        assert_eq!(
            guard_bindings("{% set x = 1 %}"),
            "{% set x = ( 1 )|__bounded %}"
        );
        assert_eq!(
            guard_bindings("{% set ns.x = 1 %}"),
            "{% set ns.x = ( 1 )|__namespace_value %}"
        );
        assert_eq!(
            guard_bindings("{%- set a, b = 1, 2 -%}\n"),
            "{%- set a, b = ( 1, 2 )|__bounded -%}\n"
        );
        assert_eq!(
            guard_bindings("{% with a = [1, 2], b = x == y %}"),
            "{% with a = ( [1, 2])|__bounded, b = ( x == y )|__bounded%}"
        );
        assert_eq!(
            guard_bindings("{% macro m(a, b=[1, 2]) -%}\nx"),
            "{% macro m(a, b=[1, 2]) %}{% set a = a|__bounded %}{% set b = b|__bounded -%}\nx"
        );
        for unchanged in [
            "{% set x %}a{% endset %}",
            "{% if x == 1 %}{% endif %}",
            "{% raw %}{% set x = x %}{% endraw %}",
            "{{ '{% set x = y %}' }}",
            "{% set x = 1",
            "{% macro m() %}{% endmacro %}",
            "{% with %}{% endwith %}",
        ] {
            assert_eq!(guard_bindings(unchanged), unchanged);
        }
        let src = "{% set a = \"%}\n\" %}\n{% set b =\n 2\n%}\n{% macro m(\nx) %}\n";
        assert_eq!(
            guard_bindings(src).matches('\n').count(),
            src.matches('\n').count()
        );
    }

    #[test]
    fn templates_still_render_as_before() {
        let src = "{% set a, b = 1, [2, 3] %}{% with c = b + [a], d = 'x' %}{{ c }}{{ d }}{% endwith %}\
                   {% macro m(x, y=[1]) -%}\n  {{ x }}{{ y }}\n{%- endmacro %}[{{ m(a) }}]\
                   {% set s %}captured{% endset %}{{ s }}";
        assert_eq!(render(src).unwrap(), "[2, 3, 1]x[1[1]]captured");
        let plain = "{% macro m(x, y=[1]) -%}\n  {{ x }}{{ y }}\n{%- endmacro %}[{{ m(1) }}]";
        assert_eq!(
            render(plain).unwrap(),
            env().render_str(plain, ()).unwrap(),
            "the macro's whitespace"
        );
    }

    #[test]
    fn shared_structure_cannot_grow_past_the_bound() {
        let doubling: String = (1..=50)
            .map(|i| format!("{{% set a{i} = [a{p}, a{p}] %}}", p = i - 1))
            .collect();
        for end in ["{{ a50 }}", "{{ a50 == a50 }}", "{{ a50|tojson }}"] {
            let src = format!("{{% set a0 = [1] %}}{doubling}{end}");
            let e = render(&src).expect_err(end);
            assert!(e.to_string().contains("grew past"), "{end}: {e}");
        }
        // Through a macro's arguments, and a `with`.
        let e = render(
            "{% macro f(x, n) %}{% if n %}{{ f([x, x], n - 1) }}{% else %}{{ x|length }}{% endif %}{% endmacro %}{{ f([1], 60) }}",
        )
        .unwrap_err();
        assert!(e.to_string().contains("grew past"), "{e}");
        // Deep nesting, without any namespace.
        let e = render(&format!(
            "{{% set x = 1 %}}{}{{{{ x }}}}",
            "{% set x = [x] %}".repeat(300)
        ))
        .unwrap_err();
        assert!(e.to_string().contains("nest at most"), "{e}");
    }

    #[test]
    fn printing_is_bounded_by_the_output_budget() {
        let mut env = env();
        env.set_fuel(None);
        crate::namespace::register(&mut env, 64);
        register(&mut env, 128, 1_000);
        let src = guard_bindings("{% set s = ['x' * 600, 'y' * 600] %}{{ s }}").into_owned();
        let e = env.render_str(&src, ()).unwrap_err();
        assert!(e.to_string().contains("grew past 1000"), "{e}");
        let src = guard_bindings("{% set s = ['x' * 600, 'y' * 600] %}{{ s|tojson }}").into_owned();
        assert!(env.render_str(&src, ()).is_err());
        let ok =
            guard_bindings("{% set s = ['x' * 60] %}{{ s|length }}{{ s[0]|length }}").into_owned();
        assert_eq!(env.render_str(&ok, ()).unwrap(), "160");
    }
}
