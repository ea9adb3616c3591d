//! `promptbook check --semver [--against REV]`: each version against the
//! version before it, by the contract in `promptbook::contract`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use promptbook::{LOCKFILE, Lockfile, Registry, Template, contract};
use semver::Version;

use crate::print::plural;

/// One finding: a template, the two versions, what changed.
struct Finding {
    name: String,
    old: Version,
    new: Version,
    what: String,
}

pub(crate) fn check_semver(dir: &Path, against: Option<&str>) -> Result<ExitCode> {
    let registry = Registry::load(dir)?;
    let base = match against {
        Some(rev) => Some(
            load_at_revision(dir, rev)
                .with_context(|| format!("cannot load the templates at git revision `{rev}`"))?,
        ),
        None => None,
    };
    let lock_path = dir.join(LOCKFILE);
    let lock = match std::fs::symlink_metadata(&lock_path) {
        Ok(_) => Some(Lockfile::parse(
            &crate::files::read_regular_file(&lock_path, 64 << 20)?,
            &lock_path,
        )?),
        Err(_) => None,
    };
    let mut findings = Vec::new();
    let mut compared = 0;
    for name in registry.names() {
        // Every version known: here, and at the base revision.
        let mut known: BTreeMap<Version, &Template> = BTreeMap::new();
        if let Some(base) = &base {
            for t in base.versions(name) {
                known.insert(t.version().clone(), t);
            }
        }
        for t in registry.versions(name) {
            let v = t.version().clone();
            // A released version edited in place: the base had it with
            // other content.
            if v.pre.is_empty() {
                let before = known
                    .get(&v)
                    .map(|b| b.hash())
                    .or_else(|| lock.as_ref().and_then(|l| l.hash(name, &v)));
                if let Some(before) = before
                    && before != t.hash()
                {
                    findings.push(Finding {
                        name: name.to_owned(),
                        old: v.clone(),
                        new: v.clone(),
                        what: "a released version changed in place (its content hash differs \
                               from the base's or the lockfile's); release the change as a new \
                               version"
                            .into(),
                    });
                }
            }
            known.insert(v, t);
        }
        let here: Vec<&Template> = registry.versions(name).collect();
        for t in here {
            // A pre-release promises nothing (SemVer 2.0.0, item 9); a
            // release answers to the release before it.
            if !t.version().pre.is_empty() {
                continue;
            }
            let Some((_, previous)) = known
                .range(..t.version().clone())
                .rev()
                .find(|(v, _)| v.pre.is_empty())
            else {
                continue;
            };
            if contract::is_major_bump(previous.version(), t.version()) {
                continue;
            }
            compared += 1;
            let mut found = |what: String| {
                findings.push(Finding {
                    name: name.to_owned(),
                    old: previous.version().clone(),
                    new: t.version().clone(),
                    what,
                });
            };
            for b in contract::stricter_inputs(previous.input_schema(), t.input_schema()) {
                found(format!("input `{}`: {}", b.pointer, b.change));
            }
            // Callers read the output and run the tool calls: those may
            // only promise more.
            match (previous.output_schema(), t.output_schema()) {
                (Some(old), Some(new)) => {
                    for b in contract::weaker_output(old, new) {
                        found(format!("output `{}`: {}", b.pointer, b.change));
                    }
                }
                (Some(_), None) => found(
                    "output: the output schema was removed: callers that parse the answer get text"
                        .into(),
                ),
                _ => {}
            }
            for tool in t.tools() {
                match previous.tools().iter().find(|p| p.name == tool.name) {
                    Some(old) => {
                        for b in contract::weaker_output(&old.parameters, &tool.parameters) {
                            found(format!(
                                "tool `{}` arguments `{}`: {}",
                                tool.name, b.pointer, b.change
                            ));
                        }
                    }
                    None => found(format!(
                        "tool `{}` added: callers that run the model's tool calls do not know it",
                        tool.name
                    )),
                }
            }
        }
    }
    let mut err = std::io::stderr().lock();
    for f in &findings {
        let bump = if f.old == f.new {
            format!("{}@{}", f.name, f.new)
        } else {
            format!("{} {} -> {}", f.name, f.old, f.new)
        };
        writeln!(err, "error: {bump}: {}", f.what)?;
    }
    if let Some(base) = &base {
        let left_out: Vec<String> = base
            .diagnostics()
            .iter()
            .filter(|d| d.severity() == promptbook::Severity::Error)
            .map(|d| d.to_string())
            .collect();
        for d in &left_out {
            writeln!(
                err,
                "warning: at {}: {d} (not compared)",
                against.unwrap_or("")
            )?;
        }
        if base.names().next().is_none() {
            writeln!(
                err,
                "warning: no template loaded at `{}` in this root's folder: nothing to compare \
                 against (is the revision right?)",
                against.unwrap_or("")
            )?;
        }
    }
    if findings.is_empty() {
        writeln!(
            err,
            "semver ok: {compared} minor or patch release{} compared with the version before",
            plural(compared)
        )?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            err,
            "{} semver problem{}: a minor or patch release must accept every input the version \
             before accepted, and a released version must not change; make the change \
             compatible, or release it as a new (major) version",
            findings.len(),
            plural(findings.len())
        )?;
        Ok(ExitCode::FAILURE)
    }
}

