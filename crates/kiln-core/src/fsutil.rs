//! Atomic file writes: every file kiln writes goes through [`write_atomic`], so a crash or a
//! failed run leaves either the old file or the new one, never a truncated mix.

use crate::CoreError;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
/// flushed to disk, then renamed over the target. Parent directories are created.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CoreError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], but the content is produced by a writer callback, so large outputs
/// can be streamed without building them in memory first.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), CoreError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if path.is_dir() {
        return Err(CoreError::io(
            "writing",
            path,
            std::io::Error::other("the path is a directory; give a file name"),
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|e| CoreError::io("creating directory", &dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-tmp-")
        .tempfile_in(&dir)
        .map_err(|e| CoreError::io("creating a temporary file in", &dir, e))?;
    {
        let mut buf = std::io::BufWriter::new(tmp.as_file_mut());
        fill(&mut buf).map_err(|e| CoreError::io("writing", path, e))?;
        buf.flush().map_err(|e| CoreError::io("writing", path, e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| CoreError::io("syncing", path, e))?;
    tmp.persist(path)
        .map_err(|e| CoreError::io("renaming into place", path, e.error))?;
    Ok(())
}

/// Builds a directory atomically: `fill` writes into a fresh temporary directory beside
/// `target`, which then replaces `target` by renames (the old directory is moved aside first
/// and removed only once the new one is in place). A failure in `fill` leaves `target` as it
/// was; readers never see a directory holding files of two runs.
pub fn replace_dir_atomic<E: From<CoreError>>(
    target: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .map_err(|e| CoreError::io("creating directory", &parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-tmp-dir-")
        .tempdir_in(&parent)
        .map_err(|e| CoreError::io("creating a temporary directory in", &parent, e))?;
    fill(tmp.path())?;
    let backup = if target.exists() {
        let b = parent.join(format!(
            ".kiln-old-{}-{}",
            std::process::id(),
            target.file_name().and_then(|n| n.to_str()).unwrap_or("dir")
        ));
        std::fs::rename(target, &b).map_err(|e| CoreError::io("moving aside", target, e))?;
        Some(b)
    } else {
        None
    };
    let built = tmp.keep();
    if let Err(e) = std::fs::rename(&built, target) {
        // Put the old directory back so nothing is lost.
        if let Some(b) = &backup {
            let _ = std::fs::rename(b, target);
        }
        let _ = std::fs::remove_dir_all(&built);
        return Err(CoreError::io("moving into place", target, e).into());
    }
    if let Some(b) = backup {
        let _ = std::fs::remove_dir_all(b);
    }
    Ok(())
}

/// Reads a whole file, with an error that names it.
pub fn read(path: &Path) -> Result<Vec<u8>, CoreError> {
    if path.is_dir() {
        return Err(CoreError::io(
            "reading",
            path,
            std::io::Error::other("this is a directory, expected a file"),
        ));
    }
    std::fs::read(path).map_err(|e| CoreError::io("reading", path, e))
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), CoreError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| CoreError::Json {
        path: path.to_path_buf(),
        what: "JSON document",
        source: e,
    })?;
    write_atomic(path, &bytes)
}

/// Reads a JSON file into a value, naming the file and what it should hold on error.
pub fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, CoreError> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| CoreError::Json {
        path: path.to_path_buf(),
        what,
        source: e,
    })
}

/// Whether two paths name the same file (after resolving links and `..`; compared as given
/// when either does not exist yet).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/out.txt");
        write_atomic(&p, b"one").expect("first write");
        write_atomic(&p, b"two").expect("second write");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "temporary files left behind: {names:?}");
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("out.txt");
        write_atomic(&p, b"old").expect("write");
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk on fire"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p).expect("read"), b"old");
    }

    #[test]
    fn directories_are_replaced_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("model");
        replace_dir_atomic::<CoreError>(&target, |d| write_atomic(&d.join("a"), b"1"))
            .expect("first");
        replace_dir_atomic::<CoreError>(&target, |d| write_atomic(&d.join("b"), b"2"))
            .expect("second");
        assert!(
            !target.join("a").exists() && target.join("b").exists(),
            "no mix of two runs"
        );
        let failed = replace_dir_atomic::<CoreError>(&target, |d| {
            write_atomic(&d.join("c"), b"3")?;
            Err(CoreError::InvalidSpec("fill failed".into()))
        });
        assert!(failed.is_err());
        assert!(
            target.join("b").exists() && !target.join("c").exists(),
            "a failed build leaves the old directory"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names.len(),
            1,
            "no temporary or backup directories left: {names:?}"
        );
    }

    #[test]
    fn writing_to_a_directory_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = write_atomic(dir.path(), b"x").expect_err("must fail");
        assert!(err.to_string().contains("directory"), "{err}");
    }
}
