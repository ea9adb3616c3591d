//! What an image, a file or audio may be, and how one is checked before
//! anything renders or goes out.
//!
//! A media value is a URL (`http` or `https`), a data URL
//! (`data:MEDIA_TYPE;base64,DATA`), or an object `{"data", "media_type"}`
//! (or `{"url"}`) with, for images, `detail` (`low`, `high`, `auto`) and,
//! for files, `filename`. Checked: the URL's scheme, the media type against
//! the kind's list, the base64 (RFC 4648 section 4: the standard alphabet,
//! padded, no line breaks), and the decoded size against
//! [`RenderLimits::max_media_bytes`](crate::RenderLimits::max_media_bytes).
//!
//! The media types are the ones both OpenAI and Anthropic document for
//! the kind (images: PNG, JPEG, GIF, WebP; audio: OpenAI's `input_audio`
//! formats, WAV and MP3), and for files PDF and plain text (what
//! Anthropic's `document` block takes; OpenAI's `file` part takes PDF).

use std::sync::Arc;

use crate::content::{Data, Detail, Media, Part, Source};

/// The kind of a media value: the part it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Image,
    File,
    Audio,
}

impl Kind {
    /// The parameter type and part type: `image`, `file` or `audio`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::File => "file",
            Kind::Audio => "audio",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "image" => Kind::Image,
            "file" => Kind::File,
            "audio" => Kind::Audio,
            _ => return None,
        })
    }

    /// The kind with its article: `an image`, `a file`, `an audio clip`.
    pub(crate) fn with_article(self) -> &'static str {
        match self {
            Kind::Image => "an image",
            Kind::File => "a file",
            Kind::Audio => "an audio clip",
        }
    }

    /// The media types a value of this kind may have.
    pub(crate) fn media_types(self) -> &'static [&'static str] {
        match self {
            Kind::Image => &["image/png", "image/jpeg", "image/gif", "image/webp"],
            Kind::File => &["application/pdf", "text/plain"],
            Kind::Audio => &["audio/wav", "audio/mpeg"],
        }
    }

    /// The part a checked value of this kind becomes.
    pub(crate) fn part(self, media: Media) -> Part {
        match self {
            Kind::Image => Part::Image(media),
            Kind::File => Part::File(media),
            Kind::Audio => Part::Audio(media),
        }
    }
}

/// Names a media type is also written under, and the name it means.
fn canonical_media_type(t: &str) -> &str {
    match t {
        "image/jpg" => "image/jpeg",
        "audio/x-wav" | "audio/wave" => "audio/wav",
        "audio/mp3" => "audio/mpeg",
        _ => t,
    }
}

/// The default of [`RenderLimits::max_media_bytes`](crate::RenderLimits::max_media_bytes):
/// 20 MiB decoded, OpenAI's limit for one image (Anthropic's is 5 MB per
/// image and 32 MB per request).
pub const DEFAULT_MAX_MEDIA_BYTES: usize = 20 << 20;

/// Text from an input, with the shared string that holds exactly it when
/// there is one (so inline data can be kept without a copy).
#[derive(Clone, Copy)]
pub(crate) struct Text<'a> {
    pub s: &'a str,
    pub shared: Option<&'a Arc<str>>,
}

impl<'a> Text<'a> {
    pub(crate) fn plain(s: &'a str) -> Text<'a> {
        Text { s, shared: None }
    }

    fn data(&self, range: std::ops::Range<usize>) -> Data {
        match self.shared {
            Some(arc) if arc.len() == self.s.len() => Data::slice(arc.clone(), range),
            _ => Data::from(&self.s[range]),
        }
    }
}

/// A media value as written, before it is checked.
#[derive(Default)]
pub(crate) struct Written<'a> {
    /// The string form: a URL or a data URL.
    pub string: Option<Text<'a>>,
    /// The object form's fields.
    pub url: Option<Text<'a>>,
    pub data: Option<Text<'a>>,
    pub media_type: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub filename: Option<&'a str>,
}

