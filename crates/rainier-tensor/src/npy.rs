//! NumPy `.npy` reading and writing (format versions 1.0, 2.0 and 3.0).
//!
//! Supported element types are those NumPy itself has: little-endian `float32` (`<f4`),
//! `float16` (`<f2`), `int32` (`<i4`) and `uint8` (`|u1`), C order. bf16, tf32 and fp8 have no
//! NumPy dtype; HBM tensors of those types are fed through a cast in a `dma_copy`.

use std::io::{Read, Write};

use crate::{DType, HostTensor};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Why a `.npy` stream could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("not a .npy file (missing \\x93NUMPY magic)")]
    BadMagic,
    #[error("unsupported .npy format version {0}.{1}")]
    Version(u8, u8),
    #[error("malformed .npy header: {0}")]
    Header(String),
    #[error(
        "unsupported .npy dtype '{0}' (supported: <f4 float32, <f2 float16, <i4 int32, |u1 uint8)"
    )]
    UnsupportedDescr(String),
    #[error("Fortran-order .npy arrays are not supported; save with np.ascontiguousarray")]
    FortranOrder,
    #[error("dtype {0} has no NumPy equivalent")]
    NoNumpyDType(DType),
    #[error(".npy data is truncated: expected {expected} bytes, found {found}")]
    Truncated { expected: usize, found: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The NumPy type string of `dtype`, or `None` where NumPy has none (bf16, fp8, packed MX).
pub fn descr_of(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F32 => Some("<f4"),
        DType::F16 => Some("<f2"),
        DType::I32 => Some("<i4"),
        DType::U8 => Some("|u1"),
        DType::I8 => Some("|i1"),
        DType::I16 => Some("<i2"),
        DType::U16 => Some("<u2"),
        DType::U32 => Some("<u4"),
        _ => None,
    }
}

fn dtype_of(descr: &str) -> Result<DType, NpyError> {
    match descr {
        "<f4" => Ok(DType::F32),
        "<f2" => Ok(DType::F16),
        "<i4" => Ok(DType::I32),
        "|u1" | "<u1" | "u1" => Ok(DType::U8),
        "|i1" | "<i1" | "i1" => Ok(DType::I8),
        "<i2" => Ok(DType::I16),
        "<u2" => Ok(DType::U16),
        "<u4" => Ok(DType::U32),
        other => Err(NpyError::UnsupportedDescr(other.to_string())),
    }
}

/// Reads one array.
pub fn read(mut r: impl Read) -> Result<HostTensor, NpyError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| NpyError::BadMagic)?;
    if &magic[..6] != MAGIC {
        return Err(NpyError::BadMagic);
    }
    let header_len = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            usize::from(u16::from_le_bytes(b))
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)?;
            u32::from_le_bytes(b) as usize
        }
        _ => return Err(NpyError::Version(magic[6], magic[7])),
    };
    if header_len > 1 << 20 {
        return Err(NpyError::Header(format!("header length {header_len} is absurd")));
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header)?;
    let header =
        String::from_utf8(header).map_err(|_| NpyError::Header("header is not UTF-8".into()))?;
    let (dtype, fortran, shape) = parse_header(&header)?;
    if fortran {
        return Err(NpyError::FortranOrder);
    }
    let expected = shape
        .iter()
        .try_fold(dtype.size_bytes(), |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= 1 << 40)
        .ok_or_else(|| NpyError::Header(format!("shape {shape:?} is too large")))?;
    let mut data = Vec::with_capacity(expected.min(1 << 30));
    r.take(expected as u64).read_to_end(&mut data)?;
    if data.len() != expected {
        return Err(NpyError::Truncated { expected, found: data.len() });
    }
    Ok(HostTensor { dtype, shape, data })
}

/// Writes one array (format 1.0, or 2.0 when the header needs it).
pub fn write(t: &HostTensor, mut w: impl Write) -> Result<(), NpyError> {
    let descr = descr_of(t.dtype).ok_or(NpyError::NoNumpyDType(t.dtype))?;
    write_header(descr, &t.shape, &mut w)?;
    w.write_all(&t.data)?;
    Ok(())
}

