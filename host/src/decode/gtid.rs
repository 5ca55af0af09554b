//! GTIDs and the executed-GTID state a reader resumes from.
//!
//! MariaDB GTIDs are `domain-server-seq` and the state is the last GTID per
//! domain. MySQL GTIDs are `uuid:n` (or `uuid:tag:n`) and the state is a set
//! of intervals per uuid and tag.

use std::collections::BTreeMap;
use std::fmt;

use super::cursor::Cursor;

/// The GTID position of a stream after a commit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GtidState {
    /// No GTIDs seen (or the server does not write them).
    #[default]
    None,
    /// MariaDB: domain → (server id, sequence number).
    MariaDb(BTreeMap<u32, (u32, u64)>),
    /// MySQL: (uuid, tag) → sorted, disjoint, inclusive intervals.
    MySql(BTreeMap<(String, String), Vec<(u64, u64)>>),
}

impl GtidState {
    /// Records a committed MariaDB GTID.
    pub fn add_mariadb(&mut self, domain: u32, server: u32, seq: u64) {
        if !matches!(self, GtidState::MariaDb(_)) {
            *self = GtidState::MariaDb(BTreeMap::new());
        }
        if let GtidState::MariaDb(m) = self {
            m.insert(domain, (server, seq));
        }
    }

    /// Records a committed MySQL GTID.
    pub fn add_mysql(&mut self, uuid: &str, tag: &str, gno: u64) {
        if !matches!(self, GtidState::MySql(_)) {
            *self = GtidState::MySql(BTreeMap::new());
        }
        if let GtidState::MySql(m) = self {
            let key = (uuid.to_owned(), tag.to_owned());
            let iv = match m.get_mut(&key) {
                Some(iv) => iv,
                None => m.entry(key).or_default(),
            };
            add_interval(iv, gno, gno);
        }
    }

    /// Parses a MariaDB GTID_LIST body into a state.
    pub fn from_mariadb_list(body: &[u8]) -> Option<GtidState> {
        let mut c = Cursor::new(body);
        let n = c.u32().ok()? & 0x0fff_ffff;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let domain = c.u32().ok()?;
            let server = c.u32().ok()?;
            let seq = c.u64().ok()?;
            m.insert(domain, (server, seq));
        }
        Some(GtidState::MariaDb(m))
    }

    /// Parses a MySQL PREVIOUS_GTIDS body (untagged, or the tagged format of
    /// MySQL 8.4+, which marks itself with format byte 1 in the top byte of
    /// the first word and gives every uuid a tag).
    pub fn from_mysql_previous(body: &[u8]) -> Option<GtidState> {
        let mut c = Cursor::new(body);
        let word = c.u64().ok()?;
        let tagged = word >> 56 == 1;
        let n = if tagged { (word >> 8) & 0xffff_ffff_ffff } else { word };
        if n > c.len() as u64 / 16 {
            return None;
        }
        let mut m: BTreeMap<(String, String), Vec<(u64, u64)>> = BTreeMap::new();
        for _ in 0..n {
            let uuid = format_uuid(c.take(16).ok()?);
            let tag = if tagged {
                let len = super::cursor::varlen_u64(&mut c)? as usize;
                String::from_utf8_lossy(c.take(len).ok()?).to_ascii_lowercase()
            } else {
                String::new()
            };
            let k = c.u64().ok()?;
            if k > c.len() as u64 / 16 {
                return None;
            }
            let iv = m.entry((uuid, tag)).or_default();
            for _ in 0..k {
                let start = c.u64().ok()?;
                let end = c.u64().ok()?;
                if end > start {
                    add_interval(iv, start, end - 1);
                }
            }
        }
        Some(GtidState::MySql(m))
    }

    /// Parses the text form (`0-1-42,1-2-7` or `uuid:1-5:7,uuid2:tag:3`).
    pub fn parse(text: &str) -> Result<GtidState, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(GtidState::None);
        }
        let mut state = GtidState::None;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part.contains(':') {
                let mut fields = part.split(':');
                let uuid = fields.next().unwrap_or_default().to_ascii_lowercase();
                if uuid.len() != 36 || !uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                    return Err(format!("`{part}`: `{uuid}` is not a server uuid"));
                }
                let mut tag = String::new();
                let mut any = false;
                for f in fields {
                    if f.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') {
                        tag = f.to_ascii_lowercase();
                        continue;
                    }
                    let (a, b) = match f.split_once('-') {
                        Some((a, b)) => (a, b),
                        None => (f, f),
                    };
                    let (a, b): (u64, u64) = match (a.parse(), b.parse()) {
                        (Ok(a), Ok(b)) if a >= 1 && b >= a => (a, b),
                        _ => return Err(format!("`{part}`: `{f}` is not an interval like 1-100")),
                    };
                    if !matches!(state, GtidState::MySql(_)) {
                        state = GtidState::MySql(BTreeMap::new());
                    }
                    if let GtidState::MySql(m) = &mut state {
                        add_interval(m.entry((uuid.clone(), tag.clone())).or_default(), a, b);
                    }
                    any = true;
                }
                if !any {
                    return Err(format!("`{part}` has no transaction interval"));
                }
            } else {
                let nums: Vec<&str> = part.split('-').collect();
                let parsed = match nums.as_slice() {
                    [d, s, n] => d
                        .parse::<u32>()
                        .ok()
                        .zip(s.parse::<u32>().ok())
                        .zip(n.parse::<u64>().ok()),
                    _ => None,
                };
                let Some(((d, s), n)) = parsed else {
                    return Err(format!("`{part}` is not a GTID like 0-1-42 (domain-server-sequence)"));
                };
                if matches!(state, GtidState::MySql(_)) {
                    return Err("a GTID set cannot mix MariaDB and MySQL GTIDs".into());
                }
                state.add_mariadb(d, s, n);
            }
        }
        Ok(state)
    }

    /// Whether no GTID is recorded.
    pub fn is_empty(&self) -> bool {
        match self {
            GtidState::None => true,
            GtidState::MariaDb(m) => m.is_empty(),
            GtidState::MySql(m) => m.is_empty(),
        }
    }
}

