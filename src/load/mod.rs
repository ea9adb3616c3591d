//! Loading a template root: every file read, parsed, resolved against its
//! parent, compiled and linted, into the catalog a [`Registry`] holds.
//!
//! The pipeline, one file per stage:
//!
//! 1. [`walk`]: the file walk and its policy (which files, symlinks inside
//!    the root only, regular files only, size caps), and every read,
//!    `$ref` schemas included;
//! 2. [`parse`]: a file's front matter or manifest into a [`SourceFile`]
//!    ([`prompty`] maps a `.prompty` front matter onto the same fields);
//! 3. [`inherit`]: `extends:` applied, parents first: parameters, input
//!    schema, model and context;
//! 4. [`compile`]: the Jinja source (role lines into markers, manifests
//!    into bodies), the typed model and context, the compiled input
//!    schema, into a registry [`Entry`];
//! 5. [`lint`]: Jinja compiled, undeclared variables, unresolved includes,
//!    unused parameters.
//!
//! Three of these steps are memoised across loads in one process (a hot
//! reload redoes only what changed); the memos and their keys are below,
//! side by side. The rule they keep: **a key covers every byte its step
//! reads, and a memoised step does no I/O of its own** (everything is read
//! by [`walk`] first and hashed into the keys).

pub(crate) mod compile;
pub(crate) mod declared;
pub(crate) mod inherit;
pub(crate) mod isolate;
pub(crate) mod lint;
pub(crate) mod parse;
pub(crate) mod prompty;
pub(crate) mod stamp;
pub(crate) mod static_prefix;
pub(crate) mod targets;
pub(crate) mod walk;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use semver::Version;

use crate::error::{Diagnostic, Error, ErrorKind, Location, Severity};
use crate::memo::Memo;
use crate::registry::{Entry, FastMap, Registry};
use parse::SourceFile;
pub(crate) use walk::Source;

/// What a load does with a template that does not load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failures {
    /// The load fails, listing every problem: what production and CI want
    /// ([`Registry::load`]).
    #[default]
    Fail,
    /// The template is left out, with everything that extends, includes
    /// or imports it; the rest loads, and
    /// [`Registry::diagnostics`] says what was left out and why: what a
    /// developer exploring a folder of prompts wants.
    Isolate,
}

/// How [`Registry::load_with`] and [`Registry::from_files_with`] load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// What a template that does not load does to the rest.
    pub failures: Failures,
    /// Files a writer still holds open (hot reload, on Linux): each is a
    /// problem of its own file, so that an isolating load leaves it out and
    /// a reload keeps serving its last good version until it is closed.
    pub(crate) being_written: Vec<PathBuf>,
}

impl LoadOptions {
    /// The defaults: a strict load.
    pub fn new() -> LoadOptions {
        LoadOptions::default()
    }

    /// An isolating load ([`Failures::Isolate`]).
    pub fn isolate() -> LoadOptions {
        LoadOptions::new().failures(Failures::Isolate)
    }

    /// Sets what a template that does not load does to the rest.
    pub fn failures(mut self, failures: Failures) -> LoadOptions {
        self.failures = failures;
        self
    }
}

/// A template's identity while loading: name and version.
pub(crate) type Key = (String, Version);

// ------------------------------------------------------------------ memos

/// Parsed files, by [`file_key`].
pub(crate) static PARSED: Memo<Arc<SourceFile>> = Memo::new(20_000);

/// What a parse reads: the path as shown, the name it is loaded under, the
/// bytes, and the files its `${file:}` references name (read by [`walk`]).
pub(crate) fn file_key(path: &Path, rel: &str, bytes: &[u8], refs: &walk::FileRefs) -> u128 {
    let mut parts: Vec<&[u8]> = vec![path.as_os_str().as_encoded_bytes(), rel.as_bytes(), bytes];
    for (r, read) in refs {
        parts.push(r.as_bytes());
        match read {
            Ok(text) => parts.extend([&b"\0ok"[..], text.as_bytes()]),
            Err(message) => parts.extend([&b"\0error"[..], message.as_bytes()]),
        }
    }
    crate::memo::key(&parts)
}

