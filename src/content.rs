//! A message's content: text, or an ordered list of parts (text, image,
//! file, audio).
//!
//! One provider-neutral shape, written and read as JSON:
//!
//! ```json
//! "content": "plain text"
//! "content": [
//!   {"type": "text", "text": "What is in this picture?"},
//!   {"type": "image", "url": "https://example.com/cat.png", "detail": "low"},
//!   {"type": "image", "media_type": "image/png", "data": "<base64>"},
//!   {"type": "file", "media_type": "application/pdf", "data": "<base64>", "filename": "invoice.pdf"},
//!   {"type": "file", "url": "https://example.com/invoice.pdf"},
//!   {"type": "audio", "media_type": "audio/wav", "data": "<base64>"}
//! ]
//! ```
//!
//! A message without media keeps `"content": "..."`. Reading also accepts
//! OpenAI's chat parts (`text`, `image_url`, `input_audio`, `file`) and
//! Anthropic's blocks (`text`, `image`, `document`): see
//! [`crate::history_parts`]. `schemas/content.schema.json` is this shape as
//! JSON Schema.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a message says: text, or parts.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum Content {
    /// Text only. Serialized as a JSON string.
    Text(String),
    /// Parts in order: at least one of them media, or several text parts
    /// as a chat application sent them (one text part alone is
    /// [`Content::Text`]). Serialized as a JSON array.
    Parts(Vec<Part>),
}

impl Default for Content {
    fn default() -> Content {
        Content::Text(String::new())
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Text(t) => fmt::Debug::fmt(t, f),
            Content::Parts(p) => f.debug_list().entries(p).finish(),
        }
    }
}

/// The text, with each media part as a line `[image URL]` (see
/// [`Content::display`]).
impl fmt::Display for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl From<String> for Content {
    fn from(text: String) -> Content {
        Content::Text(text)
    }
}

impl From<&str> for Content {
    fn from(text: &str) -> Content {
        Content::Text(text.to_owned())
    }
}

impl From<Vec<Part>> for Content {
    /// See [`Content::from_parts`].
    fn from(parts: Vec<Part>) -> Content {
        Content::from_parts(parts)
    }
}

impl Content {
    /// Parts, made [`Content::Text`] when they are one text part or none
    /// (so the JSON keeps `"content": "..."`); several text parts stay
    /// parts, as sent, and so does any media.
    pub fn from_parts(mut parts: Vec<Part>) -> Content {
        match parts.as_slice() {
            [] => Content::Text(String::new()),
            [Part::Text(_)] => match parts.pop() {
                Some(Part::Text(t)) => Content::Text(t),
                _ => Content::Text(String::new()),
            },
            _ => Content::Parts(parts),
        }
    }

    /// The text: all of it for [`Content::Text`]; the text parts joined by
    /// a line break for parts (media left out).
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Content::Text(t) => Cow::Borrowed(t),
            Content::Parts(parts) => {
                let mut texts = parts.iter().filter_map(Part::as_text);
                match (texts.next(), texts.next()) {
                    (None, _) => Cow::Borrowed(""),
                    (Some(only), None) => Cow::Borrowed(only),
                    (Some(a), Some(b)) => {
                        let mut all = format!("{a}\n{b}");
                        for t in texts {
                            all.push('\n');
                            all.push_str(t);
                        }
                        Cow::Owned(all)
                    }
                }
            }
        }
    }

    /// The text when the content is text only.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Content::Text(t) => Some(t),
            Content::Parts(_) => None,
        }
    }

    /// The parts: one text part for text (none when empty).
    pub fn parts(&self) -> Cow<'_, [Part]> {
        match self {
            Content::Text(t) if t.is_empty() => Cow::Borrowed(&[]),
            Content::Text(t) => Cow::Owned(vec![Part::Text(t.clone())]),
            Content::Parts(p) => Cow::Borrowed(p),
        }
    }

    /// Whether there is neither text nor media.
    pub fn is_empty(&self) -> bool {
        match self {
            Content::Text(t) => t.is_empty(),
            Content::Parts(p) => p.iter().all(|p| p.as_text().is_some_and(str::is_empty)),
        }
    }

    /// The content as a reader sees it in a diff or a terminal: the text,
    /// with each media part on a line of its own as `[image URL]` or
    /// `[image image/png, N bytes of base64, #HASH]` (the first 8 hex
    /// digits of the data's xxh3), so that two different images differ.
    pub fn display(&self) -> Cow<'_, str> {
        let Content::Parts(parts) = self else {
            return self.text();
        };
        let lines: Vec<Cow<'_, str>> = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => Cow::Borrowed(t.as_str()),
                other => {
                    let m = other.media().expect("a media part");
                    let mut s = format!("[{}", other.kind());
                    match &m.source {
                        Source::Url(url) => {
                            s.push(' ');
                            s.push_str(url);
                        }
                        Source::Data { media_type, data } => s.push_str(&format!(
                            " {media_type}, {} bytes of base64, #{:08x}",
                            data.len(),
                            xxhash_rust::xxh3::xxh3_64(data.as_str().as_bytes()) >> 32
                        )),
                    }
                    if let Some(d) = m.detail {
                        s.push_str(&format!(", detail {}", d.as_str()));
                    }
                    if let Some(f) = &m.filename {
                        s.push_str(&format!(", {f}"));
                    }
                    s.push(']');
                    Cow::Owned(s)
                }
            })
            .collect();
        Cow::Owned(lines.join("\n"))
    }

    /// Whether any part is an image, a file or audio.
    pub fn has_media(&self) -> bool {
        matches!(self, Content::Parts(p) if p.iter().any(Part::is_media))
    }
}

