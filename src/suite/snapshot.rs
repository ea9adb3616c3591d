//! Snapshots: a test's render, stored as pretty JSON in
//! `STEM.snapshots/TEST.json` beside its test file and compared on every
//! run.
//!
//! The stored JSON is the render as `render --json` prints it, without the
//! content `hash` (a comment edit in the template changes the hash but not
//! the render; the snapshot is about the render).

use std::path::{Path, PathBuf};

use crate::render::Rendered;

/// The text a render is stored as: pretty JSON (two spaces), `hash`
/// removed, one final newline.
pub(crate) fn text(rendered: &Rendered) -> String {
    let mut value = serde_json::to_value(rendered).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.shift_remove("hash");
    }
    let mut out = serde_json::to_string_pretty(&value).unwrap_or_default();
    out.push('\n');
    out
}

/// Where the snapshot of test `slug` of the test file `tests_file` lives.
pub(crate) fn path(tests_file: &Path, slug: &str) -> PathBuf {
    let stem = super::stem_of(tests_file);
    tests_file
        .with_file_name(format!("{stem}.snapshots"))
        .join(format!("{slug}.json"))
}

/// How much of a snapshot diff is kept: a render that changed wholesale
/// would otherwise print (and a server would send) megabytes.
pub(crate) const MAX_DIFF_BYTES: usize = 64 * 1024;

/// A unified diff from `old` to `new`, with file labels, three lines of
/// context; coarser rather than slow past half a second, and cut after
/// [`MAX_DIFF_BYTES`] at a line end, with a last line saying how many
/// lines were left out.
pub(crate) fn diff(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    let full = similar::TextDiff::configure()
        .timeout(std::time::Duration::from_millis(500))
        .diff_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string();
    if full.len() <= MAX_DIFF_BYTES {
        return full;
    }
    let cut = full[..MAX_DIFF_BYTES].rfind('\n').map_or(0, |i| i + 1);
    let left = full[cut..].lines().count();
    let mut out = full[..cut].to_owned();
    out.push_str(&format!(
        "... {left} more lines of diff left out (compare the files themselves)\n"
    ));
    out
}

/// Refuses a snapshot or cassette path that is a link, or whose folder is
/// one: they are files of the root, and a link could point anywhere.
pub(crate) fn no_links(path: &Path) -> std::io::Result<()> {
    for p in [Some(path), path.parent()].into_iter().flatten() {
        if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(std::io::Error::other(format!(
                "{} is a link; snapshots and cassettes are plain files beside their test file",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Writes `text` to `path` (creating its folder), through a temporary file
/// renamed into place so that a reader never sees half a snapshot. Refuses
/// links ([`no_links`]).
pub(crate) fn write(path: &Path, text: &str) -> std::io::Result<()> {
    no_links(path)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_wholesale_change_gives_a_bounded_diff_that_says_what_it_left_out() {
        let old: String = (0..20_000).map(|i| format!("old line {i}\n")).collect();
        let new: String = (0..20_000).map(|i| format!("new line {i}\n")).collect();
        let d = super::diff(&old, &new, "a", "b");
        assert!(d.len() <= super::MAX_DIFF_BYTES + 100, "{}", d.len());
        assert!(d.starts_with("--- a\n+++ b\n"), "{}", &d[..40]);
        let last = d.lines().last().unwrap();
        assert!(last.contains("more lines of diff left out"), "{last}");
        let small = super::diff("a\n", "b\n", "x", "y");
        assert!(
            small.contains("-a\n+b\n") && !small.contains("left out"),
            "{small}"
        );
    }
}