/// Why a media value was refused: the JSON pointer below the value
/// (`""`, `/data`, ...), the rule (a JSON Schema keyword or a name of
/// ours) and what is wrong, with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub at: &'static str,
    pub rule: &'static str,
    pub message: String,
}

fn problem(at: &'static str, rule: &'static str, message: String) -> Problem {
    Problem { at, rule, message }
}

/// The media type of bytes, from their first bytes (the formats' magic
/// numbers): PNG, JPEG, GIF, WebP, PDF, WAV and MP3; `text/plain` for
/// UTF-8 text; `None` for anything else. Sixteen bytes are enough.
pub fn sniff_media_type(b: &[u8]) -> Option<&'static str> {
    Some(match b {
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [0xFF, 0xD8, 0xFF, ..] => "image/jpeg",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => "image/webp",
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'A',
            b'V',
            b'E',
            ..,
        ] => "audio/wav",
        [b'%', b'P', b'D', b'F', ..] => "application/pdf",
        [b'I', b'D', b'3', ..] | [0xFF, 0xFB | 0xF3 | 0xF2 | 0xFA, ..] => "audio/mpeg",
        _ if std::str::from_utf8(b).is_ok() => "text/plain",
        _ => return None,
    })
}

/// Checks that inline bytes are what their media type says: their first
/// bytes (an image's, a PDF's, a WAV's or an MP3's header), an image's size
/// (not zero pixels), and plain text's UTF-8. A provider refuses a
/// mismatch (Anthropic answers 400 for a JPEG sent as `image/png`), so it
/// is an input error here, before anything is sent.
fn check_bytes(kind: Kind, media: &Media, at: &'static str) -> Result<(), Problem> {
    let Source::Data { media_type, data } = &media.source else {
        return Ok(());
    };
    if media_type == "text/plain" {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.as_str())
            .unwrap_or_default();
        return match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(()),
            Err(e) => Err(problem(
                at,
                "contentMediaType",
                format!(
                    "the data is not UTF-8 text (byte {} is not), as text/plain must be",
                    e.valid_up_to()
                ),
            )),
        };
    }
    let head = decode_prefix(data.as_str(), 16);
    let found = match sniff_media_type(&head) {
        // Text is what any short enough run of bytes may be.
        Some("text/plain") | None => None,
        found => found,
    };
    if found != Some(media_type.as_str()) {
        let what = match found {
            Some(t) => format!("is {t}"),
            None => format!("does not start as {} does", media_type),
        };
        return Err(problem(
            at,
            "contentMediaType",
            format!(
                "the data {what}, but its media type says {media_type}: give the media type the \
                 bytes have"
            ),
        ));
    }
    if kind == Kind::Image
        && let Some((w, h)) = crate::media_tokens::image_size(media)
        && (w == 0 || h == 0)
    {
        return Err(problem(
            at,
            "contentMediaType",
            format!("the image is {w}x{h} pixels: it has no pixels to see"),
        ));
    }
    Ok(())
}