impl PartialEq<str> for Content {
    fn eq(&self, other: &str) -> bool {
        self.as_text() == Some(other)
    }
}

impl PartialEq<&str> for Content {
    fn eq(&self, other: &&str) -> bool {
        self.as_text() == Some(*other)
    }
}

impl Serialize for Content {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Content::Text(t) => s.serialize_str(t),
            Content::Parts(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Content {
    /// A string, `null` (empty text: an assistant turn that only calls
    /// tools), or an array of parts in our form, OpenAI's or Anthropic's.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Content, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        crate::history_parts::content(&value, "").map_err(serde::de::Error::custom)
    }
}

/// One part of a message.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum Part {
    /// Text: `{"type": "text", "text": "..."}`.
    Text(String),
    /// An image: `{"type": "image", "url" | "media_type" + "data", "detail"?}`.
    Image(Media),
    /// A document (a PDF, a text file): `{"type": "file", "url" |
    /// "media_type" + "data", "filename"?}`.
    File(Media),
    /// Audio: `{"type": "audio", "media_type", "data"}`.
    Audio(Media),
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Text(t) => f.debug_tuple("Text").field(t).finish(),
            Part::Image(m) => f.debug_tuple("Image").field(m).finish(),
            Part::File(m) => f.debug_tuple("File").field(m).finish(),
            Part::Audio(m) => f.debug_tuple("Audio").field(m).finish(),
        }
    }
}

impl Part {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Part {
        Part::Text(text.into())
    }

    /// The text of a text part.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Part::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The media of an image, file or audio part.
    pub fn media(&self) -> Option<&Media> {
        match self {
            Part::Text(_) => None,
            Part::Image(m) | Part::File(m) | Part::Audio(m) => Some(m),
        }
    }

    /// Whether this is an image, a file or audio.
    pub fn is_media(&self) -> bool {
        !matches!(self, Part::Text(_))
    }

    /// The part's `type`: `text`, `image`, `file` or `audio`.
    pub fn kind(&self) -> &'static str {
        match self {
            Part::Text(_) => "text",
            Part::Image(_) => "image",
            Part::File(_) => "file",
            Part::Audio(_) => "audio",
        }
    }
}

impl Serialize for Part {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("type", self.kind())?;
        match self {
            Part::Text(t) => map.serialize_entry("text", t)?,
            Part::Image(m) | Part::File(m) | Part::Audio(m) => {
                match &m.source {
                    Source::Url(url) => map.serialize_entry("url", url)?,
                    Source::Data { media_type, data } => {
                        map.serialize_entry("media_type", media_type)?;
                        map.serialize_entry("data", data.as_str())?;
                    }
                }
                if let Some(detail) = m.detail {
                    map.serialize_entry("detail", detail.as_str())?;
                }
                if let Some(name) = &m.filename {
                    map.serialize_entry("filename", name)?;
                }
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Part, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        crate::history_parts::part(&value, "").map_err(serde::de::Error::custom)
    }
}

/// Where an image, a file or audio comes from, and how to read it.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Media {
    /// A URL the provider fetches, or the bytes inline.
    pub source: Source,
    /// For images: OpenAI's `detail` (counted as `high` when absent or
    /// `auto`).
    pub detail: Option<Detail>,
    /// For files: the name the provider is told.
    pub filename: Option<String>,
}

impl fmt::Debug for Media {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Media");
        match &self.source {
            Source::Url(url) => d.field("url", url),
            Source::Data { media_type, data } => d
                .field("media_type", media_type)
                .field("data_len", &data.len()),
        };
        if let Some(detail) = self.detail {
            d.field("detail", &detail);
        }
        if let Some(name) = &self.filename {
            d.field("filename", name);
        }
        d.finish()
    }
}

