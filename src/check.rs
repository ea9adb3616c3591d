//! A fast path for input validation: the subset of JSON Schema 2020-12 that
//! declared parameters use, compiled at load and evaluated on the input
//! values a render already built (see [`crate::input`]).
//!
//! It answers in three values. Only a definite [`Tri::Yes`] skips the full
//! validator. A `No`, or an `Unknown` (a float where an integer is asked
//! for, a number too large for exact comparison), sends the inputs to the
//! `jsonschema` validator. That validator stays the authority: it decides,
//! and it writes the errors. A schema that uses any keyword outside the
//! subset does not compile here at all, and is always validated in full.
//!
//! The subset is `type`, `enum`, `const`, the length, size and range
//! keywords, `multipleOf` on integers, `items` (one schema), `properties`,
//! `required`, `additionalProperties`, `allOf`, `anyOf`, `oneOf`, `not`,
//! `if`/`then`/`else`, and annotations. Anything else (`$ref`, `pattern`,
//! `format`, `uniqueItems`, `prefixItems`, ...) is left to `jsonschema`.

use minijinja::Value;
use minijinja::value::ValueKind;
use serde_json::Value as Json;

use crate::input::InputMap;

/// A three-valued answer: valid, invalid, or cannot tell here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tri {
    Yes,
    No,
    Unknown,
}

impl Tri {
    fn not(self) -> Tri {
        match self {
            Tri::Yes => Tri::No,
            Tri::No => Tri::Yes,
            Tri::Unknown => Tri::Unknown,
        }
    }

    fn from_bool(b: bool) -> Tri {
        if b { Tri::Yes } else { Tri::No }
    }
}

/// All of several answers: `No` as soon as one is.
struct All(Tri);

impl All {
    fn new() -> All {
        All(Tri::Yes)
    }

    /// Adds an answer; `true` when the result is already `No`.
    fn add(&mut self, t: Tri) -> bool {
        match t {
            Tri::No => {
                self.0 = Tri::No;
                true
            }
            Tri::Unknown => {
                self.0 = Tri::Unknown;
                false
            }
            Tri::Yes => false,
        }
    }
}

/// A compiled schema. The shapes parameters declare most often have their
/// own variants, evaluated without the general node's bookkeeping.
#[derive(Debug)]
pub(crate) enum Check {
    Any,
    Never,
    /// `type: string`, perhaps with lengths.
    Str(Bounds),
    /// `enum` of strings only (perhaps with `type: string`).
    StrEnum(Box<[Box<str>]>),
    /// `type: object` with `properties` (at most 64), `required` (all of
    /// them among the properties) and `additionalProperties`.
    Object(Box<ObjectCheck>),
    /// `type: array` with `items` and lengths.
    Array(Box<Check>, Bounds),
    /// Only `type` (a bit set of `TYPES`), e.g. `type: [string, "null"]`.
    Types(u8),
    Node(Box<Node>),
}

#[derive(Debug)]
pub(crate) struct ObjectCheck {
    /// Whether a value that is not an object fails (`type: object`) or
    /// passes (no `type`: the object keywords say nothing about it).
    typed: bool,
    properties: Box<[(Box<str>, Check)]>,
    /// Bit `i` set: property `i` is required.
    required: u64,
    additional: Option<Check>,
}

#[derive(Debug, Default)]
pub(crate) struct Node {
    /// Allowed types as a bit set of `TYPES` (0: any).
    types: u8,
    /// `enum` and `const`: each list must contain the value.
    one_of_literals: Vec<Vec<Json>>,
    str_len: Bounds,
    items_len: Bounds,
    props_len: Bounds,
    numbers: Vec<(Bound, Num)>,
    multiple_of: Option<Num>,
    items: Option<Check>,
    properties: Vec<(Box<str>, Check)>,
    required: Vec<Box<str>>,
    additional: Option<Check>,
    all_of: Vec<Check>,
    any_of: Vec<Check>,
    one_of: Vec<Check>,
    not: Option<Check>,
    cond: Option<Box<Cond>>,
    /// When every required property is among at most 64 declared ones: bit
    /// `i` set for required property `i`.
    required_mask: Option<u64>,
}

/// `if`, `then`, `else`.
#[derive(Debug)]
struct Cond(Check, Option<Check>, Option<Check>);

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Bounds {
    min: Option<u64>,
    max: Option<u64>,
}

