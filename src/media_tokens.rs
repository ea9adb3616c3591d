//! Tokens of images, files and audio, by the providers' published rules.
//!
//! - **OpenAI images** (the vision guide's rule for the GPT-4o family):
//!   `detail: low` costs 85. Otherwise (`high`, `auto` or absent, counted
//!   as high) the image is scaled to fit 2048x2048, then its shortest side
//!   to 768 (never up), and costs 85 plus 170 per 512-pixel tile: 1024x1024
//!   is 765, 2048x4096 is 1105.
//! - **Anthropic images** (its vision guide): scaled, keeping the aspect
//!   ratio, until the long edge is at most 1568 pixels and the image at
//!   most about 1,600 tokens, then `width * height / 750`; Anthropic calls
//!   this approximate, and so do we.
//!
//! The size comes from the header of inline data (the `imagesize` crate
//! reads PNG, JPEG, GIF and WebP headers from the first bytes). An image
//! given by URL, or whose header cannot be read, counts as the most the
//! rule allows (OpenAI high: 1,445, the 768x2048 case; low: 85; Anthropic:
//! 1,600), marked approximate.
//!
//! Files and audio have no published rule that can be applied without
//! decoding them: a plain-text file counts as its text; a PDF as 1,600
//! tokens per page (pages found by their `/Type /Page` objects; Anthropic
//! documents 1,500 to 3,000 per page of text and image, OpenAI puts each
//! page's text and image in context); audio as 10 tokens a second (OpenAI's
//! audio models, read from a WAV header, else at 128 kbit/s). All of these
//! are marked approximate.

use crate::content::{Detail, Media, Part, Source};

/// Which provider's rule counts an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ImageRule {
    /// OpenAI's tiles (the default).
    #[default]
    OpenAiTiles,
    /// Anthropic's pixels / 750.
    AnthropicPixels,
}

/// OpenAI's fixed cost of an image at low detail, and of each image.
const OPENAI_BASE: usize = 85;
/// OpenAI's cost of one 512-pixel tile.
const OPENAI_TILE: usize = 170;
/// OpenAI high detail's worst case: 768x2048 is 2x4 tiles.
const OPENAI_MAX: usize = OPENAI_BASE + 8 * OPENAI_TILE;
/// Anthropic's largest image before it is scaled down, in tokens.
const ANTHROPIC_MAX: usize = 1600;
/// Tokens per page of a PDF (an estimate, see the module docs).
const PDF_PAGE: usize = 1600;
/// Tokens per second of audio (an estimate).
const AUDIO_PER_SECOND: usize = 10;

/// A part's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counted {
    pub tokens: usize,
    /// Whether the count is an estimate.
    pub approximate: bool,
    /// An image's width and height, when its header was read.
    pub size: Option<(u64, u64)>,
}

/// The tokens of a part, whether the count is an estimate, and an image's
/// size (its header read once). `count_text` counts plain text (for text
/// parts and text files).
pub(crate) fn part_tokens(
    part: &Part,
    rule: ImageRule,
    count_text: &dyn Fn(&str) -> usize,
) -> Counted {
    let counted = |(tokens, approximate)| Counted {
        tokens,
        approximate,
        size: None,
    };
    match part {
        Part::Text(t) => counted((count_text(t), false)),
        Part::Image(m) => image_tokens(m, rule),
        Part::File(m) => counted(file_tokens(m, count_text)),
        Part::Audio(m) => counted((audio_tokens(m), true)),
    }
}

/// The width and height of inline image data, from its header.
pub(crate) fn image_size(media: &Media) -> Option<(u64, u64)> {
    let Source::Data { data, .. } = &media.source else {
        return None;
    };
    // PNG, GIF and WebP say their size in the first 30 bytes; a JPEG's
    // frame header comes after its EXIF and tables, so read further for it.
    for n in [64, 64 << 10, 1 << 20] {
        let head = crate::media::decode_prefix(data.as_str(), n);
        if let Ok(size) = imagesize::blob_size(&head) {
            return Some((size.width as u64, size.height as u64));
        }
        if head.len() < n {
            break;
        }
    }
    None
}

fn image_tokens(media: &Media, rule: ImageRule) -> Counted {
    let size = image_size(media);
    let (tokens, approximate) = match rule {
        ImageRule::OpenAiTiles if media.detail == Some(Detail::Low) => (OPENAI_BASE, false),
        ImageRule::OpenAiTiles => match size {
            Some((w, h)) => (openai_high(w, h), false),
            None => (OPENAI_MAX, true),
        },
        ImageRule::AnthropicPixels => match size {
            Some((w, h)) => (anthropic(w, h), true),
            None => (ANTHROPIC_MAX, true),
        },
    };
    Counted {
        tokens,
        approximate,
        size,
    }
}

