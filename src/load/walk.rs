//! Which files a load reads, and reading them: the only stage of loading
//! that touches the file system.
//!
//! The root is walked recursively, in file-name order. Hidden files and
//! folders (a name starting with `.`) are skipped, and so is every file
//! whose name is not a template's (`*.prompt.yaml`, `*.prompt.yml`,
//! `*.prompt.jinja`, `*.prompty`), whatever its name (one that is not
//! UTF-8 included). A template file is read when it is a regular file, or
//! a symlink to one inside the root; only regular files are opened, never
//! blocking, and none over 8 MiB (see [`crate::file`]). Files are read on
//! all cores. The `$ref` schema a template names is read here too, under
//! the same rules, so that no later (memoised) stage reads anything.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, ErrorKind, Location};
use crate::load::parse::{self, SourceFile};

/// A template file as read.
pub(crate) struct File {
    /// The path as the user will see it in messages (root joined).
    pub path: PathBuf,
    /// The path relative to the root, `/`-separated.
    pub rel: String,
    pub bytes: Vec<u8>,
}

/// A `$ref` input schema as read: its path and text, or why it could not
/// be read.
pub(crate) type SchemaFile = Result<(PathBuf, String), String>;

/// The files a template names by `$ref`, by where it names them
/// (`input_schema`, `output`, `tools/0`, `tools/0/parameters`), in that
/// order.
pub(crate) type RefFiles = Vec<(String, SchemaFile)>;

/// The file a `$ref` names, in `files`, by where it was named.
pub(crate) fn ref_file<'a>(files: Option<&'a RefFiles>, field: &str) -> Option<&'a SchemaFile> {
    files?
        .iter()
        .find(|(f, _)| f == field)
        .map(|(_, file)| file)
}

/// A `$ref` file's value: YAML for `.yaml` and `.yml`, JSON otherwise.
pub(crate) fn ref_value(path: &Path, text: &str) -> Result<Value, String> {
    let yaml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    if yaml {
        let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true };
        serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| {
            format!(
                "{} is not valid YAML: {}",
                path.display(),
                e.without_snippet()
            )
        })
    } else {
        serde_json::from_str::<Value>(text)
            .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))
    }
}

/// Where a load reads its files from.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    /// A directory on disk.
    Dir(&'a Path),
    /// Files given in memory: path relative to the root (`/`-separated)
    /// to contents.
    Memory(&'a std::collections::BTreeMap<String, String>),
}

impl Source<'_> {
    /// The root's path, as messages show it (empty for files in memory).
    pub(crate) fn root(&self) -> &Path {
        match self {
            Source::Dir(root) => root,
            Source::Memory(_) => Path::new(""),
        }
    }

    /// The template files; see the module docs. Problems with single
    /// files go to `errors`.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when a root directory itself cannot be read.
    pub(crate) fn read_files(&self, errors: &mut Vec<Error>) -> Result<Vec<File>, Error> {
        match self {
            Source::Dir(root) => read_files(root, errors),
            Source::Memory(files) => Ok(files
                .iter()
                .filter(|(rel, _)| parse::classify(rel).is_some())
                .map(|(rel, text)| File {
                    path: PathBuf::from(rel),
                    rel: rel.clone(),
                    bytes: text.clone().into_bytes(),
                })
                .collect()),
        }
    }

    /// Reads the file `r` names, relative to the template file at
    /// `template`, under the walk's rules (inside the root, regular, at
    /// most 8 MiB). `what` names it in messages (`input schema`).
    pub(crate) fn read_relative(
        &self,
        template: &Path,
        rel: &str,
        r: &str,
        what: &str,
    ) -> Result<(PathBuf, String), String> {
        let refuse = || format!("{what} `{r}` leads outside the template root; refused");
        if r.contains(['\\', '\0']) || Path::new(r).is_absolute() {
            return Err(refuse());
        }
        match self {
            Source::Dir(root) => {
                let path = template.parent().unwrap_or(Path::new(".")).join(r);
                let (Ok(real_root), Ok(real)) = (root.canonicalize(), path.canonicalize()) else {
                    return Err(format!(
                        "cannot read {what} {}: no such file",
                        path.display()
                    ));
                };
                if !real.starts_with(&real_root) {
                    return Err(refuse());
                }
                crate::file::read_text(&path, crate::file::MAX_FILE_BYTES)
                    .map(|text| (path.clone(), text))
                    .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
            }
            Source::Memory(files) => {
                // `..` and `.` resolved by hand: there is no disk to ask.
                let mut parts: Vec<&str> = rel.split('/').collect();
                parts.pop();
                for segment in r.split('/') {
                    match segment {
                        "" | "." => {}
                        ".." => {
                            parts.pop().ok_or_else(refuse)?;
                        }
                        s => parts.push(s),
                    }
                }
                let key = parts.join("/");
                files
                    .get(&key)
                    .map(|text| (PathBuf::from(&key), text.clone()))
                    .ok_or_else(|| format!("cannot read {what} {key}: no such file"))
            }
        }
    }

    /// Reads the files a template names by `{$ref: PATH}` (a `$ref` to a
    /// definition inside a schema, `#...`, reads nothing): its
    /// `input_schema`, its `output`, each entry of `tools` and each tool's
    /// `parameters`, by where they are named (`input_schema`, `output`,
    /// `tools/0`, `tools/0/parameters`).
    pub(crate) fn read_refs(&self, src: &SourceFile, rel: &str) -> RefFiles {
        let m = &src.manifest;
        let mut named: Vec<(String, &Value)> = Vec::new();
        if let Some(v) = &m.input_schema {
            named.push(("input_schema".into(), &v.value));
        }
        if let Some(v) = &m.output {
            named.push(("output".into(), &v.value));
        }
        if let Some(Value::Array(tools)) = m.tools.as_ref().map(|t| &t.value) {
            for (i, tool) in tools.iter().enumerate() {
                named.push((format!("tools/{i}"), tool));
                if let Some(p) = tool.get("parameters") {
                    named.push((format!("tools/{i}/parameters"), p));
                }
            }
        }
        let mut out = RefFiles::new();
        for (field, value) in named {
            let Some(r) = value
                .get("$ref")
                .and_then(Value::as_str)
                .filter(|r| !r.starts_with('#'))
            else {
                continue;
            };
            let what = match field.as_str() {
                "input_schema" => "input schema".to_owned(),
                "output" => "output schema".to_owned(),
                f if f.ends_with("/parameters") => "tool parameters schema".to_owned(),
                _ => "tool".to_owned(),
            };
            out.push((field, self.read_relative(&src.path, rel, r, &what)));
        }
        out
    }

    /// The files a `.prompty` front matter names with `${file:PATH}`, read
    /// (or why not), by PATH.
    pub(crate) fn read_file_refs(&self, file: &File) -> FileRefs {
        let mut refs = FileRefs::new();
        if parse::classify(&file.rel).map(|(_, _, f)| f) != Some(parse::Format::Prompty) {
            return refs;
        }
        let Ok(text) = std::str::from_utf8(&file.bytes) else {
            return refs;
        };
        // Split as the parser splits: after the byte-order mark, with CR
        // LF and lone CR as line breaks.
        let text = parse::normalize_newlines(text.trim_start_matches('\u{feff}'));
        let front = parse::split_prompty_front_matter(&text).map_or("", |(fm, ..)| fm);
        let mut rest = front;
        while let Some(at) = rest.find("${file:") {
            let after = &rest[at + 7..];
            let Some(end) = after.find('}') else { break };
            let r = after[..end].trim();
            if !refs.contains_key(r) {
                refs.insert(
                    r.to_owned(),
                    self.read_relative(&file.path, &file.rel, r, "`${file:}` reference")
                        .map(|(_, text)| text),
                );
            }
            rest = &after[end..];
        }
        refs
    }
}

