//! The registry: every template under a root, resolved and compiled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};
use semver::Version;
use serde_json::Value;

use crate::body::{self, CompiledBody};
use crate::error::{Diagnostic, Error, ErrorKind, Location, Severity};
use crate::limits::RenderLimits;
use crate::message::Role;
use crate::prompty::Dialect;
use crate::reference::Reference;
use crate::schema::{self, InputSchema, SchemaMismatch};
use crate::template::{
    self, ContextConfig, FileForm, ModelConfig, Parameter, SourceFile, Template, line_col,
};

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
    /// How many messages its last render had: the next one's capacity.
    pub messages_hint: std::sync::atomic::AtomicUsize,
    /// The compiled Jinja source: same lines as the file.
    pub source: String,
    pub form: FileForm,
    /// The body has no role line: its text is one `user` message.
    pub implicit_user: bool,
    /// Native or Prompty rules.
    pub dialect: Dialect,
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
            Error::new(
                ErrorKind::Reference,
                format!(
                    "no version of `{}` matches `{r}`; available: {}",
                    r.name(),
                    describe_versions(versions.iter().map(|e| &e.template))
                ),
            )
        })
    }

    fn closest_name(&self, wanted: &str) -> Option<&str> {
        self.by_name
            .keys()
            .map(|k| (strsim(k, wanted), k))
            .filter(|(d, k)| *d <= 2.max(k.len() / 4))
            .min()
            .map(|(_, k)| k.as_str())
    }
}

