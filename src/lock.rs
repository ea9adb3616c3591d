//! `promptbook.lock`: the content hash of every template version and the
//! version every label points to, so that a review sees a prompt change as
//! a change to this file and CI can refuse an edit to a released version.
//!
//! The format is line-based text, sorted, one fact per line, so that a
//! diff shows exactly what moved:
//!
//! ```text
//! # promptbook.lock: ...comments...
//! lockfile 1
//!
//! support/triage@1.0.0 sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! support/triage@2.1.0 sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752
//! support/triage@production -> 2.1.0
//! ```
//!
//! A version line is `NAME@VERSION sha256:HEX`; a label line is
//! `NAME@LABEL -> VERSION` (a label never parses as a version: it starts
//! with a letter). Blank lines and lines starting with `#` are ignored.
//!
//! [`Lockfile::compare`] lists what differs between a lock and the
//! templates; [`Change::breaks_lock`] says which differences fail
//! `promptbook lock --check`: a released version whose content changed (a
//! release is immutable: bump the version instead), a version added or
//! removed, a label that moved, appeared or went. A pre-release version
//! (`2.2.0-rc.1`) may change freely: that is what pre-releases are for.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use semver::Version;

use crate::error::{Error, ErrorKind, Location};
use crate::hash::ContentHash;
use crate::registry::Registry;

/// The file name of the lockfile, at the template root.
pub const LOCKFILE: &str = "promptbook.lock";

/// The versions and labels of a template root, as `promptbook.lock` holds
/// them. See the module docs for the format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lockfile {
    /// Name to version to hash.
    versions: BTreeMap<String, BTreeMap<Version, ContentHash>>,
    /// Name to label to version.
    labels: BTreeMap<String, BTreeMap<String, Version>>,
}

/// One difference between a lockfile and the templates.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A version's content hash differs from the locked one.
    Changed {
        /// The template name.
        name: String,
        /// Its version.
        version: Version,
        /// The hash in the lock.
        locked: ContentHash,
        /// The hash now.
        now: ContentHash,
    },
    /// A version exists that the lock does not list.
    Added {
        /// The template name.
        name: String,
        /// The new version.
        version: Version,
    },
    /// The lock lists a version that no longer exists.
    Removed {
        /// The template name.
        name: String,
        /// The version that went.
        version: Version,
    },
    /// A label points elsewhere than the lock says (`None`: nowhere).
    LabelMoved {
        /// The template name.
        name: String,
        /// The label.
        label: String,
        /// Where the lock says it points.
        from: Option<Version>,
        /// Where it points now.
        to: Option<Version>,
    },
}

impl Change {
    /// Whether `promptbook lock --check` fails on this change: every change
    /// but a new hash for a pre-release version.
    pub fn breaks_lock(&self) -> bool {
        !matches!(self, Change::Changed { version, .. } if !version.pre.is_empty())
    }

    /// The template the change is about.
    pub fn name(&self) -> &str {
        match self {
            Change::Changed { name, .. }
            | Change::Added { name, .. }
            | Change::Removed { name, .. }
            | Change::LabelMoved { name, .. } => name,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Changed {
                name,
                version,
                locked,
                now,
            } if version.pre.is_empty() => write!(
                f,
                "{name}@{version} changed after release (locked {}, now {}): a released \
                 version is immutable; give the change a new version",
                short(locked),
                short(now)
            ),
            Change::Changed {
                name,
                version,
                locked,
                now,
            } => write!(
                f,
                "{name}@{version} changed (locked {}, now {}); a pre-release may change, \
                 `promptbook lock` records it",
                short(locked),
                short(now)
            ),
            Change::Added { name, version } => {
                write!(f, "{name}@{version} is new: not in the lock")
            }
            Change::Removed { name, version } => {
                write!(f, "{name}@{version} is in the lock but no longer exists")
            }
            Change::LabelMoved {
                name,
                label,
                from,
                to,
            } => match (from, to) {
                (None, Some(to)) => write!(f, "label {name}@{label} appeared, on {to}"),
                (Some(from), None) => write!(f, "label {name}@{label} went (it was on {from})"),
                (Some(from), Some(to)) => {
                    write!(f, "label {name}@{label} moved from {from} to {to}")
                }
                (None, None) => write!(f, "label {name}@{label} changed"),
            },
        }
    }
}

