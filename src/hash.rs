//! Content hashes of template versions: what `promptbook lock` records
//! and `lock --check` compares, so that a released version cannot change
//! in place unnoticed.
//!
//! A version's hash is SHA-256 (FIPS 180-4) over
//!
//! 1. its own file: the text after the byte-order mark is dropped and line
//!    endings are made LF (a checkout with CR LF hashes the same), with the
//!    top-level `labels:` entry of the front matter (or manifest) left out
//!    (moving a label is not a content change: the lockfile records labels
//!    apart; an entry holding `&`, which may define a YAML anchor used
//!    elsewhere, is kept); comments and formatting elsewhere count, as
//!    every other byte does. A `.prompty` file keeps its labels in
//!    `metadata.promptbook.labels`: its front matter counts as its parsed
//!    value without them (comments and formatting there do not count), its
//!    body byte for byte;
//! 2. the files it reads: the text of its `$ref` input schema and of every
//!    `${file:...}` a `.prompty` file names;
//! 3. for every template it depends on, transitively (its parent, and
//!    every template a literal `{% include %}`, `{% import %}`, `{% from %}`
//!    or `{% extends %}` names, resolved as a render resolves it): that
//!    template's `NAME@VERSION` and its own content as in 1 and 2.
//!
//! So changing a partial changes the hash of exactly the templates that
//! reach it, and pointing `^2` at a new version changes the includer's
//! hash. A name computed at render time (`{% include "x/" ~ kind %}`) is
//! not known when loading and is not covered.

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest, Sha256};

/// A template version's content hash: 32 bytes of SHA-256, shown and
/// serialised as 64 lowercase hex characters. See the module docs for what
/// it covers.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

impl std::str::FromStr for ContentHash {
    type Err = String;

    /// Parses 64 hex characters (either case).
    fn from_str(s: &str) -> Result<ContentHash, String> {
        let bad = || format!("`{s}` is not a content hash (64 hex characters)");
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(ContentHash(out))
    }
}

impl serde::Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A length-prefixed SHA-256 of several byte strings, so that no two
/// different lists of parts hash the same by moving a boundary.
struct Hasher(Sha256);

impl Hasher {
    fn new(domain: &str) -> Hasher {
        let mut h = Hasher(Sha256::new());
        h.part(domain.as_bytes());
        h
    }

    fn part(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn finish(self) -> ContentHash {
        ContentHash(self.0.finalize().into())
    }
}

/// SHA-256 of some bytes, as a [`ContentHash`].
pub(crate) fn text_hash(bytes: &[u8]) -> ContentHash {
    ContentHash(Sha256::digest(bytes).into())
}

/// How a file is laid out, for finding its YAML part.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Layout {
    /// All YAML (`.prompt.yaml`).
    Manifest,
    /// Front matter between `---` lines, then a body (`.prompt.jinja`,
    /// `.prompty`).
    FrontMatter,
}

/// Part 1 and the `${file:}` half of part 2 of a version's hash: its file
/// (`text` as read, before any normalisation) and the files it names,
/// by reference text.
pub(crate) fn file_digest<'a>(
    text: &str,
    layout: Layout,
    refs: impl IntoIterator<Item = (&'a str, Result<&'a str, &'a str>)>,
) -> ContentHash {
    let text = normalized(text);
    let text = text.as_ref();
    let (yaml, rest) = match layout {
        Layout::Manifest => (text, ""),
        Layout::FrontMatter => split_yaml(text),
    };
    let mut h = Hasher::new("promptbook file 1");
    h.part(without_labels(yaml).as_bytes());
    h.part(rest.as_bytes());
    for (name, read) in refs {
        h.part(name.as_bytes());
        match read {
            Ok(content) => {
                h.part(b"ok");
                h.part(normalized(content).as_bytes());
            }
            Err(why) => {
                h.part(b"error");
                h.part(why.as_bytes());
            }
        }
    }
    h.finish()
}

/// [`file_digest`] for a `.prompty` file, whose labels sit inside
/// `metadata.promptbook.labels`: its front matter is hashed as its parsed
/// value (canonical JSON: keys sorted, no spaces) without them, then its
/// body as written.
pub(crate) fn prompty_digest<'a>(
    front_matter: &serde_json::Value,
    body: &str,
    refs: impl IntoIterator<Item = (&'a str, Result<&'a str, &'a str>)>,
) -> ContentHash {
    let mut fm = front_matter.clone();
    if let Some(ours) = fm
        .get_mut("metadata")
        .and_then(|m| m.get_mut("promptbook"))
        .and_then(serde_json::Value::as_object_mut)
    {
        ours.shift_remove("labels");
    }
    let mut text = String::new();
    canonical(&fm, &mut text);
    let mut h = Hasher::new("promptbook prompty 1");
    h.part(text.as_bytes());
    h.part(normalized(body).as_bytes());
    for (name, read) in refs {
        h.part(name.as_bytes());
        match read {
            Ok(content) => {
                h.part(b"ok");
                h.part(normalized(content).as_bytes());
            }
            Err(why) => {
                h.part(b"error");
                h.part(why.as_bytes());
            }
        }
    }
    h.finish()
}

