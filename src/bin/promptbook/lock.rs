//! `promptbook lock` and `promptbook lock --check`.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use promptbook::{Change, LOCKFILE, Lockfile, Registry};

/// Writes the lockfile, or with `check` compares it with the templates.
pub(crate) fn lock(dir: &Path, check: bool) -> Result<ExitCode> {
    let registry = Registry::load(dir)?;
    let now = Lockfile::of(&registry);
    let path = dir.join(LOCKFILE);
    let locked = match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Ok(meta) if meta.file_type().is_symlink() => bail!(
            "{} is a link; the lockfile is a plain file of the root (remove the link)",
            path.display()
        ),
        _ => {
            let text = crate::files::read_regular_file(&path, 64 << 20)?;
            Some(Lockfile::parse(&text, &path)?)
        }
    };
    let changes = locked.as_ref().map(|l| l.compare(&now)).unwrap_or_default();
    if check {
        if locked.is_none() {
            eprintln!(
                "error: {} does not exist; run `promptbook lock` and commit it",
                path.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        let mut failed = 0;
        for change in &changes {
            let why = cause(change, &changes, &registry);
            if change.breaks_lock() {
                failed += 1;
                eprintln!("error: {change}{why}");
            } else {
                eprintln!("note: {change}{why}");
            }
        }
        if failed > 0 {
            eprintln!(
                "{failed} change{} not in {}: once each is intended (a released version's \
                 content needs a new version), run `promptbook lock` and commit the lockfile",
                crate::print::plural(failed),
                path.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("{} is up to date", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    for change in &changes {
        let mark = if change.breaks_lock() && matches!(change, Change::Changed { .. }) {
            "warning"
        } else {
            "note"
        };
        eprintln!("{mark}: {change}{}", cause(change, &changes, &registry));
    }
    if locked.as_ref() == Some(&now) {
        eprintln!("{} is up to date", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    crate::files::write_new_file(&path, now.to_string().as_bytes(), true)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// For a changed version: the templates it reaches that are new or changed
/// too (its own file may be as it was: an include now resolves elsewhere,
/// or what it includes changed), said as `; it reaches ...`.
fn cause(change: &Change, changes: &[Change], registry: &Registry) -> String {
    let Change::Changed { name, version, .. } = change else {
        return String::new();
    };
    let moved: HashSet<String> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Changed { name, version, .. } | Change::Added { name, version } => {
                Some(format!("{name}@{version}"))
            }
            _ => None,
        })
        .collect();
    // Everything it reaches, transitively.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut stack = vec![format!("{name}@={version}")];
    while let Some(r) = stack.pop() {
        for dep in registry.dependencies(&r).unwrap_or_default() {
            if seen.insert(dep.clone()) {
                let exact = dep.replacen('@', "@=", 1);
                stack.push(exact);
            }
        }
    }
    let reached: Vec<&String> = seen.iter().filter(|d| moved.contains(*d)).collect();
    if reached.is_empty() {
        return String::new();
    }
    format!(
        "; it reaches {}, new or changed too (if its own file is as it was, an include now \
         resolves to another version or what it includes changed: pin the include, e.g. \
         `@=1.0.0`, or release this one anew)",
        reached
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