/// Edit distance, for "did you mean".
fn strsim(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
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
    /// Loads every template file under `dir` (recursively).
    ///
    /// # Errors
    /// An [`ErrorKind::Load`] error listing every problem found, each with its
    /// file, line and column: unreadable or malformed files, bad versions,
    /// version or label clashes, unresolved or cyclic parents, invalid
    /// schemas and defaults, Jinja syntax errors, and variables a template
    /// uses without declaring them. An [`ErrorKind::Io`] error when `dir`
    /// cannot be read at all.
    pub fn load(dir: impl AsRef<Path>) -> Result<Registry, Error> {
        let analysis = analyze(dir.as_ref())?;
        match analysis.registry {
            Some(r) if analysis.errors.is_empty() => Ok(r),
            _ => {
                let n = analysis.errors.len();
                Err(Error::new(
                    ErrorKind::Load,
                    format!(
                        "{n} error{} loading templates from {}",
                        if n == 1 { "" } else { "s" },
                        dir.as_ref().display()
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
        Registry {
            inner: Arc::new(Inner {
                root: root.into(),
                env: environment(index.clone(), &RenderLimits::default()),
                prompty_env: prompty_environment(index.clone(), &RenderLimits::default()),
                index,
                warnings: Vec::new(),
                limits: RenderLimits::default(),
                refs: Default::default(),
            }),
        }
    }

    /// The same templates under other [`RenderLimits`]. Cheap: the loaded
    /// templates are shared.
    pub fn with_limits(&self, limits: RenderLimits) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                root: self.inner.root.clone(),
                index: self.inner.index.clone(),
                env: environment(self.inner.index.clone(), &limits),
                prompty_env: prompty_environment(self.inner.index.clone(), &limits),
                warnings: self.inner.warnings.clone(),
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
        self.inner
            .index
            .by_name
            .values()
            .flatten()
            .map(|e| &e.template)
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

    /// Resolves `NAME`, `NAME@REQ` or `NAME@LABEL` to a template.
    ///
    /// # Errors
    /// [`ErrorKind::Reference`] when the reference is malformed or nothing
    /// matches; the message lists the versions available.
    pub fn get(&self, reference: &str) -> Result<&Template, Error> {
        Ok(&self.inner.index.resolve(reference)?.template)
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
    pub(crate) fn dependencies(&self, name: &str) -> Vec<String> {
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
            for (target, _) in static_refs(&e.source) {
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
        let entry = self.inner.index.resolve(reference)?.clone();
        let mut cache = self.inner.refs.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(reference.to_owned(), entry.clone());
        Ok(entry)
    }

    pub(crate) fn env_for(&self, dialect: Dialect) -> &Environment<'static> {
        if dialect.is_prompty() {
            &self.inner.prompty_env
        } else {
            &self.inner.env
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
}

impl Template {
    /// See [`Registry::check_input_type`].
    pub fn check_input_type<T: schemars::JsonSchema>(&self) -> Vec<SchemaMismatch> {
        schema::compare_type::<T>(&self.input_schema)
    }
}

/// What loading a root found: the registry when it could be built, every
/// error and every warning.
pub(crate) struct Analysis {
    pub registry: Option<Registry>,
    pub errors: Vec<Error>,
    pub warnings: Vec<Diagnostic>,
}

/// Lints a template root: every problem [`Registry::load`] would report,
/// plus warnings, sorted by file and line.
///
/// # Errors
/// [`ErrorKind::Io`] when the root cannot be read at all.
pub fn lint(dir: impl AsRef<Path>) -> Result<Vec<Diagnostic>, Error> {
    let dir = dir.as_ref();
    let analysis = analyze(dir)?;
    let mut out: Vec<Diagnostic> = analysis
        .errors
        .iter()
        .flat_map(|e| e.problems())
        .map(|e| Diagnostic::from_error(e, dir))
        .chain(analysis.warnings)
        .collect();
    out.sort_by(|a, b| (a.location(), a.severity()).cmp(&(b.location(), b.severity())));
    out.dedup();
    Ok(out)
}

fn root_error(root: &Path, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("cannot read template root {}", root.display()),
    )
    .with_source(e)
}

/// Reads template files under `root`, refusing symlinks that lead outside.
fn read_files(
    root: &Path,
    errors: &mut Vec<Error>,
) -> Result<Vec<(PathBuf, String, Vec<u8>)>, Error> {
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
        if template::classify(&lossy).is_none() {
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
            Ok(bytes) => out.push((path, rel, bytes)),
            // The reason goes in the message: diagnostics show no sources.
            Err(e) => errors.push(
                Error::new(ErrorKind::Io, format!("cannot read: {e}"))
                    .with_location(Location::file(&path)),
            ),
        }
    }
    Ok(out)
}

/// Deep merge: objects merge key by key, anything else in `over` wins.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Effective settings of a template after inheritance, before compiling.
struct Resolved {
    /// Identifies this result by its inputs: the file's content key and the
    /// parent's memo key. Equal keys, equal results.
    memo_key: u128,
    parameters: Arc<[Parameter]>,
    /// Where each parameter is declared in this file (for lint).
    own_params: Vec<(String, Location)>,
    input_schema: Arc<Value>,
    model: Option<Value>,
    context: Option<Value>,
    extends: Option<(String, Version)>,
}

type Key = (String, Version);

/// A hash map with foldhash (fast, randomly seeded): loading hashes
/// template keys a great deal.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Resolved templates by file content and parent: the same file under the
/// same parent resolves the same.
static RESOLVED: crate::memo::Memo<Arc<Resolved>> = crate::memo::Memo::new(20_000);

/// The memo key of a template resolved under `parent`.
fn resolved_key(content_key: u128, parent: Option<&Resolved>) -> u128 {
    crate::memo::key(&[
        &content_key.to_le_bytes(),
        &parent.map_or(0, |p| p.memo_key).to_le_bytes(),
    ])
}

struct Loader<'a> {
    sources: &'a FastMap<Key, Arc<SourceFile>>,
    /// Hash of each file's path and bytes.
    content_keys: &'a FastMap<Key, u128>,
    versions: BTreeMap<String, Vec<(Version, Vec<String>)>>,
    resolved: FastMap<Key, Option<Arc<Resolved>>>,
    /// Keys resolved successfully, parents before children.
    order: Vec<Key>,
    errors: Vec<Error>,
}

impl Loader<'_> {
    fn parent_of(&mut self, src: &SourceFile) -> Result<Option<Key>, Error> {
        let Some(ext) = &src.manifest.extends else {
            return Ok(None);
        };
        let at = src.at_span(ext);
        let r = Reference::parse(ext.value.trim()).map_err(|e| e.with_location(at.clone()))?;
        let Some(versions) = self.versions.get(r.name()) else {
            return Err(Error::new(
                ErrorKind::Reference,
                format!("`extends: {}`: no template named `{}`", ext.value, r.name()),
            )
            .with_location(at));
        };
        let i = r
            .select(versions.iter().map(|(v, l)| (v, l.as_slice())))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Reference,
                    format!(
                        "`extends: {}`: no version matches; available: {}",
                        ext.value,
                        versions
                            .iter()
                            .map(|(v, _)| v.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .with_location(at)
            })?;
        Ok(Some((r.name().to_owned(), versions[i].0.clone())))
    }

    /// Resolves inheritance for `key`, parents first. `None` when it (or an
    /// ancestor) failed; the error is recorded once.
    fn resolve(&mut self, key: &Key, stack: &mut Vec<Key>) -> Option<Arc<Resolved>> {
        if let Some(done) = self.resolved.get(key) {
            return done.clone();
        }
        let src = &self.sources[key];
        if let Some(pos) = stack.iter().position(|k| k == key) {
            let cycle: Vec<String> = stack[pos..]
                .iter()
                .chain(std::iter::once(key))
                .map(|(n, v)| format!("{n}@{v}"))
                .collect();
            self.errors.push(
                Error::new(
                    ErrorKind::Conflict,
                    format!("inheritance cycle: {}", cycle.join(" -> ")),
                )
                .with_location(
                    src.manifest
                        .extends
                        .as_ref()
                        .map_or_else(|| Location::file(&src.path), |e| src.at_span(e)),
                ),
            );
            return None;
        }
        let parent_key = match self.parent_of(src) {
            Ok(p) => p,
            Err(e) => {
                self.errors.push(e);
                self.resolved.insert(key.clone(), None);
                return None;
            }
        };
        let parent = match &parent_key {
            Some(pk) => {
                stack.push(key.clone());
                let p = self.resolve(pk, stack);
                stack.pop();
                match p {
                    Some(p) => Some(p),
                    None => {
                        self.resolved.insert(key.clone(), None);
                        return None;
                    }
                }
            }
            None => None,
        };
        // The same file under the same parent resolves the same: reuse it.
        let memo_key = resolved_key(self.content_keys[key], parent.as_deref());
        let result = match RESOLVED.get(memo_key) {
            Some(hit) => Ok(hit),
            None => self
                .resolve_own(src, parent.as_deref(), parent_key)
                .map(|mut r| {
                    r.memo_key = memo_key;
                    let r = Arc::new(r);
                    RESOLVED.put(memo_key, r.clone());
                    r
                }),
        };
        let result = match result {
            Ok(r) => {
                self.order.push(key.clone());
                Some(r)
            }
            Err(mut errs) => {
                self.errors.append(&mut errs);
                None
            }
        };
        self.resolved.insert(key.clone(), result.clone());
        result
    }

    fn resolve_own(
        &self,
        src: &SourceFile,
        parent: Option<&Resolved>,
        parent_key: Option<Key>,
    ) -> Result<Resolved, Vec<Error>> {
        let mut errors = Vec::new();
        let m = &src.manifest;
        let mut parameters: Vec<Parameter> =
            parent.map(|p| p.parameters.to_vec()).unwrap_or_default();
        let mut own_params = Vec::new();
        let mut input_schema = None;

        if let (Some(_), Some(is)) = (&m.parameters, &m.input_schema) {
            errors.push(
                Error::new(
                    ErrorKind::Schema,
                    "give either `parameters` or `input_schema`, not both",
                )
                .with_location(src.at_span(is)),
            );
        }
        for (name, fragment) in m.parameters.iter().flatten() {
            let at = src.at_span(fragment);
            if !is_identifier(name) {
                errors.push(
                    Error::new(
                        ErrorKind::Schema,
                        format!(
                            "parameter name `{name}` is not an identifier (letters, digits, `_`)"
                        ),
                    )
                    .with_location(at),
                );
                continue;
            }
            match declare(name, &fragment.value) {
                Ok(p) => {
                    own_params.push((name.clone(), at));
                    match parameters.iter_mut().find(|q| q.name == *name) {
                        Some(slot) => *slot = p,
                        None => parameters.push(p),
                    }
                }
                Err(msg) => errors.push(Error::new(ErrorKind::Schema, msg).with_location(at)),
            }
        }
        if let Some(is) = &m.input_schema {
            let at = src.at_span(is);
            match load_input_schema(src, &is.value) {
                Ok((schema, history)) => {
                    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                        own_params.extend(props.keys().map(|k| (k.clone(), at.clone())));
                    }
                    parameters = schema::parameters_of(&schema, &history);
                    input_schema = Some(schema);
                }
                Err(msg) => errors.push(Error::new(ErrorKind::Schema, msg).with_location(at)),
            }
        }
        let input_schema = input_schema.unwrap_or_else(|| schema::object_schema(&parameters));

        let mut model = parent.and_then(|p| p.model.clone());
        let mut context = parent.and_then(|p| p.context.clone());
        for (slot, own, what) in [
            (&mut model, &m.model, "model"),
            (&mut context, &m.context, "context"),
        ] {
            if let Some(own) = own {
                if !own.value.is_object() {
                    errors.push(
                        Error::new(
                            ErrorKind::Syntax,
                            format!(
                                "`{what}:` must be a map, not {}",
                                schema::json_kind(&own.value)
                            ),
                        )
                        .with_location(src.at_span(own)),
                    );
                    continue;
                }
                match slot {
                    Some(base) => merge(base, &own.value),
                    None => *slot = Some(own.value.clone()),
                }
            }
        }
        if errors.is_empty() {
            Ok(Resolved {
                memo_key: 0,
                parameters: parameters.into(),
                own_params,
                input_schema: Arc::new(input_schema),
                model,
                context,
                extends: parent_key,
            })
        } else {
            Err(errors)
        }
    }
}

impl Resolved {
    /// Names of the `messages` parameters (spliceable history).
    fn history_params(&self) -> HashSet<&str> {
        self.parameters
            .iter()
            .filter(|p| p.messages)
            .map(|p| p.name.as_str())
            .collect()
    }
}

fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Builds one parameter from its declaration. Whether the fragment is a
/// valid schema and its default satisfies it is [`check_parameter`]'s job,
/// done later on all cores.
fn declare(name: &str, fragment: &Value) -> Result<Parameter, String> {
    let (schema, messages) =
        schema::expand_parameter(fragment).map_err(|m| format!("parameter `{name}`: {m}"))?;
    let default = schema.get("default").cloned();
    Ok(Parameter {
        name: name.to_owned(),
        required: default.is_none(),
        default,
        schema,
        messages,
    })
}

/// Checks the defaults a template declares against its compiled input
/// schema: one error per parameter whose default breaks its own schema.
fn check_defaults(validator: &jsonschema::Validator, res: &Resolved, errs: &mut Vec<Error>) {
    let mut defaults = serde_json::Map::new();
    for (pname, _) in &res.own_params {
        if let Some(d) = res
            .parameters
            .iter()
            .find(|p| p.name == *pname)
            .and_then(|p| p.default.as_ref())
        {
            defaults.insert(pname.clone(), d.clone());
        }
    }
    if defaults.is_empty() {
        return;
    }
    let instance = Value::Object(defaults);
    let mut reported = HashSet::new();
    for e in validator.iter_errors(&instance) {
        let path = e.instance_path().as_str();
        let mut parts = path.splitn(3, '/').skip(1);
        let Some(name) = parts.next() else { continue }; // `required` at the root
        let Some((_, at)) = res.own_params.iter().find(|(n, _)| n == name) else {
            continue;
        };
        if !reported.insert(name.to_owned()) {
            continue;
        }
        let inner = parts
            .next()
            .map_or_else(String::new, |rest| format!(" at `/{rest}`"));
        errs.push(
            Error::new(
                ErrorKind::Schema,
                format!("the default of `{name}` does not satisfy its own schema{inner}: {e}"),
            )
            .with_location(at.clone()),
        );
    }
}

/// Checks that a declared parameter's schema is valid and that its default
/// satisfies it.
fn check_parameter(p: &Parameter) -> Result<(), String> {
    let name = &p.name;
    let validator = schema::compile(&p.schema).map_err(|m| format!("parameter `{name}`: {m}"))?;
    if let Some(d) = &p.default
        && let Some(e) = validator.iter_errors(d).next()
    {
        let at = e.instance_path().as_str();
        let at = if at.is_empty() {
            String::new()
        } else {
            format!(" at `{at}`")
        };
        return Err(format!(
            "the default of `{name}` does not satisfy its own schema{at}: {e}"
        ));
    }
    Ok(())
}

/// Reads an `input_schema:` (inline, or `{$ref: PATH}` relative to the file).
fn load_input_schema(src: &SourceFile, value: &Value) -> Result<(Value, Vec<String>), String> {
    let mut schema = match value.get("$ref").and_then(Value::as_str) {
        Some(r) if !r.starts_with('#') => {
            if value.as_object().is_some_and(|o| o.len() > 1) {
                return Err("a `$ref` input_schema must hold nothing but the `$ref`".into());
            }
            let path = schema_path(src, r)?;
            let text = crate::file::read_text(&path, crate::file::MAX_FILE_BYTES)
                .map_err(|e| format!("cannot read input schema {}: {e}", path.display()))?;
            serde_json::from_str::<Value>(&text)
                .map_err(|e| format!("input schema {} is not valid JSON: {e}", path.display()))?
        }
        _ => value.clone(),
    };
    if schema.get("type") != Some(&Value::String("object".into())) {
        return Err("an input schema must have `type: object`".into());
    }
    let history = schema::expand_properties(&mut schema);
    schema::compile(&schema)?;
    // Defaults must satisfy their own property schema.
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            if let Some(d) = prop.get("default") {
                let v = schema::compile(prop)?;
                if let Some(e) = v.iter_errors(d).next() {
                    return Err(format!(
                        "the default of `{name}` does not satisfy its own schema: {e}"
                    ));
                }
            }
        }
    }
    Ok((schema, history))
}

/// Where an `input_schema` `$ref` points: relative to the file, and never
/// outside the template root (after resolving `..` and symlinks).
fn schema_path(src: &SourceFile, r: &str) -> Result<PathBuf, String> {
    let refuse = || format!("input schema `$ref: {r}` leads outside the template root; refused");
    if r.contains(['\\', '\0']) || Path::new(r).is_absolute() {
        return Err(refuse());
    }
    let base = src.path.parent().unwrap_or(Path::new("."));
    // The root is as many folders above the file as its name has segments
    // beyond the first.
    let mut root = base.to_path_buf();
    for _ in 1..src.name.split('/').count() {
        root.pop();
    }
    let path = base.join(r);
    let (Ok(real_root), Ok(real)) = (root.canonicalize(), path.canonicalize()) else {
        return Err(format!(
            "cannot read input schema {}: no such file",
            path.display()
        ));
    };
    if !real.starts_with(&real_root) {
        return Err(refuse());
    }
    Ok(path)
}

/// Builds the Jinja source of a manifest's `messages:`/`blocks:`, keeping
/// each piece of text on its own line number.
fn synthesize_manifest(src: &SourceFile, resolved: &Resolved, errors: &mut Vec<Error>) -> String {
    let m = &src.manifest;
    let mut out = String::new();
    let mut line = 1u64;
    let pad_to = |out: &mut String, line: &mut u64, target: u64| {
        while *line < target {
            out.push('\n');
            *line += 1;
        }
    };
    let history = resolved.history_params();

    match (&m.messages, &m.blocks, &resolved.extends) {
        (Some(_), Some(b), _) => {
            errors.push(
                Error::new(
                    ErrorKind::Syntax,
                    "give either `messages` (replacing the parent's) or `blocks` (overriding its blocks), not both",
                )
                .with_location(src.at_span(b.values().next().unwrap_or(&m.version))),
            );
        }
        (None, Some(_), None) => errors.push(
            Error::new(
                ErrorKind::Syntax,
                "`blocks:` needs `extends:` (blocks override a parent's)",
            )
            .with_location(Location::file(&src.path)),
        ),
        (None, None, None) => errors.push(
            Error::new(
                ErrorKind::Syntax,
                "a manifest needs `messages:` (or `extends:` a parent)",
            )
            .with_location(Location::file(&src.path)),
        ),
        _ => {}
    }

    if let Some(messages) = &m.messages {
        for entry in messages {
            let at = src.at_span(entry);
            let e = &entry.value;
            match (&e.role, &e.content, &e.history) {
                (Some(role), Some(content), None) => {
                    let role_at = src.at_span(role);
                    let Ok(r) = role.value.parse::<Role>() else {
                        errors.push(
                            Error::new(
                                ErrorKind::Syntax,
                                format!(
                                    "unknown role `{}` (expected system, user, assistant or tool)",
                                    role.value
                                ),
                            )
                            .with_location(role_at),
                        );
                        continue;
                    };
                    if let Some(what) = reserved(&content.value, e.name.as_deref()) {
                        errors.push(
                            Error::new(ErrorKind::Syntax, what).with_location(src.at_span(content)),
                        );
                        continue;
                    }
                    let content_line = content.referenced.line() + src.span_line_offset;
                    pad_to(&mut out, &mut line, content_line);
                    out.push_str(&body::role_marker(r, e.name.as_deref()));
                    out.push_str(&content.value);
                    line += content.value.matches('\n').count() as u64;
                }
                (None, None, Some(h)) => {
                    if !history.contains(h.value.as_str()) {
                        errors.push(
                            Error::new(
                                ErrorKind::Schema,
                                format!(
                                    "`history: {}` needs a parameter `{}` of `type: messages`",
                                    h.value, h.value
                                ),
                            )
                            .with_location(src.at_span(h)),
                        );
                        continue;
                    }
                    pad_to(
                        &mut out,
                        &mut line,
                        h.referenced.line() + src.span_line_offset,
                    );
                    out.push_str(&body::splice_marker(&h.value));
                }
                _ => errors.push(
                    Error::new(
                        ErrorKind::Syntax,
                        "a message is either `{role, content}` or `{history: PARAM}`",
                    )
                    .with_location(at),
                ),
            }
        }
        return out;
    }

    if let Some((pname, pver)) = &resolved.extends {
        out.push_str(&format!("{{% extends {:?} %}}", exact_ref(pname, pver)));
        for (name, text) in m.blocks.iter().flatten() {
            if !is_identifier(name) {
                errors.push(
                    Error::new(
                        ErrorKind::Syntax,
                        format!("block name `{name}` is not an identifier"),
                    )
                    .with_location(src.at_span(text)),
                );
                continue;
            }
            if let Some(what) = reserved(&text.value, None) {
                errors.push(Error::new(ErrorKind::Syntax, what).with_location(src.at_span(text)));
                continue;
            }
            pad_to(
                &mut out,
                &mut line,
                text.referenced.line() + src.span_line_offset,
            );
            out.push_str(&format!("{{% block {name} %}}"));
            out.push_str(&text.value);
            line += text.value.matches('\n').count() as u64;
            out.push_str("{% endblock %}");
        }
    }
    out
}

/// What is wrong when a manifest's text (after YAML's escapes, such as
/// `"\uFDD0"`) or a message name holds a character reserved for role
/// markers.
fn reserved(text: &str, name: Option<&str>) -> Option<String> {
    let bad = [body::MARK_OPEN, body::MARK_CLOSE];
    let c = text
        .chars()
        .chain(name.into_iter().flat_map(str::chars))
        .find(|c| bad.contains(c))?;
    Some(format!(
        "the value holds the reserved character U+{:04X} (written as a YAML escape?); \
         role boundaries come from `role:` entries only",
        c as u32
    ))
}

/// Builds the Jinja source of a `.prompt.jinja` body.
/// Also returns whether the body has no role line (its text is one user
/// message), or `None` when it only overrides a parent's blocks.
fn compile_jinja_body(
    src: &SourceFile,
    resolved: &Resolved,
    errors: &mut Vec<Error>,
) -> (String, Option<bool>) {
    let Some(b) = &src.body else {
        return (String::new(), Some(false));
    };
    let history = resolved.history_params();
    let grammar = if src.dialect.is_prompty() {
        body::Grammar::Prompty
    } else {
        body::Grammar::Native
    };
    let compiled: CompiledBody = body::compile_body_as(&b.text, &|n| history.contains(n), grammar);
    let at = |offset: usize| {
        let (l, c) = line_col(&b.text, offset);
        Location::at(&src.path, l + b.first_line - 1, Some(c))
    };
    if let Some(pos) = compiled.extends_tag {
        errors.push(
            Error::new(
                ErrorKind::Syntax,
                "write `extends: NAME@REQ` in the front matter instead of `{% extends %}`",
            )
            .with_location(at(pos)),
        );
    }
    // Line 1 of the file (`---`) is free: the prefix goes there, so every
    // body line keeps its number.
    let mut out = String::new();
    let standalone = resolved.extends.is_none() || compiled.roles_outside_blocks;
    // Prompty: text before the first marker is system, never user.
    let implicit_user = standalone.then_some(!compiled.has_role_lines && !src.dialect.is_prompty());
    if src.dialect.is_prompty() {
        // Prompty: text before the first marker is a system message.
    } else if standalone {
        if let Some(pos) = compiled.text_before_first_role {
            errors.push(
                Error::new(
                    ErrorKind::Syntax,
                    "text before the first role line (`system:`, `user:`, `assistant:` or `tool:` alone on a line)",
                )
                .with_location(at(pos)),
            );
        }
    } else if let Some((pname, pver)) = &resolved.extends {
        if let Some(pos) = compiled.text_outside_blocks {
            errors.push(
                Error::new(
                    ErrorKind::Syntax,
                    "text outside `{% block %}` in a template that extends a parent would be ignored; put it in a block, or write role lines to replace the parent's messages",
                )
                .with_location(at(pos)),
            );
        }
        out.push_str(&format!("{{% extends {:?} %}}", exact_ref(pname, pver)));
    }
    // Pad with a comment so the padding renders to nothing (trim_blocks
    // eats the newline after it) and an included partial adds no blank lines.
    if b.first_line >= 3 {
        out.push_str("{#");
        out.extend(std::iter::repeat_n('\n', b.first_line as usize - 2));
        out.push_str("#}\n");
    } else {
        out.extend(std::iter::repeat_n('\n', b.first_line as usize - 1));
    }
    out.push_str(&compiled.source);
    (out, implicit_user)
}

/// Parses a file, or reuses the parse of the very same path and bytes.
fn file_key(path: &Path, rel: &str, bytes: &[u8]) -> u128 {
    crate::memo::key(&[path.as_os_str().as_encoded_bytes(), rel.as_bytes(), bytes])
}

fn parse_memoized(
    path: &Path,
    rel: &str,
    bytes: &[u8],
    key: u128,
) -> Result<Arc<SourceFile>, Vec<Error>> {
    static PARSED: crate::memo::Memo<Arc<SourceFile>> = crate::memo::Memo::new(20_000);
    if let Some(src) = PARSED.get(key) {
        return Ok(src);
    }
    let src = Arc::new(template::parse_file(path, rel, bytes.to_vec())?);
    PARSED.put(key, src.clone());
    Ok(src)
}

/// Compiles a template's Jinja source and returns the variables it reads
/// without setting them; memoised by source, since neither depends on
/// anything else.
fn check_jinja(
    env: &Environment<'static>,
    name: &str,
    source: &str,
) -> Result<Arc<HashSet<String>>, minijinja::Error> {
    static CHECKED: crate::memo::Memo<Arc<HashSet<String>>> = crate::memo::Memo::new(20_000);
    let key = crate::memo::key(&[source.as_bytes()]);
    if let Some(vars) = CHECKED.get(key) {
        return Ok(vars);
    }
    let vars = Arc::new(env.get_template(name)?.undeclared_variables(false));
    CHECKED.put(key, vars.clone());
    Ok(vars)
}

/// Names that are not template variables: globals, and the names Jinja
/// defines inside loops, macros and blocks.
const BUILTIN_NAMES: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "debug",
    "loop",
    "self",
    "super",
    "caller",
    "varargs",
    "kwargs",
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
];

