//! Message content as chat applications write it, normalised to our parts
//! ([`crate::content`]).
//!
//! A history message's `content` may be a string, `null`, or an array of
//! parts in any of three forms, mixed freely:
//!
//! | form | text | image | file | audio |
//! | --- | --- | --- | --- | --- |
//! | ours | `{"type": "text", "text"}` | `{"type": "image", "url" \| "media_type"+"data", "detail"?}` | `{"type": "file", ..., "filename"?}` | `{"type": "audio", "media_type", "data"}` |
//! | OpenAI chat | `text` | `{"type": "image_url", "image_url": {"url", "detail"?}}` | `{"type": "file", "file": {"file_data", "filename"?}}` | `{"type": "input_audio", "input_audio": {"data", "format": "wav" \| "mp3"}}` |
//! | Anthropic | `text` | `{"type": "image", "source": {"type": "base64", "media_type", "data"} \| {"type": "url", "url"}}` | `{"type": "document", "source": ...}` | - |
//!
//! Every media value is then checked as a media parameter is
//! ([`crate::media::check`]). Anthropic's `cache_control` on a block is
//! accepted and left out (breakpoints are the template's). A part that is
//! none of these (OpenAI's `file_id`, Anthropic's `tool_use`) is an error
//! naming its JSON pointer.
//!
//! Sources: OpenAI's chat completions reference (content parts); Anthropic's
//! messages reference (content blocks, `source`).

use serde_json::{Map, Value};

use crate::content::{Content, Part};
use crate::media::{self, Kind, Text, Written};

/// Why content was refused: the JSON pointer (from the content on, after
/// the caller's prefix), the rule, the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub pointer: String,
    pub rule: &'static str,
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pointer.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "at {}: {}", self.pointer, self.message)
        }
    }
}

fn invalid(pointer: String, rule: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        pointer,
        rule,
        message: message.into(),
    }
}

/// A content value (`at` is its JSON pointer) as our content.
pub(crate) fn content(value: &Value, at: &str) -> Result<Content, Invalid> {
    content_limited(value, at, media::DEFAULT_MAX_MEDIA_BYTES)
}

/// [`content`] with a limit on each media value's decoded size.
pub(crate) fn content_limited(value: &Value, at: &str, max: usize) -> Result<Content, Invalid> {
    match value {
        Value::Null => Ok(Content::default()),
        Value::String(s) => Ok(Content::Text(s.clone())),
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                parts.push(part_limited(item, &format!("{at}/{i}"), max)?);
            }
            Ok(Content::from_parts(parts))
        }
        other => Err(invalid(
            at.to_owned(),
            "type",
            format!(
                "content is a string or an array of parts, not {}",
                crate::input::kind_name(other)
            ),
        )),
    }
}

/// One part, in any of the three forms.
pub(crate) fn part(value: &Value, at: &str) -> Result<Part, Invalid> {
    part_limited(value, at, media::DEFAULT_MAX_MEDIA_BYTES)
}

