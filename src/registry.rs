//! The registry: the catalog of every template under a root, resolved and
//! compiled (see [`crate::load`] for how), and what a caller asks of it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::Environment;

use crate::dialect::{Dialect, Engine};
use crate::error::{Diagnostic, Error, ErrorKind, Location};
use crate::limits::RenderLimits;
use crate::load::isolate::LeftOut;
use crate::load::{Failures, LoadOptions, Source};
use crate::reference::Reference;
use crate::schema::{self, InputSchema, SchemaMismatch};
use crate::template::{FileForm, Template};

/// A hash map with foldhash (fast, randomly seeded): loading hashes
/// template keys a great deal.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Every template under a root directory, loaded, checked and compiled.
///
/// Cheap to clone (an `Arc`), `Send` and `Sync`: share one registry between
/// threads and render from all of them. Nothing is read from disk after
/// [`load`](Registry::load); includes and parents resolve in memory.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    index: Arc<Index>,
    env: Environment<'static>,
    /// Prompty's rendering rules, for `.prompty` templates.
    prompty_env: Environment<'static>,
    warnings: Vec<Diagnostic>,
    /// An isolating load's errors and notes (with the warnings).
    diagnostics: Vec<Diagnostic>,
    /// What an isolating load left out.
    left_out: Vec<LeftOut>,
    limits: RenderLimits,
    /// Reference strings already resolved.
    refs: std::sync::RwLock<FastMap<String, Arc<Entry>>>,
}

/// Templates by name, each name's versions in ascending order.
#[derive(Default)]
pub(crate) struct Index {
    by_name: BTreeMap<String, Vec<Arc<Entry>>>,
}

/// A template with what rendering needs.
pub(crate) struct Entry {
    /// The memo key of what it was compiled from (see `crate::load`).
    pub memo_key: u128,
    pub template: Template,
    pub schema: InputSchema,
    /// `NAME@VERSION`.
    pub id: String,
    /// The name it is compiled under in the Jinja environment.
    pub jinja_name: String,
    /// Parameter defaults, as templates see them.
    pub defaults: Vec<(minijinja::Value, minijinja::Value)>,
    /// Every declared parameter's name (absent ones render as none).
    pub declared: Vec<minijinja::Value>,
    /// Where media values sit in the inputs (see [`crate::media_input`]).
    pub media: std::sync::Arc<[crate::media_input::Slot]>,
    /// How many messages its last render had: the next one's capacity.
    pub messages_hint: std::sync::atomic::AtomicUsize,
    /// The compiled Jinja source: same lines as the file.
    pub source: String,
    pub form: FileForm,
    /// The body has no role line: its text is one `user` message.
    pub implicit_user: bool,
    /// The rules it renders by.
    pub dialect: Dialect,
}