/// The first 12 hex characters, as git shortens a commit.
fn short(h: &ContentHash) -> String {
    h.to_string()[..12].to_owned()
}

impl Lockfile {
    /// The lock of what `registry` holds.
    pub fn of(registry: &Registry) -> Lockfile {
        let mut lock = Lockfile::default();
        for name in registry.names() {
            for t in registry.versions(name) {
                lock.versions
                    .entry(name.to_owned())
                    .or_default()
                    .insert(t.version().clone(), t.hash());
                for label in t.labels() {
                    lock.labels
                        .entry(name.to_owned())
                        .or_default()
                        .insert(label.clone(), t.version().clone());
                }
            }
        }
        lock
    }

    /// Reads a lockfile's text; `path` is for error locations.
    ///
    /// # Errors
    /// [`ErrorKind::Syntax`] naming the line of the first line that is not
    /// a version line, a label line, a comment or the `lockfile 1` header,
    /// a fact stated twice, or a text without the header.
    pub fn parse(text: &str, path: &Path) -> Result<Lockfile, Error> {
        let mut lock = Lockfile::default();
        let mut header = false;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, line) in text.lines().enumerate() {
            let at = || Location::at(path, u32::try_from(i + 1).unwrap_or(u32::MAX), Some(1));
            let bad = |what: String| Error::new(ErrorKind::Syntax, what).with_location(at());
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(v) = line.strip_prefix("lockfile ") {
                if v.trim() != "1" {
                    return Err(bad(format!(
                        "lockfile format `{}` is not one this promptbook reads (1); \
                         upgrade promptbook or run `promptbook lock`",
                        v.trim()
                    )));
                }
                header = true;
                continue;
            }
            let (lhs, rhs) = line.split_once(' ').ok_or_else(|| {
                bad(format!(
                    "`{line}` is neither `NAME@VERSION sha256:HEX` nor `NAME@LABEL -> VERSION`"
                ))
            })?;
            let (name, tail) = lhs
                .rsplit_once('@')
                .ok_or_else(|| bad(format!("`{lhs}` is not `NAME@VERSION` or `NAME@LABEL`")))?;
            crate::reference::validate_name(name).map_err(bad)?;
            let rhs = rhs.trim();
            if let Ok(version) = Version::parse(tail) {
                let hex = rhs.strip_prefix("sha256:").ok_or_else(|| {
                    bad(format!("`{rhs}`: expected `sha256:` and 64 hex characters"))
                })?;
                let hash: ContentHash = hex.parse().map_err(bad)?;
                let versions = lock.versions.entry(name.to_owned()).or_default();
                if versions.insert(version, hash).is_some() {
                    return Err(bad(format!("`{lhs}` is listed twice")));
                }
            } else if rhs.starts_with("sha256:") {
                return Err(bad(format!(
                    "`{tail}` is not a semver version (MAJOR.MINOR.PATCH)"
                )));
            } else if crate::reference::is_label(tail) {
                let target = rhs
                    .strip_prefix("->")
                    .map(str::trim)
                    .and_then(|v| Version::parse(v).ok())
                    .ok_or_else(|| bad(format!("`{rhs}`: expected `-> VERSION`")))?;
                let labels = lock.labels.entry(name.to_owned()).or_default();
                if labels.insert(tail.to_owned(), target).is_some() {
                    return Err(bad(format!("label `{lhs}` is listed twice")));
                }
            } else {
                return Err(bad(format!("`{tail}` is neither a version nor a label")));
            }
        }
        if !header {
            return Err(Error::new(
                ErrorKind::Syntax,
                "no `lockfile 1` line: this is not a promptbook lockfile",
            )
            .with_location(Location::file(path)));
        }
        Ok(lock)
    }

    /// Every difference from this lock to `now`, by template name, then
    /// versions before labels.
    pub fn compare(&self, now: &Lockfile) -> Vec<Change> {
        let mut changes = Vec::new();
        let empty = BTreeMap::new();
        let names: std::collections::BTreeSet<&String> = self
            .versions
            .keys()
            .chain(now.versions.keys())
            .chain(self.labels.keys())
            .chain(now.labels.keys())
            .collect();
        for name in names {
            let (was, is) = (
                self.versions.get(name).unwrap_or(&empty),
                now.versions.get(name).unwrap_or(&empty),
            );
            let versions: std::collections::BTreeSet<&Version> =
                was.keys().chain(is.keys()).collect();
            for version in versions {
                let name = name.clone();
                let version = version.clone();
                match (was.get(&version), is.get(&version)) {
                    (Some(&locked), Some(&now)) if locked != now => changes.push(Change::Changed {
                        name,
                        version,
                        locked,
                        now,
                    }),
                    (None, Some(_)) => changes.push(Change::Added { name, version }),
                    (Some(_), None) => changes.push(Change::Removed { name, version }),
                    _ => {}
                }
            }
            let no_labels = BTreeMap::new();
            let (was, is) = (
                self.labels.get(name).unwrap_or(&no_labels),
                now.labels.get(name).unwrap_or(&no_labels),
            );
            let labels: std::collections::BTreeSet<&String> = was.keys().chain(is.keys()).collect();
            for label in labels {
                let (from, to) = (was.get(label), is.get(label));
                if from != to {
                    changes.push(Change::LabelMoved {
                        name: name.clone(),
                        label: label.clone(),
                        from: from.cloned(),
                        to: to.cloned(),
                    });
                }
            }
        }
        changes
    }

    /// The locked hash of `NAME@VERSION`.
    pub fn hash(&self, name: &str, version: &Version) -> Option<ContentHash> {
        self.versions.get(name)?.get(version).copied()
    }
}

