//! Character sets of string columns, and decoding their bytes to JSON text.
//!
//! The binlog carries string columns as raw bytes in the column's character
//! set. TABLE_MAP optional metadata (DEFAULT_CHARSET / COLUMN_CHARSET) names
//! that character set indirectly, by a *collation* id; [`charset_of_collation`]
//! maps the id to a [`Charset`], and [`write_json_text`] turns the bytes into a
//! JSON string.
//!
//! Almost every column in practice is utf8mb3/utf8mb4 or latin1, so those two
//! are decoded straight into the output buffer without an intermediate
//! `String`; UCS-2/UTF-16/UTF-32 are decoded by hand as well, and the legacy
//! multi-byte and code-page charsets go through `encoding_rs`.

use encoding_rs::Encoding;

use crate::json_text;

/// A character set as far as decoding is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// utf8mb3 / utf8mb4 (and the `utf8` alias).
    Utf8,
    /// MySQL latin1, which is really Windows-1252 (cp1252) with the 5 undefined
    /// bytes 0x81, 0x8D, 0x8F, 0x90, 0x9D mapped to U+0081, U+008D, U+008F,
    /// U+0090, U+009D as MySQL does.
    Latin1,
    /// US-ASCII; bytes above 0x7F are invalid.
    Ascii,
    /// The `binary` pseudo charset (collation 63): the bytes are not text.
    Binary,
    /// UCS-2, big endian (BMP only, no surrogates).
    Ucs2,
    /// UTF-16, big endian.
    Utf16,
    /// UTF-16, little endian.
    Utf16Le,
    /// UTF-32, big endian.
    Utf32,
    /// Any other charset that `encoding_rs` can decode (cp1251, koi8r, latin2,
    /// gbk, big5, sjis, ujis/eucjpms, euckr, gb2312, gb18030, cp1250, cp1256,
    /// cp1257, greek, hebrew, latin5, latin7, macroman, cp866, tis620, ...).
    ///
    /// MySQL charsets that `encoding_rs` decodes with the same decoder share a
    /// value: cp932 is `SHIFT_JIS` like sjis, eucjpms is `EUC_JP` like ujis,
    /// gb2312 is `GBK` like gbk. The WHATWG decoders match MySQL's tables
    /// closely but not everywhere (sjis/ujis read 7 JIS symbols the cp932
    /// way, big5 differs in its ETEN extensions, ...); see the comment in
    /// `MysqlCharset::charset` for the list.
    Encoded(&'static Encoding),
    /// A charset we do not decode (armscii8, dec8, cp850, cp852, geostd8, hp8,
    /// keybcs2, macce, swe7: `encoding_rs` has no decoder for them); carries
    /// the MySQL charset name.
    Unsupported(&'static str),
}

impl Charset {
    /// MySQL charset name, e.g. "utf8mb4", "latin1", "cp1251".
    ///
    /// Where several MySQL charsets decode the same way the name is that of
    /// the family: "utf8mb4" for utf8mb3 too, "sjis" for cp932, "ujis" for
    /// eucjpms and "gbk" for gb2312.
    pub fn name(self) -> &'static str {
        match self {
            Charset::Utf8 => "utf8mb4",
            Charset::Latin1 => "latin1",
            Charset::Ascii => "ascii",
            Charset::Binary => "binary",
            Charset::Ucs2 => "ucs2",
            Charset::Utf16 => "utf16",
            Charset::Utf16Le => "utf16le",
            Charset::Utf32 => "utf32",
            Charset::Encoded(encoding) => ENCODING_NAMES
                .iter()
                .find(|(e, _)| *e == encoding)
                // Not reachable from the collation table; a hand-built value
                // still gets a meaningful (WHATWG) name.
                .map_or(encoding.name(), |&(_, name)| name),
            Charset::Unsupported(name) => name,
        }
    }
}

/// MySQL charset name of each `encoding_rs` decoder that
/// [`MysqlCharset::charset`] uses; the family's name where several MySQL
/// charsets share a decoder.
static ENCODING_NAMES: [(&Encoding, &str); 20] = [
    (&encoding_rs::BIG5_INIT, "big5"),
    (&encoding_rs::EUC_JP_INIT, "ujis"),
    (&encoding_rs::EUC_KR_INIT, "euckr"),
    (&encoding_rs::GB18030_INIT, "gb18030"),
    (&encoding_rs::GBK_INIT, "gbk"),
    (&encoding_rs::IBM866_INIT, "cp866"),
    (&encoding_rs::ISO_8859_13_INIT, "latin7"),
    (&encoding_rs::ISO_8859_2_INIT, "latin2"),
    (&encoding_rs::ISO_8859_7_INIT, "greek"),
    (&encoding_rs::ISO_8859_8_INIT, "hebrew"),
    (&encoding_rs::KOI8_R_INIT, "koi8r"),
    (&encoding_rs::KOI8_U_INIT, "koi8u"),
    (&encoding_rs::MACINTOSH_INIT, "macroman"),
    (&encoding_rs::SHIFT_JIS_INIT, "sjis"),
    (&encoding_rs::WINDOWS_1250_INIT, "cp1250"),
    (&encoding_rs::WINDOWS_1251_INIT, "cp1251"),
    (&encoding_rs::WINDOWS_1254_INIT, "latin5"),
    (&encoding_rs::WINDOWS_1256_INIT, "cp1256"),
    (&encoding_rs::WINDOWS_1257_INIT, "cp1257"),
    (&encoding_rs::WINDOWS_874_INIT, "tis620"),
];

