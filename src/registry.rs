//! The registry: the catalog of every template under a root, resolved and
//! compiled (see [`crate::load`] for how), and what a caller asks of it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::Environment;

use crate::dialect::{Dialect, Engine};
use crate::error::{Diagnostic, Error, ErrorKind};
use crate::limits::RenderLimits;
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
    /// The rules it renders by.
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
        let analysis = crate::load::analyze(dir.as_ref())?;
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
                warnings,
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
                env: crate::jinja::environment(self.inner.index.clone(), &limits),
                prompty_env: crate::jinja::prompty_environment(self.inner.index.clone(), &limits),
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
            for (target, _) in crate::load::lint::static_refs(&e.source) {
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
}

impl Template {
    /// See [`Registry::check_input_type`].
    pub fn check_input_type<T: schemars::JsonSchema>(&self) -> Vec<SchemaMismatch> {
        schema::compare_type::<T>(&self.input_schema)
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