/// What resolving a file reads beyond its parent: the file ([`file_key`])
/// and the files it names by `$ref` (read by [`walk`]).
pub(crate) fn content_key(file_key: u128, refs: &walk::RefFiles) -> u128 {
    let key = file_key.to_le_bytes();
    let mut parts: Vec<&[u8]> = vec![&key];
    for (field, read) in refs {
        parts.push(field.as_bytes());
        match read {
            Ok((path, text)) => {
                parts.extend([path.as_os_str().as_encoded_bytes(), text.as_bytes()])
            }
            Err(message) => parts.extend([&b"\0error"[..], message.as_bytes()]),
        }
    }
    crate::memo::key(&parts)
}

/// Resolved templates, by [`resolved_key`]: the same content under the
/// same parent resolves the same.
pub(crate) static RESOLVED: Memo<Arc<inherit::Resolved>> = Memo::new(20_000);

/// A template's content key and its parent's resolved key.
pub(crate) fn resolved_key(content_key: u128, parent: Option<&inherit::Resolved>) -> u128 {
    crate::memo::key(&[
        &content_key.to_le_bytes(),
        &parent.map_or(0, |p| p.memo_key).to_le_bytes(),
    ])
}

/// Registry entries, by the [`resolved_key`] they were compiled from:
/// everything compiling reads is in the resolved template and its file.
pub(crate) static ENTRIES: Memo<Arc<Entry>> = Memo::new(20_000);

/// Entries with the parameters of what they include adopted, by the memo
/// keys of the entry and of every template it includes.
pub(crate) static ADOPTED: Memo<Arc<Entry>> = Memo::new(20_000);

/// Variables a compiled Jinja source reads without setting them, by the
/// hash of the source (all that compiling it reads).
pub(crate) static CHECKED: Memo<Arc<std::collections::HashSet<String>>> = Memo::new(20_000);

// ----------------------------------------------------------------- driver

/// What loading a root found: the registry when it could be built, every
/// error and every warning.
pub(crate) struct Analysis {
    pub registry: Option<Registry>,
    pub errors: Vec<Error>,
    pub warnings: Vec<Diagnostic>,
}

/// Parsed files, with what their memo keys need.
pub(crate) struct Parsed {
    pub sources: FastMap<Key, Arc<SourceFile>>,
    /// Each file's [`content_key`].
    pub content_keys: FastMap<Key, u128>,
    /// The `$ref` schema each file names, as read.
    pub ref_files: FastMap<Key, walk::RefFiles>,
}

/// Analyses a root: everything `load` and `lint` report. With
/// [`Failures::Isolate`], the registry holds what loaded (see
/// [`isolate`]); otherwise every compiled template.
pub(crate) fn analyze(source: Source<'_>, options: &LoadOptions) -> Result<Analysis, Error> {
    let failures = options.failures;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut files = source.read_files(&mut errors)?;
    // The same file, however its path was spelt (the watcher's events and
    // the walk may join the root differently).
    let being_written: Vec<PathBuf> = options
        .being_written
        .iter()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .collect();
    files.retain(|f| {
        let open = !being_written.is_empty()
            && being_written.iter().any(|w| {
                w.file_name() == f.path.file_name() && f.path.canonicalize().is_ok_and(|c| c == *w)
            });
        if open {
            errors.push(
                Error::new(
                    ErrorKind::Io,
                    "still open for writing (a save in progress): its last good version is \
                     served until the file is closed",
                )
                .with_location(Location::file(&f.path)),
            );
        }
        !open
    });
    let parsed = parse_all(source, &files, &mut errors, &mut warnings);
    let versions = versions_and_labels(&parsed.sources, &mut errors);
    let inherited = inherit::resolve_all(&parsed, versions.clone(), &mut errors);
    let index = compile::compile_all(&parsed, &inherited, &mut errors);
    let index = Arc::new(index);
    let env = crate::jinja::environment(index.clone(), &crate::limits::RenderLimits::default());
    lint::lint_all(
        &env,
        &index,
        &parsed,
        &inherited,
        source.root(),
        &mut errors,
        &mut warnings,
    );

    errors.sort_by(|a, b| a.location().cmp(&b.location()));
    warnings.sort_by(|a, b| a.location().cmp(b.location()));
    let root = source.root().to_owned();
    let registry = match failures {
        Failures::Isolate if !errors.is_empty() => {
            let isolated = isolate::isolate(&index, &errors, &parsed, &versions, &root);
            let index = Arc::new(isolated.index);
            let env =
                crate::jinja::environment(index.clone(), &crate::limits::RenderLimits::default());
            let diagnostics: Vec<Diagnostic> = errors
                .iter()
                .flat_map(|e| e.problems())
                .map(|e| Diagnostic::from_error(e, &root))
                .chain(isolated.notes)
                .collect();
            Registry::from_index(root, index, env, warnings.clone())
                .with_outcome(diagnostics, isolated.left_out)
        }
        _ => Registry::from_index(root, index, env, warnings.clone()),
    };
    Ok(Analysis {
        registry: Some(registry),
        errors,
        warnings,
    })
}

