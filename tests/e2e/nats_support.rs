//! Private `nats-server -js` instances for the tests of the nats sink and
//! of `[cluster]`: one server on a free port with its own store, or a
//! JetStream cluster of several on local ports.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::support::temp_dir;

/// A private JetStream server on a free port.
pub struct NatsServer {
    pub port: u16,
    pub dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start(tag: &str, extra: &[&str]) -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut s = NatsServer {
            port,
            // Holds the server's store and log, and the test's config files.
            dir: temp_dir(&format!("nats-{tag}")),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        s.restart();
        s
    }

    /// A JetStream cluster of `n` servers on local ports, each with its own
    /// store, routed to one another; returns once it has a meta leader
    /// (streams can be made).
    pub fn cluster(tag: &str, n: usize) -> Vec<NatsServer> {
        let free = || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let routes: Vec<u16> = (0..n).map(|_| free()).collect();
        let all: Vec<String> = routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
        let servers: Vec<NatsServer> = (0..n)
            .map(|i| {
                let name = format!("n{i}");
                let listen = format!("nats://127.0.0.1:{}", routes[i]);
                let others: Vec<&str> = (all.iter().enumerate())
                    .filter(|(j, _)| *j != i)
                    .map(|(_, r)| r.as_str())
                    .collect();
                let others = others.join(",");
                NatsServer::start(
                    &format!("{tag}-{name}"),
                    &[
                        "--server_name",
                        &name,
                        "--cluster_name",
                        tag,
                        "--cluster",
                        &listen,
                        "--routes",
                        &others,
                    ],
                )
            })
            .collect();
        let url = servers[0].url();
        let rt = crate::sink_support::rt();
        rt.block_on(async {
            let js = admin(&url).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let made = js
                    .create_stream(jetstream::stream::Config {
                        name: "READY".into(),
                        subjects: vec!["ready.probe".into()],
                        num_replicas: n,
                        ..Default::default()
                    })
                    .await;
                if made.is_ok() {
                    let _ = js.delete_stream("READY").await;
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the JetStream cluster found no leader: {made:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        servers
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the server runs (it was not killed, or was started again).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port and store).
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.dir.join("store"))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run nats-server (apt-get install nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        // A failing test leaves the server's log to read.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub async fn admin(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.expect("connect to nats-server"))
}

/// What stream `name` holds: subject, `Nats-Msg-Id` and payload of each message, in order.
pub async fn stream_messages(url: &str, name: &str) -> Vec<(String, String, Vec<u8>)> {
    let js = admin(url).await;
    let mut stream = js.get_stream(name).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        let m = stream
            .get_raw_message(seq)
            .await
            .unwrap_or_else(|e| panic!("seq {seq} of {state:?}: {e}"));
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push((m.subject.to_string(), id, m.payload.to_vec()));
    }
    out
}
