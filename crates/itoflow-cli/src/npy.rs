//! Checked `.npy` reading: the header is parsed and the size it declares is compared with the
//! bytes that follow it, and with the memory available, before anything is allocated.
//!
//! The format (NumPy's `numpy/lib/format.py`, "NPY format"): the magic string `\x93NUMPY`, a
//! major and minor version byte, the header length (u16 little-endian for version 1, u32 for
//! versions 2 and 3), then the header — a Python dict literal
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (10, 1, 8, 8), }` padded with spaces and a
//! newline — and then the data, `prod(shape) · itemsize` bytes.

use std::io::Read;
use std::path::Path;

use anyhow::{Result, anyhow, bail};

use crate::limits;

/// Longest header accepted (NumPy itself refuses headers over 10 000 bytes by default).
pub const MAX_HEADER: usize = 1 << 16;

/// A parsed `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The dtype string, e.g. `<f4`.
    pub descr: String,
    /// Column-major data.
    pub fortran_order: bool,
    /// The array's shape (`[]` for a 0-d array).
    pub shape: Vec<usize>,
    /// Where the data start.
    pub data_offset: usize,
    /// Bytes per element.
    pub item_size: usize,
}

impl Header {
    /// Elements the header declares (`None` when the count overflows `u64`).
    pub fn elements(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
    }

    /// Data bytes the header declares (`None` when the count overflows `u64`).
    pub fn data_bytes(&self) -> Option<u64> {
        self.elements()?.checked_mul(self.item_size as u64)
    }
}

/// Bytes per element of a simple dtype string (`<f4`, `|u1`, `>i8`, `<c16`, `|b1`, ...).
fn item_size(descr: &str) -> Option<usize> {
    let rest = descr.strip_prefix(['<', '>', '|', '=']).unwrap_or(descr);
    let kind = rest.chars().next()?;
    if !matches!(kind, 'b' | 'i' | 'u' | 'f' | 'c') {
        return None;
    }
    let n: usize = rest[1..].parse().ok()?;
    (1..=32).contains(&n).then_some(n)
}

/// Parses the header at the start of `bytes` (which need hold only the header).
pub fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not an .npy file (no \\x93NUMPY magic string)".into());
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        2 | 3 => return Err("truncated header".into()),
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    if len > MAX_HEADER {
        return Err(format!(
            "header of {len} bytes (at most {MAX_HEADER} accepted)"
        ));
    }
    let end = start + len;
    let text = bytes.get(start..end).ok_or("truncated header")?;
    let text = std::str::from_utf8(text).map_err(|_| "header is not text")?;
    let dict = parse_dict(text)?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (k, v) in dict {
        match (k.as_str(), v) {
            ("descr", Lit::Str(s)) => descr = Some(s),
            ("fortran_order", Lit::Bool(b)) => fortran = Some(b),
            ("shape", Lit::Tuple(t)) => shape = Some(t),
            ("descr" | "fortran_order" | "shape", _) => {
                return Err(format!(
                    "header key '{}' has a value of the wrong type",
                    shown(&k)
                ));
            }
            _ => return Err(format!("unexpected header key '{}'", shown(&k))),
        }
    }
    let descr = descr.ok_or("header lacks 'descr'")?;
    let item_size =
        item_size(&descr).ok_or_else(|| format!("unsupported element type '{}'", shown(&descr)))?;
    Ok(Header {
        descr,
        fortran_order: fortran.ok_or("header lacks 'fortran_order'")?,
        shape: shape.ok_or("header lacks 'shape'")?,
        data_offset: end,
        item_size,
    })
}

/// Header text for a message: escaped (no control characters) and at most 40 characters.
fn shown(s: &str) -> String {
    let e: String = s.escape_debug().collect();
    match e.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &e[..i]),
        None => e,
    }
}

/// A value of the header's Python literal.
enum Lit {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses `{'key': value, ...}` with string, boolean and integer-tuple values.
fn parse_dict(text: &str) -> Result<Vec<(String, Lit)>, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.expect(b'{')?;
    let mut out = Vec::new();
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        let value = match p.peek() {
            Some(b'\'' | b'"') => Lit::Str(p.string()?),
            Some(b'(') => Lit::Tuple(p.tuple()?),
            Some(b'T' | b'F') => Lit::Bool(p.boolean()?),
            _ => return Err(format!("unreadable value of header key '{}'", shown(&key))),
        };
        if out.iter().any(|(k, _)| *k == key) {
            return Err(format!("header key '{}' appears twice", shown(&key)));
        }
        out.push((key, value));
        p.ws();
        if !p.eat(b',') {
            p.ws();
            p.expect(b'}')?;
            break;
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err("text after the header dictionary".into());
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("malformed header: expected '{}'", c as char))
        }
    }
    fn string(&mut self) -> Result<String, String> {
        let q = self.peek().filter(|c| *c == b'\'' || *c == b'"');
        let q = q.ok_or("malformed header: expected a quoted string")?;
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == q {
                let s = std::str::from_utf8(&self.s[start..self.i])
                    .map_err(|_| "header is not text")?
                    .to_string();
                self.i += 1;
                return Ok(s);
            }
            if c == b'\\' {
                return Err("escapes in header strings are not supported".into());
            }
            self.i += 1;
        }
        Err("malformed header: unterminated string".into())
    }
    fn boolean(&mut self) -> Result<bool, String> {
        for (word, v) in [("True", true), ("False", false)] {
            if self.s[self.i..].starts_with(word.as_bytes()) {
                self.i += word.len();
                return Ok(v);
            }
        }
        Err("malformed header: expected True or False".into())
    }
    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                return Ok(out);
            }
            let start = self.i;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
            let d: usize = digits
                .parse()
                .map_err(|_| "malformed header: the shape must be non-negative integers")?;
            out.push(d);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b')')?;
                return Ok(out);
            }
        }
    }
}