impl Bounds {
    fn holds(&self, n: usize) -> bool {
        let n = n as u64;
        self.min.is_none_or(|m| n >= m) && self.max.is_none_or(|m| n <= m)
    }

    fn is_set(&self) -> bool {
        self.min.is_some() || self.max.is_some()
    }

    /// Whether a string's length in characters (code points) holds.
    fn holds_str(&self, s: &str) -> bool {
        // A string has at most as many characters as bytes, and at least a
        // quarter as many: often that settles it without counting.
        let bytes = s.len() as u64;
        let surely_long_enough = self.min.is_none_or(|m| bytes / 4 >= m);
        let surely_short_enough = self.max.is_none_or(|m| bytes <= m);
        (surely_long_enough && surely_short_enough) || self.holds(s.chars().count())
    }
}

#[derive(Debug, Clone, Copy)]
enum Bound {
    Min,
    Max,
    ExclusiveMin,
    ExclusiveMax,
}

/// A number, kept exact when it is an integer.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

/// Integers up to this magnitude convert to `f64` exactly.
const EXACT: i128 = 1 << 53;

impl Num {
    fn of_json(n: &serde_json::Number) -> Option<Num> {
        if let Some(i) = n.as_i64() {
            Some(Num::Int(i.into()))
        } else if let Some(u) = n.as_u64() {
            Some(Num::Int(u.into()))
        } else {
            n.as_f64().map(Num::Float)
        }
    }

    /// `self` compared with `other`, when that can be told exactly.
    fn cmp(self, other: Num) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
            (Num::Int(a), Num::Float(b)) if a.abs() <= EXACT => (a as f64).partial_cmp(&b),
            (Num::Float(a), Num::Int(b)) if b.abs() <= EXACT => a.partial_cmp(&(b as f64)),
            _ => None,
        }
    }
}

const TYPES: [&str; 7] = [
    "null", "boolean", "integer", "number", "string", "array", "object",
];
const NULL: u8 = 1;
const BOOLEAN: u8 = 2;
const INTEGER: u8 = 4;
const NUMBER: u8 = 8;
const STRING: u8 = 16;
const ARRAY: u8 = 32;
const OBJECT: u8 = 64;

/// Keywords that never make an instance invalid: 2020-12's annotations
/// (the content vocabulary's included: it asserts nothing by default),
/// ours (`stable`), and extensions (`x-...`).
const ANNOTATIONS: [&str; 12] = [
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$comment",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    "stable",
];

const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Compiles `schema` when it stays inside the subset; `None` otherwise.
pub(crate) fn compile(schema: &Json) -> Option<Check> {
    compile_at(schema, 0)
}

