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
//!    apart); comments and formatting count, as every other byte does. The
//!    entry is cut out of the text only when what is left parses to exactly
//!    the same value without `labels`; YAML where no such cut exists (a
//!    flow mapping over several lines, an anchor defined in the labels)
//!    counts as its parsed value without `labels` instead, so no edit can
//!    hide behind the labels. A `.prompty` file keeps its labels in
//!    `metadata.promptbook.labels`: its front matter counts as its parsed
//!    value without them (comments and formatting there do not count), its
//!    body byte for byte;
//! 2. the files it reads: the text of its `$ref` input schema, output
//!    schema, tools and tool parameters, and of every `${file:...}` a
//!    `.prompty` file names;
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

/// Part 1 and the `${file:}` half of part 2 of a version's hash: its
/// YAML (the manifest, or the front matter between its `---` lines), its
/// body (empty for a manifest) and the files it names, by reference text.
/// Text is normalised as the loader reads it (no byte-order mark, LF line
/// endings) before it is hashed.
pub(crate) fn file_digest<'a>(
    yaml: &str,
    body: &str,
    refs: impl IntoIterator<Item = (&'a str, Result<&'a str, &'a str>)>,
) -> ContentHash {
    let yaml = normalized(yaml);
    let mut h = Hasher::new("promptbook file 2");
    match yaml_without_labels(&yaml) {
        YamlContent::Text(text) => {
            h.part(b"text");
            h.part(text.as_bytes());
        }
        YamlContent::Value(json) => {
            h.part(b"value");
            h.part(json.as_bytes());
        }
    }
    h.part(normalized(body).as_bytes());
    hash_refs(&mut h, refs);
    h.finish()
}

fn hash_refs<'a>(
    h: &mut Hasher,
    refs: impl IntoIterator<Item = (&'a str, Result<&'a str, &'a str>)>,
) {
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
}

/// What of a YAML text a hash covers.
#[derive(Debug, PartialEq)]
enum YamlContent<'a> {
    /// The text as written (comments and formatting count), with the
    /// top-level `labels` entry cut out when there was one.
    Text(Cow<'a, str>),
    /// The parsed value without `labels`, as canonical JSON: used when the
    /// `labels` entry cannot be cut out of the text exactly.
    Value(String),
}

/// `yaml` without its top-level `labels` entry.
///
/// The entry is cut out line by line (the line that starts with the key
/// at column 0 and the indented or `- ` lines that continue it), and the
/// cut is accepted only if the text left parses to exactly the value of
/// the whole text without `labels`: so a cut can never drop content, even
/// in YAML a line-wise reading gets wrong (a flow mapping spread over
/// lines, a quoted string whose continuation line starts `labels:`, an
/// anchor defined inside the labels and used elsewhere). When the check
/// fails, the hash covers the parsed value instead (content exactly;
/// comments and formatting of that file's YAML then do not count). A text
/// that does not parse, or has no top-level `labels` key, counts whole.
fn yaml_without_labels(yaml: &str) -> YamlContent<'_> {
    let is_key = |line: &str| {
        ["labels", "\"labels\"", "'labels'"].iter().any(|k| {
            line.strip_prefix(k)
                .is_some_and(|rest| rest.trim_start_matches([' ', '\t']).starts_with(':'))
        })
    };
    if !yaml.lines().any(is_key) {
        return YamlContent::Text(Cow::Borrowed(yaml));
    }
    let parse = |text: &str| -> Option<serde_json::Map<String, serde_json::Value>> {
        let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true };
        match serde_saphyr::from_str_with_options::<serde_json::Value>(text, options) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            _ => None,
        }
    };
    let Some(mut whole) = parse(yaml) else {
        return YamlContent::Text(Cow::Borrowed(yaml));
    };
    if whole.shift_remove("labels").is_none() {
        return YamlContent::Text(Cow::Borrowed(yaml));
    }
    let cut = cut_labels_lines(yaml, is_key);
    if parse(&cut).is_some_and(|rest| rest == whole) {
        return YamlContent::Text(Cow::Owned(cut));
    }
    // Key order kept: it is what the loader reads (parameters list in it).
    YamlContent::Value(serde_json::Value::Object(whole).to_string())
}