/// Checks a written value of `kind` and makes its media.
pub(crate) fn check(kind: Kind, w: &Written<'_>, max_bytes: usize) -> Result<Media, Problem> {
    let data_at = match (&w.string, &w.data) {
        (Some(_), _) => "",
        (None, Some(_)) => "/data",
        _ => "/url",
    };
    let mut media = match (&w.string, &w.url, &w.data) {
        (Some(s), _, _) => from_url(kind, s, "", max_bytes)?,
        (None, Some(_), None) if w.media_type.is_some() => {
            return Err(problem(
                "/media_type",
                "additionalProperties",
                "`media_type` goes with `data`; for a URL the server says what it serves \
                 (drop `media_type`, or give the bytes as `data`)"
                    .to_owned(),
            ));
        }
        (None, Some(url), None) => from_url(kind, url, "/url", max_bytes)?,
        (None, None, Some(data)) => {
            let Some(media_type) = w.media_type else {
                return Err(problem(
                    "",
                    "required",
                    format!(
                        "inline {} needs `media_type` beside `data` (one of {})",
                        kind.as_str(),
                        kind.media_types().join(", ")
                    ),
                ));
            };
            let media_type = allowed_type(kind, media_type, "/media_type")?;
            check_base64(data.s, "/data", max_bytes)?;
            Media::data(media_type, data.data(0..data.s.len()))
        }
        (None, Some(_), Some(_)) => {
            return Err(problem(
                "",
                "oneOf",
                format!("{} has `url` or `data`, not both", kind.with_article()),
            ));
        }
        (None, None, None) => {
            return Err(problem(
                "",
                "required",
                format!(
                    "{} is a URL, a data URL, or an object with `data` and `media_type` (or `url`)",
                    kind.with_article()
                ),
            ));
        }
    };
    if let Some(d) = w.detail {
        if kind != Kind::Image {
            return Err(problem(
                "/detail",
                "additionalProperties",
                format!("`detail` is for images, not {}", kind.with_article()),
            ));
        }
        media.detail = Some(Detail::parse(d).ok_or_else(|| {
            problem(
                "/detail",
                "enum",
                format!("`detail` is low, high or auto, not {d:?}"),
            )
        })?);
    }
    if let Some(name) = w.filename {
        if kind != Kind::File {
            return Err(problem(
                "/filename",
                "additionalProperties",
                format!("`filename` is for files, not {}", kind.with_article()),
            ));
        }
        media.filename = Some(name.to_owned());
    }
    check_bytes(kind, &media, data_at)?;
    if kind == Kind::Audio && matches!(media.source, Source::Url(_)) {
        return Err(problem(
            "",
            "format",
            "audio goes inline (a data URL or `data` with `media_type`): neither OpenAI nor \
             Anthropic fetches audio from a URL"
                .to_owned(),
        ));
    }
    Ok(media)
}

/// A URL or a data URL.
fn from_url(
    kind: Kind,
    url: &Text<'_>,
    at: &'static str,
    max_bytes: usize,
) -> Result<Media, Problem> {
    let s = url.s;
    let scheme = s
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    let has_host = |scheme: &str| {
        s[scheme.len()..]
            .strip_prefix("://")
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
    };
    match scheme.as_deref() {
        Some(scheme @ ("http" | "https")) if !has_host(scheme) => Err(problem(
            at,
            "format",
            format!(
                "`{}` has no host: a URL of {} is `{scheme}://HOST/...`",
                shorten(s),
                kind.with_article()
            ),
        )),
        Some("http" | "https") => {
            if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(problem(
                    at,
                    "format",
                    "the URL holds whitespace or control characters".to_owned(),
                ));
            }
            Ok(Media::url(s))
        }
        Some("data") => {
            let rest = &s[5..];
            let Some((meta, _)) = rest.split_once(',') else {
                return Err(problem(
                    at,
                    "format",
                    "a data URL is `data:MEDIA_TYPE;base64,DATA`; this one has no comma".to_owned(),
                ));
            };
            // Parameters before `;base64` (`;charset=...`) say nothing
            // about the bytes' kind.
            let base64 = meta.len() >= 7
                && meta.is_char_boundary(meta.len() - 7)
                && meta[meta.len() - 7..].eq_ignore_ascii_case(";base64");
            let Some(media_type) = base64
                .then(|| &meta[..meta.len() - 7])
                .map(|t| t.split(';').next().unwrap_or(t))
            else {
                return Err(problem(
                    at,
                    "format",
                    format!(
                        "a data URL must say `;base64` after its media type (`data:{};base64,...`)",
                        kind.media_types()[0]
                    ),
                ));
            };
            let media_type = allowed_type(kind, media_type, at)?;
            let start = 5 + meta.len() + 1;
            check_base64(&s[start..], at, max_bytes)?;
            Ok(Media::data(media_type, url.data(start..s.len())))
        }
        _ => Err(problem(
            at,
            "format",
            format!(
                "the URL of {} is http, https or a data URL; `{}` is not",
                kind.with_article(),
                shorten(s)
            ),
        )),
    }
}