/// Analyses a root: everything `load` and `lint` report.
pub(crate) fn analyze(root: &Path) -> Result<Analysis, Error> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let files = read_files(root, &mut errors)?;

    // Parse.
    let mut sources: FastMap<Key, Arc<SourceFile>> = FastMap::default();
    let mut content_keys: FastMap<Key, u128> = FastMap::default();
    // Parsing is per file: all cores.
    let parsed = crate::par::map(&files, |(path, rel, bytes)| {
        let content_key = file_key(path, rel, bytes);
        (content_key, parse_memoized(path, rel, bytes, content_key))
    });
    for (content_key, result) in parsed {
        match result {
            Ok(src) => {
                let key = (src.name.clone(), src.version.clone());
                if let Some(prev) = sources.get(&key) {
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
                content_keys.insert(key.clone(), content_key);
                sources.insert(key, src);
            }
            Err(mut errs) => errors.append(&mut errs),
        }
    }

    // Versions and labels per name.
    let mut versions: BTreeMap<String, Vec<(Version, Vec<String>)>> = BTreeMap::new();
    let mut keys: Vec<Key> = sources.keys().cloned().collect();
    keys.sort();
    let mut label_owner: HashMap<(String, String), Key> = HashMap::new();
    for key in &keys {
        let src = &sources[key];
        let labels = src
            .manifest
            .labels
            .as_ref()
            .map(|l| l.value.clone())
            .unwrap_or_default();
        for label in &labels {
            if let Some(prev) = label_owner.get(&(key.0.clone(), label.clone())) {
                let prev_src = &sources[prev];
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
                label_owner.insert((key.0.clone(), label.clone()), key.clone());
            }
        }
        versions
            .entry(key.0.clone())
            .or_default()
            .push((key.1.clone(), labels));
    }

    // Inheritance.
    let mut loader = Loader {
        sources: &sources,
        content_keys: &content_keys,
        versions,
        resolved: FastMap::default(),
        order: Vec::new(),
        errors: Vec::new(),
    };
    // Templates without a parent resolve on their own: on all cores into
    // the memo, which the (sequential, parents-first) pass below then hits.
    // Failures are not memoised; that pass reports them.
    let roots: Vec<&Key> = keys
        .iter()
        .filter(|k| sources[*k].manifest.extends.is_none())
        .collect();
    crate::par::map(&roots, |key| {
        let memo_key = resolved_key(content_keys[*key], None);
        if RESOLVED.get(memo_key).is_none()
            && let Ok(mut r) = loader.resolve_own(&sources[*key], None, None)
        {
            r.memo_key = memo_key;
            RESOLVED.put(memo_key, Arc::new(r));
        }
    });
    for key in &keys {
        loader.resolve(key, &mut Vec::new());
    }
    let resolved = std::mem::take(&mut loader.resolved);
    let loader_order = std::mem::take(&mut loader.order);
    errors.append(&mut loader.errors);

    // Compile sources and schemas, parents first.
    let mut index = Index::default();
    let mut implicit: FastMap<Key, bool> = FastMap::default();
    // Same resolved inputs, same entry: reused whole across loads.
    static ENTRIES: crate::memo::Memo<Arc<Entry>> = crate::memo::Memo::new(20_000);
    // The per-template work (compiling the source, typing the model and
    // context, compiling the input schema) on all cores; only inheriting
    // `implicit_user` from the parent is sequential.
    let prepare = |key: &Key| {
        let res = resolved.get(key)?.as_ref()?;
        let src = &sources[key];
        let mut errs = Vec::new();
        let (source, own_implicit) = match src.form {
            FileForm::Manifest => {
                let s = synthesize_manifest(src, res, &mut errs);
                (s, src.manifest.messages.as_ref().map(|_| false))
            }
            FileForm::Body => compile_jinja_body(src, res, &mut errs),
        };
        let source = crate::namespace::guard_sets(&source).into_owned();
        let model = res.model.as_ref().and_then(|v| {
            typed::<ModelConfig>(v, "model", src, src.manifest.model.as_ref(), &mut errs)
        });
        let context = res.context.as_ref().and_then(|v| {
            typed::<ContextConfig>(v, "context", src, src.manifest.context.as_ref(), &mut errs)
        });
        // One compile per template: the object schema of its parameters.
        // The defaults it declares are checked against it in one pass; a
        // bad parameter schema is traced back to the parameter only when
        // that compile fails.
        let declares = src.manifest.parameters.is_some();
        let validator = match schema::compile_input(&res.input_schema) {
            Ok(v) => {
                if declares {
                    check_defaults(&v.validator, res, &mut errs);
                }
                Some(v)
            }
            Err(msg) => {
                let mut traced = false;
                if declares {
                    for (pname, at) in &res.own_params {
                        if let Some(p) = res.parameters.iter().find(|p| p.name == *pname)
                            && let Err(m) = check_parameter(p)
                        {
                            errs.push(Error::new(ErrorKind::Schema, m).with_location(at.clone()));
                            traced = true;
                        }
                    }
                }
                if !traced {
                    errs.push(
                        Error::new(ErrorKind::Schema, msg).with_location(Location::file(&src.path)),
                    );
                }
                None
            }
        };
        Some((source, own_implicit, model, context, validator, errs))
    };
    let prepared = crate::par::map(&loader_order, |key| {
        let res = resolved.get(key)?.as_ref()?;
        if ENTRIES.get(res.memo_key).is_some() {
            return None;
        }
        prepare(key)
    });
    for (key, prepared) in loader_order.iter().zip(prepared) {
        let Some(Some(res)) = resolved.get(key) else {
            continue;
        };
        if let Some(entry) = ENTRIES.get(res.memo_key) {
            implicit.insert(key.clone(), entry.implicit_user);
            index.by_name.entry(key.0.clone()).or_default().push(entry);
            continue;
        }
        // (A memo that filled up meanwhile forgot the entry: do it here.)
        let Some((source, own_implicit, model, context, validator, mut errs)) =
            prepared.or_else(|| prepare(key))
        else {
            continue;
        };
        let src = &sources[key];
        let implicit_user = own_implicit.unwrap_or_else(|| {
            res.extends
                .as_ref()
                .and_then(|p| implicit.get(p).copied())
                .unwrap_or(false)
        });
        implicit.insert(key.clone(), implicit_user);
        if !errs.is_empty() {
            errors.append(&mut errs);
            continue;
        }
        let Some(validator) = validator else { continue };
        let template = Template {
            name: key.0.clone(),
            version: key.1.clone(),
            path: src.path.clone(),
            description: src.manifest.description.clone(),
            labels: src
                .manifest
                .labels
                .as_ref()
                .map(|l| l.value.clone())
                .unwrap_or_default(),
            extends: res.extends.as_ref().map(|(n, v)| format!("{n}@{v}")),
            parameters: res.parameters.clone(),
            input_schema: res.input_schema.clone(),
            model: model.map(Arc::new),
            context,
        };
        let jinja_name = exact_ref(&template.name, &template.version);
        let defaults = template
            .parameters
            .iter()
            .filter_map(|p| {
                let d = p.default.as_ref()?;
                Some((
                    minijinja::Value::from(p.name.as_str()),
                    crate::input::from_json(d),
                ))
            })
            .collect();
        let declared = template
            .parameters
            .iter()
            .map(|p| minijinja::Value::from(p.name.as_str()))
            .collect();
        let entry = Arc::new(Entry {
            id: template.id(),
            schema: validator,
            jinja_name,
            defaults,
            declared,
            messages_hint: std::sync::atomic::AtomicUsize::new(4),
            template,
            source,
            form: src.form,
            implicit_user,
            dialect: src.dialect,
        });
        ENTRIES.put(res.memo_key, entry.clone());
        index.by_name.entry(key.0.clone()).or_default().push(entry);
    }
    for v in index.by_name.values_mut() {
        v.sort_by(|a, b| a.template.version.cmp(&b.template.version));
    }
    let index = Arc::new(index);
    let env = environment(index.clone(), &RenderLimits::default());

    // Compile every template and lint its variables.
    let mut broken = HashSet::new();
    let all: Vec<&Arc<Entry>> = index.by_name.values().flatten().collect();
    let checked = crate::par::map(&all, |entry| {
        let t = &entry.template;
        let name = exact_ref(&t.name, &t.version);
        check_jinja(&env, &name, &entry.source)
            .err()
            .map(|e| (name, e))
    });
    for (name, e) in checked.into_iter().flatten() {
        errors.push(jinja_error(&e, &index));
        broken.insert(name);
    }
    // Lint each template on all cores; findings are merged in order.
    let findings = crate::par::map(&all, |entry| {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let t = &entry.template;
        let name = exact_ref(&t.name, &t.version);
        let key = (t.name.clone(), t.version.clone());
        let (Some(src), Some(Some(res))) = (sources.get(&key), resolved.get(&key)) else {
            return (errors, warnings);
        };
        if broken.contains(&name) {
            return (errors, warnings);
        }
        let declared: HashSet<&str> = t.parameters.iter().map(|p| p.name.as_str()).collect();
        let own = own_variables(&env, &name, &entry.source);
        let mut undeclared: Vec<&String> = own
            .iter()
            .filter(|v| !declared.contains(v.as_str()) && !BUILTIN_NAMES.contains(&v.as_str()))
            .collect();
        undeclared.sort();
        for var in undeclared {
            let location = find_use(&entry.source, var)
                .map(|(l, c)| {
                    Location::at(&src.path, l, (entry.form == FileForm::Body).then_some(c))
                })
                .unwrap_or_else(|| Location::file(&src.path));
            let message =
                format!("`{var}` is used but is neither a parameter nor set in the template");
            if entry.dialect.is_strict() {
                errors.push(Error::new(ErrorKind::Lint, message).with_location(location));
            } else {
                // Prompty renders an undeclared variable empty.
                warnings.push(Diagnostic::new(
                    Severity::Warning,
                    location,
                    format!("{message} (it renders empty)"),
                ));
            }
        }
        // Static includes must resolve.
        for (target, offset) in static_refs(&entry.source) {
            if let Err(e) = index.resolve(&target) {
                let (l, c) = line_col(&entry.source, offset);
                errors.push(Error::new(e.kind(), e.message().to_owned()).with_location(
                    Location::at(&src.path, l, (entry.form == FileForm::Body).then_some(c)),
                ));
            }
        }
        // Unused parameters (only those this file declares).
        let mut used_cache = HashMap::new();
        let used = used_variables(&env, &index, &name, &mut used_cache, 0).unwrap_or_default();
        let spliced: HashSet<String> = static_splices(&entry.source);
        for (pname, at) in &res.own_params {
            if !used.contains(pname) && !spliced.contains(pname) {
                warnings.push(Diagnostic::new(
                    Severity::Warning,
                    at.clone(),
                    format!("parameter `{pname}` is declared but never used"),
                ));
            }
        }
        (errors, warnings)
    });
    for (mut e, mut w) in findings {
        errors.append(&mut e);
        warnings.append(&mut w);
    }

    errors.sort_by(|a, b| a.location().cmp(&b.location()));
    warnings.sort_by(|a, b| a.location().cmp(b.location()));
    let registry = Registry {
        inner: Arc::new(Inner {
            root: root.to_owned(),
            prompty_env: prompty_environment(index.clone(), &RenderLimits::default()),
            index,
            env,
            warnings: warnings.clone(),
            limits: RenderLimits::default(),
            refs: Default::default(),
        }),
    };
    Ok(Analysis {
        registry: Some(registry),
        errors,
        warnings,
    })
}