/// `yaml` without the lines of every entry whose first line `is_key`
/// accepts: that line, and the lines after it that are indented or start
/// a block-sequence item (`- x`), with blank and comment lines between
/// them; blank and comment lines after the entry's last line stay.
fn cut_labels_lines(yaml: &str, is_key: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(yaml.len());
    let mut pending = String::new();
    let mut skipping = false;
    for line in yaml.split_inclusive('\n') {
        if is_key(line) {
            out.push_str(&pending);
            pending.clear();
            skipping = true;
            continue;
        }
        if skipping {
            if line.trim().is_empty() || line.starts_with('#') {
                pending.push_str(line);
                continue;
            }
            let continues =
                line.starts_with([' ', '\t']) || line.starts_with("- ") || line.trim_end() == "-";
            if continues {
                pending.clear();
                continue;
            }
            skipping = false;
            out.push_str(&pending);
            pending.clear();
        }
        out.push_str(line);
    }
    out.push_str(&pending);
    out
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
    hash_refs(&mut h, refs);
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

/// A version's own content: its [`file_digest`], the text of its `$ref`
/// input schema when it names one, and every other file it names by
/// `$ref` (its output schema, its tools and their parameters), by where it
/// names it, or why it could not be read.
pub(crate) fn own_digest<'a>(
    file: ContentHash,
    schema: Option<&str>,
    others: impl IntoIterator<Item = (&'a str, Result<&'a str, &'a str>)>,
) -> ContentHash {
    let mut h = Hasher::new("promptbook own 1");
    h.part(&file.0);
    if let Some(schema) = schema {
        h.part(normalized(schema).as_bytes());
    }
    for (field, read) in others {
        h.part(field.as_bytes());
        match read {
            Ok(text) => {
                h.part(b"ok");
                h.part(normalized(text).as_bytes());
            }
            Err(why) => {
                h.part(b"error");
                h.part(why.as_bytes());
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A front-matter file's digest, split as the loader splits it.
    fn digest(text: &str) -> ContentHash {
        let text = normalized(text);
        let (yaml, body, _) = crate::load::parse::split_front_matter(&text).unwrap();
        file_digest(yaml, body, [])
    }

    fn manifest(text: &str) -> ContentHash {
        file_digest(text, "", [])
    }

    #[test]
    fn labels_in_every_yaml_style_are_left_out_and_nothing_else_is() {
        let bare = "---\nversion: 1.0.0\ndescription: d\n---\nuser:\nhi\n";
        for labelled in [
            "---\nversion: 1.0.0\nlabels: [production]\ndescription: d\n---\nuser:\nhi\n",
            "---\nversion: 1.0.0\nlabels:\n  - production\n  - canary\ndescription: d\n---\nuser:\nhi\n",
            "---\nversion: 1.0.0\nlabels:\n- production\n\n# moved\n- canary\ndescription: d\n---\nuser:\nhi\n",
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
    fn blank_and_comment_lines_after_the_labels_stay_where_they_were() {
        let with = "version: 1.0.0\nlabels: [a]\n\n# the prompt & its rules\ndescription: d\n";
        let without = "version: 1.0.0\n\n# the prompt & its rules\ndescription: d\n";
        assert_eq!(manifest(with), manifest(without));
    }

    /// Each pair differs only in content the labels line could hide from a
    /// line-wise cut; every pair must hash differently, and moving the
    /// labels in the first of each must not change its hash.
    #[test]
    fn nothing_hides_behind_the_labels() {
        let cases = [
            // A flow mapping with `labels:` at column 0 mid-flow.
            (
                "{version: 1.0.0,\nlabels: [a], messages: [{role: user, content: Say hi}]}\n",
                "{version: 1.0.0,\nlabels: [a], messages: [{role: user, content: Say bye}]}\n",
            ),
            // A quoted string whose continuation line starts `labels:`.
            (
                "version: 1.0.0\nlabels: [a]\ndescription: \"one\nlabels: two\"\n",
                "version: 1.0.0\nlabels: [a]\ndescription: \"one\nlabels: three\"\n",
            ),
            // ... and with no top-level labels at all.
            (
                "version: 1.0.0\ndescription: \"one\nlabels: two\"\n",
                "version: 1.0.0\ndescription: \"one\nlabels: three\"\n",
            ),
            // An anchor defined inside the labels and used as content.
            (
                "version: 1.0.0\nlabels: [a, &s Say hi]\nmessages:\n  - {role: user, content: *s}\n",
                "version: 1.0.0\nlabels: [a, &s Say bye]\nmessages:\n  - {role: user, content: *s}\n",
            ),
        ];
        for (a, b) in cases {
            assert_ne!(manifest(a), manifest(b), "{a:?}");
            if a.contains("labels: [a") {
                let moved = a.replace("labels: [a", "labels: [b");
                assert_eq!(manifest(a), manifest(&moved), "{a:?}");
            }
        }
        // Front matter: a quoted string over lines.
        let fm = |word: &str| {
            format!(
                "---\nversion: 1.0.0\nlabels: [a]\ndescription: \"x\nlabels: {word}\"\n---\nuser:\nhi\n"
            )
        };
        assert_ne!(digest(&fm("one")), digest(&fm("two")));
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
        assert_ne!(manifest(a), manifest(b));
    }

    #[test]
    fn read_files_and_dependencies_count() {
        let (yaml, body) = ("version: 1.0.0\n", "{{ x }}\n");
        let base = file_digest(yaml, body, []);
        let with = file_digest(yaml, body, [("a.txt", Ok("one"))]);
        let other = file_digest(yaml, body, [("a.txt", Ok("two"))]);
        assert_ne!(base, with);
        assert_ne!(with, other);
        let own = own_digest(base, None, []);
        assert_ne!(own, own_digest(base, Some("{}"), []));
        assert_ne!(own, own_digest(base, None, [("output", Ok("{}"))]));
        assert_ne!(
            own_digest(base, None, [("output", Ok("{}"))]),
            own_digest(base, None, [("tools/0", Ok("{}"))])
        );
        let dep = own_digest(with, None, []);
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