/// The lockfile's text: the header comment, `lockfile 1`, then for each
/// name (sorted) its versions (ascending) and its labels (sorted).
impl fmt::Display for Lockfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "# promptbook.lock: the content hash of every template version and the version\n\
             # each label points to. Written by `promptbook lock`, checked by\n\
             # `promptbook lock --check`; do not edit it by hand."
        )?;
        writeln!(f, "lockfile 1")?;
        let names: std::collections::BTreeSet<&String> =
            self.versions.keys().chain(self.labels.keys()).collect();
        for name in names {
            writeln!(f)?;
            for (version, hash) in self.versions.get(name).into_iter().flatten() {
                writeln!(f, "{name}@{version} sha256:{hash}")?;
            }
            for (label, version) in self.labels.get(name).into_iter().flatten() {
                writeln!(f, "{name}@{label} -> {version}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_round_trips_and_bad_lines_name_their_line() {
        let path = Path::new("promptbook.lock");
        let h = "a".repeat(64);
        let text = format!(
            "# c\nlockfile 1\n\nt@1.0.0 sha256:{h}\nt@2.0.0-rc.1 sha256:{h}\nt@prod -> 1.0.0\n"
        );
        let lock = Lockfile::parse(&text, path).unwrap();
        assert_eq!(Lockfile::parse(&lock.to_string(), path).unwrap(), lock);
        for (bad, line) in [
            (format!("lockfile 1\nt@1.0.0 md5:{h}\n"), 2),
            ("lockfile 1\n\nt@1.0.0 sha256:abc\n".to_owned(), 3),
            ("lockfile 1\nt@prod 1.0.0\n".to_owned(), 2),
            ("lockfile 2\n".to_owned(), 1),
            (
                format!("lockfile 1\nt@1.0.0 sha256:{h}\nt@1.0.0 sha256:{h}\n"),
                3,
            ),
            ("lockfile 1\nbad name@1.0.0 x\n".to_owned(), 2),
        ] {
            let e = Lockfile::parse(&bad, path).unwrap_err();
            assert_eq!(e.location().and_then(|l| l.line()), Some(line), "{bad}");
        }
        assert!(Lockfile::parse(&format!("t@1.0.0 sha256:{h}\n"), path).is_err());
        // A byte-order mark is not content; a bad version says so.
        assert_eq!(
            Lockfile::parse(&format!("\u{feff}{text}"), path).unwrap(),
            lock
        );
        let e = Lockfile::parse(&format!("lockfile 1\nt@v1 sha256:{h}\n"), path).unwrap_err();
        assert!(
            e.to_string().contains("`v1` is not a semver version"),
            "{e}"
        );
    }
}