/// The charset of MySQL/MariaDB collation `id`; `None` for an id neither server defines.
pub fn charset_of_collation(id: u32) -> Option<Charset> {
    let id = u16::try_from(id).ok()?;
    let i = COLLATIONS
        .binary_search_by(|&(lo, hi, _)| {
            if hi < id {
                std::cmp::Ordering::Less
            } else if lo > id {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .ok()?;
    Some(COLLATIONS[i].2.charset())
}

/// Appends `bytes`, stored in `charset`, as a quoted JSON string (decoded to UTF-8, escaped).
///
/// Invalid sequences are not an error: they become U+FFFD, as a lossy decode,
/// except that the function returns `false` if anything was replaced, so the
/// caller can count/log it; it returns `true` when the decode was exact.
///
/// `Binary` and `Unsupported` are not meant to be passed here (the caller
/// writes those as base64); they are written lossily as UTF-8 and `false` is
/// returned.
pub fn write_json_text(out: &mut Vec<u8>, bytes: &[u8], charset: Charset) -> bool {
    match charset {
        Charset::Utf8 => write_utf8(out, bytes),
        Charset::Latin1 => {
            // Every byte has a mapping, so latin1 never replaces anything.
            write_single_byte(out, bytes, |b| Some(latin1_high(b)));
            true
        }
        Charset::Ascii => write_single_byte(out, bytes, |_| None),
        Charset::Ucs2 => write_code_units(out, bytes, 2, |unit| {
            // UCS-2 has no surrogate pairs: a surrogate code unit is invalid
            // (and `from_u32` rejects it).
            char::from_u32(u32::from(u16::from_be_bytes([unit[0], unit[1]])))
        }),
        Charset::Utf16 => write_utf16(out, bytes, u16::from_be_bytes),
        Charset::Utf16Le => write_utf16(out, bytes, u16::from_le_bytes),
        Charset::Utf32 => write_code_units(out, bytes, 4, |unit| {
            char::from_u32(u32::from_be_bytes([unit[0], unit[1], unit[2], unit[3]]))
        }),
        Charset::Encoded(encoding) => {
            // Rare charsets: the allocation of a decoded `String` is fine.
            // The BOM must not be sniffed: column bytes are never a document.
            let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
            match mysql_differences(encoding) {
                Some(diffs) if bytes.iter().any(|&b| diffs.get(b).is_some()) => {
                    write_with_differences(out, bytes, &text, diffs)
                }
                _ => {
                    json_text::write_str(out, &text);
                    !had_errors
                }
            }
        }
        Charset::Binary | Charset::Unsupported(_) => {
            write_utf8(out, bytes);
            false
        }
    }
}

/// U+FFFD REPLACEMENT CHARACTER in UTF-8.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// utf8mb3/utf8mb4: validate and copy; lossy only when invalid.
fn write_utf8(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    if json_text::write_utf8(out, bytes) {
        return true;
    }
    // `utf8_chunks` replaces exactly like `String::from_utf8_lossy`, but
    // without building the string first.
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        json_text::write_str_body(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(REPLACEMENT);
        }
    }
    out.push(b'"');
    false
}

/// `bytes` as a `&str` when it is all ASCII.
fn ascii_str(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // ASCII is always valid UTF-8, so this never fails.
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

/// A charset with one byte per character that agrees with ASCII below 0x80:
/// ASCII runs are escaped and copied as they are, each byte above 0x7F goes
/// through `high` (`None`: invalid byte, written as U+FFFD).
fn write_single_byte(out: &mut Vec<u8>, bytes: &[u8], high: impl Fn(u8) -> Option<char>) -> bool {
    // Most latin1 values are plain ASCII: one vectorised check, one copy.
    if let Some(s) = ascii_str(bytes) {
        json_text::write_str(out, s);
        return true;
    }
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut exact = true;
    let mut rest = bytes;
    while !rest.is_empty() {
        let run_len = rest.iter().position(|b| !b.is_ascii()).unwrap_or(rest.len());
        let (run, tail) = rest.split_at(run_len);
        if let Some(s) = ascii_str(run) {
            json_text::write_str_body(out, s);
        }
        let Some((&b, tail)) = tail.split_first() else {
            break;
        };
        match high(b) {
            Some(c) => push_non_ascii(out, c),
            None => {
                out.extend_from_slice(REPLACEMENT);
                exact = false;
            }
        }
        rest = tail;
    }
    out.push(b'"');
    exact
}

/// MySQL latin1 0x80–0x9F: Windows-1252, except that the five bytes cp1252
/// leaves undefined map to the C1 control with the same value, as MySQL's
/// latin1 does (so every byte round-trips).
const LATIN1_80_9F: [char; 32] = [
    '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{02C6}',
    '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}', '\u{017D}', '\u{008F}', '\u{0090}', '\u{2018}',
    '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{02DC}', '\u{2122}', '\u{0161}',
    '\u{203A}', '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
];

/// MySQL latin1 byte `b` >= 0x80 as a character.
fn latin1_high(b: u8) -> char {
    match LATIN1_80_9F.get(usize::from(b.wrapping_sub(0x80))) {
        Some(&c) => c,
        // 0xA0–0xFF are ISO-8859-1, i.e. the code point equals the byte.
        None => char::from(b),
    }
}

/// Appends a character that needs no JSON escaping (anything but ASCII).
fn push_non_ascii(out: &mut Vec<u8>, c: char) {
    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}

/// Appends any character, escaping it if JSON requires.
fn push_char(out: &mut Vec<u8>, c: char) {
    if c.is_ascii() {
        json_text::write_str_body(out, c.encode_utf8(&mut [0; 4]));
    } else {
        push_non_ascii(out, c);
    }
}

/// A fixed-width encoding (UCS-2, UTF-32): `decode` turns one `width`-byte
/// unit into a character, `None` when invalid; a truncated last unit is
/// invalid too.
fn write_code_units(out: &mut Vec<u8>, bytes: &[u8], width: usize, decode: impl Fn(&[u8]) -> Option<char>) -> bool {
    out.reserve(bytes.len() / width + 2);
    out.push(b'"');
    let mut exact = true;
    let units = bytes.chunks_exact(width);
    let truncated = !units.remainder().is_empty();
    for unit in units {
        match decode(unit) {
            Some(c) => push_char(out, c),
            None => {
                out.extend_from_slice(REPLACEMENT);
                exact = false;
            }
        }
    }
    if truncated {
        out.extend_from_slice(REPLACEMENT);
        exact = false;
    }
    out.push(b'"');
    exact
}

/// UTF-16 in either byte order (`unit` builds a code unit from two bytes);
/// unpaired surrogates and a truncated last byte become U+FFFD.
fn write_utf16(out: &mut Vec<u8>, bytes: &[u8], unit: fn([u8; 2]) -> u16) -> bool {
    out.reserve(bytes.len() / 2 + 2);
    out.push(b'"');
    let mut exact = true;
    let units = bytes.chunks_exact(2);
    let truncated = !units.remainder().is_empty();
    for c in char::decode_utf16(units.map(|pair| unit([pair[0], pair[1]]))) {
        match c {
            Ok(c) => push_char(out, c),
            Err(_) => {
                out.extend_from_slice(REPLACEMENT);
                exact = false;
            }
        }
    }
    if truncated {
        out.extend_from_slice(REPLACEMENT);
        exact = false;
    }
    out.push(b'"');
    exact
}

/// Where MySQL's table for a single-byte charset maps a byte to another
/// character than the WHATWG decoder in `encoding_rs` (found by converting
/// every byte with MariaDB 10.11's `CONVERT(... USING utf8mb4)`). The server's
/// mapping wins: its encoder produced the stored bytes, e.g. it stores `ʼ` as
/// greek 0xA2 while WHATWG reads 0xA2 as `’`. Bytes MySQL leaves undefined but
/// WHATWG maps (cp1250 0x81, cp1256 0x8A, ...) keep the WHATWG character.
struct MysqlDifferences {
    /// 0x80–0x9F are the C1 controls U+0080–U+009F (ISO-8859-x and TIS-620
    /// as opposed to their Windows supersets).
    c1_controls: bool,
    /// Other bytes and MySQL's character for them.
    bytes: &'static [(u8, char)],
}

impl MysqlDifferences {
    /// MySQL's character for `b` where it differs from WHATWG.
    fn get(&self, b: u8) -> Option<char> {
        if self.c1_controls && (0x80..=0x9F).contains(&b) {
            return Some(char::from(b));
        }
        self.bytes.iter().find(|&&(x, _)| x == b).map(|&(_, c)| c)
    }
}

/// The differences, keyed by the decoder [`MysqlCharset::charset`] picks; each
/// of these decoders serves exactly one MySQL charset, so a key can't apply
/// the wrong charset's mapping.
static MYSQL_DIFFERENCES: [(&Encoding, MysqlDifferences); 6] = [
    // latin5 is ISO-8859-9, WHATWG only has windows-1254.
    (
        &encoding_rs::WINDOWS_1254_INIT,
        MysqlDifferences {
            c1_controls: true,
            bytes: &[],
        },
    ),
    // tis620 is TIS-620, WHATWG only has windows-874.
    (
        &encoding_rs::WINDOWS_874_INIT,
        MysqlDifferences {
            c1_controls: true,
            bytes: &[],
        },
    ),
    // cp866: MySQL follows IBM code page 866's original ⁿ and ², not № and ¤.
    (
        &encoding_rs::IBM866_INIT,
        MysqlDifferences {
            c1_controls: false,
            bytes: &[(0xFC, '\u{207F}'), (0xFD, '\u{00B2}')],
        },
    ),
    // greek is ISO-8859-7:1987 (modifier letters), WHATWG is the 2003 edition.
    (
        &encoding_rs::ISO_8859_7_INIT,
        MysqlDifferences {
            c1_controls: false,
            bytes: &[(0xA1, '\u{02BD}'), (0xA2, '\u{02BC}')],
        },
    ),
    // hebrew: the 1988 ISO-8859-8 overline.
    (
        &encoding_rs::ISO_8859_8_INIT,
        MysqlDifferences {
            c1_controls: false,
            bytes: &[(0xAF, '\u{203E}')],
        },
    ),
    // koi8u is RFC 2319 KOI8-U; WHATWG's KOI8-U adds ў/Ў (KOI8-RU).
    (
        &encoding_rs::KOI8_U_INIT,
        MysqlDifferences {
            c1_controls: false,
            bytes: &[(0x95, '\u{2022}'), (0xAE, '\u{255D}'), (0xBE, '\u{256C}')],
        },
    ),
];

/// MySQL's deviations from the WHATWG decoder `encoding`, if it has any.
fn mysql_differences(encoding: &Encoding) -> Option<&'static MysqlDifferences> {
    MYSQL_DIFFERENCES.iter().find(|(e, _)| *e == encoding).map(|(_, d)| d)
}

/// Writes single-byte `bytes`, already decoded by WHATWG rules into `text`,
/// with MySQL's characters where they differ.
fn write_with_differences(out: &mut Vec<u8>, bytes: &[u8], text: &str, diffs: &MysqlDifferences) -> bool {
    // A single-byte decoder yields exactly one character (or U+FFFD) per
    // byte; should that ever not hold, keep the WHATWG text.
    if text.chars().count() != bytes.len() {
        json_text::write_str(out, text);
        return !text.contains('\u{FFFD}');
    }
    out.push(b'"');
    let mut exact = true;
    for (&b, c) in bytes.iter().zip(text.chars()) {
        let c = diffs.get(b).unwrap_or(c);
        // Single-byte text cannot carry a real U+FFFD: it is a replacement.
        exact &= c != '\u{FFFD}';
        push_char(out, c);
    }
    out.push(b'"');
    exact
}

/// Every character set MySQL or MariaDB defines, by its MySQL name: the
/// collation table's values. Kept apart from [`Charset`] so the table records
/// exactly what the server reported (e.g. utf8mb3 vs utf8mb4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MysqlCharset {
    Armscii8,
    Ascii,
    Big5,
    Binary,
    Cp1250,
    Cp1251,
    Cp1256,
    Cp1257,
    Cp850,
    Cp852,
    Cp866,
    Cp932,
    Dec8,
    Eucjpms,
    Euckr,
    Gb18030,
    Gb2312,
    Gbk,
    Geostd8,
    Greek,
    Hebrew,
    Hp8,
    Keybcs2,
    Koi8r,
    Koi8u,
    Latin1,
    Latin2,
    Latin5,
    Latin7,
    Macce,
    Macroman,
    Sjis,
    Swe7,
    Tis620,
    Ucs2,
    Ujis,
    Utf16,
    Utf16le,
    Utf32,
    Utf8mb3,
    Utf8mb4,
}

impl MysqlCharset {
    /// The server's name for the charset (`CHARACTER_SET_NAME`).
    #[cfg(test)]
    fn name(self) -> &'static str {
        use MysqlCharset::*;
        match self {
            Armscii8 => "armscii8",
            Ascii => "ascii",
            Big5 => "big5",
            Binary => "binary",
            Cp1250 => "cp1250",
            Cp1251 => "cp1251",
            Cp1256 => "cp1256",
            Cp1257 => "cp1257",
            Cp850 => "cp850",
            Cp852 => "cp852",
            Cp866 => "cp866",
            Cp932 => "cp932",
            Dec8 => "dec8",
            Eucjpms => "eucjpms",
            Euckr => "euckr",
            Gb18030 => "gb18030",
            Gb2312 => "gb2312",
            Gbk => "gbk",
            Geostd8 => "geostd8",
            Greek => "greek",
            Hebrew => "hebrew",
            Hp8 => "hp8",
            Keybcs2 => "keybcs2",
            Koi8r => "koi8r",
            Koi8u => "koi8u",
            Latin1 => "latin1",
            Latin2 => "latin2",
            Latin5 => "latin5",
            Latin7 => "latin7",
            Macce => "macce",
            Macroman => "macroman",
            Sjis => "sjis",
            Swe7 => "swe7",
            Tis620 => "tis620",
            Ucs2 => "ucs2",
            Ujis => "ujis",
            Utf16 => "utf16",
            Utf16le => "utf16le",
            Utf32 => "utf32",
            Utf8mb3 => "utf8mb3",
            Utf8mb4 => "utf8mb4",
        }
    }

    /// How the charset's bytes are decoded.
    fn charset(self) -> Charset {
        use MysqlCharset::*;
        match self {
            Utf8mb3 | Utf8mb4 => Charset::Utf8,
            Latin1 => Charset::Latin1,
            Ascii => Charset::Ascii,
            Binary => Charset::Binary,
            Ucs2 => Charset::Ucs2,
            Utf16 => Charset::Utf16,
            Utf16le => Charset::Utf16Le,
            Utf32 => Charset::Utf32,
            // The WHATWG decoders are (near) supersets of the MySQL charsets;
            // compared code by code with MariaDB 10.11's `CONVERT`, cp932,
            // gbk and euckr decode identically, and MySQL differs in:
            // - sjis/ujis: 7 JIS X 0208 symbols MySQL maps to \ 〜 ‖ − ¢ £ ¬
            //   where WHATWG (Windows-31J) has ＼ ～ ∥ － ￠ ￡ ￢, and ujis
            //   0x8FA2B7 (~ vs ～);
            // - ujis/eucjpms: the user-defined rows (0xF5–0xFE, 0x8FF5–0x8FFE),
            //   which MySQL maps to the Private Use Area and WHATWG rejects, and
            //   eucjpms's IBM extensions in 0x8FF3F3–0x8FF4FE (rejected too)
            //   and 0x8FA2C3 (MySQL ￤, WHATWG ¦);
            // - gb2312: 0xA1A4 ・ (WHATWG ·) and 0xA1AA ― (WHATWG —);
            // - big5: 11 symbols in 0xA1xx–0xA2xx and the ETEN extensions in
            //   0xC6A1–0xC7FC, which WHATWG's Big5-HKSCS assigns otherwise.
            // `Charset::Encoded` carries only the decoder, shared by sjis and
            // cp932 (and ujis/eucjpms, gb2312/gbk), so these are left as is.
            Big5 => Charset::Encoded(encoding_rs::BIG5),
            Sjis | Cp932 => Charset::Encoded(encoding_rs::SHIFT_JIS),
            Ujis | Eucjpms => Charset::Encoded(encoding_rs::EUC_JP),
            Euckr => Charset::Encoded(encoding_rs::EUC_KR),
            Gb2312 | Gbk => Charset::Encoded(encoding_rs::GBK),
            Gb18030 => Charset::Encoded(encoding_rs::GB18030),
            Cp1250 => Charset::Encoded(encoding_rs::WINDOWS_1250),
            Cp1251 => Charset::Encoded(encoding_rs::WINDOWS_1251),
            Cp1256 => Charset::Encoded(encoding_rs::WINDOWS_1256),
            Cp1257 => Charset::Encoded(encoding_rs::WINDOWS_1257),
            Cp866 => Charset::Encoded(encoding_rs::IBM866),
            Koi8r => Charset::Encoded(encoding_rs::KOI8_R),
            Koi8u => Charset::Encoded(encoding_rs::KOI8_U),
            Latin2 => Charset::Encoded(encoding_rs::ISO_8859_2),
            Latin7 => Charset::Encoded(encoding_rs::ISO_8859_13),
            Greek => Charset::Encoded(encoding_rs::ISO_8859_7),
            Hebrew => Charset::Encoded(encoding_rs::ISO_8859_8),
            Macroman => Charset::Encoded(encoding_rs::MACINTOSH),
            // WHATWG has no ISO-8859-9 or TIS-620, only their Windows
            // supersets; `MYSQL_DIFFERENCES` restores MySQL's C1 controls in
            // 0x80–0x9F (and fixes a few bytes of cp866, greek, hebrew, koi8u).
            Latin5 => Charset::Encoded(encoding_rs::WINDOWS_1254),
            Tis620 => Charset::Encoded(encoding_rs::WINDOWS_874),
            Armscii8 => Charset::Unsupported("armscii8"),
            Cp850 => Charset::Unsupported("cp850"),
            Cp852 => Charset::Unsupported("cp852"),
            Dec8 => Charset::Unsupported("dec8"),
            Geostd8 => Charset::Unsupported("geostd8"),
            Hp8 => Charset::Unsupported("hp8"),
            Keybcs2 => Charset::Unsupported("keybcs2"),
            Macce => Charset::Unsupported("macce"),
            Swe7 => Charset::Unsupported("swe7"),
        }
    }
}

