//! `.tar.gz` deployment bundles: [`write_archive`] packs a bundle directory's files, and
//! [`extract_archive`] unpacks one safely. Extraction never writes outside its target
//! directory: entries with `..`, absolute paths, symbolic or hard links, devices or FIFOs are
//! refused (the whole archive is), and so are archives whose entries or total size exceed
//! fixed limits.

use crate::OptimizeError;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Most entries an archive may hold.
pub const MAX_ENTRIES: usize = 1024;
/// Most bytes an archive may unpack to (4 GiB: ONNX's protobuf limit is 2 GiB).
pub const MAX_UNPACKED_BYTES: u64 = 4 << 30;

/// Whether `path` names a `.tar.gz` / `.tgz` archive.
pub fn is_archive(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

fn bad(path: &Path, reason: impl Into<String>) -> OptimizeError {
    OptimizeError::Bundle {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Packs the regular files directly inside `dir` into a gzip-compressed tar at `archive`,
/// written atomically.
pub fn write_archive(dir: &Path, archive: &Path) -> Result<(), OptimizeError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| kiln_core::CoreError::io("listing", dir, e))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    kiln_core::fsutil::write_atomic_with(archive, |w| {
        let gz = flate2::write::GzEncoder::new(w, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        tar.mode(tar::HeaderMode::Deterministic);
        for name in &names {
            tar.append_path_with_name(dir.join(name), name)?;
        }
        tar.into_inner()?.finish()?;
        Ok(())
    })?;
    Ok(())
}

/// Unpacks `archive` into `dest` (created if needed), refusing anything that could write
/// outside it. Returns the files written, relative to `dest`.
pub fn extract_archive(archive: &Path, dest: &Path) -> Result<Vec<PathBuf>, OptimizeError> {
    let file = std::fs::File::open(archive)
        .map_err(|e| kiln_core::CoreError::io("opening", archive, e))?;
    std::fs::create_dir_all(dest).map_err(|e| kiln_core::CoreError::io("creating", dest, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar
        .entries()
        .map_err(|e| bad(archive, format!("not a .tar.gz archive: {e}")))?;
    let mut written = Vec::new();
    let mut total = 0u64;
    for (i, entry) in entries.enumerate() {
        let mut entry =
            entry.map_err(|e| bad(archive, format!("entry {i} cannot be read: {e}")))?;
        if i >= MAX_ENTRIES {
            return Err(bad(
                archive,
                format!("more than {MAX_ENTRIES} entries; a bundle has a handful"),
            ));
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(bad(
                archive,
                format!("entry {shown:?} is a link; bundles hold plain files only"),
            ));
        }
        if !(kind.is_file() || kind.is_dir()) {
            return Err(bad(
                archive,
                format!("entry {shown:?} is not a plain file or directory ({kind:?})"),
            ));
        }
        let rel = PathBuf::from(&shown);
        let safe = !shown.is_empty()
            && rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !safe {
            return Err(bad(
                archive,
                format!(
                    "entry {shown:?} would be written outside the target directory (absolute or with ..)"
                ),
            ));
        }
        let target = dest.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&target)
                .map_err(|e| kiln_core::CoreError::io("creating", &target, e))?;
            continue;
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        total = total.saturating_add(size);
        if total > MAX_UNPACKED_BYTES {
            return Err(bad(
                archive,
                format!("unpacks to more than {MAX_UNPACKED_BYTES} bytes"),
            ));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| kiln_core::CoreError::io("creating", parent, e))?;
        }
        let mut bytes = Vec::with_capacity(size.min(1 << 20) as usize);
        (&mut entry)
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(archive, format!("entry {shown:?} cannot be read: {e}")))?;
        // A file of the same name twice would overwrite the verified one: refuse.
        if written.contains(&rel) {
            return Err(bad(archive, format!("entry {shown:?} appears twice")));
        }
        kiln_core::fsutil::write_atomic(&target, &bytes)?;
        written.push(rel);
    }
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An archive with one entry whose raw header says `name` and `kind`.
    fn crafted(name: &[u8], kind: tar::EntryType, link: Option<&[u8]>) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                gnu.linkname[..l.len()].copy_from_slice(l);
            }
        }
        header.set_entry_type(kind);
        header.set_size(if kind.is_file() { 4 } else { 0 });
        header.set_mode(0o644);
        header.set_cksum();
        let mut tar = tar::Builder::new(Vec::new());
        let body: &[u8] = if kind.is_file() { b"evil" } else { b"" };
        tar.append(&header, body).unwrap();
        let raw = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn hostile_entries_are_refused_and_nothing_escapes() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("a/b/dest");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "parent",
                crafted(b"../../escaped", tar::EntryType::Regular, None),
            ),
            (
                "absolute",
                crafted(b"/tmp/kiln-escaped-abs", tar::EntryType::Regular, None),
            ),
            (
                "symlink",
                crafted(b"link", tar::EntryType::Symlink, Some(b"/etc/passwd")),
            ),
            (
                "hardlink",
                crafted(b"hard", tar::EntryType::Link, Some(b"../../x")),
            ),
            ("device", crafted(b"dev", tar::EntryType::Char, None)),
        ];
        for (what, bytes) in cases {
            let archive = d.path().join(format!("{what}.tar.gz"));
            std::fs::write(&archive, bytes).unwrap();
            let err = extract_archive(&archive, &dest).unwrap_err().to_string();
            assert!(
                err.contains("outside the target")
                    || err.contains("link")
                    || err.contains("not a plain file"),
                "{what}: {err}"
            );
        }
        assert!(!d.path().join("a/escaped").exists());
        assert!(!Path::new("/tmp/kiln-escaped-abs").exists());
        assert!(!dest.join("link").exists() && !dest.join("hard").exists());
    }

    #[test]
    fn a_directory_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("bundle");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("model.onnx"), b"model bytes").unwrap();
        std::fs::write(src.join("manifest.json"), b"{}").unwrap();
        let archive = d.path().join("bundle.tar.gz");
        write_archive(&src, &archive).unwrap();
        assert!(is_archive(&archive) && !is_archive(&src));
        let out = d.path().join("out");
        let files = extract_archive(&archive, &out).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(
            std::fs::read(out.join("model.onnx")).unwrap(),
            b"model bytes"
        );
        // Deterministic: the same files give the same archive bytes.
        let again = d.path().join("again.tar.gz");
        write_archive(&src, &again).unwrap();
        assert_eq!(
            std::fs::read(&archive).unwrap(),
            std::fs::read(&again).unwrap()
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let archive = d.path().join("x.tar.gz");
        std::fs::write(&archive, b"not gzip at all").unwrap();
        let err = extract_archive(&archive, &d.path().join("o"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.tar.gz"), "{err}");
    }
}