/// Writes one array as `float32`, converting element by element while streaming (no widened
/// copy in memory): for dtypes NumPy has no type for (bf16, fp8, the packed MX types).
pub fn write_f32(t: &HostTensor, mut w: impl Write) -> Result<(), NpyError> {
    write_header("<f4", &t.shape, &mut w)?;
    let size = t.dtype.size_bytes().max(1);
    let mut buf = Vec::with_capacity(4 << 16);
    for chunk in t.data.chunks(size << 16) {
        buf.clear();
        for b in chunk.chunks_exact(size) {
            buf.extend_from_slice(&t.dtype.load(b).to_le_bytes());
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

fn write_header(descr: &str, shape: &[usize], mut w: impl Write) -> Result<(), NpyError> {
    let shape = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad with spaces and end with '\n' so the data starts on a 64-byte boundary.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    w.write_all(MAGIC)?;
    if header.len() <= usize::from(u16::MAX) {
        w.write_all(&[1, 0])?;
        w.write_all(&(header.len() as u16).to_le_bytes())?;
    } else {
        w.write_all(&[2, 0])?;
        w.write_all(&(header.len() as u32).to_le_bytes())?;
    }
    w.write_all(header.as_bytes())?;
    Ok(())
}

/// Parses the Python-literal header dict `{'descr': ..., 'fortran_order': ..., 'shape': (...)}`.
fn parse_header(h: &str) -> Result<(DType, bool, Vec<usize>), NpyError> {
    let bad = |m: &str| NpyError::Header(m.to_string());
    let value_after = |key: &str| -> Result<&str, NpyError> {
        let k = h.find(&format!("'{key}'")).ok_or_else(|| bad(&format!("no '{key}' key")))?;
        let rest = &h[k + key.len() + 2..];
        let colon = rest.find(':').ok_or_else(|| bad(&format!("no ':' after '{key}'")))?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr = value_after("descr")?;
    let quote = descr.chars().next().filter(|c| *c == '\'' || *c == '"');
    let quote = quote.ok_or_else(|| bad("'descr' is not a string"))?;
    let end = descr[1..].find(quote).ok_or_else(|| bad("unterminated 'descr' string"))?;
    let dtype = dtype_of(&descr[1..1 + end])?;
    let fortran = value_after("fortran_order")?;
    // The literal must end where a Python token ends (`Falsey` is not `False`).
    let literal = |word: &str| {
        fortran.strip_prefix(word).is_some_and(|rest| {
            rest.chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
    };
    let fortran = if literal("True") {
        true
    } else if literal("False") {
        false
    } else {
        return Err(bad("'fortran_order' is neither True nor False"));
    };
    let shape = value_after("shape")?;
    let shape = shape.strip_prefix('(').ok_or_else(|| bad("'shape' is not a tuple"))?;
    let close = shape.find(')').ok_or_else(|| bad("unterminated 'shape' tuple"))?;
    let dims = shape[..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("'shape' holds something other than non-negative integers"))?;
    Ok((dtype, fortran, dims))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dtypes NumPy lacks are written as float32 element by element, equal to `to_f32`, across
    /// the 64K-element chunk boundary.
    #[test]
    fn write_f32_streams_what_to_f32_gives() {
        for dtype in [DType::Bf16, DType::Fp8E4m3, DType::Fp8E5m2] {
            let n = (1 << 16) + 37;
            let vals: Vec<f32> = (0..n).map(|i| ((i * 7919) % 401) as f32 / 16.0 - 12.0).collect();
            let t = HostTensor::from_f32(dtype, &[n], &vals);
            assert!(descr_of(dtype).is_none() && write(&t, std::io::sink()).is_err());
            let mut buf = Vec::new();
            write_f32(&t, &mut buf).unwrap_or_else(|e| panic!("{e}"));
            let back = read(&buf[..]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((back.dtype, back.shape.clone()), (DType::F32, vec![n]));
            assert_eq!(back.to_f32(), t.to_f32(), "{dtype}");
        }
    }

    #[test]
    fn round_trips_every_numpy_dtype() {
        for dtype in [DType::F32, DType::F16, DType::I32, DType::U8] {
            for shape in [vec![7], vec![3, 5], vec![2, 3, 4], vec![]] {
                let n: usize = shape.iter().product();
                let vals: Vec<f32> = (0..n).map(|i| i as f32 * 1.5 - 4.0).collect();
                let t = HostTensor::from_f32(dtype, &shape, &vals);
                let mut buf = Vec::new();
                write(&t, &mut buf).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(buf.len() % 64, n * dtype.size_bytes() % 64);
                let back = read(&buf[..]).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(back, t);
            }
        }
    }

    /// Bytes as `np.save('x.npy', np.arange(6, dtype=np.float32).reshape(2, 3))` writes them.
    #[test]
    fn reads_numpy_written_bytes() {
        let mut file = Vec::new();
        file.extend_from_slice(b"\x93NUMPY\x01\x00\x76\x00");
        let mut header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }".to_string();
        header.push_str(&" ".repeat(118 - header.len() - 1));
        header.push('\n');
        file.extend_from_slice(header.as_bytes());
        for i in 0..6 {
            file.extend_from_slice(&(i as f32).to_le_bytes());
        }
        let t = read(&file[..]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.to_f32(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn rejects_bad_files_with_reasons() {
        assert!(matches!(read(&b"hello"[..]), Err(NpyError::BadMagic)));
        let t = HostTensor::from_f32(DType::F32, &[4], &[1.0, 2.0, 3.0, 4.0]);
        let mut buf = Vec::new();
        write(&t, &mut buf).unwrap_or_else(|e| panic!("{e}"));
        let truncated = &buf[..buf.len() - 3];
        assert!(matches!(read(truncated), Err(NpyError::Truncated { .. })));
        let replace = |from: &[u8], to: &[u8]| {
            let at = buf.windows(from.len()).position(|w| w == from).unwrap_or(0);
            let mut b = buf.clone();
            b[at..at + to.len()].copy_from_slice(to);
            b
        };
        let err = read(&replace(b"<f4", b">f4")[..]).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains(">f4"));
        assert!(matches!(read(&replace(b"False", b"True ")[..]), Err(NpyError::FortranOrder)));
        // Not a Python literal: refused, not read as False.
        let err = read(&replace(b"False,", b"Falsey")[..]).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("neither True nor False"));
        let t = HostTensor::from_f32(DType::Bf16, &[1], &[1.0]);
        assert!(matches!(write(&t, Vec::new()), Err(NpyError::NoNumpyDType(DType::Bf16))));
    }
}