fn compile_at(schema: &Json, depth: usize) -> Option<Check> {
    if depth > 32 {
        return None;
    }
    let map = match schema {
        Json::Bool(true) => return Some(Check::Any),
        Json::Bool(false) => return Some(Check::Never),
        Json::Object(map) => map,
        _ => return None,
    };
    let sub = |s: &Json| compile_at(s, depth + 1);
    let subs = |s: &Json| -> Option<Vec<Check>> {
        let list = s.as_array().filter(|l| !l.is_empty())?;
        list.iter().map(sub).collect()
    };
    let count = |s: &Json| s.as_u64();
    let mut node = Node::default();
    for (key, value) in map {
        match key.as_str() {
            k if ANNOTATIONS.contains(&k) || k.starts_with("x-") => {}
            "$schema" if depth == 0 => {
                if value.as_str()?.trim_end_matches('#') != DRAFT {
                    return None;
                }
            }
            "type" => {
                let names: Vec<&str> = match value {
                    Json::String(t) => vec![t],
                    Json::Array(ts) => ts.iter().map(Json::as_str).collect::<Option<_>>()?,
                    _ => return None,
                };
                for name in names {
                    let bit = TYPES.iter().position(|t| *t == name)?;
                    node.types |= 1 << bit;
                }
                if node.types == 0 {
                    return None;
                }
            }
            "enum" => node.one_of_literals.push(value.as_array()?.clone()),
            "const" => node.one_of_literals.push(vec![value.clone()]),
            "minLength" => node.str_len.min = Some(count(value)?),
            "maxLength" => node.str_len.max = Some(count(value)?),
            "minItems" => node.items_len.min = Some(count(value)?),
            "maxItems" => node.items_len.max = Some(count(value)?),
            "minProperties" => node.props_len.min = Some(count(value)?),
            "maxProperties" => node.props_len.max = Some(count(value)?),
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                let bound = match key.as_str() {
                    "minimum" => Bound::Min,
                    "maximum" => Bound::Max,
                    "exclusiveMinimum" => Bound::ExclusiveMin,
                    _ => Bound::ExclusiveMax,
                };
                let n = match value {
                    Json::Number(n) => Num::of_json(n)?,
                    _ => return None,
                };
                node.numbers.push((bound, n));
            }
            "multipleOf" => match value {
                Json::Number(n) => match Num::of_json(n)? {
                    Num::Int(m) if m > 0 => node.multiple_of = Some(Num::Int(m)),
                    Num::Float(f) if f > 0.0 => node.multiple_of = Some(Num::Float(f)),
                    _ => return None,
                },
                _ => return None,
            },
            "items" => node.items = Some(sub(value)?),
            "properties" => {
                for (name, s) in value.as_object()? {
                    node.properties.push((name.as_str().into(), sub(s)?));
                }
            }
            "required" => {
                for name in value.as_array()? {
                    node.required.push(name.as_str()?.into());
                }
            }
            "additionalProperties" => node.additional = Some(sub(value)?),
            "allOf" => node.all_of = subs(value)?,
            "anyOf" => node.any_of = subs(value)?,
            "oneOf" => node.one_of = subs(value)?,
            "not" => node.not = Some(sub(value)?),
            "if" | "then" | "else" => {}
            _ => return None,
        }
    }
    if let Some(cond) = map.get("if") {
        let then = match map.get("then") {
            Some(s) => Some(sub(s)?),
            None => None,
        };
        let otherwise = match map.get("else") {
            Some(s) => Some(sub(s)?),
            None => None,
        };
        node.cond = Some(Box::new(Cond(sub(cond)?, then, otherwise)));
    } else {
        // `then` and `else` without `if` do nothing, but must still be
        // schemas for the full validator to accept the schema at all.
        for k in ["then", "else"] {
            if let Some(s) = map.get(k) {
                sub(s)?;
            }
        }
    }
    Some(specialize(node))
}

/// The tightest variant that says exactly what `node` says.
fn specialize(node: Node) -> Check {
    // No number keywords and no combinators.
    let no_logic = node.numbers.is_empty()
        && node.multiple_of.is_none()
        && node.all_of.is_empty()
        && node.any_of.is_empty()
        && node.one_of.is_empty()
        && node.not.is_none()
        && node.cond.is_none();
    let only_typed = |ty: u8| node.types == ty && node.one_of_literals.is_empty() && no_logic;
    let no_string = !node.str_len.is_set();
    let no_array = node.items.is_none() && !node.items_len.is_set();
    let no_object = node.properties.is_empty()
        && node.required.is_empty()
        && node.additional.is_none()
        && !node.props_len.is_set();
    if only_typed(STRING) && no_array && no_object {
        return Check::Str(node.str_len);
    }
    if (node.types == 0 || node.types == STRING)
        && node.one_of_literals.len() == 1
        && node.one_of_literals[0].iter().all(Json::is_string)
        && no_string
        && no_array
        && no_object
        && no_logic
    {
        let list = node.one_of_literals[0]
            .iter()
            .filter_map(Json::as_str)
            .map(Box::from)
            .collect();
        return Check::StrEnum(list);
    }
    if node.types != 0 && only_typed(node.types) && no_string && no_array && no_object {
        return Check::Types(node.types);
    }
    if only_typed(ARRAY) && no_string && no_object {
        let items = node.items.unwrap_or(Check::Any);
        return Check::Array(Box::new(items), node.items_len);
    }
    let all_required_declared = node
        .required
        .iter()
        .all(|r| node.properties.iter().any(|(p, _)| p == r));
    let typed = node.types == OBJECT;
    if (only_typed(OBJECT) || only_typed(0))
        && no_string
        && no_array
        && !node.props_len.is_set()
        && node.properties.len() <= 64
        && all_required_declared
    {
        let mut required = 0u64;
        for r in &node.required {
            if let Some(i) = node.properties.iter().position(|(p, _)| p == r) {
                required |= 1 << i;
            }
        }
        return Check::Object(Box::new(ObjectCheck {
            typed,
            properties: node.properties.into(),
            required,
            additional: node.additional,
        }));
    }
    let mut node = node;
    if node.properties.len() <= 64 && all_required_declared {
        let mut mask = 0u64;
        for r in &node.required {
            if let Some(i) = node.properties.iter().position(|(p, _)| p == r) {
                mask |= 1 << i;
            }
        }
        node.required_mask = Some(mask);
    }
    Check::Node(Box::new(node))
}

