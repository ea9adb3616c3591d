//! `promptbook lock` and `promptbook lock --check`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use promptbook::{LOCKFILE, Lockfile, Registry};

/// Writes the lockfile, or with `check` compares it with the templates.
pub(crate) fn lock(dir: &Path, check: bool) -> Result<ExitCode> {
    let registry = Registry::load(dir)?;
    let now = Lockfile::of(&registry);
    let path = dir.join(LOCKFILE);
    let locked = match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        _ => {
            let text = crate::files::read_regular_file(&path, 64 << 20)?;
            Some(Lockfile::parse(&text, &path)?)
        }
    };
    let changes = locked.as_ref().map(|l| l.compare(&now)).unwrap_or_default();
    if check {
        let Some(_) = locked else {
            eprintln!(
                "error: {} does not exist; run `promptbook lock` and commit it",
                path.display()
            );
            return Ok(ExitCode::FAILURE);
        };
        let mut failed = 0;
        for change in &changes {
            if change.breaks_lock() {
                failed += 1;
                eprintln!("error: {change}");
            } else {
                eprintln!("note: {change}");
            }
        }
        if failed > 0 {
            eprintln!(
                "{failed} change{} not in {}: give changed released versions a new version, \
                 then run `promptbook lock` and commit the lockfile",
                crate::print::plural(failed),
                path.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("{} is up to date", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    for change in &changes {
        let mark = if change.breaks_lock() && matches!(change, promptbook::Change::Changed { .. }) {
            "warning"
        } else {
            "note"
        };
        eprintln!("{mark}: {change}");
    }
    let text = now.to_string();
    if locked.as_ref() == Some(&now) {
        eprintln!("{} is up to date", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    crate::files::write_new_file(&path, text.as_bytes(), true)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}
