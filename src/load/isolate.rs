//! The isolating load: a template that does not load is left out, together
//! with every template that extends, includes or imports it; the rest is
//! served, and the diagnostics say what was left out and why.
//!
//! A template is left out when any error is located in its file. Then,
//! until nothing changes, so is every template whose parent, or a literal
//! include, import or `from` target, resolves to a left-out template,
//! resolving against *every* version that was found (so that leaving
//! `t@1.1.0` out never makes `t@^1` quietly mean `t@1.0.0`), or names a
//! template whose broken file says no version (it might have matched).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use semver::Version;

use super::{Parsed, Versions};
use crate::error::{Diagnostic, Error, Location, Severity};
use crate::reference::Reference;
use crate::registry::{Entry, Index};

/// A template an isolating load left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeftOut {
    pub name: String,
    /// Its version, when its file said one.
    pub version: Option<Version>,
    pub path: PathBuf,
}

/// What isolating a load came to.
pub(crate) struct Isolated {
    /// The templates that loaded, with their whole dependency closure.
    pub index: Index,
    pub left_out: Vec<LeftOut>,
    /// One note per template left out because of another.
    pub notes: Vec<Diagnostic>,
}

/// Leaves out what `errors` touch; see the module docs.
pub(crate) fn isolate(
    index: &Index,
    errors: &[Error],
    parsed: &Parsed,
    versions: &Versions,
    root: &Path,
) -> Isolated {
    let failed_paths: BTreeSet<&Path> = errors
        .iter()
        .flat_map(Error::problems)
        .filter_map(|e| e.location().map(Location::path))
        .collect();
    // What each failed file was: the parsed identity, else what its name
    // says.
    let by_path: BTreeMap<&Path, (&str, &Version)> = parsed
        .sources
        .iter()
        .map(|(k, src)| (src.path.as_path(), (k.0.as_str(), &k.1)))
        .collect();
    let mut left_out: Vec<LeftOut> = Vec::new();
    let mut unknown_version: HashSet<String> = HashSet::new();
    for path in &failed_paths {
        let identity = match by_path.get(path) {
            Some((name, version)) => Some(((*name).to_owned(), Some((*version).clone()))),
            None => {
                let rel = path.strip_prefix(root).unwrap_or(path).to_string_lossy();
                super::parse::classify(&rel.replace(std::path::MAIN_SEPARATOR, "/"))
                    .map(|(name, version, _)| (name, version.and_then(|v| Version::parse(&v).ok())))
            }
        };
        if let Some((name, version)) = identity {
            if version.is_none() {
                unknown_version.insert(name.clone());
            }
            left_out.push(LeftOut {
                name,
                version,
                path: path.to_path_buf(),
            });
        }
    }
    let mut out: HashSet<(String, Version)> = left_out
        .iter()
        .filter_map(|l| Some((l.name.clone(), l.version.clone()?)))
        .collect();

    // Dependants, until nothing more goes.
    let mut notes = Vec::new();
    let mut kept: Vec<&Arc<Entry>> = index
        .entries()
        .filter(|e| !failed_paths.contains(e.template.path.as_path()))
        .collect();
    loop {
        let mut gone = Vec::new();
        for (i, e) in kept.iter().enumerate() {
            if let Some(why) = broken_dependency(e, versions, &out, &unknown_version) {
                gone.push((i, why));
            }
        }
        if gone.is_empty() {
            break;
        }
        for (i, why) in gone.into_iter().rev() {
            let e = kept.remove(i);
            let t = &e.template;
            out.insert((t.name.clone(), t.version.clone()));
            notes.push(Diagnostic::new(
                Severity::Warning,
                Location::file(&t.path),
                format!("`{}` is left out: {why}, which did not load", t.id()),
            ));
            left_out.push(LeftOut {
                name: t.name.clone(),
                version: Some(t.version.clone()),
                path: t.path.clone(),
            });
        }
    }
    let mut filtered = Index::default();
    for e in kept {
        filtered.insert(e.clone());
    }
    filtered.sort();
    Isolated {
        index: filtered,
        left_out,
        notes,
    }
}

/// The first dependency of `e` that is left out, said as `it extends
/// X` / `it includes X`.
fn broken_dependency(
    e: &Entry,
    versions: &Versions,
    out: &HashSet<(String, Version)>,
    unknown_version: &HashSet<String>,
) -> Option<String> {
    if let Some((name, version)) = e
        .template
        .extends
        .as_deref()
        .and_then(|p| p.split_once('@'))
        && let Ok(version) = Version::parse(version)
        && out.contains(&(name.to_owned(), version))
    {
        return Some(format!("it extends `{name}`"));
    }
    for (target, _) in super::targets::static_refs(&e.source) {
        let Ok(r) = Reference::parse(&target) else {
            continue;
        };
        if unknown_version.contains(r.name()) {
            return Some(format!("it includes `{target}`"));
        }
        let Some(candidates) = versions.get(r.name()) else {
            continue;
        };
        if let Some(i) = r.select(candidates.iter().map(|(v, l)| (v, l.as_slice())))
            && out.contains(&(r.name().to_owned(), candidates[i].0.clone()))
        {
            return Some(format!("it includes `{target}`"));
        }
    }
    None
}
