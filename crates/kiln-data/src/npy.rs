//! NumPy `.npy` files (format version 1.0/2.0): 2-D little-endian float32/float64 arrays in C
//! order, read as rows of features, and float32 matrices written for predictions.

use crate::DataError;
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// A 2-D float matrix read from a `.npy` file, widened or narrowed to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyMatrix {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row-major values.
    pub data: Vec<f32>,
}

fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    if let Some(r) = rest.strip_prefix('(') {
        return r.find(')').map(|e| &r[..e]);
    }
    let end = rest.find(',').unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// Parses a `.npy` file's bytes.
pub fn parse_npy(path: &Path, bytes: &[u8]) -> Result<NpyMatrix, DataError> {
    let bad = |reason: String| DataError::Schema {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad(
            "not a NumPy .npy file (bad magic); save arrays with numpy.save".into(),
        ));
    }
    let (header_len, offset) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("unsupported .npy format version {v}"))),
    };
    let header = bytes
        .get(offset..offset + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated .npy header".into()))?;
    let descr = header_value(header, "descr")
        .map(|d| d.trim_matches(|c| c == '\'' || c == '"'))
        .unwrap_or("");
    let width = match descr {
        "<f4" | "=f4" => 4,
        "<f8" | "=f8" => 8,
        other => {
            return Err(bad(format!(
                "array dtype {other:?} is not supported; kiln reads float32 or float64 (little-endian)"
            )));
        }
    };
    if header_value(header, "fortran_order") != Some("False") {
        return Err(bad(
            "Fortran-ordered arrays are not supported; save with numpy.ascontiguousarray".into(),
        ));
    }
    let shape: Vec<usize> = header_value(header, "shape")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("cannot read the array shape".into()))?;
    let (rows, cols) = match shape.as_slice() {
        [r, c] => (*r, *c),
        [c] => (1, *c),
        other => {
            return Err(bad(format!(
                "array of shape {other:?}; kiln reads 2-D [rows, features] arrays"
            )));
        }
    };
    let body = &bytes[offset + header_len..];
    if body.len() != rows * cols * width {
        return Err(bad(format!(
            "the array data holds {} bytes, its shape [{rows}, {cols}] needs {}; is the file truncated?",
            body.len(),
            rows * cols * width
        )));
    }
    let data = if width == 4 {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        body.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    };
    Ok(NpyMatrix { rows, cols, data })
}

/// Writes a float32 `[rows, cols]` matrix in `.npy` format 1.0.
pub fn write_npy(w: &mut dyn Write, rows: usize, cols: usize, data: &[f32]) -> std::io::Result<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Pad so the data starts on a 64-byte boundary, as NumPy does.
    let total = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    w.write_all(MAGIC)?;
    w.write_all(&[1, 0])?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for v in data {
        w.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips() {
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        let mut buf = Vec::new();
        write_npy(&mut buf, 3, 4, &data).expect("write");
        assert_eq!((buf.len() - 12 * 4) % 64, 0, "data is 64-byte aligned");
        let m = parse_npy(Path::new("t.npy"), &buf).expect("read");
        assert_eq!((m.rows, m.cols), (3, 4));
        assert_eq!(m.data, data);
    }

    #[test]
    fn bad_files_are_named_errors() {
        let p = Path::new("t.npy");
        assert!(
            parse_npy(p, b"not numpy")
                .expect_err("magic")
                .to_string()
                .contains("magic")
        );
        let mut buf = Vec::new();
        write_npy(&mut buf, 2, 2, &[1.0, 2.0, 3.0, 4.0]).expect("write");
        let err = parse_npy(p, &buf[..buf.len() - 3])
            .expect_err("truncated")
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        let at = buf.windows(3).position(|w| w == b"<f4").expect("descr");
        let mut i8_file = buf.clone();
        i8_file[at..at + 3].copy_from_slice(b"|i1");
        let err = parse_npy(p, &i8_file).expect_err("dtype").to_string();
        assert!(err.contains("not supported"), "{err}");
    }
}