/// The files a `.prompty` front matter references, by the path written.
pub(crate) type FileRefs = std::collections::BTreeMap<String, Result<String, String>>;

fn root_error(root: &Path, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("cannot read template root {}", root.display()),
    )
    .with_source(e)
}

/// Reads the template files under `root`.
fn read_files(root: &Path, errors: &mut Vec<Error>) -> Result<Vec<File>, Error> {
    let meta = std::fs::metadata(root).map_err(|e| root_error(root, e))?;
    if !meta.is_dir() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("template root {} is not a directory", root.display()),
        ));
    }
    let canonical_root = root.canonicalize().map_err(|e| root_error(root, e))?;
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e
                    .path()
                    .map(Path::to_owned)
                    .unwrap_or_else(|| root.to_owned());
                let why = e
                    .io_error()
                    .map_or_else(|| e.to_string(), ToString::to_string);
                errors.push(
                    Error::new(ErrorKind::Io, format!("cannot read: {why}"))
                        .with_location(Location::file(path)),
                );
                continue;
            }
        };
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        // Files that are not templates are ignored, whatever their name;
        // a template whose name is not UTF-8 is a problem of its own.
        let lossy = rel
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        if parse::classify(&lossy).is_none() {
            continue;
        }
        let Some(rel) = rel
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.join("/"))
        else {
            errors.push(
                Error::new(
                    ErrorKind::Syntax,
                    "file name is not valid UTF-8; rename it to load it",
                )
                .with_location(Location::file(path)),
            );
            continue;
        };
        if ft.is_symlink() {
            match path.canonicalize() {
                Ok(target) if target.starts_with(&canonical_root) && target.is_file() => {}
                Ok(_) | Err(_) => {
                    errors.push(
                        Error::new(
                            ErrorKind::Io,
                            "symlink leads outside the template root (or nowhere, or not to a regular file); refused",
                        )
                        .with_location(Location::file(path)),
                    );
                    continue;
                }
            }
        } else if !ft.is_file() {
            errors.push(
                Error::new(
                    ErrorKind::Io,
                    format!(
                        "{} is named like a template but only regular files are read; refused",
                        crate::file::describe(ft)
                    ),
                )
                .with_location(Location::file(path)),
            );
            continue;
        }
        files.push((path.to_owned(), rel));
    }
    // Reading is per file: all cores.
    let read = crate::par::map(&files, |(path, _)| {
        crate::file::read_regular(path, crate::file::MAX_FILE_BYTES)
    });
    let mut out = Vec::with_capacity(files.len());
    for ((path, rel), bytes) in files.into_iter().zip(read) {
        match bytes {
            Ok(bytes) => out.push(File { path, rel, bytes }),
            // The reason goes in the message: diagnostics show no sources.
            Err(e) => errors.push(
                Error::new(ErrorKind::Io, format!("cannot read: {e}"))
                    .with_location(Location::file(&path)),
            ),
        }
    }
    Ok(out)
}