/// `v` as JSON with object keys sorted, recursively.
fn canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A version's own content: its [`file_digest`] and the text of its `$ref`
/// input schema, when it names one.
pub(crate) fn own_digest(file: ContentHash, schema: Option<&str>) -> ContentHash {
    let mut h = Hasher::new("promptbook own 1");
    h.part(&file.0);
    if let Some(schema) = schema {
        h.part(normalized(schema).as_bytes());
    }
    h.finish()
}

/// A version's hash: its own content and, for each template it depends on
/// (transitively, itself excluded), `NAME@VERSION` and that template's own
/// content, in `NAME@VERSION` order.
pub(crate) fn version_hash(
    own: ContentHash,
    mut dependencies: Vec<(&str, ContentHash)>,
) -> ContentHash {
    dependencies.sort_unstable();
    dependencies.dedup();
    let mut h = Hasher::new("promptbook version 1");
    h.part(&own.0);
    for (id, digest) in dependencies {
        h.part(id.as_bytes());
        h.part(&digest.0);
    }
    h.finish()
}

/// `text` without a byte-order mark, with CR LF and lone CR made LF.
fn normalized(text: &str) -> Cow<'_, str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    crate::load::parse::normalize_newlines(text)
}

/// Splits a front-matter file into its YAML (with both `---` lines) and
/// the rest; a file without front matter is all rest.
fn split_yaml(text: &str) -> (&str, &str) {
    // The first `---` line and the next one; blank lines before the first
    // belong to the YAML part (Prompty allows them).
    let mut offset = 0;
    let mut dashes = 0;
    for line in text.split_inclusive('\n') {
        offset += line.len();
        if line.trim() == "---" {
            dashes += 1;
            if dashes == 2 {
                return text.split_at(offset);
            }
        } else if dashes == 0 && !line.trim().is_empty() {
            break;
        }
    }
    ("", text)
}

