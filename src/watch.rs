//! A registry that reloads itself when its files change.
//!
//! [`WatchedRegistry`] watches a template root recursively (notify), waits
//! for a save to *settle* (see below), loads the whole root again, and
//! swaps the new [`Registry`] in atomically. Readers
//! take a snapshot with [`WatchedRegistry::registry`]; a render in progress
//! keeps the snapshot it started with. A load that fails never replaces the
//! last good registry: its errors are kept (and sent to subscribers) until a
//! later save loads cleanly.
//!
//! Every reload loads the whole root again, which is always correct (a
//! parent or partial change reaches its dependants), and cheap: parsing,
//! inheritance, schemas and Jinja checks are memoised by content, so only
//! changed files and their dependants are redone.
//!
//! # When a save has settled
//!
//! Editors save in several ways, and each passes through states that must
//! never be served: a half-written file (write in place, with pauses), an
//! empty one (truncate, then write), none at all (delete, then create). A
//! reload waits until all of these hold ([`Settle`]):
//!
//! - no event has come for [`QUIET`] (a burst of events is one save);
//! - no template written since is still open for writing: on Linux,
//!   inotify reports when a file written to is closed, and a file stays
//!   pending until then; elsewhere, a file counts as settled once its size
//!   and modification time stay the same across the quiet period;
//! - no template removed in the last [`GRACE`] is still missing (a
//!   delete-then-create keeps serving the old version meanwhile);
//! - and, at most [`MAX_WAIT`] after the first event, the reload happens
//!   anyway (a writer that never closes its file, or files that never stop
//!   changing, cannot hold reloads back for longer).
//!
//! Only events for files that can matter count: template files, JSON and
//! YAML files (`$ref` schemas) and folders. Hidden files and other files
//! (an editor's swap file, a log appended to every few milliseconds) are
//! ignored. A load during which a relevant event arrived is not swapped
//! in: the save it caught may be half done; the next settle reloads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::error::{Diagnostic, Error, ErrorKind, Severity};
use crate::load::LoadOptions;
use crate::registry::Registry;

/// How long a burst of file events must be quiet before a reload.
pub(crate) const QUIET: Duration = Duration::from_millis(30);

/// How long a removed template is waited for to come back before a reload
/// lets it go.
pub(crate) const GRACE: Duration = Duration::from_millis(1000);

