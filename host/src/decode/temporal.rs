//! Date and time values: MySQL's storage formats in, contract text out.
//!
//! Formats (DESIGN.md): DATE `YYYY-MM-DD`; DATETIME(n) `YYYY-MM-DD HH:MM:SS[.f]`;
//! TIMESTAMP(n) `YYYY-MM-DDTHH:MM:SS[.f]Z` in UTC; TIME(n) `[-]HH:MM:SS[.f]`,
//! with exactly n fraction digits. Zero dates are kept as the server stores them.

use super::cursor::be_uint;

/// A calendar date and time of day, as stored (no validation: zero dates and
/// zero days are legal MySQL values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DateTime {
    /// Year, 0..=9999.
    pub year: u16,
    /// Month, 0..=12.
    pub month: u8,
    /// Day, 0..=31.
    pub day: u8,
    /// Hour.
    pub hour: u8,
    /// Minute.
    pub minute: u8,
    /// Second.
    pub second: u8,
    /// Microseconds.
    pub micros: u32,
}

/// A TIME value: a signed duration that may exceed 24 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Time {
    /// Whether it is negative.
    pub negative: bool,
    /// Hours (up to 838 in practice, up to 1023 in the format).
    pub hours: u16,
    /// Minutes.
    pub minutes: u8,
    /// Seconds.
    pub seconds: u8,
    /// Microseconds.
    pub micros: u32,
}

/// Bytes the fractional part of a temporal value takes for `fsp` digits.
pub fn frac_bytes(fsp: u8) -> usize {
    usize::from(fsp).div_ceil(2)
}

/// DATE: 3 bytes little-endian, `day | month << 5 | year << 9`.
pub fn date(b: [u8; 3]) -> DateTime {
    let v = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
    DateTime {
        year: (v >> 9) as u16,
        month: ((v >> 5) & 15) as u8,
        day: (v & 31) as u8,
        ..DateTime::default()
    }
}

/// Pre-5.6 DATETIME: the integer YYYYMMDDhhmmss.
pub fn datetime_old(v: u64) -> DateTime {
    let (d, t) = (v / 1_000_000, v % 1_000_000);
    DateTime {
        year: (d / 10_000 % 10_000) as u16,
        month: (d / 100 % 100) as u8,
        day: (d % 100) as u8,
        hour: (t / 10_000) as u8,
        minute: (t / 100 % 100) as u8,
        second: (t % 100) as u8,
        micros: 0,
    }
}

/// The fraction as microseconds, read big-endian from `b` for `fsp` digits.
fn frac_micros(b: &[u8], fsp: u8) -> u32 {
    let v = be_uint(b) as u32;
    match fsp {
        1 | 2 => v * 10_000,
        3 | 4 => v * 100,
        _ => v,
    }
}

/// DATETIME2: 5 bytes big-endian with a sign offset, then the fraction.
pub fn datetime2(int: &[u8], frac: &[u8], fsp: u8) -> DateTime {
    let packed = be_uint(int) as i64 - 0x80_0000_0000;
    let packed = packed.unsigned_abs();
    let ymd = packed >> 17;
    let ym = ymd >> 5;
    let hms = packed & ((1 << 17) - 1);
    DateTime {
        year: (ym / 13) as u16,
        month: (ym % 13) as u8,
        day: (ymd & 31) as u8,
        hour: (hms >> 12) as u8,
        minute: ((hms >> 6) & 63) as u8,
        second: (hms & 63) as u8,
        micros: frac_micros(frac, fsp),
    }
}

/// TIMESTAMP2: seconds (big-endian) and the fraction.
pub fn timestamp2(int: [u8; 4], frac: &[u8], fsp: u8) -> (u32, u32) {
    (u32::from_be_bytes(int), frac_micros(frac, fsp))
}

/// Pre-5.6 TIME: 3-byte little-endian signed integer `±HHMMSS`.
pub fn time_old(b: [u8; 3]) -> Time {
    let raw = i32::from(b[0]) | i32::from(b[1]) << 8 | i32::from(b[2]) << 16;
    let v = (raw << 8) >> 8; // sign-extend 24 bits
    let a = v.unsigned_abs();
    Time {
        negative: v < 0,
        hours: (a / 10_000) as u16,
        minutes: (a / 100 % 100) as u8,
        seconds: (a % 100) as u8,
        micros: 0,
    }
}

/// TIME2: 3 bytes big-endian with a sign offset, then a signed fraction.
///
/// A negative value with a fraction stores the integer part rounded towards
/// zero minus one and the fraction as a negative complement, so both are
/// combined into one packed integer before splitting; reading them apart
/// (as mysql_common does) gets `-838:59:58.12` wrong.
pub fn time2(int: [u8; 3], frac: &[u8], fsp: u8) -> Time {
    let intpart = be_uint(&int) as i64 - 0x80_0000;
    let packed: i64 = match fsp {
        0 => intpart << 24,
        1 | 2 => {
            let mut i = intpart;
            let mut f = i64::from(frac.first().copied().unwrap_or(0));
            if i < 0 && f != 0 {
                i += 1;
                f -= 0x100;
            }
            (i << 24) + f * 10_000
        }
        3 | 4 => {
            let mut i = intpart;
            let mut f = be_uint(frac) as i64;
            if i < 0 && f != 0 {
                i += 1;
                f -= 0x10000;
            }
            (i << 24) + f * 100
        }
        _ => (be_uint(&int) << 24 | be_uint(frac)) as i64 - 0x8000_0000_0000,
    };
    let negative = packed < 0;
    let a = packed.unsigned_abs();
    let hms = a >> 24;
    Time {
        negative,
        hours: ((hms >> 12) & 0x3ff) as u16,
        minutes: ((hms >> 6) & 63) as u8,
        seconds: (hms & 63) as u8,
        micros: (a & 0xff_ffff) as u32,
    }
}

