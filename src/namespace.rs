//! Namespaces that can never hold themselves.
//!
//! A Jinja `namespace()` is the only mutable value a template can build, and
//! so the only way to make a value that contains itself: `{% set ns.me = ns
//! %}`. minijinja walks values recursively to print, serialise, compare,
//! sort and hash them, so a self-containing value overflows the stack and
//! aborts the process (a signal, not an error), and `|pprint` on one never
//! ends. A namespace accumulating `{% set ns.l = [ns.l] %}` in a loop builds
//! a value tens of thousands of levels deep with the same effect.
//!
//! The invariant kept here: **no namespace ever holds a namespace, and no
//! value stored in one nests deeper than [`max_depth`]**. Then no cycle can
//! form (every cycle needs a namespace attribute whose value reaches a
//! namespace), and every walk the engine does is shallow. It is kept at the
//! two places a namespace gets a value:
//!
//! - `namespace(...)` is replaced by a function that checks its initial
//!   values, makes minijinja's own namespace, and notes it in the render's
//!   state (a namespace is recognised by identity: minijinja's type is
//!   private);
//! - every `{% set a.b = EXPR %}` (the only statement that assigns to an
//!   attribute) is rewritten before compiling to `{% set a.b =
//!   (EXPR)|__namespace_value %}` (by [`crate::bounded::guard_bindings`]),
//!   a filter that refuses a value holding a namespace or `loop`, nested
//!   too deep, or larger than [`crate::bounded::MAX_VALUE_NODES`]. Block
//!   sets (`{% set a.b %}...{% endset %}`) assign rendered text and need no
//!   check.
//!
//! The check walks the assigned value (with an explicit stack, charging one
//! unit of fuel per 16 values visited, and one per 16 comparisons with the
//! namespaces made so far), except the inputs (which cannot hold one). The
//! rewrite adds characters inside the `set` tag only: line numbers are kept;
//! an error later on the same line reports a column up to 21 characters
//! further right than the file has it.

use minijinja::value::{ObjectRepr, Value, ValueKind, ValueOrKwargs};
use minijinja::{Environment, Error, ErrorKind, State};

use crate::input::InputMap;

/// The filter [`crate::bounded::guard_bindings`] inserts for an attribute
/// target.
pub(crate) const FILTER: &str = "__namespace_value";

/// The deepest value a namespace may hold (for the default
/// `max_input_depth` of 64): inputs at their deepest, with room for the
/// lists and maps a template wraps them in. minijinja's recursive walks
/// stay far from a 2 MiB stack at this depth.
pub(crate) fn max_depth(max_input_depth: usize) -> usize {
    max_input_depth.saturating_add(64)
}

/// The namespaces made during one render, kept in its state.
#[derive(Default)]
struct Made(Vec<Value>);

/// Registers `namespace()` and the assignment filter on `env`.
pub(crate) fn register(env: &mut Environment<'static>, max_input_depth: usize) {
    let depth = max_depth(max_input_depth);
    env.add_function(
        "namespace",
        move |state: &mut State, defaults: Option<ValueOrKwargs>| -> Result<Value, Error> {
            if let Some(defaults) = &defaults {
                check(state, defaults, depth)?;
            }
            let ns = minijinja::functions::namespace(defaults)?;
            state
                .get_or_insert_extension(Made::default())
                .0
                .push(ns.clone());
            Ok(ns)
        },
    );
    env.add_filter(
        FILTER,
        move |state: &State, value: Value| -> Result<Value, Error> {
            check(state, &value, depth)?;
            crate::bounded::check_bound(state, &value, depth)?;
            Ok(value)
        },
    );
}

