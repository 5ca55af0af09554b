//! MySQL's binary DECIMAL: the fixed-size image of a DECIMAL(precision,
//! scale) column in a rows event (and of a DECIMAL inside MySQL's binary
//! JSON), turned into its exact digits.
//!
//! The image stores 9 decimal digits per 4 bytes on each side of the point,
//! with fewer bytes for the leftover digits, big-endian, the sign bit of the
//! first byte inverted and every byte inverted for a negative number (so that
//! images compare as numbers). Precision goes up to 65 and scale up to 38
//! (MariaDB; MySQL stops at 30): nothing here assumes less.

use crate::json_text;

/// Why a binary DECIMAL could not be read. Offsets count from the start of
/// the value, plus the `abs` the caller passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// The bytes end before the image does.
    #[error("DECIMAL truncated at byte {offset}")]
    Truncated {
        /// Where the missing part starts.
        offset: usize,
    },
    /// An impossible precision/scale, or a digit group out of range.
    #[error("malformed DECIMAL at byte {offset}")]
    Malformed {
        /// Where the offending part is.
        offset: usize,
    },
}

/// Clamped addition for error offsets: they are reports, never indexes.
fn at(abs: usize, off: usize) -> usize {
    abs.saturating_add(off)
}

/// Bytes taken by the leftover (fewer than 9) digits of a binary DECIMAL.
const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
/// 10^n for the digits of one decimal group (a table: this runs per group of every DECIMAL value).
const POW10: [u64; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// Appends the MySQL binary DECIMAL(`precision`, `scale`) at the start of
/// `bytes` as a plain number (`-10.55`, `1.50`, `0.00`: exactly `scale`
/// fraction digits, no exponent, no superfluous leading zeros) and returns
/// how many bytes it took ([`decimal_bin_size`]).
///
/// On error `out` is left as it was.
pub fn write_decimal(bytes: &[u8], precision: u8, scale: u8, out: &mut Vec<u8>) -> Result<usize, DecimalError> {
    let start = out.len();
    let r = decimal_text(bytes, precision, scale, 0, out);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// Appends the binary DECIMAL(`precision`, `scale`) image of `text`, a
/// plain number as the server writes it in a result set (`-10.55`, `1.50`,
/// `0`: optional sign, digits, optional point and fraction digits): the
/// image a rows event would hold for the same value. Fraction digits past
/// `scale` and integer digits past `precision - scale` are refused, not
/// rounded.
pub fn encode_decimal(text: &[u8], precision: u8, scale: u8, out: &mut Vec<u8>) -> Result<(), DecimalError> {
    let malformed = DecimalError::Malformed { offset: 0 };
    if precision == 0 || scale > precision {
        return Err(malformed);
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let (int_part, frac_part) = match digits.iter().position(|&b| b == b'.') {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &[][..]),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || !int_part.iter().chain(frac_part).all(u8::is_ascii_digit) {
        return Err(malformed);
    }
    let intg = usize::from(precision - scale);
    let frac = usize::from(scale);
    let int_part = &int_part[int_part.iter().position(|&b| b != b'0').unwrap_or(int_part.len())..];
    if int_part.len() > intg || frac_part.len() > frac {
        return Err(malformed);
    }
    let start = out.len();
    // Digit groups, most significant first: the integer digits right-aligned
    // in `intg` places, the fraction digits left-aligned in `frac` places.
    let int_digit = |i: usize| -> u64 {
        let k = (i + int_part.len()).checked_sub(intg);
        k.map_or(0, |k| u64::from(int_part[k] - b'0'))
    };
    let frac_digit = |i: usize| -> u64 { frac_part.get(i).map_or(0, |&b| u64::from(b - b'0')) };
    let mut push_group = |first: usize, count: usize, digit: &dyn Fn(usize) -> u64| {
        let v = (first..first + count).fold(0u64, |v, i| v * 10 + digit(i));
        let bytes = DIG2BYTES[count];
        out.extend_from_slice(&v.to_be_bytes()[8 - bytes..]);
    };
    let lead = intg % 9;
    if lead > 0 {
        push_group(0, lead, &int_digit);
    }
    for g in 0..intg / 9 {
        push_group(lead + 9 * g, 9, &int_digit);
    }
    for g in 0..frac / 9 {
        push_group(9 * g, 9, &frac_digit);
    }
    if frac % 9 > 0 {
        push_group(frac - frac % 9, frac % 9, &frac_digit);
    }
    let zero = int_part.is_empty() && frac_part.iter().all(|&b| b == b'0');
    let image = &mut out[start..];
    if negative && !zero {
        for b in image.iter_mut() {
            *b = !*b;
        }
    }
    if let Some(first) = image.first_mut() {
        *first ^= 0x80;
    }
    Ok(())
}

/// Bytes taken by a binary DECIMAL(`precision`, `scale`): 4 bytes per 9
/// digits on each side of the point, fewer for the leftover digits. A scale
/// above the precision (invalid) counts as no integer digits.
pub fn decimal_bin_size(precision: u8, scale: u8) -> usize {
    let intg = usize::from(precision.saturating_sub(scale));
    let frac = usize::from(scale);
    intg / 9 * 4 + DIG2BYTES[intg % 9] + frac / 9 * 4 + DIG2BYTES[frac % 9]
}

/// Reads the digit groups of a binary DECIMAL in order. The stored image has
/// the sign bit of the first byte inverted (so images sort as numbers), and a
/// negative number has every byte inverted.
struct DecimalGroups<'a> {
    b: &'a [u8],
    pos: usize,
    mask: u8,
    abs: usize,
}

impl DecimalGroups<'_> {
    fn next(&mut self, digits: usize) -> Result<u64, DecimalError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for _ in 0..DIG2BYTES[digits.min(9)] {
            let raw = *self.b.get(self.pos).ok_or(DecimalError::Truncated {
                offset: at(self.abs, self.pos),
            })?;
            let sign_flip = if self.pos == 0 { 0x80 } else { 0 };
            v = (v << 8) | u64::from(raw ^ sign_flip ^ self.mask);
            self.pos += 1;
        }
        if v >= POW10[digits.min(9)] {
            return Err(DecimalError::Malformed {
                offset: at(self.abs, start),
            });
        }
        Ok(v)
    }
}

