//! Inputs as templates see them, built in one pass.
//!
//! A render's inputs are serialized once, straight into minijinja values.
//! There is no `serde_json::Value` tree in between, so there is none to
//! build, walk and drop on every render. As it goes, the serializer:
//! - follows the JSON data model, exactly as `serde_json::to_value` would:
//!   map keys become strings, non-finite floats become `null`, bytes become
//!   lists of numbers, enums are tagged externally, and 128-bit integers
//!   outside the 64-bit ranges are refused;
//! - makes every string and map key unable to carry a role marker (a
//!   struct's field names are the program's own `&'static str`s, not
//!   input, and pass as they are);
//! - enforces [`RenderLimits`]' input size and depth before it descends, so
//!   a value nested deeper than the stack can take is refused, not
//!   overflowed on.
//!
//! Maps become [`InputMap`]s (insertion order, linear lookup while small,
//! hashed when large) and lists become `Vec<Value>`. Schema checks walk
//! these types directly.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use minijinja::Value;
use minijinja::value::{Enumerator, Object, ObjectExt, ObjectRepr};
use serde::ser::{self, Error as _, Serialize};

use crate::body;
use crate::error::{Error, ErrorKind};
use crate::limits::RenderLimits;

/// Maps with more entries than this get a hash index.
const INDEX_FROM: usize = 16;

/// Entries kept inside the map itself: most input objects are small, and
/// then a map is one allocation, not two.
const INLINE: usize = 2;

type Index = HashMap<Key, usize, foldhash::fast::RandomState>;

/// A map of string keys to values, in insertion order. A key inserted twice
/// keeps its first position and its last value (as `serde_json` maps do).
#[derive(Clone, Default)]
pub(crate) struct InputMap {
    entries: Entries,
}

/// An input map's entries.
///
/// Small maps, the common case, hold their entries inline: with the
/// `Arc` minijinja keeps an object in, such a map is one allocation of
/// 120 bytes, small enough for glibc's fast bins once its per-thread cache
/// of that size is full. (A generic small vector beside an index field
/// measured slower: its 128-byte allocations were too big for them.)
#[derive(Clone)]
enum Entries {
    /// Up to [`INLINE`] entries; the slots from `len` on hold undefined
    /// values.
    Inline {
        len: u8,
        slots: [(Value, Value); INLINE],
    },
    /// More, with a hash index once there are [`INDEX_FROM`].
    Heap {
        list: Vec<(Value, Value)>,
        index: Option<Index>,
    },
}

impl Default for Entries {
    fn default() -> Entries {
        Entries::Inline {
            len: 0,
            slots: Default::default(),
        }
    }
}

/// A string-valued key, hashed and compared as its text.
#[derive(Clone)]
struct Key(Value);

impl Key {
    fn text(&self) -> &str {
        self.0.as_str().unwrap_or_default()
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.text() == other.text()
    }
}

impl Eq for Key {}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.text()
    }
}

impl InputMap {
    pub(crate) fn with_capacity(n: usize) -> InputMap {
        let entries = if n <= INLINE {
            Entries::default()
        } else {
            Entries::Heap {
                list: Vec::with_capacity(n.min(INDEX_FROM)),
                index: None,
            }
        };
        InputMap { entries }
    }

