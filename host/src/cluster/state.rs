//! Handler state per partition, kept in a JetStream key-value bucket
//! (`STREAM_state`) with the stream sequence it covers.
//!
//! A partition's state is one blob: the sequence, then per handler its
//! keys and values. The key `GROUP.pN` holds a small head (who wrote it,
//! the sequence, and the blob inline, or the generation and count of the
//! chunks `GROUP.pN.gG.I` a large blob is split into, written first). Every
//! write of the head names the revision its writer read or wrote last, so a
//! worker that lost the partition cannot overwrite the new owner's state:
//! its write fails, and it lets the partition go.

use std::collections::{BTreeMap, HashMap};

use async_nats::jetstream::kv::{self, UpdateErrorKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Blobs larger than this are split into chunks of this size (JetStream's
/// default message limit is 1 MiB).
const CHUNK: usize = 512 * 1024;

/// One partition's state: where it is, and each handler's values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionState {
    /// The stream sequence of the last message the state covers (0: none).
    pub seq: u64,
    /// Each handler's values, by `tenant/name`.
    pub handlers: BTreeMap<String, HashMap<String, Vec<u8>>>,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

fn take_u32(b: &mut &[u8]) -> Option<u32> {
    take(b, 4).map(|x| u32::from_le_bytes(x.try_into().expect("4 bytes")))
}

fn take_bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = take_u32(b)? as usize;
    take(b, n)
}

impl PartitionState {
    /// The blob: the sequence (8 bytes, little-endian), the handler count,
    /// then each handler's name, key count, and keys and values, every
    /// string and value prefixed by its length (4 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&(self.handlers.len() as u32).to_le_bytes());
        for (name, values) in &self.handlers {
            put_bytes(&mut out, name.as_bytes());
            out.extend_from_slice(&(values.len() as u32).to_le_bytes());
            let mut keys: Vec<&String> = values.keys().collect();
            keys.sort();
            for k in keys {
                put_bytes(&mut out, k.as_bytes());
                put_bytes(&mut out, &values[k]);
            }
        }
        out
    }

    /// Reads a blob [`Self::encode`] wrote.
    pub fn decode(mut b: &[u8]) -> Option<PartitionState> {
        let b = &mut b;
        let seq = u64::from_le_bytes(take(b, 8)?.try_into().ok()?);
        let mut handlers = BTreeMap::new();
        for _ in 0..take_u32(b)? {
            let name = String::from_utf8(take_bytes(b)?.to_vec()).ok()?;
            let mut values = HashMap::new();
            for _ in 0..take_u32(b)? {
                let k = String::from_utf8(take_bytes(b)?.to_vec()).ok()?;
                values.insert(k, take_bytes(b)?.to_vec());
            }
            handlers.insert(name, values);
        }
        b.is_empty().then_some(PartitionState { seq, handlers })
    }
}

/// The head of a partition's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The worker that wrote it.
    pub holder: String,
    /// The sequence the state covers.
    pub seq: u64,
    /// The generation of the chunks (0: the blob is inline).
    pub generation: u64,
    /// How many chunks.
    pub chunks: u32,
}

/// The key of partition `p`'s head.
pub fn head_key(group: &str, p: u32) -> String {
    format!("{group}.p{p}")
}

fn chunk_key(group: &str, p: u32, generation: u64, i: u32) -> String {
    format!("{group}.p{p}.g{generation}.{i}")
}

/// A head's line and what follows it (the blob, when inline).
pub(crate) fn split_head(v: &[u8]) -> anyhow::Result<(Head, &[u8])> {
    let at = v
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| anyhow::anyhow!("a state head without its line"))?;
    let head: Head = serde_json::from_slice(&v[..at])?;
    Ok((head, &v[at + 1..]))
}

/// A partition's state as the bucket holds it, and the revision to write
/// the next one at.
pub struct Stored {
    /// The state.
    pub state: PartitionState,
    /// Its head.
    pub head: Option<Head>,
    revision: Option<u64>,
}