/// Collation id ranges `(first, last, charset)`, sorted and disjoint: every
/// collation id of MariaDB 10.11 and MySQL 8.0–9.x (1309 ids).
///
/// Generated, do not edit by hand. To regenerate, dump `ID<TAB>charset` from
/// each server and merge:
///
/// ```sh
/// # MariaDB 10.10+: COLLATION_CHARACTER_SET_APPLICABILITY also lists the
/// # uca1400 collations (2048+), which COLLATIONS shows with a NULL ID.
/// mariadb -N -e "SELECT ID, CHARACTER_SET_NAME
///   FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY" > mariadb.tsv
/// mysql -N -e "SELECT ID, CHARACTER_SET_NAME
///   FROM information_schema.COLLATIONS" > mysql.tsv
/// cat mariadb.tsv mysql.tsv | sed 's/\tutf8$/\tutf8mb3/' | sort -u | sort -n | awk -F'\t' '
///   $1 == id { print "conflict: id " id " is " cs " and " $2 > "/dev/stderr"; bad = 1; exit 1 }
///   $1 != id + 1 || $2 != cs { if (NR > 1) emit(); lo = $1 }
///   { id = $1; cs = $2 }
///   END { if (!bad) emit() }
///   function emit() { printf "    (%d, %d, %s),\n", lo, id, toupper(substr(cs, 1, 1)) substr(cs, 2) }'
/// ```
///
/// The MariaDB side came from a 10.11 server. No MySQL server was at hand:
/// mysql.tsv was the MySQL 8.0.30+ `INFORMATION_SCHEMA.COLLATIONS` listing
/// that the `mysql_common` crate publishes (its `collations.rs` is generated
/// by the query above), checked against the MySQL release notes (8.0.1: the
/// `_0900_` collations from 255; 8.0.3: 304–307; 8.0.30: utf8mb3 naming,
/// 310–323). No later ids were found in the MySQL 8.4/9.x documentation; an
/// id missing here maps to `None`.
///
/// The two servers agree on every id they share; they differ only in names
/// (MySQL's utf8mb3_croatian_ci at 213 is MariaDB's
/// utf8mb3_croatian_mysql561_ci, likewise 122, 149, 181, 245). Historical
/// clashes do not matter here because only MySQL 8.0+ and MariaDB 10.5+ write
/// charset metadata into TABLE_MAP events: MariaDB 5.5–10.0 had
/// utf32_croatian_ci at 214 and utf16_croatian_ci at 215, where MySQL has
/// utf8mb3_unicode_520_ci and utf8mb3_vietnamese_ci (see MDEV-5241; MariaDB
/// now has them at 736 and 672). Ids MySQL alone uses: 76 (utf8mb3_tolower_ci), 248–250
/// (gb18030), 255–323 (utf8mb4 `_0900_`). MariaDB alone: 576–738 (utf8mb3,
/// utf8mb4, ucs2, utf16, utf32 croatian/myanmar/thai_520_w2), 1025–1270 (the
/// `_nopad_` collations; MySQL reserves 1024–2047 for user-defined collations,
/// which a MySQL server could assign to any charset), and 2048–3271 (uca1400:
/// a 256-id block per charset, utf8mb3, utf8mb4, ucs2, utf16, utf32).
#[rustfmt::skip]
static COLLATIONS: [(u16, u16, MysqlCharset); 195] = {
    use MysqlCharset::*;
    [
    (1, 1, Big5),
    (2, 2, Latin2),
    (3, 3, Dec8),
    (4, 4, Cp850),
    (5, 5, Latin1),
    (6, 6, Hp8),
    (7, 7, Koi8r),
    (8, 8, Latin1),
    (9, 9, Latin2),
    (10, 10, Swe7),
    (11, 11, Ascii),
    (12, 12, Ujis),
    (13, 13, Sjis),
    (14, 14, Cp1251),
    (15, 15, Latin1),
    (16, 16, Hebrew),
    (18, 18, Tis620),
    (19, 19, Euckr),
    (20, 20, Latin7),
    (21, 21, Latin2),
    (22, 22, Koi8u),
    (23, 23, Cp1251),
    (24, 24, Gb2312),
    (25, 25, Greek),
    (26, 26, Cp1250),
    (27, 27, Latin2),
    (28, 28, Gbk),
    (29, 29, Cp1257),
    (30, 30, Latin5),
    (31, 31, Latin1),
    (32, 32, Armscii8),
    (33, 33, Utf8mb3),
    (34, 34, Cp1250),
    (35, 35, Ucs2),
    (36, 36, Cp866),
    (37, 37, Keybcs2),
    (38, 38, Macce),
    (39, 39, Macroman),
    (40, 40, Cp852),
    (41, 42, Latin7),
    (43, 43, Macce),
    (44, 44, Cp1250),
    (45, 46, Utf8mb4),
    (47, 49, Latin1),
    (50, 52, Cp1251),
    (53, 53, Macroman),
    (54, 55, Utf16),
    (56, 56, Utf16le),
    (57, 57, Cp1256),
    (58, 59, Cp1257),
    (60, 61, Utf32),
    (62, 62, Utf16le),
    (63, 63, Binary),
    (64, 64, Armscii8),
    (65, 65, Ascii),
    (66, 66, Cp1250),
    (67, 67, Cp1256),
    (68, 68, Cp866),
    (69, 69, Dec8),
    (70, 70, Greek),
    (71, 71, Hebrew),
    (72, 72, Hp8),
    (73, 73, Keybcs2),
    (74, 74, Koi8r),
    (75, 75, Koi8u),
    (76, 76, Utf8mb3),
    (77, 77, Latin2),
    (78, 78, Latin5),
    (79, 79, Latin7),
    (80, 80, Cp850),
    (81, 81, Cp852),
    (82, 82, Swe7),
    (83, 83, Utf8mb3),
    (84, 84, Big5),
    (85, 85, Euckr),
    (86, 86, Gb2312),
    (87, 87, Gbk),
    (88, 88, Sjis),
    (89, 89, Tis620),
    (90, 90, Ucs2),
    (91, 91, Ujis),
    (92, 93, Geostd8),
    (94, 94, Latin1),
    (95, 96, Cp932),
    (97, 98, Eucjpms),
    (99, 99, Cp1250),
    (101, 124, Utf16),
    (128, 151, Ucs2),
    (159, 159, Ucs2),
    (160, 183, Utf32),
    (192, 215, Utf8mb3),
    (223, 223, Utf8mb3),
    (224, 247, Utf8mb4),
    (248, 250, Gb18030),
    (255, 271, Utf8mb4),
    (273, 275, Utf8mb4),
    (277, 294, Utf8mb4),
    (296, 298, Utf8mb4),
    (300, 300, Utf8mb4),
    (303, 323, Utf8mb4),
    (576, 578, Utf8mb3),
    (608, 610, Utf8mb4),
    (640, 642, Ucs2),
    (672, 674, Utf16),
    (736, 738, Utf32),
    (1025, 1025, Big5),
    (1027, 1027, Dec8),
    (1028, 1028, Cp850),
    (1030, 1030, Hp8),
    (1031, 1031, Koi8r),
    (1032, 1032, Latin1),
    (1033, 1033, Latin2),
    (1034, 1034, Swe7),
    (1035, 1035, Ascii),
    (1036, 1036, Ujis),
    (1037, 1037, Sjis),
    (1040, 1040, Hebrew),
    (1042, 1042, Tis620),
    (1043, 1043, Euckr),
    (1046, 1046, Koi8u),
    (1048, 1048, Gb2312),
    (1049, 1049, Greek),
    (1050, 1050, Cp1250),
    (1052, 1052, Gbk),
    (1054, 1054, Latin5),
    (1056, 1056, Armscii8),
    (1057, 1057, Utf8mb3),
    (1059, 1059, Ucs2),
    (1060, 1060, Cp866),
    (1061, 1061, Keybcs2),
    (1062, 1062, Macce),
    (1063, 1063, Macroman),
    (1064, 1064, Cp852),
    (1065, 1065, Latin7),
    (1067, 1067, Macce),
    (1069, 1070, Utf8mb4),
    (1071, 1071, Latin1),
    (1074, 1075, Cp1251),
    (1077, 1077, Macroman),
    (1078, 1079, Utf16),
    (1080, 1080, Utf16le),
    (1081, 1081, Cp1256),
    (1082, 1083, Cp1257),
    (1084, 1085, Utf32),
    (1086, 1086, Utf16le),
    (1088, 1088, Armscii8),
    (1089, 1089, Ascii),
    (1090, 1090, Cp1250),
    (1091, 1091, Cp1256),
    (1092, 1092, Cp866),
    (1093, 1093, Dec8),
    (1094, 1094, Greek),
    (1095, 1095, Hebrew),
    (1096, 1096, Hp8),
    (1097, 1097, Keybcs2),
    (1098, 1098, Koi8r),
    (1099, 1099, Koi8u),
    (1101, 1101, Latin2),
    (1102, 1102, Latin5),
    (1103, 1103, Latin7),
    (1104, 1104, Cp850),
    (1105, 1105, Cp852),
    (1106, 1106, Swe7),
    (1107, 1107, Utf8mb3),
    (1108, 1108, Big5),
    (1109, 1109, Euckr),
    (1110, 1110, Gb2312),
    (1111, 1111, Gbk),
    (1112, 1112, Sjis),
    (1113, 1113, Tis620),
    (1114, 1114, Ucs2),
    (1115, 1115, Ujis),
    (1116, 1117, Geostd8),
    (1119, 1120, Cp932),
    (1121, 1122, Eucjpms),
    (1125, 1125, Utf16),
    (1147, 1147, Utf16),
    (1152, 1152, Ucs2),
    (1174, 1174, Ucs2),
    (1184, 1184, Utf32),
    (1206, 1206, Utf32),
    (1216, 1216, Utf8mb3),
    (1238, 1238, Utf8mb3),
    (1248, 1248, Utf8mb4),
    (1270, 1270, Utf8mb4),
    (2048, 2215, Utf8mb3),
    (2232, 2247, Utf8mb3),
    (2304, 2471, Utf8mb4),
    (2488, 2503, Utf8mb4),
    (2560, 2727, Ucs2),
    (2744, 2759, Ucs2),
    (2816, 2983, Utf16),
    (3000, 3015, Utf16),
    (3072, 3239, Utf32),
    (3256, 3271, Utf32),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes with `write_json_text`, checks the output is valid JSON and
    /// returns the string it holds and the exactness flag.
    fn decode(bytes: &[u8], charset: Charset) -> (String, bool) {
        let mut out = b"prefix".to_vec();
        let exact = write_json_text(&mut out, bytes, charset);
        assert_eq!(&out[..6], b"prefix", "appends, keeps what was there");
        let json = std::str::from_utf8(&out[6..]).expect("output is UTF-8");
        let text: String = serde_json::from_str(json).expect("output is a JSON string");
        // The escaping is json_text's, i.e. what serde_json would write.
        assert_eq!(json, serde_json::to_string(&text).unwrap());
        (text, exact)
    }

    fn by_id(id: u32) -> Charset {
        charset_of_collation(id).unwrap_or_else(|| panic!("collation {id} unknown"))
    }

    #[test]
    fn utf8_valid_is_exact_and_escaped() {
        for s in [
            "",
            "plain",
            "żółw ✓ 😀",
            "q\"uote \\ \n\t\r\u{1}\u{1f}\u{7f}",
            "\u{FFFD}",
        ] {
            assert_eq!(decode(s.as_bytes(), Charset::Utf8), (s.to_owned(), true));
        }
    }

    #[test]
    fn utf8_invalid_is_lossy_and_flagged() {
        for bytes in [
            &b"ab\xFFcd"[..],
            b"\xC3",
            b"x\xE2\x82",
            b"\xED\xA0\x80 surrogate",
            b"\xF0\x9F\x98\x80\x80 \"q\"",
            b"\xC0\xAF overlong",
        ] {
            let expected = String::from_utf8_lossy(bytes).into_owned();
            assert_eq!(decode(bytes, Charset::Utf8), (expected, false), "{bytes:?}");
        }
        assert_eq!(decode(b"a\xFFb", Charset::Utf8).0, "a\u{FFFD}b");
    }

    #[test]
    fn latin1_is_mysql_cp1252() {
        assert_eq!(decode(b"caf\xE9", Charset::Latin1), ("café".to_owned(), true));
        assert_eq!(decode(b"\x80", Charset::Latin1).0, "€");
        assert_eq!(decode(b"\x81", Charset::Latin1).0, "\u{81}");
        assert_eq!(
            decode(b"\x81\x8D\x8F\x90\x9D", Charset::Latin1).0,
            "\u{81}\u{8D}\u{8F}\u{90}\u{9D}"
        );
        assert_eq!(
            decode(b"\x93q\x94 \x99 \x9F \xA0\xFF", Charset::Latin1).0,
            "“q” ™ Ÿ \u{A0}ÿ"
        );
        assert_eq!(decode(b"\"a\\b\"\n\x01\xE9", Charset::Latin1).0, "\"a\\b\"\n\u{1}é");
        // Every byte decodes, and the 0x80-0x9F table agrees with WHATWG's
        // windows-1252, which maps its undefined bytes to C1 controls too.
        let all: Vec<u8> = (0..=255).collect();
        let (text, exact) = decode(&all, Charset::Latin1);
        assert!(exact);
        let (whatwg, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(&all);
        assert_eq!(text, whatwg);
    }

    #[test]
    fn ascii() {
        assert_eq!(decode(b"a \"b\"\n", Charset::Ascii), ("a \"b\"\n".to_owned(), true));
        assert_eq!(
            decode(b"a\x80b\xFF", Charset::Ascii),
            ("a\u{FFFD}b\u{FFFD}".to_owned(), false)
        );
    }

    #[test]
    fn ucs2() {
        assert_eq!(
            decode(&[0, b'"', 0x00, 0xE9, 0x20, 0xAC, 0, b'\n'], Charset::Ucs2),
            ("\"é€\n".to_owned(), true)
        );
        // A surrogate is no UCS-2 character, a lone trailing byte is cut off.
        assert_eq!(
            decode(&[0xD8, 0x3D, 0, b'a'], Charset::Ucs2),
            ("\u{FFFD}a".to_owned(), false)
        );
        assert_eq!(decode(&[0, b'a', 0], Charset::Ucs2), ("a\u{FFFD}".to_owned(), false));
    }

    #[test]
    fn utf16_both_orders() {
        let s = "a\"é😀𝄞\u{1}";
        let be: Vec<u8> = s.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let le: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(decode(&be, Charset::Utf16), (s.to_owned(), true));
        assert_eq!(decode(&le, Charset::Utf16Le), (s.to_owned(), true));
        assert_eq!(&be[6..10], [0xD8, 0x3D, 0xDE, 0x00], "😀 is a surrogate pair");
        // Unpaired surrogates and an odd byte.
        assert_eq!(
            decode(&[0xD8, 0x3D, 0, b'x', 0xDE, 0x00], Charset::Utf16),
            ("\u{FFFD}x\u{FFFD}".to_owned(), false)
        );
        assert_eq!(
            decode(&[b'x', 0, 0x3D], Charset::Utf16Le),
            ("x\u{FFFD}".to_owned(), false)
        );
    }

    #[test]
    fn utf32() {
        let s = "a\\😀é";
        let be: Vec<u8> = s.chars().flat_map(|c| u32::from(c).to_be_bytes()).collect();
        assert_eq!(decode(&be, Charset::Utf32), (s.to_owned(), true));
        assert_eq!(
            decode(&[0, 0x11, 0, 0, 0, 0, 0xD8, 0, 0, 0, 0, b'a', 0, 0], Charset::Utf32),
            ("\u{FFFD}\u{FFFD}a\u{FFFD}".to_owned(), false)
        );
    }

    #[test]
    fn encoded_charsets() {
        let cases: [(u32, &[u8], &str); 10] = [
            (51, b"\xCF\xF0\xE8\xE2\xE5\xF2 \"q\"", "Привет \"q\""), // cp1251
            (7, b"\xF0\xD2\xC9\xD7\xC5\xD4", "Привет"),              // koi8r
            (28, b"\xD6\xD0\xCE\xC4\n", "中文\n"),                   // gbk
            (24, b"\xD6\xD0\xCE\xC4", "中文"),                       // gb2312
            (248, b"\x81\x30\x81\x30\x94\x39\xFC\x36", "\u{80}😀"),  // gb18030
            (1, b"\xA4\xA4\xA4\xE5", "中文"),                        // big5
            (13, b"\x93\xFA\x96\x7B\x8C\xEA", "日本語"),             // sjis
            (12, b"\xC6\xFC\xCB\xDC\xB8\xEC", "日本語"),             // ujis
            (19, b"\xC7\xD1\xB1\xB9\xBE\xEE", "한국어"),             // euckr
            (9, b"\xBFl\xB9", "żlš"),                                // latin2
        ];
        for (id, bytes, expected) in cases {
            assert_eq!(decode(bytes, by_id(id)), (expected.to_owned(), true), "collation {id}");
        }
        // Invalid sequences are replaced and flagged.
        assert_eq!(decode(b"\xD6", by_id(28)), ("\u{FFFD}".to_owned(), false));
        assert!(!decode(b"a\xFF\xFFb", by_id(13)).1);
        // The BOM is data, not sniffed: UTF-8's BOM in cp1251 is three letters.
        assert_eq!(decode(b"\xEF\xBB\xBF", by_id(51)).0, "п»ї");
    }

    #[test]
    fn encoded_single_byte_follows_mysql_where_whatwg_differs() {
        // latin5 (ISO-8859-9): C1 controls, not windows-1254's punctuation.
        assert_eq!(
            decode(b"\x80\x93 \xD0\xDD\xFE \"", by_id(30)),
            ("\u{80}\u{93} Ğİş \"".to_owned(), true)
        );
        assert_eq!(decode(b"\xD0\xDD", by_id(30)), ("Ğİ".to_owned(), true));
        // tis620: C1 controls too; Thai as usual.
        assert_eq!(decode(b"\x80\xA1\xD2", by_id(18)), ("\u{80}กา".to_owned(), true));
        assert_eq!(decode(b"\xDB", by_id(18)), ("\u{FFFD}".to_owned(), false));
        assert_eq!(decode(b"\xFC\xFD\x8F", by_id(36)).0, "ⁿ²П"); // cp866
        assert_eq!(decode(b"\xA1a\xA2\xE1", by_id(25)).0, "ʽaʼα"); // greek
        assert_eq!(decode(b"\xAF\xE0", by_id(16)).0, "‾א"); // hebrew
        assert_eq!(decode(b"\x95\xAE\xBE\xA4", by_id(22)).0, "•╝╬є"); // koi8u
        // Still flags bytes undefined in both.
        assert_eq!(decode(b"\xAE\xFF", by_id(25)), ("\u{FFFD}\u{FFFD}".to_owned(), false));
        assert_eq!(decode(b"\xA1\xFF", by_id(25)), ("ʽ\u{FFFD}".to_owned(), false));
    }

    #[test]
    fn not_text_is_lossy_utf8_and_flagged() {
        for charset in [Charset::Binary, Charset::Unsupported("swe7")] {
            assert_eq!(decode(b"ok\"", charset), ("ok\"".to_owned(), false));
            assert_eq!(decode(b"\xFF", charset), ("\u{FFFD}".to_owned(), false));
        }
    }

    #[test]
    fn spot_checks() {
        let cases: [(u32, Charset, &str); 15] = [
            (8, Charset::Latin1, "latin1"),                              // latin1_swedish_ci
            (33, Charset::Utf8, "utf8mb4"),                              // utf8mb3_general_ci
            (45, Charset::Utf8, "utf8mb4"),                              // utf8mb4_general_ci
            (63, Charset::Binary, "binary"),                             // binary
            (11, Charset::Ascii, "ascii"),                               // ascii_general_ci
            (255, Charset::Utf8, "utf8mb4"),                             // utf8mb4_0900_ai_ci (MySQL)
            (309, Charset::Utf8, "utf8mb4"),                             // utf8mb4_0900_bin (MySQL)
            (76, Charset::Utf8, "utf8mb4"),                              // utf8mb3_tolower_ci (MySQL)
            (224, Charset::Utf8, "utf8mb4"),                             // utf8mb4_unicode_ci
            (192, Charset::Utf8, "utf8mb4"),                             // utf8mb3_unicode_ci
            (51, Charset::Encoded(encoding_rs::WINDOWS_1251), "cp1251"), // cp1251_general_ci
            (2304, Charset::Utf8, "utf8mb4"),                            // utf8mb4_uca1400_ai_ci (MariaDB)
            (2816, Charset::Utf16, "utf16"),                             // utf16_uca1400_ai_ci (MariaDB)
            (1069, Charset::Utf8, "utf8mb4"),                            // utf8mb4_general_nopad_ci (MariaDB)
            (38, Charset::Unsupported("macce"), "macce"),                // macce_general_ci
        ];
        for (id, charset, name) in cases {
            assert_eq!(charset_of_collation(id), Some(charset), "collation {id}");
            assert_eq!(charset.name(), name, "collation {id}");
        }
        for id in [
            0,
            17,
            100,
            125,
            251,
            254,
            272,
            324,
            1024,
            2047,
            2216,
            3272,
            65535,
            65536,
            u32::MAX,
        ] {
            assert_eq!(charset_of_collation(id), None, "collation {id}");
        }
    }

    #[test]
    fn table_is_sorted_and_disjoint() {
        for w in COLLATIONS.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{:?} {:?}", w[0], w[1]);
        }
        let ids: usize = COLLATIONS.iter().map(|&(lo, hi, _)| usize::from(hi - lo) + 1).sum();
        assert_eq!(ids, 1309);
    }

    /// Every collation id MariaDB 10.11 and MySQL 8.0 report, by charset:
    /// `SELECT CHARACTER_SET_NAME, ID ... ORDER BY 1, 2` from the same dumps
    /// the table was generated from, in a layout independent of the table.
    const SERVER_COLLATIONS: &str = "
    armscii8 32 64 1056 1088
    ascii 11 65 1035 1089
    big5 1 84 1025 1108
    binary 63
    cp1250 26 34 44 66 99 1050 1090
    cp1251 14 23 50 51 52 1074 1075
    cp1256 57 67 1081 1091
    cp1257 29 58 59 1082 1083
    cp850 4 80 1028 1104
    cp852 40 81 1064 1105
    cp866 36 68 1060 1092
    cp932 95 96 1119 1120
    dec8 3 69 1027 1093
    eucjpms 97 98 1121 1122
    euckr 19 85 1043 1109
    gb18030 248 249 250
    gb2312 24 86 1048 1110
    gbk 28 87 1052 1111
    geostd8 92 93 1116 1117
    greek 25 70 1049 1094
    hebrew 16 71 1040 1095
    hp8 6 72 1030 1096
    keybcs2 37 73 1061 1097
    koi8r 7 74 1031 1098
    koi8u 22 75 1046 1099
    latin1 5 8 15 31 47 48 49 94 1032 1071
    latin2 2 9 21 27 77 1033 1101
    latin5 30 78 1054 1102
    latin7 20 41 42 79 1065 1103
    macce 38 43 1062 1067
    macroman 39 53 1063 1077
    sjis 13 88 1037 1112
    swe7 10 82 1034 1106
    tis620 18 89 1042 1113
    ucs2 35 90 128 129 130 131 132 133 134 135 136 137 138 139 140 141 142 143 144 145 146 147
        148 149 150 151 159 640 641 642 1059 1114 1152 1174 2560 2561 2562 2563 2564 2565 2566
        2567 2568 2569 2570 2571 2572 2573 2574 2575 2576 2577 2578 2579 2580 2581 2582 2583
        2584 2585 2586 2587 2588 2589 2590 2591 2592 2593 2594 2595 2596 2597 2598 2599 2600
        2601 2602 2603 2604 2605 2606 2607 2608 2609 2610 2611 2612 2613 2614 2615 2616 2617
        2618 2619 2620 2621 2622 2623 2624 2625 2626 2627 2628 2629 2630 2631 2632 2633 2634
        2635 2636 2637 2638 2639 2640 2641 2642 2643 2644 2645 2646 2647 2648 2649 2650 2651
        2652 2653 2654 2655 2656 2657 2658 2659 2660 2661 2662 2663 2664 2665 2666 2667 2668
        2669 2670 2671 2672 2673 2674 2675 2676 2677 2678 2679 2680 2681 2682 2683 2684 2685
        2686 2687 2688 2689 2690 2691 2692 2693 2694 2695 2696 2697 2698 2699 2700 2701 2702
        2703 2704 2705 2706 2707 2708 2709 2710 2711 2712 2713 2714 2715 2716 2717 2718 2719
        2720 2721 2722 2723 2724 2725 2726 2727 2744 2745 2746 2747 2748 2749 2750 2751 2752
        2753 2754 2755 2756 2757 2758 2759
    ujis 12 91 1036 1115
    utf16 54 55 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119 120
        121 122 123 124 672 673 674 1078 1079 1125 1147 2816 2817 2818 2819 2820 2821 2822 2823
        2824 2825 2826 2827 2828 2829 2830 2831 2832 2833 2834 2835 2836 2837 2838 2839 2840
        2841 2842 2843 2844 2845 2846 2847 2848 2849 2850 2851 2852 2853 2854 2855 2856 2857
        2858 2859 2860 2861 2862 2863 2864 2865 2866 2867 2868 2869 2870 2871 2872 2873 2874
        2875 2876 2877 2878 2879 2880 2881 2882 2883 2884 2885 2886 2887 2888 2889 2890 2891
        2892 2893 2894 2895 2896 2897 2898 2899 2900 2901 2902 2903 2904 2905 2906 2907 2908
        2909 2910 2911 2912 2913 2914 2915 2916 2917 2918 2919 2920 2921 2922 2923 2924 2925
        2926 2927 2928 2929 2930 2931 2932 2933 2934 2935 2936 2937 2938 2939 2940 2941 2942
        2943 2944 2945 2946 2947 2948 2949 2950 2951 2952 2953 2954 2955 2956 2957 2958 2959
        2960 2961 2962 2963 2964 2965 2966 2967 2968 2969 2970 2971 2972 2973 2974 2975 2976
        2977 2978 2979 2980 2981 2982 2983 3000 3001 3002 3003 3004 3005 3006 3007 3008 3009
        3010 3011 3012 3013 3014 3015
    utf16le 56 62 1080 1086
    utf32 60 61 160 161 162 163 164 165 166 167 168 169 170 171 172 173 174 175 176 177 178 179
        180 181 182 183 736 737 738 1084 1085 1184 1206 3072 3073 3074 3075 3076 3077 3078 3079
        3080 3081 3082 3083 3084 3085 3086 3087 3088 3089 3090 3091 3092 3093 3094 3095 3096
        3097 3098 3099 3100 3101 3102 3103 3104 3105 3106 3107 3108 3109 3110 3111 3112 3113
        3114 3115 3116 3117 3118 3119 3120 3121 3122 3123 3124 3125 3126 3127 3128 3129 3130
        3131 3132 3133 3134 3135 3136 3137 3138 3139 3140 3141 3142 3143 3144 3145 3146 3147
        3148 3149 3150 3151 3152 3153 3154 3155 3156 3157 3158 3159 3160 3161 3162 3163 3164
        3165 3166 3167 3168 3169 3170 3171 3172 3173 3174 3175 3176 3177 3178 3179 3180 3181
        3182 3183 3184 3185 3186 3187 3188 3189 3190 3191 3192 3193 3194 3195 3196 3197 3198
        3199 3200 3201 3202 3203 3204 3205 3206 3207 3208 3209 3210 3211 3212 3213 3214 3215
        3216 3217 3218 3219 3220 3221 3222 3223 3224 3225 3226 3227 3228 3229 3230 3231 3232
        3233 3234 3235 3236 3237 3238 3239 3256 3257 3258 3259 3260 3261 3262 3263 3264 3265
        3266 3267 3268 3269 3270 3271
    utf8mb3 33 76 83 192 193 194 195 196 197 198 199 200 201 202 203 204 205 206 207 208 209 210
        211 212 213 214 215 223 576 577 578 1057 1107 1216 1238 2048 2049 2050 2051 2052 2053
        2054 2055 2056 2057 2058 2059 2060 2061 2062 2063 2064 2065 2066 2067 2068 2069 2070
        2071 2072 2073 2074 2075 2076 2077 2078 2079 2080 2081 2082 2083 2084 2085 2086 2087
        2088 2089 2090 2091 2092 2093 2094 2095 2096 2097 2098 2099 2100 2101 2102 2103 2104
        2105 2106 2107 2108 2109 2110 2111 2112 2113 2114 2115 2116 2117 2118 2119 2120 2121
        2122 2123 2124 2125 2126 2127 2128 2129 2130 2131 2132 2133 2134 2135 2136 2137 2138
        2139 2140 2141 2142 2143 2144 2145 2146 2147 2148 2149 2150 2151 2152 2153 2154 2155
        2156 2157 2158 2159 2160 2161 2162 2163 2164 2165 2166 2167 2168 2169 2170 2171 2172
        2173 2174 2175 2176 2177 2178 2179 2180 2181 2182 2183 2184 2185 2186 2187 2188 2189
        2190 2191 2192 2193 2194 2195 2196 2197 2198 2199 2200 2201 2202 2203 2204 2205 2206
        2207 2208 2209 2210 2211 2212 2213 2214 2215 2232 2233 2234 2235 2236 2237 2238 2239
        2240 2241 2242 2243 2244 2245 2246 2247
    utf8mb4 45 46 224 225 226 227 228 229 230 231 232 233 234 235 236 237 238 239 240 241 242
        243 244 245 246 247 255 256 257 258 259 260 261 262 263 264 265 266 267 268 269 270 271
        273 274 275 277 278 279 280 281 282 283 284 285 286 287 288 289 290 291 292 293 294 296
        297 298 300 303 304 305 306 307 308 309 310 311 312 313 314 315 316 317 318 319 320 321
        322 323 608 609 610 1069 1070 1248 1270 2304 2305 2306 2307 2308 2309 2310 2311 2312
        2313 2314 2315 2316 2317 2318 2319 2320 2321 2322 2323 2324 2325 2326 2327 2328 2329
        2330 2331 2332 2333 2334 2335 2336 2337 2338 2339 2340 2341 2342 2343 2344 2345 2346
        2347 2348 2349 2350 2351 2352 2353 2354 2355 2356 2357 2358 2359 2360 2361 2362 2363
        2364 2365 2366 2367 2368 2369 2370 2371 2372 2373 2374 2375 2376 2377 2378 2379 2380
        2381 2382 2383 2384 2385 2386 2387 2388 2389 2390 2391 2392 2393 2394 2395 2396 2397
        2398 2399 2400 2401 2402 2403 2404 2405 2406 2407 2408 2409 2410 2411 2412 2413 2414
        2415 2416 2417 2418 2419 2420 2421 2422 2423 2424 2425 2426 2427 2428 2429 2430 2431
        2432 2433 2434 2435 2436 2437 2438 2439 2440 2441 2442 2443 2444 2445 2446 2447 2448
        2449 2450 2451 2452 2453 2454 2455 2456 2457 2458 2459 2460 2461 2462 2463 2464 2465
        2466 2467 2468 2469 2470 2471 2488 2489 2490 2491 2492 2493 2494 2495 2496 2497 2498
        2499 2500 2501 2502 2503
    ";

    #[test]
    fn every_server_collation_maps_to_its_charset() {
        let mut charset = "";
        let mut count = 0;
        for token in SERVER_COLLATIONS.split_whitespace() {
            let Ok(id) = token.parse::<u16>() else {
                charset = token;
                continue;
            };
            let i = COLLATIONS
                .iter()
                .position(|&(lo, hi, _)| (lo..=hi).contains(&id))
                .unwrap_or_else(|| panic!("collation {id} ({charset}) missing"));
            assert_eq!(COLLATIONS[i].2.name(), charset, "collation {id}");
            let family = match charset {
                "utf8mb3" => "utf8mb4",
                "cp932" => "sjis",
                "eucjpms" => "ujis",
                "gb2312" => "gbk",
                other => other,
            };
            assert_eq!(by_id(u32::from(id)).name(), family, "collation {id}");
            count += 1;
        }
        // ... and the table holds nothing else.
        assert_eq!(count, 1309);
    }

    #[test]
    fn names() {
        for (charset, name) in [
            (Charset::Utf8, "utf8mb4"),
            (Charset::Latin1, "latin1"),
            (Charset::Ascii, "ascii"),
            (Charset::Binary, "binary"),
            (Charset::Ucs2, "ucs2"),
            (Charset::Utf16, "utf16"),
            (Charset::Utf16Le, "utf16le"),
            (Charset::Utf32, "utf32"),
            (Charset::Encoded(encoding_rs::KOI8_R), "koi8r"),
            (Charset::Encoded(encoding_rs::SHIFT_JIS), "sjis"),
            (Charset::Encoded(encoding_rs::ISO_8859_15), "ISO-8859-15"),
            (Charset::Unsupported("dec8"), "dec8"),
        ] {
            assert_eq!(charset.name(), name);
        }
    }
}