/// The longest a reload waits after the first event of a burst.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(2000);

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
    limits: Mutex<crate::limits::RenderLimits>,
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
        // What loads is served at once; what does not is left out, and
        // said in `errors()`.
        let registry = Registry::load_with(&root, &LoadOptions::isolate())?;
        let errors = problems(&registry);
        let generation = u64::from(registry.names().next().is_some() || errors.is_empty());
        WatchedRegistry::start(root, registry, generation, errors)
    }

    fn start(
        root: PathBuf,
        registry: Registry,
        generation: u64,
        errors: Vec<Diagnostic>,
    ) -> Result<WatchedRegistry, Error> {
        let shared = Arc::new(Shared {
            root: root.clone(),
            limits: Mutex::new(crate::limits::RenderLimits::default()),
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
    pub fn set_limits(&self, limits: crate::limits::RenderLimits) {
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
        let candidate = self.load();
        self.install(candidate)
    }

    /// Loads the root (under the current limits), without serving it yet.
    /// Files in `being_written` are still open for writing: they are left
    /// out, so their last good versions are served.
    fn load_holding(&self, being_written: Vec<PathBuf>) -> Result<Registry, Error> {
        let limits = *self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let mut options = LoadOptions::isolate();
        options.being_written = being_written;
        Registry::load_with(&self.root, &options).map(|r| with_limits(r, limits))
    }

    fn load(&self) -> Result<Registry, Error> {
        self.load_holding(Vec::new())
    }

    /// Serves a load's result (or keeps the last good registry when it
    /// failed), and tells the subscribers.
    fn install(&self, candidate: Result<Registry, Error>) -> ReloadEvent {
        // One reload at a time, so events go out in generation order.
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let event = match candidate {
            Ok(new) => {
                // The limits may have changed while it loaded.
                let limits = *self.limits.lock().unwrap_or_else(|e| e.into_inner());
                let new = if *new.limits() == limits {
                    new
                } else {
                    new.with_limits(limits)
                };
                // A template this load left out keeps serving its last
                // good version.
                let new = new.keeping_last_good(&self.current.load());
                self.swap_in(new)
            }
            Err(e) => self.keep_last_good(&e),
        };
        self.notify(&event);
        event
    }

    /// Serves `new` at once, then works out what changed. The generation
    /// grows when anything did; the problems of the load (templates left
    /// out, some still served in their last good version) are kept.
    fn swap_in(&self, new: Registry) -> ReloadEvent {
        let errors = problems(&new);
        let new = Arc::new(new);
        let (generation, changed) = {
            let mut state = self.lock();
            let old = self.current.swap(new.clone());
            let changed = changed_names(&old, &new);
            if !changed.is_empty() || errors.is_empty() {
                state.generation += 1;
            }
            state.errors = errors.clone();
            (state.generation, changed)
        };
        ReloadEvent {
            generation,
            changed,
            errors,
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

/// Whether a file-system event can change what the registry serves: one
/// about a template file, a JSON or YAML file (a `$ref` schema) or a
/// folder, not hidden. Reading files raises access events: only
/// close-after-write counts among them.
fn relevant(event: &notify::Event, root: &Path) -> bool {
    if matches!(event.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write)) {
        return false;
    }
    // An event without paths: the watcher lost track; reload to be safe.
    event.paths.is_empty()
        || event
            .paths
            .iter()
            .any(|p| !is_hidden(root, p) && matters(p, &event.kind))
}

/// Files whose content can change the registry, and folders.
fn matters(path: &Path, kind: &EventKind) -> bool {
    let name = path.to_string_lossy();
    crate::load::parse::classify(&name).is_some()
        || [".json", ".yaml", ".yml"].iter().any(|s| name.ends_with(s))
        || matches!(
            kind,
            EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder)
        )
        || path.is_dir()
}

/// A file's size and modification time, to tell whether it still changes.
type Stamp = Option<(u64, Option<SystemTime>)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()))
}

/// When a burst of file events has settled enough to reload; see the
/// module docs. Pure bookkeeping over the events and the times it is
/// given.
#[derive(Debug, Default)]
pub(crate) struct Settle {
    /// The first and the last relevant event of the burst.
    first: Option<Instant>,
    last: Option<Instant>,
    /// Files written to and not yet closed (Linux), when they were.
    writing: HashMap<PathBuf, Instant>,
    /// Templates removed, and when.
    removed: HashMap<PathBuf, Instant>,
    /// Files changed in this burst, with their stamp at the last event.
    changed: HashMap<PathBuf, Stamp>,
}