/// An input value as the checker sees it.
enum Kind<'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(&'a str),
    Seq(&'a [Value]),
    Map(&'a InputMap),
    /// Not a value the input serializer makes: the full validator decides.
    Other,
}

fn kind(v: &Value) -> Kind<'_> {
    match v.kind() {
        ValueKind::None => Kind::Null,
        ValueKind::Bool => Kind::Bool(v.is_true()),
        ValueKind::Number => {
            if v.is_integer() {
                match v.as_i64() {
                    Some(i) => Kind::Num(Num::Int(i.into())),
                    None => u64::try_from(v.clone())
                        .map_or(Kind::Other, |u| Kind::Num(Num::Int(u.into()))),
                }
            } else {
                f64::try_from(v.clone()).map_or(Kind::Other, |f| Kind::Num(Num::Float(f)))
            }
        }
        ValueKind::String => v.as_str().map_or(Kind::Other, Kind::Str),
        ValueKind::Seq => v
            .downcast_object_ref::<Vec<Value>>()
            .map_or(Kind::Other, |s| Kind::Seq(s)),
        ValueKind::Map => v
            .downcast_object_ref::<InputMap>()
            .map_or(Kind::Other, Kind::Map),
        _ => Kind::Other,
    }
}

impl Check {
    /// Whether the inputs map satisfies this (object) schema.
    pub(crate) fn check_map(&self, map: &InputMap) -> Tri {
        self.eval(&Kind::Map(map))
    }

    fn check(&self, v: &Value) -> Tri {
        // The specialised shapes read the value directly; a value of
        // another shape takes the general path, which tells "no" from
        // "cannot tell".
        let direct = match self {
            Check::Any => Some(Tri::Yes),
            Check::Str(len) => v.as_str().map(|s| Tri::from_bool(len.holds_str(s))),
            Check::StrEnum(list) => v
                .as_str()
                .map(|s| Tri::from_bool(list.iter().any(|l| **l == *s))),
            Check::Object(o) => v.downcast_object_ref::<InputMap>().map(|m| o.eval(m)),
            _ => None,
        };
        direct.unwrap_or_else(|| self.eval(&kind(v)))
    }

    fn eval(&self, v: &Kind<'_>) -> Tri {
        let mismatch = || {
            if matches!(v, Kind::Other) {
                Tri::Unknown
            } else {
                Tri::No
            }
        };
        match (self, v) {
            (Check::Any, _) => Tri::Yes,
            (Check::Never, _) => Tri::No,
            (Check::Str(len), Kind::Str(s)) => Tri::from_bool(len.holds_str(s)),
            (Check::StrEnum(list), Kind::Str(s)) => Tri::from_bool(list.iter().any(|l| **l == **s)),
            (Check::Object(o), Kind::Map(map)) => o.eval(map),
            (Check::Object(o), Kind::Other) if !o.typed => Tri::Unknown,
            (Check::Object(o), _) if !o.typed => Tri::Yes,
            (Check::Types(types), _) => type_ok(*types, v),
            (Check::Array(items, len), Kind::Seq(list)) => {
                if !len.holds(list.len()) {
                    return Tri::No;
                }
                let mut all = All::new();
                for item in *list {
                    if all.add(items.check(item)) {
                        return Tri::No;
                    }
                }
                all.0
            }
            (Check::Node(node), _) => node.eval(v),
            _ => mismatch(),
        }
    }
}