impl Clone for Entry {
    fn clone(&self) -> Entry {
        Entry {
            memo_key: self.memo_key,
            template: self.template.clone(),
            schema: self.schema.clone(),
            id: self.id.clone(),
            jinja_name: self.jinja_name.clone(),
            defaults: self.defaults.clone(),
            declared: self.declared.clone(),
            media: self.media.clone(),
            messages_hint: std::sync::atomic::AtomicUsize::new(
                self.messages_hint
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            source: self.source.clone(),
            form: self.form,
            implicit_user: self.implicit_user,
            dialect: self.dialect,
        }
    }
}

/// A registry serialises as its catalog, the JSON of `promptbook list
/// --json` and of the dev server's `GET /api/templates`: an array of
/// `{"name", "versions": [template, ...]}`, names sorted, versions
/// ascending (see [`Template`]'s serialisation).
impl serde::Serialize for Registry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Versions<'a>(&'a Registry, &'a str);
        impl serde::Serialize for Versions<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.versions(self.1))
            }
        }
        struct Name<'a>(&'a Registry, &'a str);
        impl serde::Serialize for Name<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("name", self.1)?;
                map.serialize_entry("versions", &Versions(self.0, self.1))?;
                map.end()
            }
        }
        let mut seq = serializer.serialize_seq(Some(self.inner.index.by_name.len()))?;
        for name in self.names() {
            seq.serialize_element(&Name(self, name))?;
        }
        seq.end()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("root", &self.inner.root)
            .field(
                "templates",
                &self.templates().map(|t| t.id()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Index {
    /// Adds a compiled template.
    pub(crate) fn insert(&mut self, entry: Arc<Entry>) {
        self.by_name
            .entry(entry.template.name.clone())
            .or_default()
            .push(entry);
    }

    /// Puts each name's versions in ascending order.
    pub(crate) fn sort(&mut self) {
        for v in self.by_name.values_mut() {
            v.sort_by(|a, b| a.template.version.cmp(&b.template.version));
        }
    }

    /// Every entry, by name, versions ascending.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.by_name.values().flatten()
    }

    /// Resolves a reference to a template.
    pub(crate) fn resolve(&self, reference: &str) -> Result<&Arc<Entry>, Error> {
        let r = Reference::parse(reference)?;
        self.resolve_parsed(&r)
    }

    pub(crate) fn resolve_parsed(&self, r: &Reference) -> Result<&Arc<Entry>, Error> {
        let Some(versions) = self.by_name.get(r.name()) else {
            let mut msg = format!("no template named `{}`", r.name());
            if let Some(close) = self.closest_name(r.name()) {
                msg.push_str(&format!(" (did you mean `{close}`?)"));
            }
            return Err(Error::new(ErrorKind::Reference, msg));
        };
        let chosen = r.select(
            versions
                .iter()
                .map(|e| (&e.template.version, e.template.labels.as_slice())),
        );
        chosen.map(|i| &versions[i]).ok_or_else(|| {
            // `t@v1.0.0` reads as a label; say what was probably meant.
            let hint = match r.selector() {
                crate::reference::Selector::Label(l)
                    if l.strip_prefix(['v', 'V'])
                        .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())) =>
                {
                    format!(
                        " (a version is written without `v`: `{}@{}`)",
                        r.name(),
                        &l[1..]
                    )
                }
                _ => String::new(),
            };
            Error::new(
                ErrorKind::Reference,
                format!(
                    "no version of `{}` matches `{r}`; available: {}{hint}",
                    r.name(),
                    describe_versions(versions.iter().map(|e| &e.template))
                ),
            )
        })
    }

    /// The known name closest to `wanted` (Levenshtein distance, from
    /// `strsim`), when it is close enough to suggest.
    fn closest_name(&self, wanted: &str) -> Option<&str> {
        self.by_name
            .keys()
            .map(|k| (strsim::levenshtein(k, wanted), k))
            .filter(|(d, k)| *d <= 2.max(k.len() / 4))
            .min()
            .map(|(_, k)| k.as_str())
    }
}