impl Settle {
    /// Notes one relevant event.
    pub(crate) fn note(&mut self, event: &notify::Event, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        for path in &event.paths {
            match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                    self.writing.remove(path);
                }
                EventKind::Create(CreateKind::Folder) => {}
                EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                    self.removed.remove(path);
                    // Only regular files are written and closed (a FIFO
                    // or a folder never reports a close).
                    let regular = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file());
                    if cfg!(target_os = "linux") && regular {
                        self.writing.insert(path.clone(), now);
                    }
                }
                EventKind::Modify(ModifyKind::Name(_)) => {
                    // A rename lands a whole file (or takes one away).
                    self.writing.remove(path);
                    if path.exists() {
                        self.removed.remove(path);
                    } else if crate::load::parse::classify(&path.to_string_lossy()).is_some() {
                        self.removed.insert(path.clone(), now);
                    }
                }
                EventKind::Remove(RemoveKind::File | RemoveKind::Any) => {
                    self.writing.remove(path);
                    if crate::load::parse::classify(&path.to_string_lossy()).is_some() {
                        self.removed.insert(path.clone(), now);
                    }
                }
                _ => {}
            }
            self.changed.insert(path.clone(), stamp(path));
        }
    }

    /// A new burst, remembering the files still open for writing: they are
    /// held back from every reload until they are closed.
    pub(crate) fn next_burst(self) -> Settle {
        Settle {
            writing: self.writing,
            ..Settle::default()
        }
    }

    /// When to reload: `None` when nothing happened.
    pub(crate) fn due(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        let mut at = last + QUIET;
        // Only this burst's writers hold it (one carried over from an
        // earlier burst is held back from the load instead).
        if self.writing.values().any(|since| *since >= first) {
            at = at.max(first + MAX_WAIT);
        }
        if let Some(back) = self.removed.values().map(|t| *t + GRACE).max() {
            at = at.max(back);
        }
        Some(at.min(first + MAX_WAIT))
    }

    /// Whether the files changed in this burst still have the size and
    /// modification time of their last event; when one does not, notes it
    /// as a new event (it is still being written).
    pub(crate) fn stable(&mut self, now: Instant) -> bool {
        let moving: Vec<PathBuf> = self
            .changed
            .iter()
            .filter(|(p, s)| stamp(p) != **s)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &moving {
            self.changed.insert(p.clone(), stamp(p));
            self.last = Some(now);
        }
        moving.is_empty() || self.first.is_some_and(|first| now >= first + MAX_WAIT)
    }
}