fn typed<T: serde::de::DeserializeOwned>(
    v: &Value,
    what: &str,
    src: &SourceFile,
    span: Option<&serde_saphyr::Spanned<Value>>,
    errors: &mut Vec<Error>,
) -> Option<T> {
    match serde_json::from_value::<T>(v.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(
                Error::new(ErrorKind::Syntax, format!("`{what}:` {e}")).with_location(
                    span.map_or_else(|| Location::file(&src.path), |s| src.at_span(s)),
                ),
            );
            None
        }
    }
}

/// Variables a compiled template reads without setting them.
fn own_variables(env: &Environment<'static>, name: &str, source: &str) -> HashSet<String> {
    check_jinja(env, name, source)
        .map(|v| HashSet::clone(&v))
        .unwrap_or_default()
}

/// Variables read by a template, its parent and its static includes.
fn used_variables(
    env: &Environment<'static>,
    index: &Index,
    name: &str,
    cache: &mut HashMap<String, Option<HashSet<String>>>,
    depth: usize,
) -> Option<HashSet<String>> {
    if let Some(hit) = cache.get(name) {
        return hit.clone();
    }
    if depth > 32 {
        return None;
    }
    cache.insert(name.to_owned(), None); // cycle guard
    let entry = index.resolve(name).ok()?;
    let mut used = own_variables(env, name, &entry.source);
    let mut targets: Vec<String> = static_refs(&entry.source)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    if let Some(parent) = &entry.template.extends
        && let Some((n, v)) = parent.split_once('@')
    {
        targets.push(exact_ref(n, &v));
    }
    for target in targets {
        if let Some(more) = used_variables(env, index, &target, cache, depth + 1) {
            used.extend(more);
        }
    }
    cache.insert(name.to_owned(), Some(used.clone()));
    Some(used)
}