/// OpenAI's high-detail rule for a `w` x `h` image.
pub(crate) fn openai_high(w: u64, h: u64) -> usize {
    if w == 0 || h == 0 {
        return OPENAI_BASE;
    }
    let (mut w, mut h) = (w as f64, h as f64);
    if w > 2048.0 || h > 2048.0 {
        let s = 2048.0 / w.max(h);
        w *= s;
        h *= s;
    }
    if w.min(h) > 768.0 {
        let s = 768.0 / w.min(h);
        w *= s;
        h *= s;
    }
    // A side scaled below one pixel is still one tile wide.
    let tiles = (w.round() / 512.0).ceil().max(1.0) * (h.round() / 512.0).ceil().max(1.0);
    OPENAI_BASE + OPENAI_TILE * tiles as usize
}

/// Anthropic's rule for a `w` x `h` image.
pub(crate) fn anthropic(w: u64, h: u64) -> usize {
    let (mut w, mut h) = (w as f64, h as f64);
    if w.max(h) > 1568.0 {
        let s = 1568.0 / w.max(h);
        w = (w * s).floor();
        h = (h * s).floor();
    }
    let cap = (ANTHROPIC_MAX * 750) as f64;
    if w * h > cap {
        let s = (cap / (w * h)).sqrt();
        w = (w * s).floor();
        h = (h * s).floor();
    }
    // A side scaled below one pixel is still one pixel.
    ((w.max(1.0) * h.max(1.0)) / 750.0).ceil().max(1.0) as usize
}

fn file_tokens(media: &Media, count_text: &dyn Fn(&str) -> usize) -> (usize, bool) {
    let Source::Data { media_type, data } = &media.source else {
        return (PDF_PAGE, true);
    };
    use base64::Engine as _;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data.as_str()) else {
        return (PDF_PAGE, true);
    };
    if media_type == "text/plain" {
        return (count_text(&String::from_utf8_lossy(&bytes)), true);
    }
    (pdf_pages(&bytes) * PDF_PAGE, true)
}

/// A PDF's pages: its `/Type /Page` objects (with or without the space),
/// not the `/Type /Pages` tree nodes; at least one.
fn pdf_pages(bytes: &[u8]) -> usize {
    [&b"/Type /Page"[..], &b"/Type/Page"[..]]
        .into_iter()
        .map(|needle| {
            memchr::memmem::find_iter(bytes, needle)
                .filter(|&i| bytes.get(i + needle.len()) != Some(&b's'))
                .count()
        })
        .sum::<usize>()
        .max(1)
}

fn audio_tokens(media: &Media) -> usize {
    let Source::Data { media_type, data } = &media.source else {
        return AUDIO_PER_SECOND * 60;
    };
    let bytes = data.len() / 4 * 3;
    let head = crate::media::decode_prefix(data.as_str(), 44);
    let per_second = if media_type == "audio/wav" && head.len() >= 32 && &head[..4] == b"RIFF" {
        u32::from_le_bytes([head[28], head[29], head[30], head[31]]) as usize
    } else {
        16_000
    };
    (bytes / per_second.max(1)).max(1) * AUDIO_PER_SECOND
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_worked_examples() {
        // OpenAI's vision guide.
        assert_eq!(openai_high(1024, 1024), 765);
        assert_eq!(openai_high(2048, 4096), 1105);
        assert_eq!(openai_high(4096, 8192), 1105);
        assert_eq!(openai_high(512, 512), 255);
        assert_eq!(openai_high(768, 2048), OPENAI_MAX);
        // Thin images: fit to 0.4x2048, still 1x4 tiles.
        assert_eq!(openai_high(1, 5000), 765);
    }

    #[test]
    fn anthropic_rule() {
        // Anthropic's table: 1092x1092 is about 1,590 tokens.
        assert_eq!(anthropic(1092, 1092), 1590);
        assert_eq!(anthropic(200, 200), 54);
        assert!(anthropic(8000, 8000) <= ANTHROPIC_MAX);
        for (w, h) in [(1, 1569), (4, 9000), (5000, 2)] {
            assert!(anthropic(w, h) >= 1, "{w}x{h}");
        }
    }

    #[test]
    fn pdf_pages_leave_out_the_page_tree() {
        let three = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\n\
            2 0 obj << /Type /Pages /Kids [3 0 R 4 0 R 5 0 R] /Count 3 >>\n\
            3 0 obj << /Type /Page >>\n4 0 obj << /Type/Page >>\n5 0 obj << /Type /Page /Parent 2 0 R >>\n";
        assert_eq!(pdf_pages(three), 3);
        assert_eq!(pdf_pages(b"%PDF-1.4\n<< /Type /Pages >>"), 1);
    }

    #[test]
    fn sizes_come_from_png_headers() {
        // A 1x1 PNG's first bytes: signature, IHDR with width 1, height 1.
        let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
        let m = Media::data("image/png", png);
        assert_eq!(image_size(&m), Some((1, 1)));
        let c = image_tokens(&m, ImageRule::OpenAiTiles);
        assert_eq!(
            (c.tokens, c.approximate, c.size),
            (255, false, Some((1, 1)))
        );
        let url = Media::url("https://example.com/x.png");
        let c = image_tokens(&url, ImageRule::OpenAiTiles);
        assert_eq!((c.tokens, c.approximate, c.size), (OPENAI_MAX, true, None));
    }
}