fn part_limited(value: &Value, at: &str, max: usize) -> Result<Part, Invalid> {
    let Value::Object(o) = value else {
        return Err(invalid(
            at.to_owned(),
            "type",
            format!(
                "a content part is an object with a `type`, not {}",
                crate::input::kind_name(value)
            ),
        ));
    };
    let Some(kind) = o.get("type").and_then(Value::as_str) else {
        return Err(invalid(
            format!("{at}/type"),
            "required",
            "a content part needs a `type` (text, image, file or audio; or OpenAI's image_url, \
             input_audio, file; or Anthropic's image, document)",
        ));
    };
    let only = |o: &Map<String, Value>, base: &str, allowed: &[&str]| -> Result<(), Invalid> {
        match o.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(invalid(
                format!("{base}/{}", escape(k)),
                "additionalProperties",
                format!(
                    "unknown field `{k}` in a `{kind}` part (allowed: {})",
                    allowed.join(", ")
                ),
            )),
            None => Ok(()),
        }
    };
    let checked = |kind: Kind, w: Written<'_>, base: &str| -> Result<Part, Invalid> {
        media::check(kind, &w, max)
            .map(|m| kind.part(m))
            .map_err(|p| invalid(format!("{base}{}", p.at), p.rule, p.message))
    };
    let object = |name: &'static str| -> Result<&Map<String, Value>, Invalid> {
        match o.get(name) {
            Some(Value::Object(inner)) => Ok(inner),
            _ => Err(invalid(
                format!("{at}/{name}"),
                "required",
                format!("a `{kind}` part needs an object `{name}`"),
            )),
        }
    };
    match kind {
        "text" => {
            only(o, at, &["type", "text", "cache_control"])?;
            match o.get("text") {
                Some(Value::String(t)) => Ok(Part::Text(t.clone())),
                _ => Err(invalid(
                    format!("{at}/text"),
                    "required",
                    "a text part needs a string `text`",
                )),
            }
        }
        // Anthropic's forms: a `source`.
        "image" | "document" if o.contains_key("source") => {
            only(
                o,
                at,
                &[
                    "type",
                    "source",
                    "cache_control",
                    "title",
                    "context",
                    "citations",
                ],
            )?;
            let base = format!("{at}/source");
            let source = object("source")?;
            let kind = if kind == "image" {
                Kind::Image
            } else {
                Kind::File
            };
            let w = match source.get("type").and_then(Value::as_str) {
                Some("base64") => {
                    only(source, &base, &["type", "media_type", "data"])?;
                    Written {
                        data: str_field("data", source, &base)?.map(Text::plain),
                        media_type: str_field("media_type", source, &base)?,
                        ..Written::default()
                    }
                }
                Some("url") => {
                    only(source, &base, &["type", "url"])?;
                    Written {
                        url: str_field("url", source, &base)?.map(Text::plain),
                        ..Written::default()
                    }
                }
                Some("text") if kind == Kind::File => {
                    // A plain-text document, inline as text.
                    only(source, &base, &["type", "media_type", "data"])?;
                    if let Some(t) = str_field("media_type", source, &base)?
                        && t != "text/plain"
                    {
                        return Err(invalid(
                            format!("{base}/media_type"),
                            "const",
                            format!("a `text` document source is text/plain, not `{t}`"),
                        ));
                    }
                    let text = str_field("data", source, &base)?.unwrap_or_default();
                    if text.len() > max {
                        return Err(invalid(
                            format!("{base}/data"),
                            "maxLength",
                            format!(
                                "the document is {} bytes, over RenderLimits::max_media_bytes ({max})",
                                text.len()
                            ),
                        ));
                    }
                    use base64::Engine as _;
                    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                    return Ok(Part::File(crate::content::Media::data(
                        "text/plain",
                        encoded,
                    )));
                }
                other => {
                    return Err(invalid(
                        format!("{base}/type"),
                        "enum",
                        format!(
                            "an Anthropic `{}` source is `base64` or `url`{}, not {}",
                            if kind == Kind::File {
                                "document"
                            } else {
                                "image"
                            },
                            if kind == Kind::File {
                                " (or `text`)"
                            } else {
                                ""
                            },
                            other.map_or("missing".to_owned(), |t| format!("`{t}`"))
                        ),
                    ));
                }
            };
            checked(kind, w, &base)
        }
        "document" => Err(invalid(
            format!("{at}/source"),
            "required",
            "an Anthropic `document` part needs a `source` (`base64`, `url` or `text`)",
        )),
        // Ours.
        "image" | "file" | "audio" if !(kind == "file" && o.contains_key("file")) => {
            let k = Kind::parse(kind).unwrap_or(Kind::Image);
            only(
                o,
                at,
                &["type", "url", "data", "media_type", "detail", "filename"],
            )?;
            let w = Written {
                url: str_field("url", o, at)?.map(Text::plain),
                data: str_field("data", o, at)?.map(Text::plain),
                media_type: str_field("media_type", o, at)?,
                detail: str_field("detail", o, at)?,
                filename: str_field("filename", o, at)?,
                ..Written::default()
            };
            checked(k, w, at)
        }
        // OpenAI's forms.
        "image_url" => {
            only(o, at, &["type", "image_url"])?;
            let base = format!("{at}/image_url");
            let inner = match o.get("image_url") {
                // An early form: the URL as a string.
                Some(Value::String(url)) => {
                    return checked(
                        Kind::Image,
                        Written {
                            string: Some(Text::plain(url)),
                            ..Written::default()
                        },
                        &base,
                    );
                }
                _ => object("image_url")?,
            };
            only(inner, &base, &["url", "detail"])?;
            let Some(url) = str_field("url", inner, &base)? else {
                return Err(invalid(
                    format!("{base}/url"),
                    "required",
                    "an image_url part needs `image_url.url`",
                ));
            };
            checked(
                Kind::Image,
                Written {
                    string: Some(Text::plain(url)),
                    detail: str_field("detail", inner, &base)?,
                    ..Written::default()
                },
                &format!("{base}/url"),
            )
            .map_err(|mut e| {
                if e.pointer.ends_with("/url/detail") {
                    e.pointer = format!("{base}/detail");
                }
                e
            })
        }
        "input_audio" => {
            only(o, at, &["type", "input_audio"])?;
            let base = format!("{at}/input_audio");
            let inner = object("input_audio")?;
            only(inner, &base, &["data", "format"])?;
            let format = str_field("format", inner, &base)?;
            let media_type = match format {
                Some("wav") => "audio/wav",
                Some("mp3") => "audio/mpeg",
                other => {
                    return Err(invalid(
                        format!("{base}/format"),
                        "enum",
                        format!(
                            "input_audio.format is wav or mp3, not {}",
                            other.map_or("missing".to_owned(), |f| format!("`{f}`"))
                        ),
                    ));
                }
            };
            checked(
                Kind::Audio,
                Written {
                    data: str_field("data", inner, &base)?.map(Text::plain),
                    media_type: Some(media_type),
                    ..Written::default()
                },
                &base,
            )
        }
        "file" => {
            only(o, at, &["type", "file"])?;
            let base = format!("{at}/file");
            let inner = object("file")?;
            only(inner, &base, &["file_data", "filename", "file_id"])?;
            if inner.contains_key("file_id") {
                return Err(invalid(
                    format!("{base}/file_id"),
                    "additionalProperties",
                    "a file uploaded to OpenAI (`file_id`) cannot be sent to every provider; give \
                     its bytes as `file_data` (a data URL)",
                ));
            }
            let Some(data) = str_field("file_data", inner, &base)? else {
                return Err(invalid(
                    format!("{base}/file_data"),
                    "required",
                    "a file part needs `file.file_data` (a data URL)",
                ));
            };
            checked(
                Kind::File,
                Written {
                    string: Some(Text::plain(data)),
                    filename: str_field("filename", inner, &base)?,
                    ..Written::default()
                },
                &format!("{base}/file_data"),
            )
            .map_err(|mut e| {
                if e.pointer.ends_with("/file_data/filename") {
                    e.pointer = format!("{base}/filename");
                }
                e
            })
        }
        other => Err(invalid(
            format!("{at}/type"),
            "enum",
            format!(
                "unknown part type `{other}` (text, image, file, audio; OpenAI's image_url, \
                 input_audio, file; Anthropic's image, document)"
            ),
        )),
    }
}