/// `(reference, offset)` of every `{% include/import/from "..." %}` with a
/// literal name, and of `{% extends "..." %}`.
pub(crate) fn static_refs(source: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut rest = 0;
    while let Some(p) = source[rest..].find("{%") {
        let start = rest + p;
        let (inner_end, end) = match source[start + 2..].find("%}") {
            Some(e) => (start + 2 + e, start + 2 + e + 2),
            None => (source.len(), source.len()),
        };
        let inner = source[start + 2..inner_end]
            .trim_matches(['-', '+', '~'])
            .trim();
        let keyword = inner.split_whitespace().next().unwrap_or_default();
        if matches!(keyword, "include" | "import" | "from" | "extends") {
            let arg = inner[keyword.len()..].trim_start();
            if let Some(q) = arg.chars().next().filter(|c| *c == '"' || *c == '\'')
                && let Some(close) = arg[1..].find(q)
            {
                out.push((arg[1..1 + close].to_owned(), start));
            }
        }
        rest = end;
    }
    out
}

/// Parameters spliced by markers in a compiled source.
fn static_splices(source: &str) -> HashSet<String> {
    body::spliced_params(source)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// First line and column where `var` appears inside a Jinja tag.
fn find_use(source: &str, var: &str) -> Option<(u32, u32)> {
    let bytes = source.as_bytes();
    let mut from = 0;
    while let Some(p) = source[from..].find(var) {
        let i = from + p;
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + var.len()).copied();
        let word = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_');
        let in_tag = {
            let open = source[..i].rfind("{{").max(source[..i].rfind("{%"));
            let close = source[..i].rfind("}}").max(source[..i].rfind("%}"));
            open.is_some() && open > close
        };
        if !word(before) && !word(after) && before != Some(b'.') && in_tag {
            return Some(line_col(source, i));
        }
        from = i + var.len();
    }
    None
}

