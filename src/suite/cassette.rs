//! Cassettes: a provider's answer to a test's request, recorded once by
//! `promptbook test --record` and replayed offline on every run, stored as
//! JSON in `STEM.cassettes/TEST.json` beside the test file.
//!
//! A cassette is stamped with the content hash of the template it was
//! recorded from and a hash of the render that was sent (the messages,
//! model block and everything else `render --json` prints, but the content
//! hash). When either differs from today's (the template changed, or the
//! test's inputs or model did), the cassette is `stale`: the answer was
//! given to another prompt, and the test fails until it is recorded again
//! (it never silently passes on an old answer). A cassette edited by hand
//! is not detected: review it as you review code.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A recorded exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cassette {
    /// `NAME@VERSION` of the template that rendered the request.
    pub template: String,
    /// Its content hash when recorded (64 hex characters).
    pub hash: String,
    /// SHA-256 of the render that was sent, as its snapshot text (64 hex
    /// characters).
    #[serde(default)]
    pub render_hash: String,
    /// The test's name.
    pub test: String,
    /// What was sent: `{"provider", "model", "body"}` (the JSON body; no
    /// headers, never a key).
    pub request: Value,
    /// The normalised answer, as `promptbook send --json` prints it
    /// (`text`, `tool_calls`, `finish_reason`, `usage`, ...).
    pub response: Value,
}

/// Where the cassette of test `slug` of the test file `tests_file` lives.
pub(crate) fn path(tests_file: &Path, slug: &str) -> PathBuf {
    let stem = super::stem_of(tests_file);
    tests_file
        .with_file_name(format!("{stem}.cassettes"))
        .join(format!("{slug}.json"))
}

/// Reads a cassette; `None` when there is none.
///
/// # Errors
/// A message when the file exists but cannot be read or is not a cassette.
pub(crate) fn read(path: &Path) -> Result<Option<Cassette>, String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    super::snapshot::no_links(path).map_err(|e| e.to_string())?;
    let text = crate::file::read_text(path, crate::file::MAX_FILE_BYTES)
        .map_err(|e| format!("cannot read cassette {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{} is not a cassette: {e}", path.display()))
}

impl Cassette {
    /// A cassette of test `test`: the render that was sent, the request
    /// and the answer.
    pub fn new(
        test: &str,
        rendered: &crate::render::Rendered,
        request: Value,
        response: Value,
    ) -> Cassette {
        Cassette {
            template: rendered.template.clone(),
            hash: rendered.hash.to_string(),
            render_hash: render_hash(rendered),
            test: test.to_owned(),
            request,
            response,
        }
    }

    /// Writes the cassette as pretty JSON, through a temporary file.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        super::snapshot::write(path, &text)
    }
}

/// The hash a cassette keeps of its render: SHA-256 of its snapshot text.
pub(crate) fn render_hash(rendered: &crate::render::Rendered) -> String {
    crate::hash::text_hash(super::snapshot::text(rendered).as_bytes()).to_string()
}