/// A string field of a part (absent or `null` is `None`).
fn str_field<'v>(
    name: &'static str,
    o: &'v Map<String, Value>,
    base: &str,
) -> Result<Option<&'v str>, Invalid> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(invalid(
            format!("{base}/{name}"),
            "type",
            format!(
                "`{name}` is a string, not {}",
                crate::input::kind_name(other)
            ),
        )),
    }
}

/// A key as a JSON pointer token (RFC 6901: `~` as `~0`, `/` as `~1`).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PNG: &str = "iVBORw0KGgo=";

    #[test]
    fn the_three_forms_read_as_one() {
        let ours = json!([{"type": "text", "text": "what is this?"},
                          {"type": "image", "media_type": "image/png", "data": PNG, "detail": "low"}]);
        let openai = json!([{"type": "text", "text": "what is this?"},
                            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}"), "detail": "low"}}]);
        let anthropic = json!([{"type": "text", "text": "what is this?"},
                               {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]);
        let a = content(&ours, "").unwrap();
        assert_eq!(content(&openai, "").unwrap(), a);
        let mut b = content(&anthropic, "").unwrap();
        if let Content::Parts(p) = &mut b
            && let Part::Image(m) = &mut p[1]
        {
            m.detail = Some(crate::content::Detail::Low);
        }
        assert_eq!(b, a);
    }

    #[test]
    fn faults_name_their_pointer() {
        let cases = [
            (
                json!([{"type": "image_url", "image_url": {"url": "ftp://x"}}]),
                "/0/image_url/url",
                "format",
            ),
            (
                json!([{"type": "image_url", "image_url": {"url": "https://x/y", "detail": "max"}}]),
                "/0/image_url/detail",
                "enum",
            ),
            (json!([{"type": "text"}]), "/0/text", "required"),
            (json!([{"type": "video"}]), "/0/type", "enum"),
            (
                json!([{"type": "input_audio", "input_audio": {"data": PNG, "format": "ogg"}}]),
                "/0/input_audio/format",
                "enum",
            ),
            (
                json!([{"type": "file", "file": {"file_id": "f"}}]),
                "/0/file/file_id",
                "additionalProperties",
            ),
            (
                json!([{"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": PNG}}]),
                "/0/source/media_type",
                "enum",
            ),
            (
                json!([{"type": "image", "media_type": "image/png", "data": "@@@@"}]),
                "/0/data",
                "contentEncoding",
            ),
            (json!([5]), "/0", "type"),
            (json!({"a": 1}), "", "type"),
        ];
        for (value, pointer, rule) in cases {
            let e = content(&value, "").unwrap_err();
            assert_eq!(
                (e.pointer.as_str(), e.rule),
                (pointer, rule),
                "{value}: {e}"
            );
        }
    }
}