    fn entries(&self) -> &[(Value, Value)] {
        match &self.entries {
            Entries::Inline { len, slots } => &slots[..usize::from(*len)],
            Entries::Heap { list, .. } => list,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries()
            .iter()
            .map(|(k, v)| (k.as_str().unwrap_or_default(), v))
    }

    fn position(&self, key: &str) -> Option<usize> {
        if let Entries::Heap {
            index: Some(index), ..
        } = &self.entries
        {
            return index.get(key).copied();
        }
        self.entries()
            .iter()
            .position(|(k, _)| k.as_str() == Some(key))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).map(|i| &self.entries()[i].1)
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Inserts `value` under `key`, a string value.
    pub(crate) fn insert(&mut self, key: Value, value: Value) {
        debug_assert!(key.as_str().is_some());
        match self.position(key.as_str().unwrap_or_default()) {
            Some(i) => match &mut self.entries {
                Entries::Inline { slots, .. } => slots[i].1 = value,
                Entries::Heap { list, .. } => list[i].1 = value,
            },
            None => self.push_unique(key, value),
        }
    }

    /// Appends a key known not to be present: one `insert` looked for, or a
    /// struct's field (serde's derive writes each field once).
    fn push_unique(&mut self, key: Value, value: Value) {
        match &mut self.entries {
            Entries::Inline { len, slots } if usize::from(*len) < INLINE => {
                slots[usize::from(*len)] = (key, value);
                *len += 1;
            }
            Entries::Inline { slots, .. } => {
                let mut list = Vec::with_capacity(2 * INLINE);
                list.extend(slots.iter_mut().map(std::mem::take));
                list.push((key, value));
                self.entries = Entries::Heap { list, index: None };
            }
            Entries::Heap { list, index } => {
                let i = list.len();
                if let Some(index) = index {
                    index.insert(Key(key.clone()), i);
                } else if i == INDEX_FROM {
                    let mut built =
                        Index::with_capacity_and_hasher(2 * INDEX_FROM, Default::default());
                    for (j, (k, _)) in list.iter().enumerate() {
                        built.insert(Key(k.clone()), j);
                    }
                    built.insert(Key(key.clone()), i);
                    *index = Some(built);
                }
                list.push((key, value));
            }
        }
    }

    pub(crate) fn into_value(self) -> Value {
        Value::from_object(self)
    }

    /// A shared map as a value, without copying it.
    pub(crate) fn shared_value(map: Arc<InputMap>) -> Value {
        Value::from_dyn_object(minijinja::value::DynObject::new(map))
    }
}

impl fmt::Debug for InputMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries().iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl Object for InputMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get(key.as_str()?).cloned()
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.get(key).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_rev_key_value_enumerator(|this| {
            Box::new(this.entries().iter().map(|(k, v)| (k.clone(), v.clone())))
        })
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.len())
    }
}

/// Serializes as the JSON object it stands for.
impl Serialize for InputMap {
    fn serialize<S: ser::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.entries().iter().map(|(k, v)| (k, v)))
    }
}

/// The inputs of a render as an [`InputMap`], or an error naming what is
/// wrong with them: not a map, not serializable, or over a limit.
///
/// `room` is how many entries the map will hold once the caller has added
/// what it adds (defaults, absent parameters), so it is sized once.
pub(crate) fn from_serialize(
    inputs: &impl Serialize,
    limits: &RenderLimits,
    template: &str,
    room: usize,
) -> Result<Arc<InputMap>, Error> {
    let mut state = State {
        bytes: 0,
        limits,
        top: None,
        room,
    };
    let value = inputs
        .serialize(Ser {
            state: &mut state,
            depth: 0,
        })
        .map_err(|e| match *e.0 {
            Why::Limit { rule, what } => {
                let at = state
                    .top
                    .as_ref()
                    .and_then(Value::as_str)
                    .map(|k| format!("/{}", escape_pointer(k)))
                    .unwrap_or_default();
                Error::new(
                    ErrorKind::Limit,
                    format!("invalid input for {template}: {at} {what}"),
                )
                .with_parameter(at, rule)
            }
            Why::Custom(msg) => Error::new(
                ErrorKind::InvalidInput,
                format!("invalid input for {template}: cannot serialize inputs: {msg}"),
            ),
        })?;
    if value.is_none() {
        return Ok(Arc::default());
    }
    let Some(map) = value.downcast_object::<InputMap>() else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "invalid input for {template}: inputs must be a map of parameter names to values, not {}",
                kind_name(&value)
            ),
        )
        .with_parameter("", "type"));
    };
    // The map's only owner from here: the caller can add to it in place.
    drop(value);
    Ok(map)
}