/// Fails when `value` holds a namespace of this render or nests deeper than
/// `depth`.
fn check(state: &State, value: &Value, depth: usize) -> Result<(), Error> {
    if value.as_object().is_none() {
        return Ok(());
    }
    let made: &[Value] = state.get_extension::<Made>().map_or(&[], |m| &m.0);
    let mut walk = Walk {
        state,
        stack: vec![(value.clone(), 1)],
        seen: 0,
    };
    while let Some((v, level)) = walk.stack.pop() {
        let Some(obj) = v.as_object() else { continue };
        // A namespace is map-like: only maps need comparing, and each
        // comparison is paid for.
        let is_map = obj.repr() == ObjectRepr::Map;
        if is_map {
            walk.pay(made.len() as u64)?;
        }
        if is_map && made.iter().any(|ns| minijinja::tests::is_sameas(&v, ns)) {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "a namespace cannot hold a namespace (it could then hold itself); \
                 store the values you need instead",
            ));
        }
        if level > depth {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "a value stored in a namespace may nest at most {depth} lists or maps deep"
                ),
            ));
        }
        // The inputs are data from outside: they hold no namespace, and
        // their depth was bounded when they came in.
        if obj.downcast_ref::<InputMap>().is_some() && level + 64 <= depth {
            continue;
        }
        match obj.repr() {
            ObjectRepr::Seq | ObjectRepr::Iterable => {
                if let Some(items) = obj.try_iter() {
                    for v in items {
                        walk.push(v, level)?;
                    }
                }
            }
            ObjectRepr::Map => {
                if is_loop(obj) {
                    return Err(live_object());
                }
                if let Some(pairs) = obj.try_iter_pairs() {
                    for (k, v) in pairs {
                        walk.push(k, level)?;
                        walk.push(v, level)?;
                    }
                }
            }
            // Plain objects (functions) hold no values.
            _ => {}
        }
    }
    state.consume_fuel(walk.seen / 16)?;
    Ok(())
}

/// Whether `obj` is a `loop` object: live state, whose `nextitem` changes
/// as the loop runs and may be this very namespace one pass later, so no
/// check made when it is stored holds afterwards. minijinja's loop type is
/// private; it is recognised as the map-like object whose keys include
/// `index0`, `revindex0` and `depth0` (so a map a template writes with
/// those three keys is refused too).
fn is_loop(obj: &minijinja::value::DynObject) -> bool {
    if obj.downcast_ref::<InputMap>().is_some() {
        return false;
    }
    obj.try_iter().is_some_and(|keys| {
        let keys: Vec<Value> = keys.take(16).collect();
        ["index0", "revindex0", "depth0"]
            .iter()
            .all(|k| keys.iter().any(|v| v.as_str() == Some(k)))
    })
}

fn live_object() -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        "a namespace cannot hold `loop` (its contents change as the template runs, and may \
         come to hold the namespace itself); store the values you need, such as `loop.index`",
    )
}

/// The values still to look at, and how many were seen since fuel was last
/// charged.
struct Walk<'a, 's, 'e> {
    state: &'a State<'s, 'e>,
    stack: Vec<(Value, usize)>,
    seen: u64,
}