/// The template root `dir` as it was at git revision `rev`, read with
/// `git ls-tree` and `git cat-file --batch` (nothing is checked out).
fn load_at_revision(dir: &Path, rev: &str) -> Result<Registry> {
    // Never an option, and one line of `git cat-file --batch` input.
    if rev.is_empty()
        || rev.starts_with('-')
        || rev.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!("`{rev}` is not a revision");
    }
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(Stdio::piped())
            .output()
            .context("cannot run git")?;
        if !out.status.success() {
            bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    };
    // A commit (a tag or branch naming one), not a tree or a blob: a
    // tree such as `HEAD:templates` would list paths relative to itself
    // and silently compare nothing.
    let commit = format!("{rev}^{{commit}}");
    git(&["rev-parse", "--verify", "--quiet", &commit])
        .with_context(|| format!("`{rev}` does not name a commit"))?;
    // The root relative to the repository, as git names paths.
    let prefix = String::from_utf8(git(&["rev-parse", "--show-prefix"])?)?;
    let prefix = prefix.trim().to_owned();
    let pathspec = if prefix.is_empty() {
        "."
    } else {
        prefix.as_str()
    };
    let listing = git(&[
        "ls-tree",
        "-r",
        "-z",
        "--name-only",
        "--full-tree",
        rev,
        "--",
        pathspec,
    ])?;
    let paths: Vec<String> = listing
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .filter_map(|p| String::from_utf8(p.to_vec()).ok())
        // One request per line: a name with a line break cannot be asked.
        .filter(|p| !p.contains('\n'))
        .collect();
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run git cat-file")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let requests: String = paths.iter().map(|p| format!("{rev}:{p}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(requests.as_bytes()));
    let mut reader = BufReader::new(child.stdout.take().context("no stdout")?);
    let mut files = BTreeMap::new();
    for path in &paths {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let size: u64 = header
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("git cat-file: no object for {path}: {}", header.trim()))?;
        // The loader refuses files over 8 MiB; so is a blob here, unread.
        if size > 8 << 20 {
            std::io::copy(&mut (&mut reader).take(size), &mut std::io::sink())?;
            let mut newline = [0u8; 1];
            reader.read_exact(&mut newline)?;
            continue;
        }
        let mut bytes = Vec::new();
        (&mut reader).take(size).read_to_end(&mut bytes)?;
        let mut newline = [0u8; 1];
        reader.read_exact(&mut newline)?;
        let rel = path.strip_prefix(&prefix).unwrap_or(path).to_owned();
        if let Ok(text) = String::from_utf8(bytes) {
            files.insert(rel, text);
        }
    }
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("git cat-file writer panicked"))??;
    child.wait()?;
    Ok(Registry::from_files_with(
        files,
        &promptbook::LoadOptions::isolate(),
    )?)
}