fn add_interval(iv: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    // Fast path: the next GTID of a stream extends the last interval.
    if let Some(last) = iv.last_mut()
        && a >= last.0
        && a <= last.1.saturating_add(1)
    {
        last.1 = last.1.max(b);
        return;
    }
    iv.push((a, b));
    iv.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(iv.len());
    for &(s, e) in iv.iter() {
        match merged.last_mut() {
            Some(m) if s <= m.1.saturating_add(1) => m.1 = m.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    *iv = merged;
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidState::None => Ok(()),
            GtidState::MariaDb(m) => {
                for (i, (d, (s, n))) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{d}-{s}-{n}")?;
                }
                Ok(())
            }
            GtidState::MySql(m) => {
                let mut last_uuid: Option<&str> = None;
                for ((uuid, tag), iv) in m {
                    if last_uuid == Some(uuid.as_str()) {
                        // same uuid, another tag: MySQL prints `uuid:a:1-2:b:3`
                    } else {
                        if last_uuid.is_some() {
                            f.write_str(",")?;
                        }
                        f.write_str(uuid)?;
                        last_uuid = Some(uuid);
                    }
                    if !tag.is_empty() {
                        write!(f, ":{tag}")?;
                    }
                    for &(a, b) in iv {
                        if a == b {
                            write!(f, ":{a}")?;
                        } else {
                            write!(f, ":{a}-{b}")?;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// Formats 16 bytes as a lowercase uuid.
pub fn format_uuid(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, &x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[(x >> 4) as usize] as char);
        s.push(HEX[(x & 15) as usize] as char);
    }
    s
}

impl GtidState {
    /// Whether the GTID in `text` (`0-1-42` or `uuid[:tag]:n`) is in the state.
    ///
    /// MariaDB states are positions per domain: a GTID is in it when its
    /// sequence number is at or below the domain's.
    pub fn contains_text(&self, text: &str) -> bool {
        match self {
            GtidState::None => false,
            GtidState::MariaDb(m) => {
                let mut it = text.split('-');
                let (Some(d), Some(_s), Some(n)) = (it.next(), it.next(), it.next()) else {
                    return false;
                };
                match (d.parse::<u32>(), n.parse::<u64>()) {
                    (Ok(d), Ok(n)) => m.get(&d).is_some_and(|&(_, seq)| n <= seq),
                    _ => false,
                }
            }
            GtidState::MySql(m) => {
                let parts: Vec<&str> = text.split(':').collect();
                let (uuid, tag, n) = match parts.as_slice() {
                    [u, n] => (*u, "", *n),
                    [u, t, n] => (*u, *t, *n),
                    _ => return false,
                };
                let Ok(n) = n.parse::<u64>() else { return false };
                m.get(&(uuid.to_ascii_lowercase(), tag.to_ascii_lowercase()))
                    .is_some_and(|iv| iv.iter().any(|&(a, b)| a <= n && n <= b))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_round_trip() {
        let s = GtidState::parse("1-2-7, 0-1-42").unwrap();
        assert_eq!(s.to_string(), "0-1-42,1-2-7");
    }

    #[test]
    fn mysql_sets() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut s = GtidState::parse(&format!("{u}:1-5:7")).unwrap();
        s.add_mysql(u, "", 6);
        assert_eq!(s.to_string(), format!("{u}:1-7"));
        s.add_mysql(u, "blue", 3);
        assert_eq!(s.to_string(), format!("{u}:1-7:blue:3"));
        assert!(GtidState::parse("nonsense:1").is_err());
        assert!(GtidState::parse("0-1").is_err());
    }
}
