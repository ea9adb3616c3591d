//! Reading and writing the files the commands name: regular files only,
//! bounded, and never through a link when writing.

use std::io::{self, Read, Write};

use anyhow::{Context, Result, bail};

/// Writes `bytes` to `target` without following a link there: a new file
/// is created exclusively (`O_EXCL`: a symlink at `target`, even a dangling
/// one, makes it fail rather than write through it). With `force`, the
/// text goes to a new file beside `target` first and is renamed over it,
/// which replaces a link rather than its target, and never leaves a
/// half-written file.
pub(crate) fn write_new_file(target: &std::path::Path, bytes: &[u8], force: bool) -> Result<()> {
    let create = |path: &std::path::Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    };
    if !force {
        let mut file = create(target).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{} exists (or is a link); pass --force to replace it",
                target.display()
            ),
            _ => anyhow::Error::new(e).context(format!("cannot create {}", target.display())),
        })?;
        return file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", target.display()));
    }
    // Replace a file or a link, never a device, FIFO or directory (a
    // rename over `/dev/null` would replace the device itself).
    if let Ok(meta) = std::fs::symlink_metadata(target)
        && !meta.is_file()
        && !meta.file_type().is_symlink()
    {
        bail!(
            "{} is not a regular file (a directory, FIFO or device); --force replaces files and links only",
            target.display()
        );
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = target.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = create(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temp, target));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(anyhow::Error::new(e).context(format!("cannot write {}", target.display())));
    }
    Ok(())
}

/// The largest `.prompty` file `convert` reads: the loader's cap.
pub(crate) const TEMPLATE_FILE_BYTES: u64 = 8 << 20;

/// The largest file `tokens` counts.
pub(crate) const COUNTED_FILE_BYTES: u64 = 256 << 20;

/// The largest `--input` file.
pub(crate) const INPUT_FILE_BYTES: u64 = 64 << 20;

/// Reads a regular file of at most `max` bytes as UTF-8 text. A FIFO, a
/// device (`/dev/zero`, even behind a link) or a directory is refused
/// before it is opened, so nothing blocks or reads without end.
pub(crate) fn read_regular_file(path: &std::path::Path, max: u64) -> Result<String> {
    let bytes = read_regular_bytes(path, max)?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))
}

/// [`read_regular_file`]'s bytes, whatever they are.
pub(crate) fn read_regular_bytes(path: &std::path::Path, max: u64) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file (a directory, FIFO or device); give a file",
            path.display()
        );
    }
    if meta.len() > max {
        bail!("{} is over {max} bytes", path.display());
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!("{} is over {max} bytes", path.display());
    }
    Ok(bytes)
}

pub(crate) fn read_stdin() -> Result<String> {
    let mut s = String::new();
    io::stdin()
        .read_to_string(&mut s)
        .context("cannot read stdin (is it UTF-8 text?)")?;
    Ok(s)
}