impl ObjectCheck {
    fn eval(&self, map: &InputMap) -> Tri {
        let mut all = All::new();
        let mut seen = 0u64;
        for (at, (key, value)) in map.iter().enumerate() {
            let t = match property_index(&self.properties, at, key) {
                Some(i) => {
                    seen |= 1 << i;
                    self.properties[i].1.check(value)
                }
                None => self
                    .additional
                    .as_ref()
                    .map_or(Tri::Yes, |c| c.check(value)),
            };
            if all.add(t) {
                return Tri::No;
            }
        }
        if seen & self.required != self.required {
            return Tri::No;
        }
        all.0
    }
}

impl Node {
    fn eval(&self, v: &Kind<'_>) -> Tri {
        if matches!(v, Kind::Other) {
            return Tri::Unknown;
        }
        let mut all = All::new();
        if self.types != 0 && all.add(self.type_ok(v)) {
            return Tri::No;
        }
        for literals in &self.one_of_literals {
            if all.add(any_literal(literals, v)) {
                return Tri::No;
            }
        }
        match v {
            Kind::Str(s)
                if self.str_len.is_set() && all.add(Tri::from_bool(self.str_len.holds_str(s))) =>
            {
                return Tri::No;
            }
            Kind::Num(n) => {
                for &(bound, limit) in &self.numbers {
                    use std::cmp::Ordering::{Greater, Less};
                    let t = match (bound, n.cmp(limit)) {
                        (_, None) => Tri::Unknown,
                        (Bound::Min, Some(o)) => Tri::from_bool(o != Less),
                        (Bound::Max, Some(o)) => Tri::from_bool(o != Greater),
                        (Bound::ExclusiveMin, Some(o)) => Tri::from_bool(o == Greater),
                        (Bound::ExclusiveMax, Some(o)) => Tri::from_bool(o == Less),
                    };
                    if all.add(t) {
                        return Tri::No;
                    }
                }
                if let Some(m) = self.multiple_of {
                    let t = match (n, m) {
                        (Num::Int(v), Num::Int(m)) => Tri::from_bool(v % m == 0),
                        _ => Tri::Unknown,
                    };
                    if all.add(t) {
                        return Tri::No;
                    }
                }
            }
            Kind::Seq(items) => {
                if all.add(Tri::from_bool(self.items_len.holds(items.len()))) {
                    return Tri::No;
                }
                if let Some(check) = &self.items {
                    for item in *items {
                        if all.add(check.check(item)) {
                            return Tri::No;
                        }
                    }
                }
            }
            Kind::Map(map) => {
                if all.add(Tri::from_bool(self.props_len.holds(map.len()))) {
                    return Tri::No;
                }
                if self.required_mask.is_none() {
                    for name in &self.required {
                        if all.add(Tri::from_bool(map.contains_key(name))) {
                            return Tri::No;
                        }
                    }
                }
                let mut seen = 0u64;
                for (at, (key, value)) in map.iter().enumerate() {
                    let declared = property_index(&self.properties, at, key);
                    let t = match (declared, &self.additional) {
                        (Some(i), _) => {
                            seen |= 1 << (i % 64);
                            self.properties[i].1.check(value)
                        }
                        (None, Some(check)) => check.check(value),
                        (None, None) => Tri::Yes,
                    };
                    if all.add(t) {
                        return Tri::No;
                    }
                }
                if let Some(mask) = self.required_mask
                    && seen & mask != mask
                {
                    return Tri::No;
                }
            }
            _ => {}
        }
        for check in &self.all_of {
            if all.add(check.eval(v)) {
                return Tri::No;
            }
        }
        if !self.any_of.is_empty() {
            let mut t = Tri::No;
            for check in &self.any_of {
                match check.eval(v) {
                    Tri::Yes => {
                        t = Tri::Yes;
                        break;
                    }
                    Tri::Unknown => t = Tri::Unknown,
                    Tri::No => {}
                }
            }
            if all.add(t) {
                return Tri::No;
            }
        }
        if !self.one_of.is_empty() {
            let (mut yes, mut unknown) = (0, false);
            for check in &self.one_of {
                match check.eval(v) {
                    Tri::Yes => yes += 1,
                    Tri::Unknown => unknown = true,
                    Tri::No => {}
                }
            }
            let t = match (yes, unknown) {
                (2.., _) => Tri::No,
                (_, true) => Tri::Unknown,
                (1, false) => Tri::Yes,
                _ => Tri::No,
            };
            if all.add(t) {
                return Tri::No;
            }
        }
        if let Some(check) = &self.not
            && all.add(check.eval(v).not())
        {
            return Tri::No;
        }
        if let Some(cond) = &self.cond {
            let Cond(cond, then, otherwise) = &**cond;
            let t = match cond.eval(v) {
                Tri::Yes => then.as_ref().map_or(Tri::Yes, |c| c.eval(v)),
                Tri::No => otherwise.as_ref().map_or(Tri::Yes, |c| c.eval(v)),
                Tri::Unknown => Tri::Unknown,
            };
            if all.add(t) {
                return Tri::No;
            }
        }
        all.0
    }

