//! Media parameters (`type: image`, `file`, `audio`) in a render: where
//! their values sit in the inputs, how a value becomes something a template
//! can place, and the marker that places it.
//!
//! A parameter may be media itself (`photo: {type: image}`) or hold media
//! anywhere below it through `properties` and `items` (a few-shot list
//! `examples: {type: array, items: {properties: {image: {type: image}}}}`).
//! After the inputs are validated, each such value is checked
//! ([`crate::media::check`]) and replaced by a [`Placed`] object that knows
//! its index in the render's table of parts. Printing that object with
//! `{{ ... }}` writes a *media marker* (U+FDD0, `m`, a keyed tag of the
//! index, the index, U+FDD1; see [`crate::body`]), and the output is cut
//! there into a part. So the template decides where media goes, and no
//! input can: an input string cannot hold U+FDD0, and a string is never a
//! [`Placed`] object. Printed inside other text (`"x" ~ photo`, a filter),
//! the object writes a marker that cutting refuses, with a message saying
//! how to place it.

use std::sync::Arc;

use minijinja::Value;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use serde_json::Value as Json;

use crate::content::{Media, Part, Source};
use crate::error::{Error, ErrorKind};
use crate::input::InputMap;
use crate::media::{self, Kind, Text, Written};

/// The annotation the expanded schema of a media parameter carries:
/// `"x-promptbook-media": "image"`.
pub(crate) const ANNOTATION: &str = "x-promptbook-media";

/// One step from the inputs to a media value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// An object's property.
    Key(String),
    /// Every item of an array.
    Each,
}

/// Where media values of one kind sit in the inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub steps: Vec<Step>,
    pub kind: Kind,
}

/// The media slots of an (expanded) input schema, through `properties`
/// and `items`.
pub(crate) fn slots(schema: &Json) -> Vec<Slot> {
    fn walk(s: &Json, steps: &mut Vec<Step>, out: &mut Vec<Slot>, depth: usize) {
        if depth > 32 {
            return;
        }
        if let Some(kind) = s
            .get(ANNOTATION)
            .and_then(Json::as_str)
            .and_then(Kind::parse)
        {
            out.push(Slot {
                steps: steps.clone(),
                kind,
            });
            return;
        }
        if let Some(props) = s.get("properties").and_then(Json::as_object) {
            for (name, sub) in props {
                steps.push(Step::Key(name.clone()));
                walk(sub, steps, out, depth + 1);
                steps.pop();
            }
        }
        if let Some(items) = s.get("items").filter(|i| i.is_object()) {
            steps.push(Step::Each);
            walk(items, steps, out, depth + 1);
            steps.pop();
        }
    }
    let mut out = Vec::new();
    walk(schema, &mut Vec::new(), &mut out, 0);
    out
}

/// A media value bound for a render: its kind and media, and its index in
/// the render's table of parts. Templates see a map with `kind`,
/// `media_type`, `url` (for media at a URL), `detail` and `filename`.
#[derive(Debug)]
pub(crate) struct Placed {
    pub index: usize,
    pub kind: Kind,
    pub media: Media,
}

impl Object for Placed {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let m = &self.media;
        Some(match key.as_str()? {
            "kind" => Value::from(self.kind.as_str()),
            "media_type" => Value::from(m.media_type()),
            "url" => match &m.source {
                Source::Url(u) => Value::from(u.as_str()),
                Source::Data { .. } => Value::from(()),
            },
            "detail" => Value::from(m.detail.map(|d| d.as_str())),
            "filename" => Value::from(m.filename.as_deref()),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["kind", "media_type", "url", "detail", "filename"])
    }

    /// Printed as text: a marker cutting refuses (see the module docs).
    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result
    where
        Self: Sized + 'static,
    {
        write!(
            f,
            "{}{}{}{}",
            crate::body::MARK_OPEN,
            crate::body::MEDIA_AS_TEXT,
            self.kind.as_str(),
            crate::body::MARK_CLOSE
        )
    }
}

/// What the formatter writes for `value`: the media marker when it is a
/// [`Placed`] object, else `None` (format it as usual).
pub(crate) fn marker(value: &Value) -> Option<String> {
    let placed = value.downcast_object_ref::<Placed>()?;
    Some(crate::body::media_marker(placed.index))
}

/// Inputs with their media bound, and the render's table of parts.
pub(crate) type Bound = (Arc<InputMap>, Vec<Part>);

/// Checks every media value of `inputs` and replaces it by a [`Placed`]
/// object; returns the new inputs and the table of parts (in the order
/// found), or `None` when there is no media value. An input error names
/// the value's JSON pointer and the rule.
pub(crate) fn bind(
    inputs: &Arc<InputMap>,
    slots: &[Slot],
    max_bytes: usize,
    template: &str,
) -> Result<Option<Bound>, Error> {
    let mut table = Vec::new();
    let mut map: Option<InputMap> = None;
    for slot in slots {
        let Some(Step::Key(first)) = slot.steps.first() else {
            continue;
        };
        let current = map.as_ref().unwrap_or(inputs);
        let Some(value) = current.get(first) else {
            continue;
        };
        let mut pointer = format!("/{}", escape(first));
        if let Some(new) = bind_value(
            value,
            &slot.steps[1..],
            slot.kind,
            &mut pointer,
            &mut table,
            max_bytes,
            template,
        )? {
            map.get_or_insert_with(|| (**inputs).clone())
                .insert(Value::from(first.as_str()), new);
        }
    }
    Ok(map.map(|m| (Arc::new(m), table)))
}