/// A JSON value (a default from a template file) as templates see it.
pub(crate) fn from_json(json: &serde_json::Value) -> Value {
    let limits = RenderLimits::default()
        .max_input_bytes(usize::MAX)
        .max_input_depth(usize::MAX);
    let mut state = State {
        bytes: 0,
        limits: &limits,
        top: None,
        room: 0,
    };
    // A JSON value always serializes: it came from parsing one.
    json.serialize(Ser {
        state: &mut state,
        depth: 1,
    })
    .unwrap_or_default()
}

/// The JSON kind of a value, as errors name it.
pub(crate) trait Shaped {
    /// `null`, `a boolean`, `a number`, `a string`, `a list` or `a map`.
    fn kind_name(&self) -> &'static str;
}

const NAMES: [&str; 6] = [
    "null",
    "a boolean",
    "a number",
    "a string",
    "a list",
    "a map",
];

impl Shaped for Value {
    fn kind_name(&self) -> &'static str {
        use minijinja::value::ValueKind as K;
        NAMES[match self.kind() {
            K::Undefined | K::None => 0,
            K::Bool => 1,
            K::Number => 2,
            K::String => 3,
            K::Seq | K::Iterable | K::Bytes => 4,
            _ => 5,
        }]
    }
}

impl Shaped for serde_json::Value {
    fn kind_name(&self) -> &'static str {
        use serde_json::Value as J;
        NAMES[match self {
            J::Null => 0,
            J::Bool(_) => 1,
            J::Number(_) => 2,
            J::String(_) => 3,
            J::Array(_) => 4,
            J::Object(_) => 5,
        }]
    }
}

/// How a value's kind is named in errors (for template values and JSON
/// alike).
pub(crate) fn kind_name(v: &impl Shaped) -> &'static str {
    v.kind_name()
}

/// A string as templates may see it: never a role marker.
fn text(s: &str) -> Value {
    match body::sanitize_str(s) {
        Some(clean) => Value::from(clean),
        None => Value::from(s),
    }
}

struct State<'l> {
    bytes: usize,
    limits: &'l RenderLimits,
    /// The top-level key being serialized, for errors.
    top: Option<Value>,
    /// The capacity the inputs map (depth 0) is made with, at least.
    room: usize,
}

impl State<'_> {
    /// Counts `n` more bytes of input (a value's slot and its text).
    fn charge(&mut self, n: usize) -> Result<(), Problem> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.limits.max_input_bytes {
            return Err(Why::Limit {
                rule: "maxBytes",
                what: format!(
                    "makes the inputs larger than RenderLimits::max_input_bytes ({} bytes)",
                    self.limits.max_input_bytes
                ),
            }
            .into());
        }
        Ok(())
    }
}

/// Why serializing stopped: boxed, so that the `Result<Value, Problem>`
/// every value passes up is no bigger than a value.
#[derive(Debug)]
struct Problem(Box<Why>);