fn allowed_type(kind: Kind, media_type: &str, at: &'static str) -> Result<String, Problem> {
    let lower = media_type.trim().to_ascii_lowercase();
    let canonical = canonical_media_type(&lower);
    if kind.media_types().contains(&canonical) {
        return Ok(canonical.to_owned());
    }
    Err(problem(
        at,
        "enum",
        format!(
            "media type `{}` is not allowed for {} (allowed: {})",
            shorten(media_type),
            kind.with_article(),
            kind.media_types().join(", ")
        ),
    ))
}

/// At most 60 characters of `s`, for a message.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Whether `s` is standard base64 (RFC 4648 section 4, padded, no line
/// breaks) of at most `max_bytes` bytes once decoded.
fn check_base64(s: &str, at: &'static str, max_bytes: usize) -> Result<(), Problem> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(problem(at, "minLength", "the data is empty".to_owned()));
    }
    let decoded = b.len() / 4 * 3;
    if decoded > max_bytes.saturating_add(2) {
        return Err(problem(
            at,
            "maxLength",
            format!(
                "the data is {} bytes once decoded, over RenderLimits::max_media_bytes ({max_bytes})",
                decoded
            ),
        ));
    }
    let pad = b.iter().rev().take(2).take_while(|&&c| c == b'=').count();
    let body = &b[..b.len() - pad];
    // One pass without branches per byte, so it vectorizes: a few
    // gigabytes a second.
    let bad = body
        .chunks(64)
        .any(|chunk| chunk.iter().fold(false, |bad, &c| bad | !is_base64(c)));
    // The last quantum's unused bits must be zero (RFC 4648 section 3.5;
    // strict decoders, the `base64` crate's among them, refuse others).
    let canonical = || {
        use base64::Engine as _;
        b.len() < 4
            || base64::engine::general_purpose::STANDARD
                .decode(&b[b.len() - 4..])
                .is_ok()
    };
    if bad || !b.len().is_multiple_of(4) || !canonical() {
        let at_byte = body.iter().position(|&c| !is_base64(c));
        let why = match at_byte {
            Some(i) if body[i].is_ascii_whitespace() => {
                format!("the base64 has whitespace at byte {i}; remove line breaks and spaces")
            }
            Some(i) => format!(
                "the data is not base64: byte {i} is {:?}, outside the standard alphabet (A-Z, a-z, 0-9, +, /)",
                char::from(body[i])
            ),
            None if !b.len().is_multiple_of(4) => format!(
                "the base64 is {} characters, not a multiple of 4 (is its `=` padding missing?)",
                b.len()
            ),
            None => "the base64 ends in a character whose unused bits are not zero: it was not \
                     written by a standard encoder"
                .to_owned(),
        };
        return Err(problem(at, "contentEncoding", why));
    }
    Ok(())
}

#[inline]
fn is_base64(c: u8) -> bool {
    c.is_ascii_alphanumeric() | (c == b'+') | (c == b'/')
}

/// The first bytes of inline data, decoded: enough for an image header
/// (`n` decoded bytes at most).
pub(crate) fn decode_prefix(data: &str, n: usize) -> Vec<u8> {
    use base64::Engine as _;
    let take = (n.div_ceil(3) * 4).min(data.len() / 4 * 4);
    base64::engine::general_purpose::STANDARD
        .decode(&data.as_bytes()[..take])
        .unwrap_or_default()
}

