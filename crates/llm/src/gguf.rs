//! Reader for the header and metadata key-values of a GGUF file (versions 2 and 3).
//!
//! Layout (little endian): `"GGUF"` magic, `u32` version, `u64` tensor count, `u64`
//! key-value count, then the key-values. Each key is a string (`u64` length + UTF-8
//! bytes), followed by a `u32` value type and the value. Arrays carry a `u32` element
//! type and a `u64` element count. Tensor infos and tensor data follow the metadata and
//! are never read.
//!
//! Invariants:
//! * every count or length read from the file is checked against the bytes that remain
//!   in the file (each element needs at least one byte) and against fixed caps
//!   ([`MAX_STRING_BYTES`], [`MAX_ARRAY_LEN`], [`MAX_KV_COUNT`], [`MAX_ARRAY_DEPTH`])
//!   *before* anything is allocated, so a hostile or truncated file yields a
//!   [`GgufError`] instead of a huge allocation;
//! * every error names the file and the byte offset where reading failed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Maximum length of a string value, in bytes (chat templates are tens of KiB).
pub const MAX_STRING_BYTES: u64 = 16 << 20;
/// Largest array accepted, in elements (vocabularies have up to a few 100k entries).
pub const MAX_ARRAY_LEN: u64 = 16 << 20;
/// Largest number of metadata key-values accepted.
pub const MAX_KV_COUNT: u64 = 1 << 16;
/// Deepest nesting of arrays accepted.
pub const MAX_ARRAY_DEPTH: u32 = 4;

const MAGIC: &[u8; 4] = b"GGUF";

/// Error of reading a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or its size read.
    #[error("cannot open GGUF file {path}: {source}; check the path and its permissions")]
    Open {
        /// The GGUF file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading failed (usually: the file ends early).
    #[error(
        "GGUF file {path} ends early at byte offset {offset_bytes} ({source}); the file is truncated, download it again"
    )]
    Read {
        /// The GGUF file.
        path: PathBuf,
        /// Byte offset from the start of the file where the bad item starts.
        offset_bytes: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with `GGUF`.
    #[error(
        "{path} is not a GGUF file: magic bytes are {found:?}, expected \"GGUF\"; pass a .gguf model file"
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes of the file.
        found: [u8; 4],
    },
    /// The format version is not 2 or 3.
    #[error(
        "GGUF file {path} has version {version}; only versions 2 and 3 are supported, convert it with a current llama.cpp"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the header.
        version: u32,
    },
    /// A count, length or nesting depth exceeds a cap or the bytes left in the file.
    #[error(
        "GGUF file {path} at byte offset {offset_bytes}: {what} {value} exceeds the limit {limit}; the file is corrupt or hostile, download it again"
    )]
    TooLarge {
        /// The GGUF file.
        path: PathBuf,
        /// Byte offset from the start of the file where the bad item starts.
        offset_bytes: u64,
        /// Name of the counted item.
        what: &'static str,
        /// The value found.
        value: u64,
        /// The largest value accepted there.
        limit: u64,
    },
    /// A value type code is not defined by GGUF.
    #[error(
        "GGUF file {path} at byte offset {offset_bytes}: unknown value type {value_type}; the file is corrupt or uses a newer GGUF revision"
    )]
    UnknownType {
        /// The GGUF file.
        path: PathBuf,
        /// Byte offset from the start of the file where the bad item starts.
        offset_bytes: u64,
        /// The type code found.
        value_type: u32,
    },
    /// A string is not UTF-8.
    #[error(
        "GGUF file {path} at byte offset {offset_bytes}: string is not valid UTF-8 ({source}); the file is corrupt"
    )]
    BadUtf8 {
        /// The GGUF file.
        path: PathBuf,
        /// Byte offset from the start of the file where the bad item starts.
        offset_bytes: u64,
        /// The UTF-8 error.
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// A metadata key appears twice.
    #[error(
        "GGUF file {path} at byte offset {offset_bytes}: duplicate metadata key {key:?}; the file is corrupt"
    )]
    DuplicateKey {
        /// The GGUF file.
        path: PathBuf,
        /// Byte offset from the start of the file where the bad item starts.
        offset_bytes: u64,
        /// The duplicated key.
        key: String,
    },
}

