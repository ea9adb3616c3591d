//! Parsing one template file: its format from its name, its front matter
//! or manifest into the fields every format shares ([`Manifest`]), and its
//! body.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use semver::Version;
use serde_saphyr::Spanned;

use crate::dialect::Dialect;
use crate::error::{Error, ErrorKind, Location, line_col};
use crate::reference::validate_name;
use crate::template::{FileForm, Manifest};

/// The formats of template files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `.prompt.yaml` / `.prompt.yml`: everything in YAML.
    Manifest,
    /// `.prompt.jinja`: YAML front matter and a Jinja body.
    Jinja,
    /// `.prompty`: Prompty front matter (mapped by [`super::prompty`])
    /// and a body in Prompty's dialect.
    Prompty,
}

impl Format {
    /// Whether the messages are in YAML or in a body.
    pub(crate) fn form(self) -> FileForm {
        match self {
            Format::Manifest => FileForm::Manifest,
            Format::Jinja | Format::Prompty => FileForm::Body,
        }
    }
}

/// File suffixes of template files, longest first.
pub(crate) const SUFFIXES: [(&str, Format); 4] = [
    (".prompt.yaml", Format::Manifest),
    (".prompt.yml", Format::Manifest),
    (".prompt.jinja", Format::Jinja),
    (".prompty", Format::Prompty),
];

/// A template file, parsed but not yet resolved against its parent.
#[derive(Debug)]
pub(crate) struct SourceFile {
    /// The path as the user will see it in messages (root joined).
    pub path: PathBuf,
    /// The template name (`support/triage`).
    pub name: String,
    pub version: Version,
    pub form: FileForm,
    pub manifest: Manifest,
    /// The Jinja body of a `.prompt.jinja` file.
    pub body: Option<Body>,
    /// Spans in front matter count from its own first line: add this.
    pub span_line_offset: u64,
    /// Native, or a `.prompty` file and its mode.
    pub dialect: Dialect,
    /// Lint warnings found while reading the file.
    pub warnings: Vec<(Location, String)>,
    /// A manifest's text (normalised line endings), to point at a column
    /// inside a YAML value; `None` for other forms.
    pub manifest_text: Option<Arc<str>>,
    /// A `.prompty` file's inputs and the lines of the file that declare
    /// them (its parameters carry no spans: they are mapped from JSON).
    pub input_lines: Vec<(String, u32)>,
    /// The hash of the file and the files it names (`crate::hash`).
    pub digest: crate::hash::ContentHash,
    /// A `.prompty` file's inputs that are optional without a default.
    pub optional_inputs: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct Body {
    pub text: String,
    /// The 1-based line of the file on which the body starts.
    pub first_line: u32,
}

impl SourceFile {
    pub(crate) fn at(&self, line: u64, column: u64) -> Location {
        let line = u32::try_from(line).unwrap_or(u32::MAX);
        let column = u32::try_from(column).ok().filter(|&c| c > 0);
        Location::at(&self.path, line, column)
    }

    /// Where parameter `name`, declared by `spanned`, is written.
    pub(crate) fn param_at<T>(&self, name: &str, spanned: &Spanned<T>) -> Location {
        match self.input_lines.iter().find(|(n, _)| n == name) {
            Some((_, line)) => self.at(u64::from(*line), 0),
            None => self.at_span(spanned),
        }
    }