#[inline]
fn push2(out: &mut Vec<u8>, v: u8) {
    out.push(b'0' + v / 10 % 10);
    out.push(b'0' + v % 10);
}

#[inline]
fn push4(out: &mut Vec<u8>, v: u16) {
    push2(out, (v / 100 % 100) as u8);
    push2(out, (v % 100) as u8);
}

/// Appends `.ffff` with `fsp` digits of `micros`; nothing for fsp 0.
#[inline]
pub fn push_frac(out: &mut Vec<u8>, micros: u32, fsp: u8) {
    if fsp == 0 {
        return;
    }
    out.push(b'.');
    let mut digits = [0u8; 6];
    let mut v = micros.min(999_999);
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&digits[..usize::from(fsp.min(6))]);
}

/// Appends `YYYY-MM-DD`.
pub fn push_date(out: &mut Vec<u8>, d: &DateTime) {
    push4(out, d.year);
    out.push(b'-');
    push2(out, d.month);
    out.push(b'-');
    push2(out, d.day);
}

/// Appends `YYYY-MM-DD<sep>HH:MM:SS[.f]`.
pub fn push_datetime(out: &mut Vec<u8>, d: &DateTime, sep: u8, fsp: u8) {
    push_date(out, d);
    out.push(sep);
    push2(out, d.hour);
    out.push(b':');
    push2(out, d.minute);
    out.push(b':');
    push2(out, d.second);
    push_frac(out, d.micros, fsp);
}

/// Appends `[-]HH:MM:SS[.f]`, at least two hour digits.
pub fn push_time(out: &mut Vec<u8>, t: &Time, fsp: u8) {
    if t.negative {
        out.push(b'-');
    }
    if t.hours < 100 {
        push2(out, t.hours as u8);
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(t.hours).as_bytes());
    }
    out.push(b':');
    push2(out, t.minutes);
    out.push(b':');
    push2(out, t.seconds);
    push_frac(out, t.micros, fsp);
}

/// The UTC calendar time of `secs` since the epoch.
pub fn utc(secs: u32, micros: u32) -> DateTime {
    let days = i64::from(secs / 86_400);
    let rem = secs % 86_400;
    // Days to civil date (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
    DateTime {
        year,
        month,
        day,
        hour: (rem / 3600) as u8,
        minute: (rem / 60 % 60) as u8,
        second: (rem % 60) as u8,
        micros,
    }
}

/// Appends a TIMESTAMP as `YYYY-MM-DDTHH:MM:SS[.f]Z`; the zero timestamp
/// stays `0000-00-00T00:00:00Z`.
pub fn push_timestamp(out: &mut Vec<u8>, secs: u32, micros: u32, fsp: u8) {
    let d = if secs == 0 && micros == 0 {
        DateTime::default()
    } else {
        utc(secs, micros)
    };
    push_datetime(out, &d, b'T', fsp);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn utc_dates() {
        assert_eq!(s(|o| push_timestamp(o, 1, 0, 0)), "1970-01-01T00:00:01Z");
        assert_eq!(
            s(|o| push_timestamp(o, 2_147_483_647, 999_999, 6)),
            "2038-01-19T03:14:07.999999Z"
        );
        assert_eq!(s(|o| push_timestamp(o, 951_782_400, 0, 3)), "2000-02-29T00:00:00.000Z");
        assert_eq!(s(|o| push_timestamp(o, 0, 0, 2)), "0000-00-00T00:00:00.00Z");
    }

    #[test]
    fn time2_negative_fractions() {
        // -838:59:58.12 as TIME(2): intpart stored as -(838:59:59), fraction 0x100-12.
        let hms: i64 = (838 << 12) | (59 << 6) | 59;
        let int = (0x80_0000 - hms) as u32;
        let b = int.to_be_bytes();
        let t = time2([b[1], b[2], b[3]], &[244], 2);
        assert_eq!(s(|o| push_time(o, &t, 2)), "-838:59:58.12");
        // -00:00:00.5 as TIME(1): intpart -1, fraction 0x100-50.
        let int = (0x80_0000 - 1) as u32;
        let b = int.to_be_bytes();
        let t = time2([b[1], b[2], b[3]], &[206], 1);
        assert_eq!(s(|o| push_time(o, &t, 1)), "-00:00:00.5");
    }

    #[test]
    fn fractions() {
        assert_eq!(s(|o| push_frac(o, 120_000, 2)), ".12");
        assert_eq!(s(|o| push_frac(o, 5, 6)), ".000005");
        assert_eq!(s(|o| push_frac(o, 5, 0)), "");
    }

    #[test]
    fn old_formats() {
        assert_eq!(
            s(|o| push_datetime(o, &datetime_old(20240229235959), b' ', 0)),
            "2024-02-29 23:59:59"
        );
        let t = time_old([0xff, 0xff, 0xff]);
        assert_eq!(s(|o| push_time(o, &t, 0)), "-00:00:01");
    }
}