/// A typed array value. Element type and values as stored in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    /// Elements of GGUF type `u8`.
    U8(Vec<u8>),
    /// Elements of GGUF type `i8`.
    I8(Vec<i8>),
    /// Elements of GGUF type `u16`.
    U16(Vec<u16>),
    /// Elements of GGUF type `i16`.
    I16(Vec<i16>),
    /// Elements of GGUF type `u32`.
    U32(Vec<u32>),
    /// Elements of GGUF type `i32`.
    I32(Vec<i32>),
    /// Elements of GGUF type `f32`.
    F32(Vec<f32>),
    /// Elements of GGUF type `bool`.
    Bool(Vec<bool>),
    /// Elements of GGUF type `string`.
    String(Vec<String>),
    /// Elements of GGUF type `u64`.
    U64(Vec<u64>),
    /// Elements of GGUF type `i64`.
    I64(Vec<i64>),
    /// Elements of GGUF type `f64`.
    F64(Vec<f64>),
    /// Nested arrays.
    Array(Vec<Array>),
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Array(v) => v.len(),
        }
    }

    /// Returns true when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the GGUF type name of the elements, for error messages.
    pub fn element_type_name(&self) -> &'static str {
        match self {
            Array::U8(_) => "u8",
            Array::I8(_) => "i8",
            Array::U16(_) => "u16",
            Array::I16(_) => "i16",
            Array::U32(_) => "u32",
            Array::I32(_) => "i32",
            Array::F32(_) => "f32",
            Array::Bool(_) => "bool",
            Array::String(_) => "string",
            Array::U64(_) => "u64",
            Array::I64(_) => "i64",
            Array::F64(_) => "f64",
            Array::Array(_) => "array",
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// GGUF type `u8`.
    U8(u8),
    /// GGUF type `i8`.
    I8(i8),
    /// GGUF type `u16`.
    U16(u16),
    /// GGUF type `i16`.
    I16(i16),
    /// GGUF type `u32`.
    U32(u32),
    /// GGUF type `i32`.
    I32(i32),
    /// GGUF type `f32`.
    F32(f32),
    /// GGUF type `bool`.
    Bool(bool),
    /// GGUF type `string`.
    String(String),
    /// An array (GGUF type 9).
    Array(Array),
    /// GGUF type `u64`.
    U64(u64),
    /// GGUF type `i64`.
    I64(i64),
    /// GGUF type `f64`.
    F64(f64),
}

impl Value {
    /// Returns the GGUF type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
        }
    }

    /// Returns the value as an unsigned integer when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Returns the value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Returns the value as a bool, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// Returns the value as an array, if it is one.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Header and metadata of a GGUF file.
#[derive(Debug, Clone)]
pub struct Gguf {
    /// The file that was read.
    pub path: PathBuf,
    /// GGUF format version (2 or 3).
    pub version: u32,
    /// Number of tensors declared in the header (their infos are not read).
    pub tensor_count: u64,
    /// Metadata key-values, sorted by key.
    pub metadata: BTreeMap<String, Value>,
}

impl Gguf {
    /// Reads the header and metadata of the GGUF file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| GgufError::Open {
            path: path.clone(),
            source,
        })?;
        let file_len = file
            .metadata()
            .map_err(|source| GgufError::Open {
                path: path.clone(),
                source,
            })?
            .len();
        Self::from_reader(BufReader::with_capacity(1 << 16, file), file_len, path)
    }

    /// Reads a GGUF header and metadata from `reader`, which contains `len_bytes` bytes in
    /// all; `path` is only used in error messages.
    pub fn from_reader(
        reader: impl Read,
        len_bytes: u64,
        path: PathBuf,
    ) -> Result<Self, GgufError> {
        let mut r = Reader {
            inner: reader,
            offset: 0,
            len: len_bytes,
            path,
        };
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(GgufError::BadMagic {
                path: r.path,
                found: magic,
            });
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion {
                path: r.path,
                version,
            });
        }
        let tensor_count = r.u64()?;
        let kv_count = r.count("metadata key-value count", MAX_KV_COUNT)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key_offset = r.offset;
            let key = r.string()?;
            let value_type = r.u32()?;
            let value = r.value(value_type)?;
            if metadata.contains_key(&key) {
                return Err(GgufError::DuplicateKey {
                    path: r.path,
                    offset_bytes: key_offset,
                    key,
                });
            }
            metadata.insert(key, value);
        }
        Ok(Gguf {
            path: r.path,
            version,
            tensor_count,
            metadata,
        })
    }

    /// Returns the value stored under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }
}