fn bind_value(
    value: &Value,
    steps: &[Step],
    kind: Kind,
    pointer: &mut String,
    table: &mut Vec<Part>,
    max_bytes: usize,
    template: &str,
) -> Result<Option<Value>, Error> {
    match steps.first() {
        // An optional media value left out (or `null`) prints nothing and
        // tests false, rather than printing `none` into the prompt.
        None if value.is_none() => Ok(Some(Value::from(""))),
        _ if value.is_none() || value.is_undefined() => Ok(None),
        None => {
            let media = check(value, kind, max_bytes).map_err(|p| {
                let at = format!("{pointer}{}", p.at);
                Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "invalid input for {template}: {at}: {} (rule `{}`)",
                        p.message, p.rule
                    ),
                )
                .with_parameter(at, p.rule)
            })?;
            table.push(kind.part(media.clone()));
            Ok(Some(Value::from_object(Placed {
                index: table.len() - 1,
                kind,
                media,
            })))
        }
        Some(Step::Key(key)) => {
            let Some(map) = value.downcast_object_ref::<InputMap>() else {
                return Ok(None);
            };
            let Some(child) = map.get(key) else {
                return Ok(None);
            };
            let len = pointer.len();
            pointer.push('/');
            pointer.push_str(&escape(key));
            let new = bind_value(
                child,
                &steps[1..],
                kind,
                pointer,
                table,
                max_bytes,
                template,
            )?;
            pointer.truncate(len);
            Ok(new.map(|new| {
                let mut copy = map.clone();
                copy.insert(Value::from(key.as_str()), new);
                Value::from_object(copy)
            }))
        }
        Some(Step::Each) => {
            let Some(items) = value.downcast_object_ref::<Vec<Value>>() else {
                return Ok(None);
            };
            let mut out: Option<Vec<Value>> = None;
            for (i, item) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push_str(&format!("/{i}"));
                let new = bind_value(item, &steps[1..], kind, pointer, table, max_bytes, template)?;
                pointer.truncate(len);
                if let Some(new) = new {
                    out.get_or_insert_with(|| items.clone())[i] = new;
                }
            }
            Ok(out.map(Value::from))
        }
    }
}

/// One media value from the inputs: a string, or an object of strings.
fn check(value: &Value, kind: Kind, max_bytes: usize) -> Result<Media, media::Problem> {
    let shared = value.to_str();
    if let Some(s) = value.as_str() {
        let w = Written {
            string: Some(Text {
                s,
                shared: shared.as_ref(),
            }),
            ..Written::default()
        };
        return media::check(kind, &w, max_bytes);
    }
    let Some(map) = value.downcast_object_ref::<InputMap>() else {
        return Err(media::Problem {
            at: "",
            rule: "type",
            message: format!(
                "{} is a URL, a data URL, or an object with `data` and `media_type`, not {}",
                kind.with_article(),
                crate::input::kind_name(value)
            ),
        });
    };
    let mut w = Written::default();
    // The shared strings of `url` and `data`, kept alive for the check.
    let (mut url_arc, mut data_arc) = (None, None);
    for (key, v) in map.iter() {
        if !matches!(key, "url" | "data" | "media_type" | "detail" | "filename") {
            return Err(media::Problem {
                at: "",
                rule: "additionalProperties",
                message: format!(
                    "unknown field `{key}` in {} (allowed: url, data, media_type{})",
                    kind.with_article(),
                    match kind {
                        Kind::Image => ", detail",
                        Kind::File => ", filename",
                        Kind::Audio => "",
                    }
                ),
            });
        }
        let Some(s) = v.as_str() else {
            let at = match key {
                "url" => "/url",
                "data" => "/data",
                "media_type" => "/media_type",
                "detail" => "/detail",
                "filename" => "/filename",
                _ => "",
            };
            return Err(media::Problem {
                at,
                rule: "type",
                message: format!("`{key}` is a string, not {}", crate::input::kind_name(v)),
            });
        };
        match key {
            "url" => url_arc = Some((s, v.to_str())),
            "data" => data_arc = Some((s, v.to_str())),
            "media_type" => w.media_type = Some(s),
            "detail" => w.detail = Some(s),
            "filename" => w.filename = Some(s),
            other => {
                return Err(media::Problem {
                    at: "",
                    rule: "additionalProperties",
                    message: format!(
                        "unknown field `{other}` in {} (allowed: url, data, media_type{})",
                        kind.with_article(),
                        match kind {
                            Kind::Image => ", detail",
                            Kind::File => ", filename",
                            Kind::Audio => "",
                        }
                    ),
                });
            }
        }
    }
    w.url = url_arc.as_ref().map(|(s, a)| Text {
        s,
        shared: a.as_ref(),
    });
    w.data = data_arc.as_ref().map(|(s, a)| Text {
        s,
        shared: a.as_ref(),
    });
    media::check(kind, &w, max_bytes)
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slots_follow_properties_and_items() {
        let schema = json!({"type": "object", "properties": {
            "photo": {ANNOTATION: "image"},
            "examples": {"type": "array", "items": {"type": "object", "properties": {
                "image": {ANNOTATION: "image"}, "answer": {"type": "string"}}}},
            "q": {"type": "string"}
        }});
        let found = slots(&schema);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[1].steps,
            [
                Step::Key("examples".into()),
                Step::Each,
                Step::Key("image".into())
            ]
        );
    }
}
