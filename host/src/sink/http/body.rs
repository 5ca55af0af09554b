//! What goes over the wire, as pure functions: the JSON-lines envelope of
//! a batch, header-safe ids and keys, the signature, and the server's
//! `Retry-After`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::sink::Message;

/// Bytes of `max_body_bytes` kept for a batch line's envelope (`id`, `key`
/// and the field names) when telling handlers how large a payload may be.
pub const ENVELOPE_ROOM: usize = 16 << 10;
/// The largest key, in bytes: in a batch line it is escaped (at most 6
/// bytes a byte), in message mode it is a header, percent-encoded (at most
/// 3 bytes a byte), and servers take headers of some 8 KiB in all.
pub const MAX_KEY: usize = 1024;
/// The longest change id the sink sends; real ones are far shorter
/// (`<GTID or file/pos>:<event>:<row>`).
pub const MAX_ID: usize = 1024;

/// The largest payload whose batch line fits a body of `max_body` bytes
/// whatever the payload holds: a payload that is not JSON goes as base64,
/// 4 bytes for every 3.
pub fn max_batch_payload(max_body: usize) -> usize {
    max_body.saturating_sub(ENVELOPE_ROOM) / 4 * 3
}

/// The message's own id, `<change id>:<index>`, as `Nats-Msg-Id` has it:
/// one row change may emit several messages.
pub fn message_id(m: &Message) -> String {
    format!("{}:{}", m.id, m.index)
}