    fn type_ok(&self, v: &Kind<'_>) -> Tri {
        type_ok(self.types, v)
    }
}

/// The index of property `key`, the `at`-th key of its map. Inputs often
/// list their fields in the schema's order, so position `at` is tried
/// first.
fn property_index(properties: &[(Box<str>, Check)], at: usize, key: &str) -> Option<usize> {
    match properties.get(at) {
        Some((name, _)) if **name == *key => Some(at),
        _ => properties.iter().position(|(name, _)| **name == *key),
    }
}

/// Whether `v` is of one of `types` (bits of `TYPES`).
fn type_ok(types: u8, v: &Kind<'_>) -> Tri {
    let has = |bit: u8| types & bit != 0;
    match v {
        Kind::Null => Tri::from_bool(has(NULL)),
        Kind::Bool(_) => Tri::from_bool(has(BOOLEAN)),
        Kind::Num(Num::Int(_)) => Tri::from_bool(has(INTEGER) || has(NUMBER)),
        Kind::Num(Num::Float(f)) => {
            if has(NUMBER) {
                Tri::Yes
            } else if has(INTEGER) && f.fract() == 0.0 {
                // JSON Schema counts 1.0 as an integer; leave it to the
                // full validator.
                Tri::Unknown
            } else {
                Tri::No
            }
        }
        Kind::Str(_) => Tri::from_bool(has(STRING)),
        Kind::Seq(_) => Tri::from_bool(has(ARRAY)),
        Kind::Map(_) => Tri::from_bool(has(OBJECT)),
        Kind::Other => Tri::Unknown,
    }
}