/// The Jinja environment: strict undefined, trim and lstrip blocks, no
/// auto-escaping, templates loaded from the in-memory index.
fn environment(index: Arc<Index>, limits: &RenderLimits) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(limits.fuel);
    env.set_recursion_limit(limits.recursion);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build();
    if let Ok(syntax) = syntax {
        env.set_syntax(syntax);
    }
    env.set_debug(true);
    crate::namespace::register(&mut env, limits.max_input_depth);
    // A name that parses but matches nothing is "not found" (so Jinja's
    // `ignore missing` works); a malformed one is an error of its own.
    // Static includes were already checked at load, with version lists.
    env.set_loader(move |name| match index.resolve(name) {
        Ok(entry) => Ok(Some(entry.source.clone())),
        Err(_) if Reference::parse(name).is_ok() => Ok(None),
        Err(e) => Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            e.message().to_owned(),
        )),
    });
    env
}

/// Prompty's rendering rules: no `trim_blocks`/`lstrip_blocks`, undefined
/// values (and attributes of them) render empty, `none` renders empty,
/// booleans render `true`/`false` and a float without a fraction renders as
/// an integer (as Prompty's runtimes print them).
fn prompty_environment(index: Arc<Index>, limits: &RenderLimits) -> Environment<'static> {
    let mut env = environment(index, limits);
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // Prompty keeps the body's trailing newline (a marker on the last line
    // with nothing after it is then an absent message, not an empty one).
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.set_formatter(|out, state, value| {
        if value.is_none() || value.is_undefined() {
            return Ok(());
        }
        if value.kind() == minijinja::value::ValueKind::Bool {
            let text = if value.is_true() { "true" } else { "false" };
            return out.write_str(text).map_err(minijinja::Error::from);
        }
        if value.kind() == minijinja::value::ValueKind::Number {
            let text = value.to_string();
            if let Some(int) = text.strip_suffix(".0") {
                return out.write_str(int).map_err(minijinja::Error::from);
            }
        }
        minijinja::escape_formatter(out, state, value)
    });
    env
}

