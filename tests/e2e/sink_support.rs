//! What the message-broker sink tests share: batches of numbered messages,
//! and writing one as the pipeline does.

use std::time::{Duration, Instant};

use rowhook::sink::{Message, Sink};

/// `n` messages `<name><i>`, keys cycling over 10, ids `<name>:<i>:0`.
pub fn batch(name: &str, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message {
            key: Some((i % 10).to_string().into_bytes()),
            payload: format!("{name}{i}").into_bytes(),
            id: format!("{name}:{i}:0"),
            index: 0,
        })
        .collect()
}

/// Writes as the pipeline does: retries while unavailable, up to `within`;
/// returns how many tries failed.
pub async fn write_until_delivered<S: Sink>(sink: &mut S, batch: &[Message], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut failures = 0;
    loop {
        match sink.write_batch(batch).await {
            Ok(()) => return failures,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("not delivered: {e}"),
        }
    }
}