/// Whether `v` equals one of `literals` (JSON equality).
fn any_literal(literals: &[Json], v: &Kind<'_>) -> Tri {
    let mut t = Tri::No;
    for lit in literals {
        let here = match (v, lit) {
            (Kind::Null, Json::Null) => Tri::Yes,
            (Kind::Bool(a), Json::Bool(b)) => Tri::from_bool(a == b),
            (Kind::Str(a), Json::String(b)) => Tri::from_bool(a == b),
            (Kind::Num(a), Json::Number(b)) => match (a, Num::of_json(b)) {
                (Num::Int(a), Some(Num::Int(b))) => Tri::from_bool(*a == b),
                _ => Tri::Unknown,
            },
            (Kind::Seq(_) | Kind::Map(_), Json::Array(_) | Json::Object(_)) => Tri::Unknown,
            _ => Tri::No,
        };
        match here {
            Tri::Yes => return Tri::Yes,
            Tri::Unknown => t = Tri::Unknown,
            Tri::No => {}
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::RenderLimits;
    use serde_json::json;

    /// What the fast path says, and what jsonschema says.
    fn both(schema: &Json, inputs: &Json) -> (Tri, bool) {
        let check = compile(schema).expect("inside the subset");
        let map = crate::input::from_serialize(inputs, &RenderLimits::default(), "t", 0).unwrap();
        let truth = jsonschema::validator_for(schema).unwrap().is_valid(inputs);
        (check.check_map(&map), truth)
    }

    #[test]
    fn a_definite_answer_always_agrees_with_jsonschema() {
        let schema = json!({
            "$schema": DRAFT,
            "type": "object",
            "required": ["s"],
            "additionalProperties": false,
            "properties": {
                "s": {"type": "string", "minLength": 2, "maxLength": 3},
                "n": {"type": "integer", "minimum": -1, "exclusiveMaximum": 10.5, "multipleOf": 2},
                "f": {"type": ["number", "null"], "maximum": 1e300},
                "e": {"enum": ["a", 1, null, [1]]},
                "p": {"enum": ["low", "high"]},
                "t": {"type": ["string", "null"]},
                "long": {"type": "string", "minLength": 3, "maxLength": 4},
                "l": {"type": "array", "items": {"type": "object", "properties": {"k": {"const": true}}},
                      "maxItems": 2},
                "m": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 1},
                "u": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "o": {"oneOf": [{"type": "integer"}, {"type": "number"}]},
                "x": {"not": {"type": "null"}},
                "c": {"if": {"properties": {"r": {"const": "tool"}}},
                      "then": {"required": ["id"]}, "else": {"maxProperties": 1}}
            }
        });
        let cases = [
            json!({"s": "ab"}),
            json!({"s": "a"}),
            json!({"s": "äöü"}),
            json!({"s": "äöüß"}),
            json!({}),
            json!({"s": "ab", "zz": 1}),
            json!({"s": "ab", "n": 4}),
            json!({"s": "ab", "n": 3}),
            json!({"s": "ab", "n": -2}),
            json!({"s": "ab", "n": 12}),
            json!({"s": "ab", "n": 4.0}),
            json!({"s": "ab", "n": 4.5}),
            json!({"s": "ab", "f": null}),
            json!({"s": "ab", "f": 0.5}),
            json!({"s": "ab", "f": "x"}),
            json!({"s": "ab", "e": "a"}),
            json!({"s": "ab", "e": 1}),
            json!({"s": "ab", "e": 2}),
            json!({"s": "ab", "e": "b"}),
            json!({"s": "ab", "e": [1]}),
            json!({"s": "ab", "p": "low"}),
            json!({"s": "ab", "t": null}),
            json!({"s": "ab", "t": "x"}),
            json!({"s": "ab", "t": 1}),
            json!({"s": "ab", "c": 5}),
            json!({"s": "ab", "p": "mid"}),
            json!({"s": "ab", "p": 1}),
            json!({"s": "ab", "long": "abc"}),
            json!({"s": "ab", "long": "ab"}),
            json!({"s": "ab", "long": "abcde"}),
            json!({"s": "ab", "long": "ééé"}),
            json!({"s": "ab", "long": "éééé"}),
            json!({"s": "ab", "long": "ééééé"}),
            json!({"s": "ab", "l": [{"k": true}, {}]}),
            json!({"s": "ab", "l": [{"k": false}]}),
            json!({"s": "ab", "l": [{}, {}, {}]}),
            json!({"s": "ab", "m": {"a": "b"}}),
            json!({"s": "ab", "m": {"a": 1}}),
            json!({"s": "ab", "m": {"a": "b", "c": "d"}}),
            json!({"s": "ab", "u": 1}),
            json!({"s": "ab", "u": 1.5}),
            json!({"s": "ab", "o": 1}),
            json!({"s": "ab", "o": 1.5}),
            json!({"s": "ab", "x": null}),
            json!({"s": "ab", "x": 0}),
            json!({"s": "ab", "c": {"r": "tool", "id": "1"}}),
            json!({"s": "ab", "c": {"r": "tool"}}),
            json!({"s": "ab", "c": {"r": "user"}}),
            json!({"s": "ab", "c": {"r": "user", "q": 1}}),
        ];
        let mut definite = 0;
        for inputs in &cases {
            let (fast, truth) = both(&schema, inputs);
            match fast {
                Tri::Yes => assert!(
                    truth,
                    "fast path accepted {inputs} but jsonschema rejects it"
                ),
                Tri::No => assert!(
                    !truth,
                    "fast path rejected {inputs} but jsonschema accepts it"
                ),
                Tri::Unknown => {}
            }
            definite += usize::from(fast != Tri::Unknown);
        }
        assert!(
            definite >= cases.len() - 5,
            "only {definite} definite answers"
        );
    }

    #[test]
    fn keywords_outside_the_subset_leave_it_to_jsonschema() {
        for schema in [
            json!({"type": "string", "pattern": "^a"}),
            json!({"$ref": "#/$defs/x", "$defs": {"x": {}}}),
            json!({"type": "array", "uniqueItems": true}),
            json!({"format": "email"}),
            json!({"$schema": "http://json-schema.org/draft-07/schema#"}),
            json!({"properties": {"a": {"type": "strng"}}}),
        ] {
            assert!(compile(&schema).is_none(), "{schema}");
        }
        assert!(compile(&json!({"description": "x", "default": 1, "type": "string"})).is_some());
    }
}