    pub(crate) fn at_span<T>(&self, spanned: &Spanned<T>) -> Location {
        self.at(
            spanned.referenced.line() + self.span_line_offset,
            spanned.referenced.column(),
        )
    }
}

/// Splits a path relative to the root into template name, the version its
/// file name carries (if any) and its format. `None` when the file is not a
/// template file.
pub(crate) fn classify(rel: &str) -> Option<(String, Option<String>, Format)> {
    let (stem, form) = SUFFIXES
        .iter()
        .find_map(|(suffix, form)| rel.strip_suffix(suffix).map(|stem| (stem, *form)))?;
    let (dir, file) = match stem.rsplit_once('/') {
        Some((dir, file)) => (Some(dir), file),
        None => (None, stem),
    };
    let (file, version) = match file.split_once('@') {
        Some((file, version)) => (file, Some(version.to_owned())),
        None => (file, None),
    };
    let name = match dir {
        Some(dir) => format!("{dir}/{file}"),
        None => file.to_owned(),
    };
    Some((name, version, form))
}

/// Reads the fields (and body) of one template file.
pub(crate) fn parse_file(
    path: &Path,
    rel: &str,
    bytes: Vec<u8>,
    refs: &super::walk::FileRefs,
) -> Result<SourceFile, Vec<Error>> {
    let (name, stem_version, format) =
        classify(rel).ok_or_else(|| vec![Error::new(ErrorKind::Syntax, "not a template file")])?;
    let form = format.form();
    let file_loc = || Location::file(path);
    let text =
        String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            let col =
                valid.len() - valid.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
            vec![
                Error::new(ErrorKind::Syntax, "file is not valid UTF-8")
                    .with_location(Location::at(path, line as u32, Some(col as u32))),
            ]
        })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    // Content must not depend on how the file was saved: CR LF and a lone
    // CR are line breaks, as editors show them (line numbers stay those
    // of the file).
    let text = normalize_newlines(text);
    let text = text.as_ref();
    if let Err(msg) = validate_name(&name) {
        return Err(vec![
            Error::new(ErrorKind::Syntax, format!("bad template name: {msg}"))
                .or_location(file_loc),
        ]);
    }
    if let Some(bad) = text.find(['\0', crate::body::MARK_OPEN, crate::body::MARK_CLOSE]) {
        let (line, col) = line_col(text, bad);
        let what = match text[bad..].chars().next() {
            Some('\0') => "a NUL byte".to_owned(),
            Some(c) => format!("the reserved character U+{:04X}", c as u32),
            None => "a reserved character".to_owned(),
        };
        return Err(vec![
            Error::new(ErrorKind::Syntax, format!("file contains {what}"))
                .with_location(Location::at(path, line, Some(col))),
        ]);
    }

    let mut dialect = Dialect::NATIVE;
    let mut file_warnings = Vec::new();
    let mut mapped_manifest = None;
    let mut input_lines = Vec::new();
    let mut optional_inputs = Vec::new();
    let mut prompty_digest = None;
    let (yaml, yaml_first_line, body) = match format {
        Format::Manifest => (text, 1, None),
        Format::Prompty => {
            // Prompty allows a file without front matter: all body.
            let (fm_text, body, first, yaml_first) =
                split_prompty_front_matter(text).unwrap_or(("", text, 1, 1));
            let fm = super::prompty::read_front_matter(fm_text)
                .map_err(|e| yaml_error(path, fm_text, e, yaml_first))?;
            prompty_digest = Some(crate::hash::prompty_digest(
                &fm,
                body,
                refs.iter()
                    .map(|(name, read)| (name.as_str(), read.as_deref().map_err(String::as_str))),
            ));
            let mapped = super::prompty::map_front_matter(&fm, stem_version.as_deref(), refs)
                .map_err(|msg| {
                    vec![
                        Error::new(ErrorKind::Syntax, msg).with_location(Location::at(
                            path,
                            1,
                            Some(1),
                        )),
                    ]
                })?;
            dialect = mapped.dialect;
            optional_inputs = mapped.optional_inputs;
            input_lines = super::prompty::input_lines(fm_text)
                .into_iter()
                .map(|(n, l)| (n, l + yaml_first - 1))
                .collect();
            file_warnings = mapped
                .warnings
                .into_iter()
                .map(|w| (Location::at(path, 1, Some(1)), w))
                .collect();
            // The mapped fields are read straight from the JSON, not
            // printed and parsed again.
            mapped_manifest = Some(mapped.manifest);
            // Prompty's runtime takes the body after all the whitespace that
            // follows the front matter (`---\s*(.+)`): leading blank lines
            // and the first line's indentation go. Lines keep their numbers.
            let kept = body.trim_start();
            let skipped = &body[..body.len() - kept.len()];
            let newlines = u32::try_from(skipped.matches('\n').count()).unwrap_or(0);
            (
                "",
                1,
                Some(Body {
                    text: kept.to_owned(),
                    first_line: first + newlines,
                }),
            )
        }
        Format::Jinja => {
            let (yaml, body, first) = split_front_matter(text).ok_or_else(|| {
                vec![
                    Error::new(
                        ErrorKind::Syntax,
                        "a .prompt.jinja file starts with YAML front matter between `---` lines",
                    )
                    .with_location(Location::at(path, 1, Some(1))),
                ]
            })?;
            (
                yaml,
                2,
                Some(Body {
                    text: body.to_owned(),
                    first_line: first,
                }),
            )
        }
    };

    let digest = prompty_digest.unwrap_or_else(|| {
        crate::hash::file_digest(
            yaml,
            body.as_ref().map_or("", |b| b.text.as_str()),
            refs.iter()
                .map(|(name, read)| (name.as_str(), read.as_deref().map_err(String::as_str))),
        )
    });
    let manifest: Manifest = match mapped_manifest {
        Some(json) => serde_json::from_value(json).map_err(|e| {
            vec![
                Error::new(ErrorKind::Syntax, format!("the Prompty front matter: {e}"))
                    .with_location(Location::at(path, 1, Some(1))),
            ]
        })?,
        None => {
            // YAML 1.2's booleans only (`true`, `false`): `NO` (Norway),
            // `y` and `on` are the strings they look like, as in test
            // files and `.prompty` front matter.
            let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true };
            serde_saphyr::from_str_with_options(yaml, options)
                .map_err(|e| yaml_error(path, yaml, e, yaml_first_line))?
        }
    };
    let mut source = SourceFile {
        path: path.to_owned(),
        name,
        version: Version::new(0, 0, 0),
        form,
        manifest,
        body,
        span_line_offset: u64::from(yaml_first_line - 1),
        dialect,
        warnings: file_warnings,
        manifest_text: (format == Format::Manifest).then(|| Arc::from(text)),
        input_lines,
        optional_inputs,
        digest,
    };

    let mut errors = Vec::new();
    let version_text = source.manifest.version.value.trim().to_owned();
    match Version::parse(&version_text) {
        // Semver leaves build metadata out of precedence (semver.org, 10):
        // `1.0.0+x` and `1.0.0` would be one version, and whichever loaded
        // would answer `@1.0.0` and `^1`.
        Ok(v) if !v.build.is_empty() => errors.push(
            Error::new(
                ErrorKind::Syntax,
                format!(
                    "version `{version_text}` has build metadata (`+{}`): semver ignores it when ordering versions, so it cannot tell two template versions apart; use a pre-release (`{}-{}`) or a new version",
                    v.build,
                    Version::new(v.major, v.minor, v.patch),
                    v.build
                ),
            )
            .with_location(source.at_span(&source.manifest.version)),
        ),
        Ok(v) => source.version = v,
        Err(e) => errors.push(
            Error::new(
                ErrorKind::Syntax,
                format!("version `{version_text}` is not a semver version (MAJOR.MINOR.PATCH)"),
            )
            .with_location(source.at_span(&source.manifest.version))
            .with_source(e),
        ),
    }
    if let (Some(stem), true) = (&stem_version, errors.is_empty())
        && Version::parse(stem).ok().as_ref() != Some(&source.version)
    {
        errors.push(
            Error::new(
                ErrorKind::Conflict,
                format!(
                    "file name says version `{stem}` but the `version:` field says `{}`",
                    source.version
                ),
            )
            .with_location(source.at_span(&source.manifest.version)),
        );
    }
    if let Some(labels) = &source.manifest.labels {
        for label in &labels.value {
            if !crate::reference::is_label(label) {
                errors.push(
                    Error::new(
                        ErrorKind::Syntax,
                        format!(
                            "label `{label}` is not an identifier (a letter, then letters, digits, `_`, `-`, `.`)"
                        ),
                    )
                    .with_location(source.at_span(labels)),
                );
            }
        }
    }
    if form == FileForm::Body {
        for (field, present) in [
            ("messages", source.manifest.messages.is_some()),
            ("blocks", source.manifest.blocks.is_some()),
        ] {
            if present {
                errors.push(
                    Error::new(
                        ErrorKind::Syntax,
                        format!(
                            "`{field}:` belongs in a .prompt.yaml manifest; a .prompt.jinja file writes its messages in the body"
                        ),
                    )
                    .with_location(Location::at(path, 1, Some(1))),
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(source)
    } else {
        Err(errors)
    }
}

/// `text` with every CR LF and every lone CR turned into LF.
pub(crate) fn normalize_newlines(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\r') {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
}

/// A `.prompty` file's front matter: as [`split_front_matter`], after any
/// blank lines and with the `---` lines indented or not, as Prompty's
/// runtime finds it (`^\s*---`). Returns the YAML, the body, the 1-based
/// line the body starts on and the line the YAML starts on.
pub(crate) fn split_prompty_front_matter(text: &str) -> Option<(&str, &str, u32, u32)> {
    let mut skipped = 0;
    let mut blank_lines = 0u32;
    for line in text.split_inclusive('\n') {
        if !line.trim().is_empty() {
            break;
        }
        skipped += line.len();
        blank_lines += 1;
    }
    let (yaml, body, body_line) = split_at_dashes(&text[skipped..], |l| l.trim() == "---")?;
    Some((yaml, body, blank_lines + body_line, blank_lines + 2))
}

/// Splits `---\nYAML\n---\nBODY`. Returns the YAML, the body and the 1-based
/// line the body starts on.
pub(crate) fn split_front_matter(text: &str) -> Option<(&str, &str, u32)> {
    split_at_dashes(text, |l| l.trim_end() == "---")
}

/// `text` split at its first line and the next one that `is_dashes`
/// accepts: the YAML between, the body after, and the 1-based line the
/// body starts on. `None` when the first line is not one or none follows.
fn split_at_dashes(text: &str, is_dashes: fn(&str) -> bool) -> Option<(&str, &str, u32)> {
    let mut lines = text.split_inclusive('\n');
    let first = lines.next()?;
    if !is_dashes(first) {
        return None;
    }
    let yaml_start = first.len();
    let mut offset = yaml_start;
    let mut line_no = 1u32;
    for line in lines {
        line_no += 1;
        if is_dashes(line) {
            let yaml = &text[yaml_start..offset];
            let body = &text[offset + line.len()..];
            return Some((yaml, body, line_no + 1));
        }
        offset += line.len();
    }
    None
}

/// A YAML error in `yaml` as a load error at its line of the file, given
/// the line the YAML starts on.
fn yaml_error(path: &Path, yaml: &str, e: serde_saphyr::Error, first_line: u32) -> Vec<Error> {
    let (location, found) = match e.location() {
        Some(l) if l.line() > 0 => {
            // The character the parser stopped at, for the hint.
            let found = usize::try_from(l.line())
                .ok()
                .and_then(|n| yaml.lines().nth(n.checked_sub(1)?))
                .and_then(|line| {
                    let col = usize::try_from(l.column()).ok()?.checked_sub(1)?;
                    line.chars().nth(col)
                });
            (
                Location::at(
                    path,
                    (l.line() as u32).saturating_add(first_line - 1),
                    Some(l.column() as u32),
                ),
                found,
            )
        }
        _ => (Location::file(path), None),
    };
    vec![
        Error::new(ErrorKind::Syntax, yaml_message(&e, found))
            .with_location(location)
            .with_source(e),
    ]
}

/// The message of a YAML error without serde-saphyr's own location suffix
/// (we print `path:line:col:` in front) or its advice about parser options,
/// with a hint when `found` (the character it stopped at) makes one.
fn yaml_message(e: &serde_saphyr::Error, found: Option<char>) -> String {
    let mut msg = e.without_snippet().to_string();
    if let Some(pos) = msg.rfind(" at line ")
        && msg[pos..].contains(", column ")
    {
        msg.truncate(pos);
    }
    if let Some(pos) = msg.find(", set DuplicateKeyPolicy") {
        msg.truncate(pos);
    }
    msg.push_str(yaml_hint(&msg, found));
    msg
}

/// What to do about the YAML mistakes template authors make most: an
/// unquoted value that starts with `{` (Jinja's `{{` reads as a YAML map)
/// or `[` (a list), and an unquoted value holding `: ` (a nested key).
fn yaml_hint(message: &str, found: Option<char>) -> &'static str {
    let lower = message.to_ascii_lowercase();
    let not_a_string = lower.contains("expected string scalar")
        || ((lower.contains("invalid type: map") || lower.contains("invalid type: sequence"))
            && lower.contains("string"));
    if not_a_string && (found == Some('{') || lower.contains("invalid type: map")) {
        "; a value that starts with `{` is a YAML map: quote Jinja, as in \
         `content: \"{{ message }}\"`"
    } else if not_a_string && (found == Some('[') || lower.contains("invalid type: sequence")) {
        "; a value that starts with `[` is a YAML list: quote it, as in \
         `content: \"[draft] {{ text }}\"`"
    } else if not_a_string {
        "; quote the value to make it a string"
    } else if lower.contains("mapping values are not allowed") {
        "; an unquoted value holding `: ` starts a nested key: quote the value, as in \
         `description: \"Note: ...\"`"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_names_and_versions() {
        assert_eq!(
            classify("support/triage.prompt.yaml"),
            Some(("support/triage".into(), None, Format::Manifest))
        );
        assert_eq!(
            classify("support/triage@1.0.0.prompt.jinja"),
            Some(("support/triage".into(), Some("1.0.0".into()), Format::Jinja))
        );
        assert_eq!(
            classify("a.prompt.yml"),
            Some(("a".into(), None, Format::Manifest))
        );
        assert_eq!(classify("notes.md"), None);
        assert_eq!(classify("providers.yaml"), None);
    }

    #[test]
    fn front_matter_split() {
        let (yaml, body, first) =
            split_front_matter("---\nversion: 1.0.0\n---\nuser:\nhi\n").unwrap();
        assert_eq!(yaml, "version: 1.0.0\n");
        assert_eq!(body, "user:\nhi\n");
        assert_eq!(first, 4);
        assert!(split_front_matter("version: 1\n").is_none());
        assert!(split_front_matter("---\nversion: 1\n").is_none());
        // Prompty's runtime finds front matter after blank lines, and its
        // `---` lines may be indented; lines are counted from the file's.
        assert_eq!(
            split_prompty_front_matter("\n \n  ---\n  name: x\n  ---\nuser:\nhi\n"),
            Some(("  name: x\n", "user:\nhi\n", 6, 4))
        );
        assert_eq!(
            split_prompty_front_matter("---\nname: x\n---\nhi\n"),
            Some(("name: x\n", "hi\n", 4, 2))
        );
        assert!(split_prompty_front_matter("text\n---\nname: x\n---\n").is_none());
        assert!(split_front_matter("\n---\nname: x\n---\n").is_none());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes under either suffix give a file or errors, never a
        /// panic, and every error says where.
        #[test]
        fn parsing_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            prefix in prop_oneof![
                Just(b"".to_vec()),
                Just(b"---\nversion: 1.0.0\n---\n".to_vec()),
                Just(b"version: 1.0.0\nmessages:\n  - ".to_vec()),
            ],
            jinja in any::<bool>(),
        ) {
            let mut data = prefix;
            data.extend(bytes);
            let rel = if jinja { "t.prompt.jinja" } else { "t.prompt.yaml" };
            if let Err(errors) = parse_file(Path::new(rel), rel, data, &Default::default()) {
                prop_assert!(!errors.is_empty());
                for e in errors {
                    prop_assert!(e.location().is_some());
                }
            }
        }
    }
}