impl Walk<'_, '_, '_> {
    /// Counts `n` more steps, charging fuel every 4,096.
    fn pay(&mut self, n: u64) -> Result<(), Error> {
        self.seen += n;
        if self.seen >= 4096 {
            self.state.consume_fuel(self.seen / 16)?;
            self.seen = 0;
        }
        Ok(())
    }

    /// Notes `v`, one level below `level`; only containers are walked.
    fn push(&mut self, v: Value, level: usize) -> Result<(), Error> {
        self.pay(1)?;
        if matches!(
            v.kind(),
            ValueKind::Map | ValueKind::Seq | ValueKind::Iterable | ValueKind::Plain
        ) {
            self.stack.push((v, level + 1));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment<'static> {
        let mut env = Environment::new();
        env.set_fuel(Some(200_000));
        register(&mut env, 64);
        crate::bounded::register(&mut env, max_depth(64), 8 << 20);
        env
    }

    fn render(src: &str) -> Result<String, Error> {
        let src = crate::bounded::guard_bindings(src).into_owned();
        env().render_str(&src, ())
    }

    #[test]
    fn namespaces_still_work() {
        let out = render(
            "{% set ns = namespace(n=0, items=[]) %}{% for i in range(3) %}\
             {% set ns.n = ns.n + i %}{% set ns.items = ns.items + [i] %}{% endfor %}\
             {{ ns.n }} {{ ns.items }} {{ ns|tojson }}{% set a, ns.b = 1, 2 %}{{ ns.b }}",
        )
        .unwrap();
        assert_eq!(out, "3 [0, 1, 2] {\"items\": [0, 1, 2], \"n\": 3}2");
    }

    #[test]
    fn a_namespace_cannot_hold_itself_however_it_is_reached() {
        for src in [
            "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}",
            "{% set ns = namespace() %}{% set ns.l = [1, [ns]] %}{{ ns|tojson }}",
            "{% set ns = namespace() %}{% set ns.d = {'k': ns} %}{{ ns == ns }}",
            "{% set ns = namespace() %}{% set ns.l = [1] + [ns] %}{{ ns|pprint }}",
            "{% set a = namespace() %}{% set b = namespace(a=a) %}{% set a.b = b %}{{ a }}",
            "{% set a = namespace() %}{% set b = namespace({'a': a}) %}{{ b }}",
            "{% set ns = namespace() %}{% set x, ns.me = 1, ns %}{{ ns }}",
            "{% set ns = namespace() %}{% for x in [ns, ns] %}{% set ns.l = loop %}{% endfor %}{{ ns|tojson }}",
            "{% set ns = namespace() %}{% set alias = ns %}{% set ns.me = [alias]|list %}{{ ns }}",
            // `loop` is live: stored while it holds no namespace, its
            // `nextitem` is the namespace one pass later.
            "{% set ns = namespace() %}{% for x in [1, 2, ns] %}{% if loop.first %}{% set ns.l = loop %}{% endif %}{% if loop.index == 2 %}{{ ns|tojson }}{% endif %}{% endfor %}",
            "{% set ns = namespace() %}{% for x in [1, ns] %}{% set ns.l = [loop] %}{% endfor %}{{ ns }}",
            "{% set ns = namespace() %}{% for x in [1, ns] %}{% set ns.l = {'k': loop} %}{% endfor %}{{ ns == ns }}",
        ] {
            let e = render(src).expect_err(src);
            assert!(
                e.to_string().contains("cannot hold a namespace")
                    || e.to_string().contains("cannot hold `loop`"),
                "{src}: {e}"
            );
        }
        // Values taken from `loop`, and macros, are fine.
        assert_eq!(
            render("{% macro m() %}hi{% endmacro %}{% set ns = namespace() %}{% for x in 'ab' %}{% set ns.i = loop.index %}{% endfor %}{% set ns.m = m %}{{ ns.i }}{{ ns.m() }}").unwrap(),
            "2hi"
        );
    }

    #[test]
    fn deep_values_are_refused_before_the_engine_recurses_on_them() {
        let src = "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}\
                   {% set ns.l = [ns.l] %}{% endfor %}{{ ns.l }}";
        let e = render(src).unwrap_err();
        assert!(e.to_string().contains("at most 128"), "{e}");
    }

    #[test]
    fn checking_big_values_costs_fuel() {
        // 3,000 appends: 4.5 million values looked at, 280,000 fuel.
        let src = "{% set ns = namespace(l=[]) %}{% for i in range(3000) %}\
                   {% set ns.l = ns.l + [i] %}{% endfor %}{{ ns.l|length }}";
        let e = render(src).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfFuel, "{e}");
        assert_eq!(
            render(
                "{% set ns = namespace(l=[]) %}{% for i in range(500) %}\
                 {% set ns.l = ns.l + [i] %}{% endfor %}{{ ns.l|length }}"
            )
            .unwrap(),
            "500"
        );
    }

    #[test]
    fn namespace_keeps_its_argument_rules() {
        assert!(render("{{ namespace(1, 2) }}").is_err());
        assert_eq!(render("{{ namespace(a=1).a }}").unwrap(), "1");
        assert_eq!(render("{{ namespace({'a': 1}).a }}").unwrap(), "1");
    }
}