struct Reader<R> {
    inner: R,
    offset: u64,
    len: u64,
    path: PathBuf,
}

macro_rules! read_le {
    ($name:ident, $t:ty) => {
        fn $name(&mut self) -> Result<$t, GgufError> {
            let mut b = [0u8; std::mem::size_of::<$t>()];
            self.read_exact(&mut b)?;
            Ok(<$t>::from_le_bytes(b))
        }
    };
}

impl<R: Read> Reader<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), GgufError> {
        self.inner
            .read_exact(buf)
            .map_err(|source| GgufError::Read {
                path: self.path.clone(),
                offset_bytes: self.offset,
                source,
            })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    read_le!(u8, u8);
    read_le!(i8, i8);
    read_le!(u16, u16);
    read_le!(i16, i16);
    read_le!(u32, u32);
    read_le!(i32, i32);
    read_le!(f32, f32);
    read_le!(u64, u64);
    read_le!(i64, i64);
    read_le!(f64, f64);

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.offset)
    }

    /// Reads a `u64` count of items that take at least `min_item_bytes` each and checks
    /// it against `limit` and the bytes left in the file.
    fn count_of(
        &mut self,
        what: &'static str,
        limit: u64,
        min_item_bytes: u64,
    ) -> Result<usize, GgufError> {
        let offset = self.offset;
        let value = self.u64()?;
        let fits = self.remaining() / min_item_bytes.max(1);
        let limit = limit.min(fits);
        if value > limit {
            return Err(GgufError::TooLarge {
                path: self.path.clone(),
                offset_bytes: offset,
                what,
                value,
                limit,
            });
        }
        Ok(value as usize)
    }

    fn count(&mut self, what: &'static str, limit: u64) -> Result<usize, GgufError> {
        self.count_of(what, limit, 1)
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.count("string length in bytes", MAX_STRING_BYTES)?;
        let offset = self.offset;
        let mut buf = vec![0u8; len];
        self.read_exact(&mut buf)?;
        String::from_utf8(buf).map_err(|source| GgufError::BadUtf8 {
            path: self.path.clone(),
            offset_bytes: offset,
            source,
        })
    }

    fn bool(&mut self) -> Result<bool, GgufError> {
        Ok(self.u8()? != 0)
    }

    fn value(&mut self, value_type: u32) -> Result<Value, GgufError> {
        Ok(match value_type {
            0 => Value::U8(self.u8()?),
            1 => Value::I8(self.i8()?),
            2 => Value::U16(self.u16()?),
            3 => Value::I16(self.i16()?),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.i32()?),
            6 => Value::F32(self.f32()?),
            7 => Value::Bool(self.bool()?),
            8 => Value::String(self.string()?),
            9 => Value::Array(self.array(0)?),
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.i64()?),
            12 => Value::F64(self.f64()?),
            other => return Err(self.unknown_type(other, 4)),
        })
    }

    fn unknown_type(&self, value_type: u32, type_bytes: u64) -> GgufError {
        GgufError::UnknownType {
            path: self.path.clone(),
            offset_bytes: self.offset - type_bytes,
            value_type,
        }
    }

    fn array(&mut self, depth: u32) -> Result<Array, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::TooLarge {
                path: self.path.clone(),
                offset_bytes: self.offset,
                what: "array nesting depth",
                value: u64::from(depth) + 1,
                limit: u64::from(MAX_ARRAY_DEPTH),
            });
        }
        let elem_type = self.u32()?;
        let min_bytes = match elem_type {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            other => return Err(self.unknown_type(other, 4)),
        };
        let n = self.count_of("array length in elements", MAX_ARRAY_LEN, min_bytes)?;
        macro_rules! many {
            ($variant:ident, $read:ident) => {{
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.$read()?);
                }
                Array::$variant(v)
            }};
        }
        Ok(match elem_type {
            0 => many!(U8, u8),
            1 => many!(I8, i8),
            2 => many!(U16, u16),
            3 => many!(I16, i16),
            4 => many!(U32, u32),
            5 => many!(I32, i32),
            6 => many!(F32, f32),
            7 => many!(Bool, bool),
            8 => many!(String, string),
            10 => many!(U64, u64),
            11 => many!(I64, i64),
            12 => many!(F64, f64),
            _ => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array(depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &mut Vec<u8>, text: &str) {
        out.extend((text.len() as u64).to_le_bytes());
        out.extend(text.as_bytes());
    }

    fn header(kv_count: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(kv_count.to_le_bytes());
        b
    }

    fn parse(bytes: &[u8]) -> Result<Gguf, GgufError> {
        Gguf::from_reader(bytes, bytes.len() as u64, PathBuf::from("test.gguf"))
    }

    #[test]
    fn reads_scalars_strings_and_arrays() {
        let mut b = header(4);
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "gemma3");
        s(&mut b, "n");
        b.extend(4u32.to_le_bytes());
        b.extend(7u32.to_le_bytes());
        s(&mut b, "toks");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        s(&mut b, "a");
        s(&mut b, "▁b");
        s(&mut b, "scores");
        b.extend(9u32.to_le_bytes());
        b.extend(6u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(1.5f32.to_le_bytes());
        b.extend((-2.0f32).to_le_bytes());
        let g = parse(&b).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(
            g.get("general.architecture").unwrap().as_str(),
            Some("gemma3")
        );
        assert_eq!(g.get("n").unwrap().as_u64(), Some(7));
        assert_eq!(
            g.get("toks").unwrap().as_array(),
            Some(&Array::String(vec!["a".into(), "▁b".into()]))
        );
        assert_eq!(
            g.get("scores").unwrap().as_array(),
            Some(&Array::F32(vec![1.5, -2.0]))
        );
    }

    #[test]
    fn rejects_bad_magic_and_version() {
        let err = parse(b"GGML\x03\0\0\0").unwrap_err();
        assert!(matches!(err, GgufError::BadMagic { .. }), "{err}");
        let mut b = b"GGUF".to_vec();
        b.extend(1u32.to_le_bytes());
        let err = parse(&b).unwrap_err();
        assert!(err.to_string().contains("version 1"), "{err}");
    }

    #[test]
    fn huge_lengths_fail_before_allocating() {
        let mut b = header(1);
        b.extend(u64::MAX.to_le_bytes());
        let err = parse(&b).unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::TooLarge {
                    offset_bytes: 24,
                    ..
                }
            ),
            "{err}"
        );

        let mut b = header(1);
        s(&mut b, "k");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend((1u64 << 40).to_le_bytes());
        let err = parse(&b).unwrap_err();
        assert!(err.to_string().contains("array length"), "{err}");

        let b = header(u64::MAX);
        assert!(matches!(parse(&b).unwrap_err(), GgufError::TooLarge { .. }));
    }

    #[test]
    fn truncation_names_offset() {
        let mut b = header(1);
        s(&mut b, "k");
        b.extend(4u32.to_le_bytes());
        b.extend([1, 2]);
        let err = parse(&b).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("test.gguf") && msg.contains("offset 37"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_type_is_reported() {
        let mut b = header(1);
        s(&mut b, "k");
        b.extend(99u32.to_le_bytes());
        let err = parse(&b).unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::UnknownType {
                    value_type: 99,
                    offset_bytes: 33,
                    ..
                }
            ),
            "{err}"
        );
    }
}