/// Maps a Jinja error to the file and line it comes from.
pub(crate) fn jinja_error(e: &minijinja::Error, index: &Index) -> Error {
    let entry = e.name().and_then(|n| index.resolve(n).ok());
    let mut message = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    let span = e.range().zip(entry).and_then(|(r, entry)| {
        entry
            .source
            .get(r.clone())
            .map(|snippet| (snippet.to_owned(), r.start))
    });
    if let (Some((snippet, _)), minijinja::ErrorKind::UndefinedError, None) =
        (&span, e.kind(), e.detail())
        && !snippet.is_empty()
        && snippet.len() < 80
    {
        message.push_str(&format!(" (`{snippet}`)"));
    }
    let kind = match e.kind() {
        minijinja::ErrorKind::OutOfFuel => {
            message =
                "the render ran out of fuel: it did more work than RenderLimits::fuel allows \
                       (a runaway loop, or strings built too large?)"
                    .to_owned();
            ErrorKind::Limit
        }
        minijinja::ErrorKind::InvalidOperation
            if e.detail().is_some_and(|d| d.contains("recursion limit")) =>
        {
            message = "the render nested macro calls, includes or blocks deeper than \
                       RenderLimits::recursion allows (runaway recursion?)"
                .to_owned();
            ErrorKind::Limit
        }
        _ => ErrorKind::Template,
    };
    let mut err = Error::new(kind, message);
    if let Some(entry) = entry {
        let line = e.line().map(|l| l as u32);
        let column = match (&span, entry.form) {
            (Some((_, start)), FileForm::Body) => Some(line_col(&entry.source, *start).1),
            _ => None,
        };
        err = err.with_location(match line {
            Some(l) => Location::at(&entry.template.path, l, column),
            None => Location::file(&entry.template.path),
        });
    }
    // Errors raised inside an include carry the include's error as source.
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        if let Some(inner) = inner.downcast_ref::<minijinja::Error>() {
            return jinja_error(inner, index);
        }
        cause = inner.source();
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_refs_finds_literal_names_and_survives_unclosed_tags() {
        let src = "{% include \"a@^1\" %}{%- import 'm' as m -%}{% from \"f\" import x %}{% include var %}";
        let refs: Vec<String> = static_refs(src).into_iter().map(|(r, _)| r).collect();
        assert_eq!(refs, ["a@^1", "m", "f"]);
        assert_eq!(static_refs("{% include \"x"), []);
        assert_eq!(static_refs("{% include \"x\" 你"), [("x".to_owned(), 0)]);
        assert_eq!(static_refs("{%"), []);
    }

    #[test]
    fn did_you_mean_uses_edit_distance() {
        assert_eq!(strsim("triage", "traige"), 2);
        assert_eq!(strsim("", "abc"), 3);
    }
}