fn describe_versions<'a>(templates: impl Iterator<Item = &'a Template>) -> String {
    templates
        .map(|t| {
            if t.labels.is_empty() {
                t.version.to_string()
            } else {
                format!("{} [{}]", t.version, t.labels.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The exact-version reference the compiler uses for `name@version`.
pub(crate) fn exact_ref(name: &str, version: &impl std::fmt::Display) -> String {
    format!("{name}@={version}")
}

impl Registry {
    /// Loads every template file under `dir` (recursively), strictly: any
    /// problem fails the load.
    ///
    /// # Errors
    /// An [`ErrorKind::Load`] error listing every problem found, each with its
    /// file, line and column: unreadable or malformed files, bad versions,
    /// version or label clashes, unresolved or cyclic parents, invalid
    /// schemas and defaults, Jinja syntax errors, and variables a template
    /// uses without declaring them. An [`ErrorKind::Io`] error when `dir`
    /// cannot be read at all.
    pub fn load(dir: impl AsRef<Path>) -> Result<Registry, Error> {
        Registry::load_with(dir, &LoadOptions::new())
    }

    /// Loads `dir` as `options` say: strictly (as [`load`](Registry::load)),
    /// or isolating what does not load ([`LoadOptions::isolate`]), in which
    /// case [`diagnostics`](Registry::diagnostics) says what was left out
    /// and why.
    ///
    /// # Errors
    /// As [`load`](Registry::load) for a strict load; an isolating load
    /// fails only when `dir` cannot be read at all.
    pub fn load_with(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Registry, Error> {
        let dir = dir.as_ref();
        Registry::analyzed(Source::Dir(dir), options, &dir.display().to_string())
    }

    /// Loads templates given in memory, strictly: `(path, contents)` pairs,
    /// each path relative to an imagined root (`support/triage.prompt.jinja`),
    /// so that templates can be embedded in a binary (`include_str!`) or
    /// written by a test without a directory. `$ref` schemas and Prompty
    /// `${file:}` references resolve among the same files.
    ///
    /// # Errors
    /// As [`load`](Registry::load).
    pub fn from_files<P, C>(files: impl IntoIterator<Item = (P, C)>) -> Result<Registry, Error>
    where
        P: Into<String>,
        C: Into<String>,
    {
        Registry::from_files_with(files, &LoadOptions::new())
    }

    /// [`from_files`](Registry::from_files) as `options` say.
    ///
    /// # Errors
    /// As [`load_with`](Registry::load_with).
    pub fn from_files_with<P, C>(
        files: impl IntoIterator<Item = (P, C)>,
        options: &LoadOptions,
    ) -> Result<Registry, Error>
    where
        P: Into<String>,
        C: Into<String>,
    {
        let files: BTreeMap<String, String> = files
            .into_iter()
            .map(|(p, c)| (p.into(), c.into()))
            .collect();
        Registry::analyzed(Source::Memory(&files), options, "the given files")
    }

    fn analyzed(source: Source<'_>, options: &LoadOptions, what: &str) -> Result<Registry, Error> {
        let analysis = crate::load::analyze(source, options)?;
        match analysis.registry {
            Some(r) if analysis.errors.is_empty() || options.failures == Failures::Isolate => Ok(r),
            _ => {
                let n = analysis.errors.len();
                Err(Error::new(
                    ErrorKind::Load,
                    format!(
                        "{n} error{} loading templates from {what}",
                        if n == 1 { "" } else { "s" },
                    ),
                )
                .with_related(analysis.errors))
            }
        }
    }

    /// A registry with no templates, for `root`: what a server serves
    /// before its first good load.
    pub fn empty(root: impl Into<PathBuf>) -> Registry {
        let index = Arc::new(Index::default());
        let env = crate::jinja::environment(index.clone(), &RenderLimits::default());
        Registry::from_index(root.into(), index, env, Vec::new())
    }

    /// A registry over a compiled index, with the default limits; `env` is
    /// the native environment over that index.
    pub(crate) fn from_index(
        root: PathBuf,
        index: Arc<Index>,
        env: Environment<'static>,
        warnings: Vec<Diagnostic>,
    ) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                root,
                prompty_env: crate::jinja::prompty_environment(
                    index.clone(),
                    &RenderLimits::default(),
                ),
                index,
                env,
                diagnostics: warnings.clone(),
                warnings,
                left_out: Vec::new(),
                limits: RenderLimits::default(),
                refs: Default::default(),
            }),
        }
    }

    /// The same registry, saying what an isolating load left out.
    pub(crate) fn with_outcome(
        self,
        mut diagnostics: Vec<Diagnostic>,
        left_out: Vec<LeftOut>,
    ) -> Registry {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            root: shared.root.clone(),
            index: shared.index.clone(),
            env: crate::jinja::environment(shared.index.clone(), &shared.limits),
            prompty_env: crate::jinja::prompty_environment(shared.index.clone(), &shared.limits),
            warnings: shared.warnings.clone(),
            diagnostics: shared.diagnostics.clone(),
            left_out: shared.left_out.clone(),
            limits: shared.limits,
            refs: Default::default(),
        });
        diagnostics.extend(inner.warnings.iter().cloned());
        diagnostics.sort_by(|a, b| (a.location(), a.severity()).cmp(&(b.location(), b.severity())));
        diagnostics.dedup();
        inner.diagnostics = diagnostics;
        inner.left_out = left_out;
        Registry {
            inner: Arc::new(inner),
        }
    }

    /// Everything the load found that did not stop it: warnings, and for an
    /// isolating load, the errors of the templates it left out and a note
    /// for each template left out with them. Sorted by file and line.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.inner.diagnostics
    }

    /// What an isolating load left out (empty for a strict load).
    #[cfg(feature = "watch")]
    pub(crate) fn left_out(&self) -> &[LeftOut] {
        &self.inner.left_out
    }

    /// This registry, keeping from `previous` the last good version of each
    /// template this (isolating) load left out: a broken save of one file
    /// keeps serving that file's last good version while the others reload.
    /// A note says so for each.
    #[cfg_attr(not(feature = "watch"), allow(dead_code))]
    pub(crate) fn keeping_last_good(self, previous: &Registry) -> Registry {
        let left_out = &self.inner.left_out;
        if left_out.is_empty() {
            return self;
        }
        let present = |name: &str, version: &semver::Version| {
            self.inner
                .index
                .by_name
                .get(name)
                .is_some_and(|v| v.iter().any(|e| e.template.version == *version))
        };
        let mut index = Index::default();
        for e in self.inner.index.entries() {
            index.insert(e.clone());
        }
        let mut notes = Vec::new();
        for e in previous.inner.index.entries() {
            let t = &e.template;
            let gone = left_out.iter().any(|l| {
                l.path == t.path || (l.name == t.name && l.version.as_ref() == Some(&t.version))
            });
            if gone && !present(&t.name, &t.version) {
                index.insert(e.clone());
                notes.push(Diagnostic::new(
                    crate::error::Severity::Warning,
                    Location::file(&t.path),
                    format!(
                        "serving the last good version of `{}` until its file loads again",
                        t.id()
                    ),
                ));
            }
        }
        if notes.is_empty() {
            return self;
        }
        index.sort();
        let index = Arc::new(index);
        let limits = self.inner.limits;
        let env = crate::jinja::environment(index.clone(), &RenderLimits::default());
        let mut diagnostics = self.inner.diagnostics.clone();
        diagnostics.extend(notes);
        let merged = Registry::from_index(
            self.inner.root.clone(),
            index,
            env,
            self.inner.warnings.clone(),
        )
        .with_outcome(diagnostics, left_out.clone());
        if limits == RenderLimits::default() {
            merged
        } else {
            merged.with_limits(limits)
        }
    }

    /// The same templates under other [`RenderLimits`]. Cheap: the loaded
    /// templates are shared.
    pub fn with_limits(&self, limits: RenderLimits) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                root: self.inner.root.clone(),
                index: self.inner.index.clone(),
                env: crate::jinja::environment(self.inner.index.clone(), &limits),
                prompty_env: crate::jinja::prompty_environment(self.inner.index.clone(), &limits),
                warnings: self.inner.warnings.clone(),
                diagnostics: self.inner.diagnostics.clone(),
                left_out: self.inner.left_out.clone(),
                limits,
                refs: Default::default(),
            }),
        }
    }

    /// The limits every render of this registry runs under.
    pub fn limits(&self) -> &RenderLimits {
        &self.inner.limits
    }

    /// The directory the templates were loaded from.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Every template, by name, versions ascending.
    pub fn templates(&self) -> impl Iterator<Item = &Template> + '_ {
        self.inner.index.entries().map(|e| &e.template)
    }

    /// The template names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.index.by_name.keys().map(String::as_str)
    }

    /// The versions of one template, ascending (empty when unknown).
    pub fn versions(&self, name: &str) -> impl Iterator<Item = &Template> + '_ {
        self.entries(name).map(|e| &e.template)
    }

    /// The entries of one template name, versions ascending.
    fn entries(&self, name: &str) -> impl Iterator<Item = &Arc<Entry>> + '_ {
        self.inner.index.by_name.get(name).into_iter().flatten()
    }

    /// What the template `reference` names itself, as `NAME@VERSION`: its
    /// parent, then every template its source includes, imports or
    /// extends by a literal name (resolved as a render resolves it).
    ///
    /// # Errors
    /// As [`get`](Registry::get).
    pub fn dependencies(&self, reference: &str) -> Result<Vec<String>, Error> {
        let entry = self.inner.index.resolve(reference)?;
        Ok(
            crate::load::stamp::direct_dependencies(entry, &self.inner.index)
                .into_iter()
                .map(|e| e.id.clone())
                .collect(),
        )
    }

    /// Every template that depends on `reference`, directly or through
    /// others (the templates whose [`hash`](Template::hash) changes when
    /// it does), as `NAME@VERSION`, sorted.
    ///
    /// # Errors
    /// As [`get`](Registry::get).
    pub fn dependents(&self, reference: &str) -> Result<Vec<String>, Error> {
        let target = self.inner.index.resolve(reference)?.id.clone();
        let index = &self.inner.index;
        Ok(index
            .entries()
            .filter(|e| crate::load::stamp::dependencies(e, index).contains(&target.as_str()))
            .map(|e| e.id.clone())
            .collect())
    }

    /// Resolves `NAME`, `NAME@REQ` or `NAME@LABEL` to a template.
    ///
    /// # Errors
    /// [`ErrorKind::Reference`] when the reference is malformed or nothing
    /// matches; the message lists the versions available.
    pub fn get(&self, reference: &str) -> Result<&Template, Error> {
        self.resolve_entry(reference).map(|e| &e.template)
    }

    /// Resolves a reference among the templates that loaded. When an
    /// isolating load left out a version the reference would have chosen
    /// (`t@^1` with `t@1.1.0` broken), that is an error saying so, not a
    /// quiet older version: as a template's include of it is.
    fn resolve_entry(&self, reference: &str) -> Result<&Arc<Entry>, Error> {
        let entry = self
            .inner
            .index
            .resolve(reference)
            .map_err(|e| self.explain_left_out(reference, e))?;
        if let Ok(r) = Reference::parse(reference) {
            let gone: Vec<&semver::Version> = self
                .inner
                .left_out
                .iter()
                .filter(|l| l.name == entry.template.name)
                .filter_map(|l| l.version.as_ref())
                .collect();
            let no_labels: &[String] = &[];
            let candidates = std::iter::once((&entry.template.version, no_labels))
                .chain(gone.iter().map(|v| (*v, no_labels)));
            if !gone.is_empty()
                && !matches!(r.selector(), crate::reference::Selector::Label(_))
                && r.select(candidates).is_some_and(|i| i > 0)
            {
                return Err(self
                    .explain_left_out(reference, Error::new(ErrorKind::Reference, String::new())));
            }
        }
        Ok(entry)
    }

    /// A reference error, said better when an isolating load left the
    /// template out: why it did not load.
    fn explain_left_out(&self, reference: &str, e: Error) -> Error {
        let Ok(r) = Reference::parse(reference) else {
            return e;
        };
        let Some(gone) = self.inner.left_out.iter().find(|l| l.name == r.name()) else {
            return e;
        };
        // Its file's own problems, the first one placing the error; for a
        // template left out because of another, the note saying which.
        let at_file = |d: &&Diagnostic| d.location().path() == gone.path;
        let mut problems: Vec<&Diagnostic> = self
            .inner
            .diagnostics
            .iter()
            .filter(at_file)
            .filter(|d| d.severity() == crate::error::Severity::Error)
            .collect();
        if problems.is_empty() {
            problems = self.inner.diagnostics.iter().filter(at_file).collect();
        }
        let why: Vec<&str> = problems.iter().map(|d| d.message()).collect();
        Error::new(
            ErrorKind::Reference,
            format!(
                "`{}` did not load, so it is left out{}",
                r.name(),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {}", why.join("; "))
                }
            ),
        )
        .with_location(
            problems
                .first()
                .map_or_else(|| Location::file(&gone.path), |d| d.location().clone()),
        )
    }

    /// Warnings found while loading (unused parameters, ...).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.inner.warnings
    }

    /// One identity per version of `name`. Entries are shared between
    /// loads while their file and ancestors are unchanged (see `memo`), so
    /// equal identities mean an unchanged template; a different identity
    /// almost always means a changed one (or a forgotten memo).
    #[cfg_attr(not(feature = "watch"), allow(dead_code))]
    pub(crate) fn fingerprints(&self, name: &str) -> Vec<usize> {
        self.entries(name)
            .map(|e| Arc::as_ptr(e) as usize)
            .collect()
    }

    /// Names that any version of `name` extends or includes literally.
    #[cfg_attr(not(feature = "watch"), allow(dead_code))]
    pub(crate) fn dependency_names(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.entries(name) {
            if let Some((parent, _)) = e
                .template
                .extends
                .as_deref()
                .and_then(|p| p.split_once('@'))
            {
                out.push(parent.to_owned());
            }
            for (target, _) in crate::load::targets::static_refs(&e.source) {
                if let Ok(r) = Reference::parse(&target) {
                    out.push(r.name().to_owned());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The entry a reference names; resolutions are cached per registry
    /// (its templates never change), so a hot path pays one lookup.
    pub(crate) fn entry(&self, reference: &str) -> Result<Arc<Entry>, Error> {
        if let Some(entry) = self
            .inner
            .refs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(reference)
        {
            return Ok(entry.clone());
        }
        let entry = self.resolve_entry(reference)?.clone();
        let mut cache = self.inner.refs.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(reference.to_owned(), entry.clone());
        Ok(entry)
    }

    pub(crate) fn env_for(&self, dialect: Dialect) -> &Environment<'static> {
        match dialect.engine {
            Engine::Prompty => &self.inner.prompty_env,
            Engine::Native => &self.inner.env,
        }
    }

    pub(crate) fn index(&self) -> &Index {
        &self.inner.index
    }

    /// Compares the JSON Schema of a Rust input type with a template's input
    /// schema and lists every disagreement: fields the template requires but
    /// the type lacks or makes optional, fields the template would reject,
    /// and type mismatches. An empty list means the type fits. Use it in a
    /// test to catch drift between code and prompt files.
    ///
    /// # Errors
    /// [`ErrorKind::Reference`] when the reference does not resolve.
    pub fn check_input_type<T: schemars::JsonSchema>(
        &self,
        reference: &str,
    ) -> Result<Vec<SchemaMismatch>, Error> {
        Ok(self.get(reference)?.check_input_type::<T>())
    }

    /// Compares the JSON Schema of a Rust type with a template's output
    /// schema (`output:`) and lists every way an answer valid for the
    /// template could fail to deserialize into it: a field the type
    /// requires that the output may leave out or never declares, a type
    /// the output may take that the Rust type does not, a field the output
    /// may hold that the type refuses (`deny_unknown_fields`). A template
    /// without an output schema is one mismatch. Use it in a test, as
    /// [`check_input_type`](Registry::check_input_type).
    ///
    /// # Errors
    /// [`ErrorKind::Reference`] when the reference does not resolve.
    pub fn check_output_type<T: schemars::JsonSchema>(
        &self,
        reference: &str,
    ) -> Result<Vec<SchemaMismatch>, Error> {
        Ok(self.get(reference)?.check_output_type::<T>())
    }
}

impl Template {
    /// See [`Registry::check_input_type`].
    pub fn check_input_type<T: schemars::JsonSchema>(&self) -> Vec<SchemaMismatch> {
        schema::compare_type::<T>(&self.input_schema)
    }

    /// See [`Registry::check_output_type`].
    pub fn check_output_type<T: schemars::JsonSchema>(&self) -> Vec<SchemaMismatch> {
        match self.output_schema.as_deref() {
            Some(output) => schema::compare_output_type::<T>(output),
            None => vec![SchemaMismatch {
                pointer: String::new(),
                message: format!("{} declares no output schema (`output:`)", self.id()),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn did_you_mean_uses_edit_distance() {
        let mut index = super::Index::default();
        index.by_name.insert("support/triage".into(), Vec::new());
        index.by_name.insert("billing".into(), Vec::new());
        assert_eq!(index.closest_name("support/traige"), Some("support/triage"));
        assert_eq!(index.closest_name("nothing-like-it"), None);
    }
}