/// Appends the batch line of `m`:
/// `{"id":"<change id>:<index>","key":"K","payload":P}` and a newline.
///
/// - `payload` is the payload itself when it is a JSON document (UTF-8):
///   a receiver reads it as a value, no second decoding. Line breaks in it
///   can only be whitespace between tokens (JSON strings cannot hold them
///   raw), and become spaces, so the line stays one line and means the same.
/// - Otherwise `payload_b64` holds it as base64 (standard, padded).
/// - `key` is the emit key as a JSON string when it is UTF-8, `key_b64`
///   (base64) when not; neither when the message has no key.
pub fn push_line(out: &mut Vec<u8>, m: &Message) {
    out.extend_from_slice(b"{\"id\":");
    push_json_str(out, &message_id(m));
    match m.key.as_deref().map(std::str::from_utf8) {
        None => {}
        Some(Ok(key)) => {
            out.extend_from_slice(b",\"key\":");
            push_json_str(out, key);
        }
        Some(Err(_)) => {
            out.extend_from_slice(b",\"key_b64\":\"");
            out.extend_from_slice(STANDARD.encode(m.key.as_deref().unwrap_or_default()).as_bytes());
            out.push(b'"');
        }
    }
    if is_json(&m.payload) {
        out.extend_from_slice(b",\"payload\":");
        let at = out.len();
        out.extend_from_slice(&m.payload);
        for b in &mut out[at..] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
    } else {
        out.extend_from_slice(b",\"payload_b64\":\"");
        out.extend_from_slice(STANDARD.encode(&m.payload).as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"}\n");
}

/// Whether `payload` is one JSON document, in UTF-8.
fn is_json(payload: &[u8]) -> bool {
    std::str::from_utf8(payload).is_ok() && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// `bytes` as a header value: visible ASCII as it is, every other byte and
/// `%` as `%XX` (`a b/c` → `a%20b/c`). A receiver percent-decodes it.
pub fn header_safe(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The `Idempotency-Key` of a request carrying `batch` (not empty): the id
/// of its message, or `<first id>..<last id>` for several; header-safe.
pub fn idempotency_key(batch: &[Message]) -> String {
    let (first, last) = (&batch[0], &batch[batch.len() - 1]);
    let text = if batch.len() == 1 {
        message_id(first)
    } else {
        format!("{}..{}", message_id(first), message_id(last))
    };
    header_safe(text.as_bytes())
}

/// The signature header's value: `sha256=` and the lowercase hex of
/// HMAC-SHA256(secret, `<timestamp>.<body>`).
pub fn sign(key: &ring::hmac::Key, timestamp: &str, body: &[u8]) -> String {
    let mut cx = ring::hmac::Context::with_key(key);
    cx.update(timestamp.as_bytes());
    cx.update(b".");
    cx.update(body);
    let tag = cx.sign();
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256=");
    for b in tag.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Seconds since the epoch, as `X-Rowhook-Timestamp` carries it.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// How long a `Retry-After` value asks to wait from `now`: delay-seconds
/// (`120`) or an HTTP-date (`Fri, 07 Nov 2026 08:49:37 GMT`, and the two
/// obsolete forms). `None` if it is neither; zero for a date past.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // A number too long for u64 is a very long wait.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an HTTP-date (RFC 9110 §5.6.7): IMF-fixdate, RFC 850 or asctime.
fn http_date(s: &str) -> Option<SystemTime> {
    let cleaned: String = s.chars().map(|c| if c == ',' || c == '-' { ' ' } else { c }).collect();
    let t: Vec<&str> = cleaned.split_whitespace().collect();
    let (day, month, year, time) = match t.as_slice() {
        // Sun, 06 Nov 1994 08:49:37 GMT | Sunday, 06-Nov-94 08:49:37 GMT
        [_, day, month, year, time, "GMT"] => {
            let y: i64 = year.parse().ok()?;
            let y = match year.len() {
                2 if y < 70 => 2000 + y,
                2 => 1900 + y,
                4 => y,
                _ => return None,
            };
            (day.parse().ok()?, *month, y, *time)
        }
        // Sun Nov  6 08:49:37 1994
        [_, month, day, time, year] => (day.parse().ok()?, *month, year.parse().ok()?, *time),
        _ => return None,
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let hms: Vec<i64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else { return None };
    if !(1..=31).contains(&day) || !(0..24).contains(h) || !(0..60).contains(m) || !(0..=60).contains(sec) {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian
/// calendar (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The start of a response body, for an error message: at most 200
/// characters, control characters as spaces, trimmed.
pub fn body_start(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(400)]);
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::msg;

    fn line(m: &Message) -> String {
        let mut out = Vec::new();
        push_line(&mut out, m);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn batch_lines_wrap_json_and_base64_the_rest() {
        let mut m = msg("0-1-9:0:0", "{\"order\":1001}");
        m.key = Some(b"1001".to_vec());
        assert_eq!(
            line(&m),
            "{\"id\":\"0-1-9:0:0:0\",\"key\":\"1001\",\"payload\":{\"order\":1001}}\n"
        );
        // Pretty-printed JSON stays one line, with the same meaning.
        let mut m = msg("a:0:1", "{\n  \"a\": [1,\r\n 2]\n}\n");
        m.index = 2;
        let l = line(&m);
        assert_eq!(l.matches('\n').count(), 1, "{l}");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["id"], "a:0:1:2");
        assert_eq!(v["payload"], serde_json::json!({"a": [1, 2]}));
        assert!(v.get("key").is_none());
        // Not JSON, not UTF-8, empty: base64; a key that is not UTF-8 too.
        let mut m = msg("b:0:0", "");
        m.payload = vec![0xff, 0, b'\n'];
        m.key = Some(vec![0xfe, b'/']);
        assert_eq!(
            line(&m),
            "{\"id\":\"b:0:0:0\",\"key_b64\":\"/i8=\",\"payload_b64\":\"/wAK\"}\n"
        );
        assert!(line(&msg("c", "")).contains("\"payload_b64\":\"\""));
        assert!(line(&msg("c", "plain text")).contains("\"payload_b64\":\"cGxhaW4gdGV4dA==\""));
        // Keys and ids are escaped as JSON strings.
        let mut m = msg("d\"e", "1");
        m.key = Some(b"a b/\"c\"\n".to_vec());
        assert_eq!(
            line(&m),
            "{\"id\":\"d\\\"e:0\",\"key\":\"a b/\\\"c\\\"\\n\",\"payload\":1}\n"
        );
    }

    #[test]
    fn the_largest_payload_fits_as_base64() {
        let max_body = 1 << 20;
        let mut m = msg(&"i".repeat(MAX_ID), "");
        m.payload = vec![0xff; max_batch_payload(max_body)];
        m.key = Some(vec![b'\n'; MAX_KEY]);
        let l = line(&m);
        assert!(l.len() <= max_body, "{} > {max_body}", l.len());
    }

    #[test]
    fn header_values_are_visible_ascii() {
        assert_eq!(header_safe(b"0-1-9:0:0:1"), "0-1-9:0:0:1");
        assert_eq!(header_safe(b"a b/c"), "a%20b/c");
        assert_eq!(header_safe(b"%\r\n\x7f\xc3\xa9"), "%25%0D%0A%7F%C3%A9");
        assert_eq!(header_safe(b""), "");
        let batch = [msg("0-1-9:0:0", "a"), msg("0-1-9:0:1", "b"), msg("0-1-10:0:0", "c")];
        assert_eq!(idempotency_key(&batch[..1]), "0-1-9:0:0:0");
        assert_eq!(idempotency_key(&batch), "0-1-9:0:0:0..0-1-10:0:0:0");
        assert_eq!(idempotency_key(&[msg("f 1/4:0:0", "x")]), "f%201/4:0:0:0");
    }

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        // As Python's `hmac.new(b"Jefe", b'1700000000.{"order":1001}', hashlib.sha256)` has it.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            sign(&key, "1700000000", b"{\"order\":1001}"),
            "sha256=3d638da567fbeaeac646030be1c29113b03e13336a14bec96f7d6b6d9d61b1fb"
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770); // Sun, 06 Nov 1994 08:49:30 GMT
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(retry_after(date, now), Some(Duration::from_secs(7)), "{date}");
        }
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(
            http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH),
            "the epoch"
        );
        assert_eq!(
            http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1_835_481_599))
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
        ] {
            assert_eq!(retry_after(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn body_starts_are_short_and_printable() {
        assert_eq!(body_start(b"  {\"error\":\"bad\"}\r\n"), "{\"error\":\"bad\"}");
        let long = body_start(&[b'x'; 1000]);
        assert_eq!(long.chars().count(), 201);
        assert!(long.ends_with('…'));
        assert_eq!(body_start(b"a\x1b[2Jb\xff"), "a [2Jb\u{fffd}");
    }
}