/// The JSON Schema of a media parameter of `kind`: what
/// `schemas/content.schema.json` says of a part, restricted to the kind, in
/// the forms an input gives (a URL string too). The checks
/// JSON Schema cannot say well (base64, the data URL's media type) are
/// [`check`]'s.
pub(crate) fn schema(kind: Kind) -> serde_json::Value {
    let mut props = serde_json::json!({
        "url": {"type": "string", "description": "http, https or a data URL"},
        "data": {"type": "string", "contentEncoding": "base64"},
        "media_type": {"enum": kind.media_types()},
    });
    if kind == Kind::Image {
        props["detail"] = serde_json::json!({"enum": ["low", "high", "auto"]});
    }
    if kind == Kind::File {
        props["filename"] = serde_json::json!({"type": "string"});
    }
    serde_json::json!({
        "anyOf": [
            {"type": "string", "description": "an http(s) URL or a data URL"},
            {"type": "object", "properties": props, "additionalProperties": false}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(kind: Kind, s: &str) -> Result<Media, Problem> {
        check(
            kind,
            &Written {
                string: Some(Text::plain(s)),
                ..Written::default()
            },
            1000,
        )
    }

    #[test]
    fn urls_data_urls_and_their_faults() {
        let m = string(Kind::Image, "data:image/png;base64,iVBORw0KGgo=").unwrap();
        assert_eq!(m.media_type(), Some("image/png"));
        assert!(string(Kind::Image, "https://example.com/a.png").is_ok());
        for (bad, rule) in [
            ("file:///etc/passwd", "format"),
            ("ftp://x/y.png", "format"),
            ("data:image/png,abc", "format"),
            ("data:image/svg+xml;base64,PHN2Zz4=", "enum"),
            ("data:image/png;base64,iVBO Rw0KGgo=", "contentEncoding"),
            ("data:image/png;base64,iVBORw0KGgo", "contentEncoding"),
            ("data:image/png;base64,iVB*Rw0KGgo=", "contentEncoding"),
            ("data:image/png;base64,", "minLength"),
            ("http:foo.png", "format"),
            ("data:image/png;base64,iVBORw0KGgp=", "contentEncoding"),
            ("https://", "format"),
            ("https:///etc/passwd", "format"),
        ] {
            assert_eq!(string(Kind::Image, bad).unwrap_err().rule, rule, "{bad}");
        }
        let big = format!("data:image/png;base64,{}", "A".repeat(2000));
        assert_eq!(string(Kind::Image, &big).unwrap_err().rule, "maxLength");
        assert_eq!(
            string(Kind::Audio, "https://x/a.wav").unwrap_err().rule,
            "format"
        );
        assert!(string(Kind::Audio, "data:audio/mp3;base64,SUQz").is_ok());
        let m = string(Kind::File, "data:text/plain;charset=utf-8;base64,aGk=").unwrap();
        assert_eq!(m.media_type(), Some("text/plain"));
        assert!(string(Kind::Image, "data:image/png;BASE64,iVBORw0KGgo=").is_ok());
        // What the bytes are must be what the media type says.
        for (bad, rule) in [
            // JPEG bytes said to be PNG.
            ("data:image/png;base64,/9j/4AAQ", "contentMediaType"),
            // Text said to be a PDF; Latin-1 said to be UTF-8 text.
            ("data:application/pdf;base64,aGVsbG8=", "contentMediaType"),
            ("data:text/plain;base64,/w==", "contentMediaType"),
        ] {
            let kind = if bad.contains("image") {
                Kind::Image
            } else {
                Kind::File
            };
            assert_eq!(string(kind, bad).unwrap_err().rule, rule, "{bad}");
        }
        // A PNG whose header says 0 pixels wide.
        let zero = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAAAAAABCAYAAAAfFcSJ";
        assert!(
            string(Kind::Image, zero)
                .unwrap_err()
                .message
                .contains("0x1")
        );
        assert!(
            string(Kind::Image, "http://")
                .unwrap_err()
                .message
                .contains("no host")
        );
    }

    #[test]
    fn header_prefix_decodes() {
        assert!(decode_prefix("iVBORw0KGgo=", 4).starts_with(b"\x89PNG"));
    }
}