/// Reads partition `p`'s state (empty if none was written).
pub async fn load(kv: &kv::Store, group: &str, p: u32) -> anyhow::Result<Stored> {
    let key = head_key(group, p);
    let Some(entry) = kv.entry(&key).await? else {
        return Ok(Stored {
            state: PartitionState::default(),
            head: None,
            revision: None,
        });
    };
    if entry.operation != kv::Operation::Put {
        return Ok(Stored {
            state: PartitionState::default(),
            head: None,
            revision: Some(entry.revision),
        });
    }
    let (head, inline) = split_head(&entry.value)?;
    let blob = if head.generation == 0 {
        inline.to_vec()
    } else {
        let mut blob = Vec::new();
        for i in 0..head.chunks {
            let k = chunk_key(group, p, head.generation, i);
            let part = kv
                .get(&k)
                .await?
                .ok_or_else(|| anyhow::anyhow!("state chunk {k} of partition {p} is missing"))?;
            blob.extend_from_slice(&part);
        }
        blob
    };
    let state = PartitionState::decode(&blob)
        .ok_or_else(|| anyhow::anyhow!("the state of partition {p} in bucket {} is unreadable", kv.name))?;
    Ok(Stored {
        state,
        head: Some(head),
        revision: Some(entry.revision),
    })
}

/// Someone else wrote the partition's head: it is theirs now.
#[derive(Debug, thiserror::Error)]
#[error("partition {0}'s state was written by another worker: it is theirs now")]
pub struct Taken(pub u32);

impl Stored {
    /// Writes `state` as `holder`'s by compare-and-set on the head, after
    /// its chunks if it needs them; the chunks of the state it replaces are
    /// deleted afterwards. Fails with [`Taken`] if another worker wrote the
    /// head since.
    pub async fn write(
        &mut self,
        kv: &kv::Store,
        group: &str,
        p: u32,
        holder: &str,
        state: PartitionState,
    ) -> anyhow::Result<()> {
        let blob = state.encode();
        let old = self.head.clone();
        let (generation, chunks) = if blob.len() <= CHUNK {
            (0, 0)
        } else {
            let generation = old.as_ref().map_or(0, |h| h.generation) + 1;
            let mut n = 0;
            for part in blob.chunks(CHUNK) {
                kv.put(chunk_key(group, p, generation, n), Bytes::copy_from_slice(part))
                    .await?;
                n += 1;
            }
            (generation, n)
        };
        let head = Head {
            holder: holder.to_owned(),
            seq: state.seq,
            generation,
            chunks,
        };
        let mut value = serde_json::to_vec(&head)?;
        value.push(b'\n');
        if generation == 0 {
            value.extend_from_slice(&blob);
        }
        let key = head_key(group, p);
        let written = match self.revision {
            Some(r) => kv.update(&key, value.into(), r).await.map_err(|e| {
                if e.kind() == UpdateErrorKind::WrongLastRevision {
                    anyhow::Error::new(Taken(p))
                } else {
                    anyhow::anyhow!("writing the state of partition {p}: {e}")
                }
            })?,
            None => kv.create(&key, value.into()).await.map_err(|e| {
                if e.kind() == kv::CreateErrorKind::AlreadyExists {
                    anyhow::Error::new(Taken(p))
                } else {
                    anyhow::anyhow!("writing the state of partition {p}: {e}")
                }
            })?,
        };
        self.revision = Some(written);
        self.state = state;
        self.head = Some(head);
        if let Some(old) = old
            && old.generation != 0
            && old.generation != generation
        {
            for i in 0..old.chunks {
                let _ = kv.purge(chunk_key(group, p, old.generation, i)).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip() {
        let mut s = PartitionState {
            seq: 42,
            ..Default::default()
        };
        s.handlers.insert(
            "t/a".into(),
            HashMap::from([("k".into(), b"\x00\x01".to_vec()), ("total".into(), vec![])]),
        );
        s.handlers.insert("t/b".into(), HashMap::new());
        let blob = s.encode();
        assert_eq!(PartitionState::decode(&blob), Some(s));
        assert_eq!(PartitionState::decode(&blob[..blob.len() - 1]), None);
    }
}
