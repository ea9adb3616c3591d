//! A registry that reloads itself when its files change.
//!
//! [`WatchedRegistry`] watches a template root recursively (notify; file
//! events are debounced for 25 ms so that an editor's save, whether
//! write-to-temp-then-rename, truncate-then-write or delete-then-create,
//! lands as one reload), loads the whole root again, and swaps the new
//! [`Registry`] in atomically. Readers
//! take a snapshot with [`WatchedRegistry::registry`]; a render in progress
//! keeps the snapshot it started with. A load that fails never replaces the
//! last good registry: its errors are kept (and sent to subscribers) until a
//! later save loads cleanly.
//!
//! Every reload loads the whole root again, which is always correct (a
//! parent or partial change reaches its dependants), and cheap: parsing,
//! inheritance, schemas and Jinja checks are memoised by content, so only
//! changed files and their dependants are redone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::error::{Diagnostic, Error, ErrorKind};
use crate::registry::Registry;

/// How long the watcher waits for a burst of file events to end.
const DEBOUNCE: Duration = Duration::from_millis(25);

/// What a reload did, sent to every subscriber. Serialises as
/// `{"generation", "changed", "errors"}` (the dev server's `reload` event).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ReloadEvent {
    /// The generation now served. It grows by one with every good reload and
    /// stays the same when a reload failed.
    pub generation: u64,
    /// Names of templates that were added, removed or changed, with every
    /// template that extends or includes one of them.
    pub changed: Vec<String>,
    /// The problems of a failed reload (the last good registry is still
    /// served); empty for a good one.
    pub errors: Vec<Diagnostic>,
}

impl ReloadEvent {
    /// Whether the reload succeeded.
    pub fn is_good(&self) -> bool {
        self.errors.is_empty()
    }
}

struct Shared {
    root: PathBuf,
    limits: Mutex<crate::RenderLimits>,
    current: ArcSwap<Registry>,
    reloading: Mutex<()>,
    state: Mutex<State>,
}

struct State {
    generation: u64,
    errors: Vec<Diagnostic>,
    subscribers: Vec<Sender<ReloadEvent>>,
}

/// A [`Registry`] kept in step with its files. Cheap to clone; `Send` and
/// `Sync`.
#[derive(Clone)]
pub struct WatchedRegistry {
    shared: Arc<Shared>,
    _watcher: Arc<Mutex<RecommendedWatcher>>,
}

impl std::fmt::Debug for WatchedRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedRegistry")
            .field("root", &self.shared.root)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl WatchedRegistry {
    /// Loads `dir` and starts watching it.
    ///
    /// # Errors
    /// The load errors when the first load fails (there is nothing to
    /// serve yet), or [`ErrorKind::Io`] when the directory cannot be
    /// watched.
    pub fn watch(dir: impl AsRef<Path>) -> Result<WatchedRegistry, Error> {
        let root = dir.as_ref().to_owned();
        let registry = Registry::load(&root)?;
        WatchedRegistry::start(root, registry, 1, Vec::new())
    }

    /// Like [`watch`](WatchedRegistry::watch), but a root that does not
    /// load yet is not an error: until its first good save the registry is
    /// [empty](Registry::empty), the generation is 0, and
    /// [`errors`](WatchedRegistry::errors) says what is wrong. This is what a
    /// dev server wants: it comes up, shows the problem, and serves the
    /// templates as soon as they are fixed.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the directory does not exist or cannot be
    /// watched.
    pub fn watch_lenient(dir: impl AsRef<Path>) -> Result<WatchedRegistry, Error> {
        let root = dir.as_ref().to_owned();
        if !root.is_dir() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("template root {} is not a directory", root.display()),
            ));
        }
        match Registry::load(&root) {
            Ok(registry) => WatchedRegistry::start(root, registry, 1, Vec::new()),
            Err(e) if e.kind() == ErrorKind::Io => Err(e),
            Err(e) => {
                let errors = diagnostics(&e, &root);
                WatchedRegistry::start(root.clone(), Registry::empty(root), 0, errors)
            }
        }
    }

    fn start(
        root: PathBuf,
        registry: Registry,
        generation: u64,
        errors: Vec<Diagnostic>,
    ) -> Result<WatchedRegistry, Error> {
        let shared = Arc::new(Shared {
            root: root.clone(),
            limits: Mutex::new(crate::RenderLimits::default()),
            current: ArcSwap::from_pointee(registry),
            reloading: Mutex::new(()),
            state: Mutex::new(State {
                generation,
                errors,
                subscribers: Vec::new(),
            }),
        });
        let (tx, rx) = channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(tx).map_err(|e| watch_error(&root, e))?;
        watcher
            .watch(&root, RecursiveMode::Recursive)
            .map_err(|e| watch_error(&root, e))?;
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("promptbook-watch".into())
            .spawn(move || debounce_loop(&rx, &weak))
            .map_err(|e| {
                Error::new(ErrorKind::Io, "cannot start the watcher thread").with_source(e)
            })?;
        Ok(WatchedRegistry {
            shared,
            _watcher: Arc::new(Mutex::new(watcher)),
        })
    }

    /// A snapshot of the current registry. It stays valid, and unchanged,
    /// however many reloads happen while you use it.
    pub fn registry(&self) -> Registry {
        Registry::clone(&self.shared.current.load())
    }

    /// The generation served: 1 after the first load, one more per good
    /// reload (0 while a [lenient](WatchedRegistry::watch_lenient) root has
    /// never loaded).
    pub fn generation(&self) -> u64 {
        self.shared.lock().generation
    }

    /// The problems of the last reload when it failed; empty when the files
    /// on disk are what is served.
    pub fn errors(&self) -> Vec<Diagnostic> {
        self.shared.lock().errors.clone()
    }

    /// Receives one [`ReloadEvent`] per reload from now on.
    pub fn subscribe(&self) -> Receiver<ReloadEvent> {
        let (tx, rx) = channel();
        self.shared.lock().subscribers.push(tx);
        rx
    }

    /// Reloads now, without waiting for a file event, and returns what
    /// happened (subscribers get it too).
    pub fn reload(&self) -> ReloadEvent {
        self.shared.reload()
    }

    /// Renders from now on (the current registry and every reload) run
    /// under `limits`.
    pub fn set_limits(&self, limits: crate::RenderLimits) {
        *self.shared.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
        let _one_at_a_time = self
            .shared
            .reloading
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let current = self.shared.current.load_full();
        self.shared
            .current
            .store(Arc::new(current.with_limits(limits)));
    }

    /// The watched directory.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reload(&self) -> ReloadEvent {
        // One reload at a time, so events go out in generation order.
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let limits = *self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let event = match Registry::load(&self.root).map(|r| with_limits(r, limits)) {
            Ok(new) => self.swap_in(new),
            Err(e) => self.keep_last_good(&e),
        };
        self.notify(&event);
        event
    }

    /// Serves `new` at once, then works out what changed.
    fn swap_in(&self, new: Registry) -> ReloadEvent {
        let new = Arc::new(new);
        let (generation, old) = {
            let mut state = self.lock();
            let old = self.current.swap(new.clone());
            state.generation += 1;
            state.errors.clear();
            (state.generation, old)
        };
        ReloadEvent {
            generation,
            changed: changed_names(&old, &new),
            errors: Vec::new(),
        }
    }

    /// A failed load: keep serving what we had, remember why.
    fn keep_last_good(&self, e: &Error) -> ReloadEvent {
        let errors = diagnostics(e, &self.root);
        let mut state = self.lock();
        state.errors = errors.clone();
        ReloadEvent {
            generation: state.generation,
            changed: Vec::new(),
            errors,
        }
    }

    fn notify(&self, event: &ReloadEvent) {
        self.lock()
            .subscribers
            .retain(|tx| tx.send(event.clone()).is_ok());
    }
}