impl Media {
    /// Media at a URL (`http`, `https`, or a `data:` URL already split
    /// elsewhere).
    pub fn url(url: impl Into<String>) -> Media {
        Media {
            source: Source::Url(url.into()),
            detail: None,
            filename: None,
        }
    }

    /// Media inline: its media type (`image/png`) and its bytes in base64.
    pub fn data(media_type: impl Into<String>, base64: impl Into<Data>) -> Media {
        Media {
            source: Source::Data {
                media_type: media_type.into(),
                data: base64.into(),
            },
            detail: None,
            filename: None,
        }
    }

    /// With OpenAI's `detail` level (images).
    pub fn with_detail(mut self, detail: Detail) -> Media {
        self.detail = Some(detail);
        self
    }

    /// With a file name (files).
    pub fn with_filename(mut self, name: impl Into<String>) -> Media {
        self.filename = Some(name.into());
        self
    }

    /// The media type when inline (`image/png`), else `None`.
    pub fn media_type(&self) -> Option<&str> {
        match &self.source {
            Source::Data { media_type, .. } => Some(media_type),
            Source::Url(_) => None,
        }
    }

    /// The data URL of inline media (`data:MEDIA_TYPE;base64,DATA`), or the
    /// URL.
    pub fn to_url(&self) -> Cow<'_, str> {
        match &self.source {
            Source::Url(url) => Cow::Borrowed(url),
            Source::Data { media_type, data } => {
                let mut s = String::with_capacity(media_type.len() + data.len() + 13);
                s.push_str("data:");
                s.push_str(media_type);
                s.push_str(";base64,");
                s.push_str(data.as_str());
                Cow::Owned(s)
            }
        }
    }
}

/// Where media is.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum Source {
    /// An `http` or `https` URL.
    Url(String),
    /// Inline bytes.
    Data {
        /// The IANA media type (`image/jpeg`, `application/pdf`, `audio/wav`).
        media_type: String,
        /// The bytes, in standard base64 (RFC 4648 section 4).
        data: Data,
    },
}

/// OpenAI's image `detail` level. Source: OpenAI's vision guide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Detail {
    /// 512x512 at most, a fixed 85 tokens.
    Low,
    /// Tiled: 85 plus 170 per 512-pixel tile.
    High,
    /// The provider decides; counted as `High`.
    Auto,
}

impl Detail {
    /// `low`, `high` or `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Detail::Low => "low",
            Detail::High => "high",
            Detail::Auto => "auto",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Detail> {
        Some(match s {
            "low" => Detail::Low,
            "high" => Detail::High,
            "auto" => Detail::Auto,
            _ => return None,
        })
    }
}

/// Base64 text of inline media, shared rather than copied: a render places
/// an input's image without copying its bytes (they stay in the input's
/// string).
#[derive(Clone)]
pub struct Data {
    buf: Arc<str>,
    range: Range<usize>,
}

impl Data {
    /// A slice of a shared string (`range` on char boundaries).
    pub(crate) fn slice(buf: Arc<str>, range: Range<usize>) -> Data {
        debug_assert!(buf.get(range.clone()).is_some());
        Data { buf, range }
    }

    /// The base64 text.
    pub fn as_str(&self) -> &str {
        self.buf.get(self.range.clone()).unwrap_or_default()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Data) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Data({} bytes of base64)", self.len())
    }
}

impl From<String> for Data {
    fn from(s: String) -> Data {
        let len = s.len();
        Data {
            buf: Arc::from(s),
            range: 0..len,
        }
    }
}

impl From<&str> for Data {
    fn from(s: &str) -> Data {
        Data::from(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_only_content_stays_a_string() {
        let c = Content::from(vec![Part::text("a")]);
        assert_eq!(serde_json::to_value(&c).unwrap(), json!("a"));
        let c = Content::from(vec![Part::text("a"), Part::text("b")]);
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
        );
        assert_eq!(c.text(), "a\nb");
        let c = Content::from(vec![
            Part::text("look"),
            Part::Image(Media::url("https://x/y.png").with_detail(Detail::Low)),
        ]);
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!([{"type": "text", "text": "look"},
                   {"type": "image", "url": "https://x/y.png", "detail": "low"}])
        );
        assert_eq!(c.text(), "look");
        let back: Content = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn inline_media_is_a_data_url_on_demand_and_never_printed_in_debug() {
        let m = Media::data("image/png", "iVBORw0KGgo=");
        assert_eq!(m.to_url(), "data:image/png;base64,iVBORw0KGgo=");
        assert!(!format!("{m:?}").contains("iVBOR"));
    }
}