#[derive(Debug)]
enum Why {
    Limit { rule: &'static str, what: String },
    Custom(String),
}

impl From<Why> for Problem {
    fn from(why: Why) -> Problem {
        Problem(Box::new(why))
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Why::Limit { what, .. } => f.write_str(what),
            Why::Custom(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Problem {}

impl ser::Error for Problem {
    fn custom<T: fmt::Display>(msg: T) -> Problem {
        Why::Custom(msg.to_string()).into()
    }
}

/// Bytes charged for every value, besides its text.
const SLOT: usize = 8;

struct Ser<'a, 'l> {
    state: &'a mut State<'l>,
    /// The depth of the value being serialized (the inputs map is 0).
    depth: usize,
}

impl<'a, 'l> Ser<'a, 'l> {
    fn scalar(self, v: Value) -> Result<Value, Problem> {
        self.state.charge(SLOT)?;
        Ok(v)
    }

    /// Enters a container: refused when its items would be too deep.
    fn open(&mut self) -> Result<(), Problem> {
        self.state.charge(SLOT)?;
        if self.depth + 1 > self.state.limits.max_input_depth {
            return Err(Why::Limit {
                rule: "maxDepth",
                what: format!(
                    "nests deeper than RenderLimits::max_input_depth ({})",
                    self.state.limits.max_input_depth
                ),
            }
            .into());
        }
        Ok(())
    }

    fn child(&mut self) -> Ser<'_, 'l> {
        Ser {
            state: self.state,
            depth: self.depth + 1,
        }
    }

    fn tagged(self, variant: &'static str, inner: Value) -> Result<Value, Problem> {
        let mut map = InputMap::with_capacity(1);
        map.insert(text(variant), inner);
        Ok(map.into_value())
    }
}

impl<'a, 'l> ser::Serializer for Ser<'a, 'l> {
    type Ok = Value;
    type Error = Problem;
    type SerializeSeq = SeqSer<'a, 'l>;
    type SerializeTuple = SeqSer<'a, 'l>;
    type SerializeTupleStruct = SeqSer<'a, 'l>;
    type SerializeTupleVariant = SeqSer<'a, 'l>;
    type SerializeMap = MapSer<'a, 'l>;
    type SerializeStruct = MapSer<'a, 'l>;
    type SerializeStructVariant = MapSer<'a, 'l>;

    fn serialize_bool(self, v: bool) -> Result<Value, Problem> {
        self.scalar(Value::from(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, Problem> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<Value, Problem> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<Value, Problem> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<Value, Problem> {
        self.scalar(Value::from(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, Problem> {
        if let Ok(v) = i64::try_from(v) {
            self.serialize_i64(v)
        } else if let Ok(v) = u64::try_from(v) {
            self.serialize_u64(v)
        } else {
            Err(Problem::custom("number out of range"))
        }
    }
    fn serialize_u8(self, v: u8) -> Result<Value, Problem> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<Value, Problem> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<Value, Problem> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<Value, Problem> {
        // As serde_json: a number that fits i64 is one.
        match i64::try_from(v) {
            Ok(i) => self.scalar(Value::from(i)),
            Err(_) => self.scalar(Value::from(v)),
        }
    }
    fn serialize_u128(self, v: u128) -> Result<Value, Problem> {
        match u64::try_from(v) {
            Ok(v) => self.serialize_u64(v),
            Err(_) => Err(Problem::custom("number out of range")),
        }
    }
    fn serialize_f32(self, v: f32) -> Result<Value, Problem> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<Value, Problem> {
        // As serde_json: NaN and the infinities are not JSON numbers.
        if v.is_finite() {
            self.scalar(Value::from(v))
        } else {
            self.scalar(Value::from(()))
        }
    }
    fn serialize_char(self, v: char) -> Result<Value, Problem> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<Value, Problem> {
        self.state.charge(SLOT + v.len())?;
        Ok(text(v))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Problem> {
        use ser::SerializeSeq;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(b)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> Result<Value, Problem> {
        self.serialize_unit()
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<Value, Problem> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, Problem> {
        self.scalar(Value::from(()))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, Problem> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, Problem> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, Problem> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, Problem> {
        self.open()?;
        self.state.charge(variant.len())?;
        let inner = value.serialize(self.child())?;
        self.tagged(variant, inner)
    }
    fn serialize_seq(mut self, len: Option<usize>) -> Result<SeqSer<'a, 'l>, Problem> {
        self.open()?;
        Ok(SeqSer {
            // A length hint is trusted only so far: it is not input size.
            items: Vec::with_capacity(len.unwrap_or(0).min(1024)),
            variant: None,
            ser: self,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer<'a, 'l>, Problem> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqSer<'a, 'l>, Problem> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqSer<'a, 'l>, Problem> {
        // The tag map is one level, the list inside it another.
        self.open()?;
        self.state.charge(variant.len())?;
        let mut inner = self.child();
        inner.open()?;
        Ok(SeqSer {
            items: Vec::with_capacity(len.min(1024)),
            variant: Some(variant),
            ser: Ser {
                depth: inner.depth,
                state: self.state,
            },
        })
    }
    fn serialize_map(mut self, len: Option<usize>) -> Result<MapSer<'a, 'l>, Problem> {
        self.open()?;
        let mut room = len.unwrap_or(0);
        if self.depth == 0 {
            room = room.max(self.state.room);
        }
        Ok(MapSer {
            map: InputMap::with_capacity(room),
            key: None,
            variant: None,
            ser: self,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapSer<'a, 'l>, Problem> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<MapSer<'a, 'l>, Problem> {
        self.open()?;
        self.state.charge(variant.len())?;
        let mut inner = self.child();
        inner.open()?;
        Ok(MapSer {
            map: InputMap::with_capacity(len),
            key: None,
            variant: Some(variant),
            ser: Ser {
                depth: inner.depth,
                state: self.state,
            },
        })
    }
}

struct SeqSer<'a, 'l> {
    items: Vec<Value>,
    /// For a tuple variant, its name: the list is wrapped in `{name: [...]}`.
    variant: Option<&'static str>,
    ser: Ser<'a, 'l>,
}

impl SeqSer<'_, '_> {
    fn push<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Problem> {
        let v = value.serialize(self.ser.child())?;
        self.items.push(v);
        Ok(())
    }

    fn finish(self) -> Result<Value, Problem> {
        let list = Value::from(self.items);
        match self.variant {
            Some(variant) => self.ser.tagged(variant, list),
            None => Ok(list),
        }
    }
}

impl ser::SerializeSeq for SeqSer<'_, '_> {
    type Ok = Value;
    type Error = Problem;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Problem> {
        self.push(value)
    }
    fn end(self) -> Result<Value, Problem> {
        self.finish()
    }
}

impl ser::SerializeTuple for SeqSer<'_, '_> {
    type Ok = Value;
    type Error = Problem;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Problem> {
        self.push(value)
    }
    fn end(self) -> Result<Value, Problem> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for SeqSer<'_, '_> {
    type Ok = Value;
    type Error = Problem;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Problem> {
        self.push(value)
    }
    fn end(self) -> Result<Value, Problem> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for SeqSer<'_, '_> {
    type Ok = Value;
    type Error = Problem;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Problem> {
        self.push(value)
    }
    fn end(self) -> Result<Value, Problem> {
        self.finish()
    }
}

struct MapSer<'a, 'l> {
    map: InputMap,
    key: Option<Value>,
    /// For a struct variant, its name: the map is wrapped in `{name: {...}}`.
    variant: Option<&'static str>,
    ser: Ser<'a, 'l>,
}

impl MapSer<'_, '_> {
    fn put<T: ?Sized + Serialize>(
        &mut self,
        key: Value,
        key_len: usize,
        value: &T,
        unique: bool,
    ) -> Result<(), Problem> {
        self.ser.state.charge(key_len)?;
        if self.ser.depth == 0 {
            self.ser.state.top = Some(key.clone());
        }
        let v = value.serialize(self.ser.child())?;
        if unique {
            self.map.push_unique(key, v);
        } else {
            self.map.insert(key, v);
        }
        Ok(())
    }

    fn finish(self) -> Result<Value, Problem> {
        let map = self.map.into_value();
        match self.variant {
            Some(variant) => self.ser.tagged(variant, map),
            None => Ok(map),
        }
    }
}

impl ser::SerializeMap for MapSer<'_, '_> {
    type Ok = Value;
    type Error = Problem;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Problem> {
        self.key = Some(key.serialize(KeySer)?);
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Problem> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Problem::custom("a map value came before its key"))?;
        let len = key.as_str().map_or(0, str::len);
        self.put(key, len, value, false)
    }
    fn end(self) -> Result<Value, Problem> {
        self.finish()
    }
}

/// A struct's field names are `&'static str`s written in the program, not
/// input: they are taken as they are.
impl ser::SerializeStruct for MapSer<'_, '_> {
    type Ok = Value;
    type Error = Problem;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Problem> {
        self.put(Value::from(key), key.len(), value, true)
    }
    fn end(self) -> Result<Value, Problem> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for MapSer<'_, '_> {
    type Ok = Value;
    type Error = Problem;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Problem> {
        self.put(Value::from(key), key.len(), value, true)
    }
    fn end(self) -> Result<Value, Problem> {
        self.finish()
    }
}

/// Map keys as `serde_json` makes them: strings, numbers and booleans as
/// their text, unit variants by name; anything else is refused.
struct KeySer;

fn key_must_be_a_string() -> Problem {
    Problem::custom("key must be a string")
}

impl ser::Serializer for KeySer {
    type Ok = Value;
    type Error = Problem;
    type SerializeSeq = ser::Impossible<Value, Problem>;
    type SerializeTuple = ser::Impossible<Value, Problem>;
    type SerializeTupleStruct = ser::Impossible<Value, Problem>;
    type SerializeTupleVariant = ser::Impossible<Value, Problem>;
    type SerializeMap = ser::Impossible<Value, Problem>;
    type SerializeStruct = ser::Impossible<Value, Problem>;
    type SerializeStructVariant = ser::Impossible<Value, Problem>;

    fn serialize_bool(self, v: bool) -> Result<Value, Problem> {
        Ok(Value::from(if v { "true" } else { "false" }))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, Problem> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, Problem> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, Problem> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, Problem> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, Problem> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, Problem> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, Problem> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, Problem> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, Problem> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, Problem> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, Problem> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<Value, Problem> {
        // serde_json writes finite float keys as JSON numbers (ryu).
        serde_json::Number::from_f64(v)
            .map(|n| Value::from(n.to_string()))
            .ok_or_else(|| Problem::custom("float key must be finite"))
    }
    fn serialize_char(self, v: char) -> Result<Value, Problem> {
        Ok(text(v.encode_utf8(&mut [0; 4])))
    }
    fn serialize_str(self, v: &str) -> Result<Value, Problem> {
        Ok(text(v))
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<Value, Problem> {
        Err(key_must_be_a_string())
    }
    fn serialize_none(self) -> Result<Value, Problem> {
        Err(key_must_be_a_string())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _value: &T) -> Result<Value, Problem> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit(self) -> Result<Value, Problem> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, Problem> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, Problem> {
        Ok(text(variant))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, Problem> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<Value, Problem> {
        Err(key_must_be_a_string())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Problem> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Problem> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Problem> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Problem> {
        Err(key_must_be_a_string())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Problem> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Problem> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Problem> {
        Err(key_must_be_a_string())
    }
}

/// `s` as one token of a JSON Pointer (RFC 6901, section 3: `~` becomes
/// `~0`, `/` becomes `~1`).
pub(crate) fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(v: &serde_json::Value) -> serde_json::Value {
        let map = from_serialize(v, &RenderLimits::default(), "t", 0).unwrap();
        serde_json::to_value(&map).unwrap()
    }

    #[test]
    fn json_values_survive_the_trip_in_order() {
        let v = json!({"z": 1, "a": [1.5, -2, "x", null, true, {"k": {"deep": []}}],
                       "big": u64::MAX, "neg": i64::MIN});
        assert_eq!(roundtrip(&v), v);
        let keys: Vec<_> = roundtrip(&v).as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["z", "a", "big", "neg"]);
    }

    #[test]
    fn rust_values_follow_serde_json() {
        use std::collections::BTreeMap;
        #[derive(serde::Serialize)]
        enum E {
            Unit,
            New(u8),
            Tuple(u8, u8),
            Struct { x: u8 },
        }
        #[derive(serde::Serialize)]
        struct S {
            nan: f64,
            bytes: serde_bytes_like::Bytes,
            keys: BTreeMap<i32, bool>,
            e: Vec<E>,
            opt: Option<u8>,
            c: char,
        }
        mod serde_bytes_like {
            pub struct Bytes(pub Vec<u8>);
            impl serde::Serialize for Bytes {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    s.serialize_bytes(&self.0)
                }
            }
        }
        let s = S {
            nan: f64::NAN,
            bytes: serde_bytes_like::Bytes(vec![1, 2]),
            keys: [(1, true), (-3, false)].into(),
            e: vec![E::Unit, E::New(1), E::Tuple(1, 2), E::Struct { x: 3 }],
            opt: None,
            c: 'é',
        };
        let ours =
            serde_json::to_value(from_serialize(&s, &RenderLimits::default(), "t", 0).unwrap())
                .unwrap();
        assert_eq!(ours, serde_json::to_value(&s).unwrap());
    }

    /// With minijinja's `Arc` around it, a small map must stay within
    /// glibc's fast bins (requests up to 120 bytes on 64-bit targets).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_small_map_stays_one_small_allocation() {
        assert!(std::mem::size_of::<InputMap>() + 16 <= 120);
    }

    #[test]
    fn duplicate_keys_keep_first_place_and_last_value_in_big_maps_too() {
        // Inline, just spilled, just below and at the hash index, and well
        // past it.
        for n in [2usize, 3, 16, 17, 40] {
            let mut map = InputMap::default();
            for i in 0..n {
                map.insert(Value::from(format!("k{i}")), Value::from(i));
            }
            map.insert(Value::from("k0"), Value::from("again"));
            assert_eq!(map.len(), n);
            assert_eq!(map.get("k0").unwrap().as_str(), Some("again"));
            assert_eq!(map.iter().next().unwrap().0, "k0");
            assert_eq!(
                map.get(&format!("k{}", n - 1)).unwrap().as_usize(),
                Some(n - 1)
            );
            assert!(map.get("nope").is_none());
            let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
            assert!(
                map.iter()
                    .map(|(k, _)| k)
                    .eq(keys.iter().map(String::as_str))
            );
        }
    }

    #[test]
    fn markers_are_made_inert_in_values_and_keys() {
        let v = json!({"a\u{FDD0}": ["x\u{FDD1}y"]});
        let out = roundtrip(&v);
        assert_eq!(out, json!({"a\u{FFFD}": ["x\u{FFFD}y"]}));
    }

    #[test]
    fn limits_name_the_top_level_parameter() {
        let deep = (0..10).fold(json!(1), |v, _| json!([v]));
        let limits = RenderLimits::default().max_input_depth(5);
        let e = from_serialize(&json!({"ok": 1, "deep": deep}), &limits, "t", 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Limit);
        assert_eq!((e.parameter(), e.rule()), (Some("/deep"), Some("maxDepth")));

        let limits = RenderLimits::default().max_input_bytes(100);
        let e = from_serialize(&json!({"s": "x".repeat(200)}), &limits, "t", 0).unwrap_err();
        assert_eq!((e.parameter(), e.rule()), (Some("/s"), Some("maxBytes")));
    }

    #[test]
    fn non_maps_are_refused_by_kind() {
        let e = from_serialize(&json!([1]), &RenderLimits::default(), "t", 0).unwrap_err();
        assert!(e.message().contains("not a list"), "{e}");
        assert!(
            from_serialize(&(), &RenderLimits::default(), "t", 0)
                .unwrap()
                .len()
                == 0
        );
    }
}