/// Waits for relevant file events, then for them to settle, then
/// reloads; see the module docs. Ends when the watcher is dropped (the
/// channel closes) or the registry is.
fn debounce_loop(rx: &Receiver<notify::Result<notify::Event>>, shared: &std::sync::Weak<Shared>) {
    let Some(root) = shared.upgrade().map(|s| s.root.clone()) else {
        return;
    };
    let mut settle = Settle::default();
    // Notes an event; `true` when it was relevant.
    let note = |settle: &mut Settle, event: notify::Result<notify::Event>| -> bool {
        match event {
            Ok(e) if relevant(&e, &root) => {
                settle.note(&e, Instant::now());
                true
            }
            Ok(_) => false,
            // The watcher lost track (close events among what it lost):
            // reload everything as it is.
            Err(_) => {
                settle.writing.clear();
                settle.note(&notify::Event::new(EventKind::Any), Instant::now());
                true
            }
        }
    };
    loop {
        let Some(due) = settle.due() else {
            match rx.recv() {
                Ok(event) => {
                    note(&mut settle, event);
                }
                Err(_) => return,
            }
            continue;
        };
        let left = due.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            match rx.recv_timeout(left) {
                Ok(event) => {
                    note(&mut settle, event);
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        if !settle.stable(Instant::now()) {
            continue;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // A file still open for writing when the wait ran out is not read:
        // its last good version is served until it is closed.
        let candidate = shared.load_holding(settle.writing.keys().cloned().collect());
        // A relevant event during the load: it may have read a save half
        // done. Settle again instead.
        let mut caught = false;
        while let Ok(event) = rx.try_recv() {
            caught |= note(&mut settle, event);
        }
        let forced = settle
            .first
            .is_some_and(|first| Instant::now() >= first + MAX_WAIT + MAX_WAIT);
        if caught && !forced {
            continue;
        }
        shared.install(candidate);
        settle = settle.next_burst();
    }
}

fn with_limits(registry: Registry, limits: crate::limits::RenderLimits) -> Registry {
    if limits == crate::limits::RenderLimits::default() {
        registry
    } else {
        registry.with_limits(limits)
    }
}

/// The problems an isolating load reports: the errors of what it left out
/// (warnings of templates that loaded, and the notes naming what is still
/// served in its last good version, are not problems).
fn problems(registry: &Registry) -> Vec<Diagnostic> {
    if registry.left_out().is_empty() {
        return Vec::new();
    }
    // Only errors: the notes naming what is still served in its last good
    // version stay in `Registry::diagnostics`; `errors` means errors.
    registry
        .diagnostics()
        .iter()
        .filter(|d| d.severity() == Severity::Error)
        .cloned()
        .collect()
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
        for dep in new.dependency_names(name) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::DataChange;

    fn ev(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    const T: &str = "/no/such/root/t.prompt.jinja";

    #[test]
    fn a_burst_reloads_once_it_is_quiet() {
        let t0 = Instant::now();
        let mut s = Settle::default();
        assert_eq!(s.due(), None);
        s.note(
            &ev(
                EventKind::Modify(ModifyKind::Metadata(notify::event::MetadataKind::Any)),
                T,
            ),
            t0,
        );
        assert_eq!(s.due(), Some(t0 + QUIET));
        let t1 = t0 + Duration::from_millis(10);
        s.note(
            &ev(
                EventKind::Modify(ModifyKind::Metadata(notify::event::MetadataKind::Any)),
                T,
            ),
            t1,
        );
        assert_eq!(s.due(), Some(t1 + QUIET));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_open_for_writing_holds_the_reload_until_it_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.prompt.jinja");
        std::fs::write(&file, "x").unwrap();
        let t = file.to_str().unwrap();
        let t0 = Instant::now();
        let mut s = Settle::default();
        s.note(
            &ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), t),
            t0,
        );
        assert_eq!(s.due(), Some(t0 + MAX_WAIT), "held while open");
        let t1 = t0 + Duration::from_millis(300);
        s.note(
            &ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), t),
            t1,
        );
        assert_eq!(s.due(), Some(t1 + QUIET), "closed: quiet period only");
    }

    #[test]
    fn a_removed_template_gets_its_grace_and_a_new_one_ends_it() {
        let t0 = Instant::now();
        let mut s = Settle::default();
        s.note(&ev(EventKind::Remove(RemoveKind::File), T), t0);
        assert_eq!(s.due(), Some(t0 + GRACE));
        let t1 = t0 + Duration::from_millis(50);
        s.note(&ev(EventKind::Create(CreateKind::File), T), t1);
        s.note(
            &ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), T),
            t1,
        );
        assert_eq!(s.due(), Some(t1 + QUIET));
        // Removing something that is not a template waits for nothing.
        let mut s = Settle::default();
        s.note(
            &ev(EventKind::Remove(RemoveKind::File), "/r/notes.json"),
            t0,
        );
        assert_eq!(s.due(), Some(t0 + QUIET));
    }

    #[test]
    fn nothing_holds_a_reload_past_the_longest_wait() {
        let t0 = Instant::now();
        let mut s = Settle::default();
        for i in 0..100u64 {
            s.note(
                &ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), T),
                t0 + Duration::from_millis(i * 50),
            );
            s.note(
                &ev(EventKind::Remove(RemoveKind::File), T),
                t0 + Duration::from_millis(i * 50),
            );
        }
        assert_eq!(s.due(), Some(t0 + MAX_WAIT));
    }

    #[test]
    fn only_events_that_can_change_the_registry_count() {
        let root = Path::new("/r");
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        for (path, want) in [
            ("/r/a.prompt.jinja", true),
            ("/r/sub/b.prompt.yaml", true),
            ("/r/c.prompty", true),
            ("/r/schema.json", true),
            ("/r/app.log", false),
            ("/r/notes.txt", false),
            ("/r/.a.prompt.jinja.swp", false),
            ("/r/.git/index", false),
            ("/r/a.prompt.jinja~", false),
        ] {
            assert_eq!(relevant(&ev(data, path), root), want, "{path}");
        }
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert!(!relevant(&ev(read, "/r/a.prompt.jinja"), root));
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(relevant(&ev(closed, "/r/a.prompt.jinja"), root));
    }
}