/// Parses every file (on all cores, memoised), reads the `$ref` schemas
/// they name, and reports a name and version defined twice.
fn parse_all(
    source: Source<'_>,
    files: &[walk::File],
    errors: &mut Vec<Error>,
    warnings: &mut Vec<Diagnostic>,
) -> Parsed {
    let mut out = Parsed {
        sources: FastMap::default(),
        content_keys: FastMap::default(),
        ref_files: FastMap::default(),
    };
    let parsed = crate::par::map(files, |file| {
        let refs = source.read_file_refs(file);
        let key = file_key(&file.path, &file.rel, &file.bytes, &refs);
        let result = match PARSED.get(key) {
            Some(src) => Ok(src),
            None => {
                parse::parse_file(&file.path, &file.rel, file.bytes.clone(), &refs).map(|src| {
                    let src = Arc::new(src);
                    PARSED.put(key, src.clone());
                    src
                })
            }
        };
        let refs = result
            .as_ref()
            .map(|src| source.read_refs(src, &file.rel))
            .unwrap_or_default();
        (key, result, refs)
    });
    for (file_key, result, refs) in parsed {
        let src = match result {
            Ok(src) => src,
            Err(mut errs) => {
                errors.append(&mut errs);
                continue;
            }
        };
        let key = (src.name.clone(), src.version.clone());
        if let Some(prev) = out.sources.get(&key) {
            errors.push(
                Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "`{}@{}` is also defined in {}",
                        key.0,
                        key.1,
                        prev.path.display()
                    ),
                )
                .with_location(src.at_span(&src.manifest.version)),
            );
            continue;
        }
        for (at, message) in &src.warnings {
            warnings.push(Diagnostic::new(
                Severity::Warning,
                at.clone(),
                message.clone(),
            ));
        }
        out.content_keys
            .insert(key.clone(), content_key(file_key, &refs));
        if !refs.is_empty() {
            out.ref_files.insert(key.clone(), refs);
        }
        out.sources.insert(key, src);
    }
    out
}

/// Every version of every name with its labels, ascending; a label on two
/// versions of one name is an error.
pub(crate) type Versions = BTreeMap<String, Vec<(Version, Vec<String>)>>;

fn versions_and_labels(
    sources: &FastMap<Key, Arc<SourceFile>>,
    errors: &mut Vec<Error>,
) -> Versions {
    let mut versions = Versions::new();
    let mut keys: Vec<&Key> = sources.keys().collect();
    keys.sort();
    let mut label_owner: HashMap<(&str, &str), &Key> = HashMap::new();
    for key in keys {
        let src = &sources[key];
        let labels = src
            .manifest
            .labels
            .as_ref()
            .map(|l| l.value.clone())
            .unwrap_or_default();
        for label in src.manifest.labels.iter().flat_map(|l| &l.value) {
            if let Some(prev) = label_owner.get(&(key.0.as_str(), label.as_str())) {
                let prev_src = &sources[*prev];
                errors.push(
                    Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "label `{label}` of `{}` is on both {}@{} ({}) and {}@{} ({})",
                            key.0,
                            prev.0,
                            prev.1,
                            prev_src.path.display(),
                            key.0,
                            key.1,
                            src.path.display()
                        ),
                    )
                    .with_location(
                        src.manifest
                            .labels
                            .as_ref()
                            .map_or_else(|| Location::file(&src.path), |l| src.at_span(l)),
                    ),
                );
            } else {
                label_owner.insert((key.0.as_str(), label.as_str()), key);
            }
        }
        versions
            .entry(key.0.clone())
            .or_default()
            .push((key.1.clone(), labels));
    }
    versions
}