/// Waits for a file event that matters, then for the burst to end (no such
/// event for [`DEBOUNCE`]), then reloads. Reading files raises access
/// events, so those are ignored: that is why we debounce by hand rather than
/// with notify-debouncer-mini, which does not say what kind an event was.
/// Ends when the watcher is dropped (the channel closes) or the registry is.
fn debounce_loop(rx: &Receiver<notify::Result<notify::Event>>, shared: &std::sync::Weak<Shared>) {
    let matters = |event: &notify::Result<notify::Event>, root: &Path| match event {
        Ok(e) => {
            !matches!(e.kind, EventKind::Access(_))
                && (e.paths.is_empty() || e.paths.iter().any(|p| !is_hidden(root, p)))
        }
        Err(_) => true, // the watcher lost track: reload to be safe
    };
    loop {
        let Ok(event) = rx.recv() else { return };
        let Some(root) = shared.upgrade().map(|s| s.root.clone()) else {
            return;
        };
        if !matters(&event, &root) {
            continue;
        }
        let mut deadline = std::time::Instant::now() + DEBOUNCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(event) => {
                    if matters(&event, &root) {
                        deadline = std::time::Instant::now() + DEBOUNCE;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        match shared.upgrade() {
            Some(shared) => {
                shared.reload();
            }
            None => return,
        }
    }
}

fn with_limits(registry: Registry, limits: crate::RenderLimits) -> Registry {
    if limits == crate::RenderLimits::default() {
        registry
    } else {
        registry.with_limits(limits)
    }
}

/// One diagnostic per problem of a failed load.
fn diagnostics(e: &Error, root: &Path) -> Vec<Diagnostic> {
    e.problems()
        .into_iter()
        .map(|p| Diagnostic::from_error(p, root))
        .collect()
}

fn watch_error(root: &Path, e: notify::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("cannot watch template root {}", root.display()),
    )
    .with_source(e)
}

/// Files and folders starting with `.` are not templates (editors' swap
/// files, `.git`).
fn is_hidden(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .any(|c| {
            c.as_os_str()
                .to_str()
                .is_some_and(|s| s.starts_with('.') && s != "." && s != "..")
        })
}

/// Names whose templates differ between two registries, plus everything
/// that extends or includes them, transitively.
fn changed_names(old: &Registry, new: &Registry) -> Vec<String> {
    let fingerprints = |r: &Registry| -> BTreeMap<String, Vec<usize>> {
        r.names()
            .map(|n| (n.to_owned(), r.fingerprints(n)))
            .collect()
    };
    let (a, b) = (fingerprints(old), fingerprints(new));
    let mut changed: BTreeSet<String> = a
        .keys()
        .chain(b.keys())
        .filter(|n| a.get(*n) != b.get(*n))
        .cloned()
        .collect();
    // Dependants in the new registry: who extends or includes whom.
    let mut users: HashMap<String, Vec<String>> = HashMap::new();
    for name in new.names() {
        for dep in new.dependencies(name) {
            users.entry(dep).or_default().push(name.to_owned());
        }
    }
    let mut queue: Vec<String> = changed.iter().cloned().collect();
    while let Some(name) = queue.pop() {
        for user in users.get(&name).into_iter().flatten() {
            if changed.insert(user.clone()) {
                queue.push(user.clone());
            }
        }
    }
    changed.into_iter().collect()
}