pub(crate) fn decimal_text(
    bytes: &[u8],
    precision: u8,
    scale: u8,
    abs: usize,
    out: &mut Vec<u8>,
) -> Result<usize, DecimalError> {
    if precision == 0 || scale > precision {
        return Err(DecimalError::Malformed { offset: abs });
    }
    let size = decimal_bin_size(precision, scale);
    let b = bytes.get(..size).ok_or(DecimalError::Truncated { offset: abs })?;
    let negative = b.first().is_some_and(|&first| first & 0x80 == 0);
    let mut groups = DecimalGroups {
        b,
        pos: 0,
        mask: if negative { 0xff } else { 0 },
        abs,
    };
    let intg = usize::from(precision - scale);
    let frac = usize::from(scale);

    let start = out.len();
    if negative {
        out.push(b'-');
    }
    let mut nonzero = false;
    // The leftover integer digits come first, then whole 9-digit groups.
    let lead = Some(intg % 9).filter(|&d| d > 0);
    let mut started = false;
    for digits in lead.into_iter().chain(std::iter::repeat_n(9, intg / 9)) {
        let v = groups.next(digits)?;
        nonzero |= v != 0;
        if started {
            json_text::write_u64_padded(out, v, digits);
        } else if v != 0 {
            json_text::write_u64(out, v);
            started = true;
        }
    }
    if !started {
        out.push(b'0');
    }
    if frac > 0 {
        out.push(b'.');
        let tail = Some(frac % 9).filter(|&d| d > 0);
        for digits in std::iter::repeat_n(9, frac / 9).chain(tail) {
            let v = groups.next(digits)?;
            nonzero |= v != 0;
            json_text::write_u64_padded(out, v, digits);
        }
    }
    // "-0.00" is not a number MySQL would show; keep zero unsigned.
    if negative && !nonzero {
        out.remove(start);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8], precision: u8, scale: u8) -> Result<String, DecimalError> {
        let mut out = Vec::new();
        let n = write_decimal(bytes, precision, scale, &mut out)?;
        assert_eq!(n, decimal_bin_size(precision, scale));
        Ok(String::from_utf8(out).expect("UTF-8 output"))
    }

    #[test]
    fn encoded_decimals_read_back_as_the_same_text() {
        let cases: &[(&str, u8, u8, &str)] = &[
            ("1234567890.1234", 14, 4, "1234567890.1234"),
            ("-1234567890.1234", 14, 4, "-1234567890.1234"),
            ("-10.55", 4, 2, "-10.55"),
            ("10.55", 4, 2, "10.55"),
            ("0", 10, 2, "0.00"),
            ("-0.00", 10, 2, "0.00"),
            ("0.0001", 4, 4, "0.0001"),
            ("-0.9999", 4, 4, "-0.9999"),
            ("99999999999999999999", 20, 0, "99999999999999999999"),
            (
                "-99999999999999999999999999999999999.999999999999999999999999999999",
                65,
                30,
                "-99999999999999999999999999999999999.999999999999999999999999999999",
            ),
            (
                "0.000000000000000000000000000001",
                65,
                30,
                "0.000000000000000000000000000001",
            ),
            ("123456789.123456789", 18, 9, "123456789.123456789"),
            ("007.5", 5, 1, "7.5"),
            (".5", 3, 1, "0.5"),
        ];
        for &(text, p, s, want) in cases {
            let mut image = Vec::new();
            encode_decimal(text.as_bytes(), p, s, &mut image).unwrap();
            assert_eq!(image.len(), decimal_bin_size(p, s), "{text}");
            assert_eq!(dec(&image, p, s).unwrap(), want, "{text} as DECIMAL({p},{s})");
        }
        // MySQL's decimal2bin example, byte for byte.
        let mut image = Vec::new();
        encode_decimal(b"1234567890.1234", 14, 4, &mut image).unwrap();
        assert_eq!(image, [0x81, 0x0d, 0xfb, 0x38, 0xd2, 0x04, 0xd2]);
        for bad in ["", "-", "1.2.3", "1e5", "12a", "123.4", "1.234"] {
            assert!(
                encode_decimal(bad.as_bytes(), 4, 2, &mut Vec::new()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn decimal_sizes() {
        assert_eq!(decimal_bin_size(14, 4), 7);
        assert_eq!(decimal_bin_size(10, 0), 5);
        assert_eq!(decimal_bin_size(9, 0), 4);
        assert_eq!(decimal_bin_size(1, 1), 1);
        assert_eq!(decimal_bin_size(65, 30), 30);
        assert_eq!(decimal_bin_size(0, 0), 0);
        assert_eq!(decimal_bin_size(2, 5), 3);
    }

    #[test]
    fn decimals() {
        // The example in MySQL's decimal2bin documentation.
        assert_eq!(
            dec(&[0x81, 0x0d, 0xfb, 0x38, 0xd2, 0x04, 0xd2], 14, 4).unwrap(),
            "1234567890.1234"
        );
        assert_eq!(
            dec(&[0x7e, 0xf2, 0x04, 0xc7, 0x2d, 0xfb, 0x2d], 14, 4).unwrap(),
            "-1234567890.1234"
        );
        assert_eq!(dec(&[0x75, 0xc8], 4, 2).unwrap(), "-10.55");
        assert_eq!(dec(&[0x8a, 0x37], 4, 2).unwrap(), "10.55");
        assert_eq!(dec(&[0x81, 0x32], 3, 2).unwrap(), "1.50");
        assert_eq!(dec(&[0x80, 0x00], 3, 2).unwrap(), "0.00");
        assert_eq!(dec(&[0x7f, 0xff], 3, 2).unwrap(), "0.00");
        assert_eq!(dec(&[0x85], 1, 1).unwrap(), "0.5");
        assert_eq!(dec(&[0x7a], 1, 1).unwrap(), "-0.5");
        assert_eq!(dec(&[0x80, 0, 0, 0, 0], 10, 0).unwrap(), "0");
        assert_eq!(dec(&[0x80, 0, 0, 0, 7], 10, 0).unwrap(), "7");
        // A zero leftover group then a full group: no leading zeros.
        assert_eq!(dec(&[0x80, 0x00, 0x00, 0x00, 0x07, 0x00], 12, 1).unwrap(), "7.0");
        // Fraction groups keep their leading zeros.
        assert_eq!(dec(&[0x80, 0x00, 0x00, 0x05], 9, 9).unwrap(), "0.000000005");
        // DECIMAL(65,30) of all nines.
        // 8 leftover integer digits (99999999 in 4 bytes), 3 + 3 nine-digit
        // groups, 3 leftover fraction digits (999 in 2 bytes).
        let mut max = vec![0x85, 0xf5, 0xe0, 0xff];
        max.extend([0x3b, 0x9a, 0xc9, 0xff].repeat(6));
        max.extend([0x03, 0xe7]);
        assert_eq!(max.len(), 30);
        assert_eq!(
            dec(&max, 65, 30).unwrap(),
            format!("{}.{}", "9".repeat(35), "9".repeat(30))
        );
    }

    #[test]
    fn decimal_consumes_only_its_bytes_and_appends() {
        let mut out = b"[".to_vec();
        assert_eq!(write_decimal(&[0x81, 0x32, 0xaa, 0xbb], 3, 2, &mut out), Ok(2));
        assert_eq!(out, b"[1.50");
    }

    #[test]
    fn bad_decimals() {
        // 100 in a two-digit group.
        assert_eq!(dec(&[0x8a, 0x64], 4, 2), Err(DecimalError::Malformed { offset: 1 }));
        // 1_000_000_000 in a nine-digit group.
        assert_eq!(
            dec(&[0xbb, 0x9a, 0xca, 0x00], 9, 0),
            Err(DecimalError::Malformed { offset: 0 })
        );
        assert_eq!(dec(&[0x81], 3, 2), Err(DecimalError::Truncated { offset: 0 }));
        assert_eq!(dec(&[0x80], 0, 0), Err(DecimalError::Malformed { offset: 0 }));
        assert_eq!(dec(&[0x80, 0, 0], 2, 3), Err(DecimalError::Malformed { offset: 0 }));
        let mut out = b"keep".to_vec();
        assert!(write_decimal(&[0x8a, 0x64], 4, 2, &mut out).is_err());
        assert_eq!(out, b"keep");
    }

    /// The image of `digits` (a plain number, `-` for negative) as
    /// DECIMAL(`precision`, `scale`): the encoder side of MySQL's
    /// `decimal2bin`, written independently of the reader under test.
    fn image(number: &str, precision: u8, scale: u8) -> Vec<u8> {
        let (negative, digits) = match number.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, number),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let (intg, fracg) = (usize::from(precision - scale), usize::from(scale));
        let int = int.trim_start_matches('0');
        let int = format!("{int:0>intg$}");
        let frac = format!("{frac:0<fracg$}");
        assert_eq!((int.len(), frac.len()), (intg, fracg), "{number} does not fit");
        let mut out = Vec::new();
        let mut group = |g: &str| {
            let v: u32 = if g.is_empty() { 0 } else { g.parse().unwrap() };
            let n = DIG2BYTES[g.len()];
            out.extend_from_slice(&v.to_be_bytes()[4 - n..]);
        };
        let lead = intg % 9;
        group(&int[..lead]);
        for c in int.as_bytes()[lead..].chunks(9) {
            group(std::str::from_utf8(c).unwrap());
        }
        for c in frac.as_bytes().chunks(9) {
            group(std::str::from_utf8(c).unwrap());
        }
        out[0] ^= 0x80;
        if negative {
            out.iter_mut().for_each(|b| *b = !*b);
        }
        out
    }

    #[test]
    fn every_precision_and_scale_the_servers_accept() {
        // MariaDB: precision 1–65, scale 0–38 and at most the precision.
        for precision in 1..=65u8 {
            for scale in 0..=precision.min(38) {
                let (intg, frac) = (usize::from(precision - scale), usize::from(scale));
                let nines = |n: usize| "9".repeat(n);
                let number = |int: String, f: String| if frac == 0 { int } else { format!("{int}.{f}") };
                let int_or_zero = |s: String| if s.is_empty() { "0".to_owned() } else { s };
                let max = number(int_or_zero(nines(intg)), nines(frac));
                let zero = number("0".into(), "0".repeat(frac));
                for v in [max.clone(), format!("-{max}"), zero.clone()] {
                    let b = image(&v, precision, scale);
                    assert_eq!(b.len(), decimal_bin_size(precision, scale));
                    let want = if v == format!("-{zero}") {
                        zero.clone()
                    } else {
                        v.clone()
                    };
                    assert_eq!(dec(&b, precision, scale).unwrap(), want, "DECIMAL({precision},{scale})");
                }
                // The smallest magnitude, and every digit position distinct.
                if frac > 0 {
                    let tiny = number("0".into(), format!("{}1", "0".repeat(frac - 1)));
                    assert_eq!(dec(&image(&tiny, precision, scale), precision, scale).unwrap(), tiny);
                    let neg = format!("-{tiny}");
                    assert_eq!(dec(&image(&neg, precision, scale), precision, scale).unwrap(), neg);
                }
                let cycle = |n: usize, from: usize| -> String {
                    (0..n).map(|i| char::from(b'1' + ((i + from) % 9) as u8)).collect()
                };
                let mixed = number(int_or_zero(cycle(intg, 0)), cycle(frac, 4));
                assert_eq!(dec(&image(&mixed, precision, scale), precision, scale).unwrap(), mixed);
            }
        }
    }

    #[test]
    fn decimal_38_38() {
        assert_eq!(decimal_bin_size(38, 38), 17);
        let max = format!("0.{}", "9".repeat(38));
        assert_eq!(dec(&image(&max, 38, 38), 38, 38).unwrap(), max);
        let digits = "0.12345678901234567890123456789012345678";
        assert_eq!(dec(&image(digits, 38, 38), 38, 38).unwrap(), digits);
        assert_eq!(decimal_bin_size(65, 38), 29);
        let wide = format!("{}.{}", "9".repeat(27), "9".repeat(38));
        assert_eq!(dec(&image(&wide, 65, 38), 65, 38).unwrap(), wide);
    }
}
