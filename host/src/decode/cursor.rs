//! A bounds-checked reader over an event body.
//!
//! Every read checks the remaining length first and fails with
//! [`Short`] instead of panicking, so bad bytes can never crash the decoder,
//! and every successful read consumes input, so it can never spin.

/// Not enough bytes left for a read: `need` more were required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short {
    /// How many bytes were missing.
    pub need: usize,
}

/// A cursor over a byte slice.
#[derive(Debug, Clone, Copy)]
pub struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Number of bytes not read yet.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes the next `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if n > self.buf.len() {
            return Err(Short {
                need: n - self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes everything that is left.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Skips `n` bytes.
    #[inline]
    pub fn skip(&mut self, n: usize) -> Result<(), Short> {
        self.take(n).map(|_| ())
    }

    /// Reads one byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.take(1)?[0])
    }

    /// Reads a little-endian u16.
    #[inline]
    pub fn u16(&mut self) -> Result<u16, Short> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian u32.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian u64.
    #[inline]
    pub fn u64(&mut self) -> Result<u64, Short> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads an unsigned little-endian integer of `n` (0..=8) bytes.
    #[inline]
    pub fn uint_n(&mut self, n: usize) -> Result<u64, Short> {
        let b = self.take(n)?;
        Ok(le_uint(b))
    }

    /// Reads a fixed-size array.
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let b = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// Reads a MySQL length-encoded ("packed") integer.
    pub fn packed(&mut self) -> Result<u64, Short> {
        match self.u8()? {
            n @ 0..=250 => Ok(u64::from(n)),
            0xfc => Ok(u64::from(self.u16()?)),
            0xfd => self.uint_n(3),
            0xfe => self.u64(),
            // 0xfb is SQL NULL in result sets and 0xff is an error marker:
            // neither is a length, so report the field as unreadable.
            _ => Err(Short { need: usize::MAX }),
        }
    }

    /// Reads a packed length and then that many bytes.
    pub fn packed_bytes(&mut self) -> Result<&'a [u8], Short> {
        let n = self.packed()?;
        let n = usize::try_from(n).map_err(|_| Short { need: usize::MAX })?;
        self.take(n)
    }
}

/// Little-endian unsigned integer of up to 8 bytes.
#[inline]
pub fn le_uint(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for (i, &x) in b.iter().take(8).enumerate() {
        v |= u64::from(x) << (8 * i);
    }
    v
}

/// Big-endian unsigned integer of up to 8 bytes.
#[inline]
pub fn be_uint(b: &[u8]) -> u64 {
    b.iter().take(8).fold(0u64, |v, &x| (v << 8) | u64::from(x))
}

/// MySQL's `mysql::serialization` integers (tagged GTID events, and the
/// tag inside a GTID set).
/// Reads a variable-length unsigned integer: the number of trailing one bits
/// of the first byte, plus one, is the number of bytes; the value is the
/// little-endian bytes shifted right by that count (nine bytes: the last eight).
pub fn varlen_u64(c: &mut Cursor<'_>) -> Option<u64> {
    let first = *c.rest().first()?;
    let n = first.trailing_ones() as usize + 1;
    if n == 9 {
        c.skip(1).ok()?;
        return c.u64().ok();
    }
    let bytes = c.take(n).ok()?;
    Some(le_uint(bytes) >> n)
}

/// Reads a variable-length signed integer (zigzag-encoded).
pub fn varlen_i64(c: &mut Cursor<'_>) -> Option<i64> {
    let u = varlen_u64(c)?;
    Some((u >> 1) as i64 ^ -((u & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_integers() {
        let mut c = Cursor::new(&[5, 0xfc, 1, 2, 0xfd, 1, 2, 3, 0xfe, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(c.packed(), Ok(5));
        assert_eq!(c.packed(), Ok(0x0201));
        assert_eq!(c.packed(), Ok(0x030201));
        assert_eq!(c.packed(), Ok(1));
        assert!(c.is_empty());
        assert!(Cursor::new(&[0xfb]).packed().is_err());
        assert!(Cursor::new(&[0xfe, 1]).packed().is_err());
    }

    #[test]
    fn short_reads_fail_without_consuming() {
        let mut c = Cursor::new(&[1, 2]);
        assert_eq!(c.u32(), Err(Short { need: 2 }));
        assert_eq!(c.u16(), Ok(0x0201));
    }

    #[test]
    fn endianness() {
        assert_eq!(le_uint(&[1, 2, 3]), 0x030201);
        assert_eq!(be_uint(&[1, 2, 3]), 0x010203);
    }
}