/// A message on one line (the `.npy` reader's parse errors span several).
pub fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks that `len` bytes of file (header included) hold exactly what `h` declares.
pub fn check_length(h: &Header, len: u64, name: &str) -> Result<()> {
    let body = len.saturating_sub(h.data_offset as u64);
    match h.data_bytes() {
        Some(n) if n == body => Ok(()),
        Some(n) => bail!(
            "'{name}' declares shape {:?} of {} ({}), but holds {} of data{}",
            h.shape,
            h.descr,
            limits::bytes(n as u128),
            limits::bytes(body as u128),
            if n > body {
                " (truncated or not an .npy file)"
            } else {
                " (trailing bytes)"
            }
        ),
        None => bail!(
            "'{name}' declares shape {:?}, whose size does not fit in 64 bits",
            h.shape
        ),
    }
}

/// Checks `.npy` bytes (header and length) without allocating.
pub fn check_bytes(bytes: &[u8], name: &str) -> Result<Header> {
    let h =
        parse_header(bytes).map_err(|e| anyhow!("cannot read '{name}' as an .npy array: {e}"))?;
    check_length(&h, bytes.len() as u64, name)?;
    Ok(h)
}

/// Reads an `.npy` file after checking its header against its length and the memory
/// available (`extra_per_element`: bytes the caller will need per element beyond the file,
/// e.g. a conversion to `f64`).
pub fn read_file(path: &Path, extra_per_element: u64) -> Result<(Header, Vec<u8>)> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| anyhow!("cannot read '{name}': {e}"))?;
    if !meta.is_file() {
        bail!("cannot read '{name}': not a regular file");
    }
    let mut f = std::fs::File::open(path).map_err(|e| anyhow!("cannot read '{name}': {e}"))?;
    let mut head = Vec::new();
    (&mut f)
        .take((MAX_HEADER + 12) as u64)
        .read_to_end(&mut head)
        .map_err(|e| anyhow!("cannot read '{name}': {e}"))?;
    let h =
        parse_header(&head).map_err(|e| anyhow!("cannot read '{name}' as an .npy array: {e}"))?;
    check_length(&h, meta.len(), &name)?;
    let elements = h.elements().unwrap_or(u64::MAX) as u128;
    limits::check_memory(
        meta.len() as u128 + elements * extra_per_element as u128,
        &format!("reading '{name}'"),
    )?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(meta.len() as usize).map_err(|_| {
        anyhow!(
            "cannot read '{name}': {} of memory not available",
            limits::bytes(meta.len() as u128)
        )
    })?;
    bytes.extend_from_slice(&head);
    f.read_to_end(&mut bytes)
        .map_err(|e| anyhow!("cannot read '{name}': {e}"))?;
    // The file may have changed since its length was taken.
    check_length(&h, bytes.len() as u64, &name)?;
    Ok((h, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `.npy` header (version 1) for `descr` and `shape`.
    pub fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let tuple = if shape.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut text =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
        while (10 + text.len() + 1) % 64 != 0 {
            text.push(' ');
        }
        text.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((text.len() as u16).to_le_bytes());
        b.extend(text.as_bytes());
        b
    }

    #[test]
    fn numpy_headers_parse() {
        let b = header("<f4", &[10, 1, 8, 8]);
        let h = parse_header(&b).unwrap();
        assert_eq!(h.shape, [10, 1, 8, 8]);
        assert_eq!(h.item_size, 4);
        assert_eq!(h.data_offset, b.len());
        assert_eq!(h.data_bytes(), Some(2560));
        assert_eq!(
            parse_header(&header("|u1", &[])).unwrap().shape,
            Vec::<usize>::new()
        );
        assert_eq!(parse_header(&header("<f8", &[3])).unwrap().shape, [3]);
    }

    #[test]
    fn declared_sizes_are_checked_against_the_file() {
        let mut b = header("<f4", &[1_000_000_000_000, 1, 8, 8]);
        b.extend([0u8; 16]);
        let e = check_bytes(&b, "big.npy").unwrap_err().to_string();
        assert!(e.contains("declares shape [1000000000000, 1, 8, 8]"), "{e}");
        assert!(e.contains("256.0 TB"), "{e}");
        let mut b = header("<f8", &[2]);
        b.extend([0u8; 17]);
        assert!(
            check_bytes(&b, "x")
                .unwrap_err()
                .to_string()
                .contains("trailing")
        );
        let b = header("<f8", &[usize::MAX, 4]);
        assert!(
            check_bytes(&b, "x")
                .unwrap_err()
                .to_string()
                .contains("64 bits")
        );
    }

    #[test]
    fn malformed_headers_are_errors() {
        for bad in [
            &b""[..],
            b"\x93NUMPY",
            b"\x93NUMPY\x09\x00\x00\x00",
            b"\x93NUMPY\x01\x00\xff\xff{",
            b"PK\x03\x04 not npy",
        ] {
            assert!(parse_header(bad).is_err());
        }
        let mk = |text: &str| {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend((text.len() as u16).to_le_bytes());
            b.extend(text.as_bytes());
            b
        };
        for text in [
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
            "{'descr': 'O', 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} trailing",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
        ] {
            assert!(parse_header(&mk(text)).is_err(), "{text}");
        }
        assert!(
            parse_header(&mk(
                "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }"
            ))
            .is_ok()
        );
    }

    /// Deterministic fuzz: valid `.npy` files of random dtype and shape, then mutated (bytes
    /// flipped or replaced in the header and body, truncated, extended, shape digits edited).
    /// Reading them as data gives a clean error or an array whose size is what the file holds;
    /// never a panic or an allocation the header alone drives.
    #[test]
    fn fuzz_npy_headers_and_bodies() {
        use ndarray::ArrayD;
        use ndarray_npy::WriteNpyExt;
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed, TestRunner};

        #[derive(Clone, Debug)]
        enum Edit {
            Flip(usize, u8),
            Set(usize, u8),
            Truncate(usize),
            Extend(Vec<u8>),
            Digits(String),
        }
        let edit = prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
            any::<usize>().prop_map(Edit::Truncate),
            prop::collection::vec(any::<u8>(), 1..32).prop_map(Edit::Extend),
            "(0|1|7|64|4294967296|1000000000000|18446744073709551615|99999999999999999999)"
                .prop_map(Edit::Digits),
        ];
        let file = (
            0usize..3,
            prop::collection::vec(0usize..5, 0..4),
            prop::collection::vec(edit, 0..4),
        );
        let config = Config {
            cases: 20_000,
            rng_seed: RngSeed::Fixed(7),
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        runner
            .run(&file, |(dtype, shape, edits)| {
                let n: usize = shape.iter().product();
                let mut b = Vec::new();
                match dtype {
                    0 => ArrayD::<u8>::from_elem(shape.clone(), 3).write_npy(&mut b),
                    1 => ArrayD::<f32>::from_elem(shape.clone(), 0.5).write_npy(&mut b),
                    _ => ArrayD::<f64>::from_elem(shape.clone(), -0.5).write_npy(&mut b),
                }
                .unwrap();
                let clean = b.clone();
                for e in &edits {
                    match e {
                        Edit::Flip(i, x) if !b.is_empty() => {
                            let k = i % b.len();
                            b[k] ^= x;
                        }
                        Edit::Set(i, x) if !b.is_empty() => {
                            let k = i % b.len();
                            b[k] = *x;
                        }
                        Edit::Truncate(i) => b.truncate(i % (b.len() + 1)),
                        Edit::Extend(x) => b.extend(x),
                        Edit::Digits(d) => {
                            let text = String::from_utf8_lossy(&b).into_owned();
                            if let Some(p) = text.find("'shape': (") {
                                let at = p + "'shape': (".len();
                                let mut t = text.clone();
                                t.insert_str(at, &format!("{d}, "));
                                b = t.into_bytes();
                            }
                        }
                        _ => {}
                    }
                }
                let _ = parse_header(&b);
                match crate::data::parse_data(&b, "fuzz.npy") {
                    Ok(raw) => {
                        let h = check_bytes(&b, "fuzz.npy").unwrap();
                        let len = match &raw {
                            crate::data::RawData::U8(a) => a.len(),
                            crate::data::RawData::F32(a) => a.len(),
                            crate::data::RawData::F64(a) => a.len(),
                        };
                        prop_assert_eq!(len as u64, h.elements().unwrap());
                        prop_assert_eq!(h.data_offset + len * h.item_size, b.len());
                        if b == clean {
                            prop_assert_eq!(len, n);
                        }
                    }
                    Err(e) => {
                        let text = format!("{e:#}");
                        prop_assert!(!text.contains('\n'), "{}", text);
                    }
                }
                let _ = crate::store::parse_npy::<f64>(&b, "fuzz.npy");
                let _ = crate::store::parse_npy::<f32>(&b, "fuzz.npy");
                Ok(())
            })
            .unwrap();
    }
}