/// `yaml` without its top-level `labels` entry: the line that starts with
/// the key at column 0 (`labels:`, `"labels":` or `'labels':`) and every
/// line after it that is blank, indented, a comment or a block-sequence
/// item (`- x`), up to the next line that starts another entry. An entry
/// that holds a `&` (it may define a YAML anchor, which the rest of the
/// file could use as content) is kept: then moving a label changes the
/// hash, which is the safe side.
fn without_labels(yaml: &str) -> Cow<'_, str> {
    let is_key = |line: &str| {
        ["labels", "\"labels\"", "'labels'"].iter().any(|k| {
            line.strip_prefix(k)
                .is_some_and(|rest| rest.trim_start_matches([' ', '\t']).starts_with(':'))
        })
    };
    if !yaml.lines().any(is_key) {
        return Cow::Borrowed(yaml);
    }
    let mut out = String::with_capacity(yaml.len());
    let mut removed = String::new();
    let mut skipping = false;
    for line in yaml.split_inclusive('\n') {
        if is_key(line) {
            skipping = true;
            removed.push_str(line);
            continue;
        }
        if skipping {
            let continues = line.trim().is_empty()
                || line.starts_with([' ', '\t', '#'])
                || line.starts_with("- ")
                || line.trim_end() == "-";
            if continues && line.trim() != "---" {
                removed.push_str(line);
                continue;
            }
            skipping = false;
        }
        out.push_str(line);
    }
    if removed.contains('&') {
        return Cow::Borrowed(yaml);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(text: &str) -> ContentHash {
        file_digest(text, Layout::FrontMatter, [])
    }

    #[test]
    fn labels_in_every_yaml_style_are_left_out_and_nothing_else_is() {
        let bare = "---\nversion: 1.0.0\ndescription: d\n---\nuser:\nhi\n";
        for labelled in [
            "---\nversion: 1.0.0\nlabels: [production]\ndescription: d\n---\nuser:\nhi\n",
            "---\nversion: 1.0.0\nlabels:\n  - production\n  - canary\ndescription: d\n---\nuser:\nhi\n",
            "---\nversion: 1.0.0\nlabels:\n- production\n\n# moved\ndescription: d\n---\nuser:\nhi\n",
            "---\nversion: 1.0.0\ndescription: d\n\"labels\" : [a]\n---\nuser:\nhi\n",
            "---\r\nversion: 1.0.0\r\ndescription: d\r\nlabels: [x]\r\n---\r\nuser:\r\nhi\r\n",
            "\u{feff}---\nversion: 1.0.0\ndescription: d\nlabels:\n---\nuser:\nhi\n",
        ] {
            assert_eq!(digest(labelled), digest(bare), "{labelled:?}");
        }
        for changed in [
            "---\nversion: 1.0.1\ndescription: d\n---\nuser:\nhi\n",
            "---\nversion: 1.0.0\ndescription: d\n---\nuser:\nhi \n",
            "---\nversion: 1.0.0\ndescription: d # why\n---\nuser:\nhi\n",
            // A body line that looks like a labels key is content.
            "---\nversion: 1.0.0\ndescription: d\n---\nlabels: x\nuser:\nhi\n",
        ] {
            assert_ne!(digest(changed), digest(bare), "{changed:?}");
        }
    }

    #[test]
    fn a_labels_entry_that_may_define_an_anchor_is_content() {
        let a =
            "version: 1.0.0\nlabels: [x, &s Say hi]\nmessages:\n  - {role: user, content: *s}\n";
        let b =
            "version: 1.0.0\nlabels: [x, &s Say bye]\nmessages:\n  - {role: user, content: *s}\n";
        assert_ne!(
            file_digest(a, Layout::Manifest, []),
            file_digest(b, Layout::Manifest, [])
        );
    }

    #[test]
    fn prompty_labels_are_left_out_and_the_rest_counts() {
        let fm = |labels: &str, model: &str| -> serde_json::Value {
            serde_json::from_str(&format!(
                r#"{{"name": "x", "metadata": {{"promptbook": {{"labels": [{labels}]}}}}, "model": {{"api": "{model}"}}}}"#
            ))
            .unwrap()
        };
        let d = |v: &serde_json::Value, body: &str| prompty_digest(v, body, []);
        assert_eq!(
            d(&fm(r#""a""#, "chat"), "b"),
            d(&fm(r#""b", "c""#, "chat"), "b")
        );
        assert_ne!(
            d(&fm(r#""a""#, "chat"), "b"),
            d(&fm(r#""a""#, "completion"), "b")
        );
        assert_ne!(
            d(&fm(r#""a""#, "chat"), "b"),
            d(&fm(r#""a""#, "chat"), "b!")
        );
    }

    #[test]
    fn a_labels_key_inside_a_value_is_content() {
        let a = "version: 1.0.0\nparameters:\n  labels: {type: string}\n";
        let b = "version: 1.0.0\nparameters:\n  tags: {type: string}\n";
        assert_ne!(
            file_digest(a, Layout::Manifest, []),
            file_digest(b, Layout::Manifest, [])
        );
    }

    #[test]
    fn read_files_and_dependencies_count() {
        let text = "---\nversion: 1.0.0\n---\n{{ x }}\n";
        let base = file_digest(text, Layout::FrontMatter, []);
        let with = file_digest(text, Layout::FrontMatter, [("a.txt", Ok("one"))]);
        let other = file_digest(text, Layout::FrontMatter, [("a.txt", Ok("two"))]);
        assert_ne!(base, with);
        assert_ne!(with, other);
        let own = own_digest(base, None);
        assert_ne!(own, own_digest(base, Some("{}")));
        let dep = own_digest(with, None);
        assert_eq!(
            version_hash(own, vec![("p@1.0.0", dep), ("q@1.0.0", own)]),
            version_hash(own, vec![("q@1.0.0", own), ("p@1.0.0", dep)]),
        );
        assert_ne!(
            version_hash(own, vec![("p@1.0.0", dep)]),
            version_hash(own, vec![("p@1.0.1", dep)]),
        );
        assert_ne!(version_hash(own, vec![]), own);
    }

    #[test]
    fn hashes_print_and_parse_as_64_hex_characters() {
        let h = digest("---\nversion: 1.0.0\n---\n");
        let shown = h.to_string();
        assert_eq!(shown.len(), 64);
        assert!(
            shown
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(shown.parse::<ContentHash>(), Ok(h));
        assert!("abc".parse::<ContentHash>().is_err());
        assert!("é".repeat(32).parse::<ContentHash>().is_err());
    }
}
