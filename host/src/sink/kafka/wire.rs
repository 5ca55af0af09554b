//! One connection to one Kafka broker: TCP or TLS, the API versions both
//! sides speak, SASL authentication (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512),
//! and requests written and answers read in order, several in flight.
//!
//! Messages are encoded and decoded by `kafka-protocol`; framing, version
//! choice and SASL are here.

use std::fmt;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiVersionsRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Auth, Mechanism};

/// The largest response read; a longer length means the peer does not
/// speak Kafka (or is confused), and the connection is dropped.
const MAX_RESPONSE: usize = 64 << 20;

/// Why talking to a broker failed.
#[derive(Debug)]
pub enum WireError {
    /// Not reachable, cut, too slow, or an answer rowhook cannot read: a
    /// new connection may do better.
    Unavailable(String),
    /// Refused for a reason that retrying cannot fix: credentials, TLS
    /// certificates, a broker too old for an idempotent producer.
    Permanent(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Unavailable(s) | WireError::Permanent(s) => f.write_str(s),
        }
    }
}

/// TCP or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How to reach brokers: TLS, credentials, the client id, and how long a
/// connection may take.
#[derive(Clone)]
pub struct Dialer {
    /// The TLS client, when the brokers speak TLS.
    pub tls: Option<TlsConnector>,
    /// How to authenticate.
    pub auth: Auth,
    /// The `client.id` brokers log.
    pub client_id: StrBytes,
    /// The longest a connection (TCP, TLS, versions, SASL) may take.
    pub timeout: Duration,
}

/// An open, authenticated connection.
pub struct Conn {
    stream: BufWriter<Stream>,
    /// `host:port`, for messages.
    addr: String,
    client_id: StrBytes,
    next_correlation: i32,
    /// The broker's version range of each API key, by key.
    versions: Vec<Option<(i16, i16)>>,
    read: BytesMut,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Conn({})", self.addr)
    }
}

/// A request sent, its answer not read yet.
pub struct Sent {
    correlation: i32,
    version: i16,
}

impl Dialer {
    /// Connects to `host:port`, learns the broker's API versions and
    /// authenticates, within the dialer's timeout.
    pub async fn connect(&self, host: &str, port: u16) -> Result<Conn, WireError> {
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let work = async {
            let tcp = TcpStream::connect((host, port))
                .await
                .map_err(|e| WireError::Unavailable(format!("cannot connect to {addr}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let stream = match &self.tls {
                None => Stream::Plain(tcp),
                Some(tls) => {
                    let name = ServerName::try_from(host.to_owned())
                        .map_err(|e| WireError::Permanent(format!("{addr}: `{host}` is not a TLS server name: {e}")))?;
                    let s = tls.connect(name, tcp).await.map_err(|e| {
                        if e.kind() == std::io::ErrorKind::InvalidData {
                            WireError::Permanent(format!(
                                "TLS with {addr} failed: {e}; check tls_ca_file, tls_cert_file and tls_key_file"
                            ))
                        } else {
                            WireError::Unavailable(format!(
                                "TLS with {addr} was cut: {e} (does the broker speak TLS on this port?)"
                            ))
                        }
                    })?;
                    Stream::Tls(Box::new(s))
                }
            };
            let mut conn = Conn {
                stream: BufWriter::with_capacity(64 << 10, stream),
                addr: addr.clone(),
                client_id: self.client_id.clone(),
                next_correlation: 0,
                versions: Vec::new(),
                read: BytesMut::new(),
            };
            conn.learn_versions().await?;
            conn.authenticate(&self.auth).await?;
            Ok(conn)
        };
        tokio::time::timeout(self.timeout, work).await.unwrap_or_else(|_| {
            Err(WireError::Unavailable(format!(
                "connecting to {addr} took longer than {} ms",
                self.timeout.as_millis()
            )))
        })
    }
}

impl Conn {
    /// `host:port` of the broker.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The version of `R` to speak: the highest both sides know, at most
    /// `cap`.
    pub fn version<R: Request>(&self, cap: i16) -> Result<i16, WireError> {
        let ours = R::VERSIONS;
        let theirs = self
            .versions
            .get(R::KEY as usize)
            .copied()
            .flatten()
            .ok_or_else(|| self.too_old::<R>())?;
        let v = theirs.1.min(ours.max).min(cap);
        if v < theirs.0.max(ours.min) {
            return Err(self.too_old::<R>());
        }
        Ok(v)
    }

    /// Whether the broker knows `R` at all.
    pub fn knows<R: Request>(&self) -> bool {
        self.versions.get(R::KEY as usize).is_some_and(Option::is_some)
    }

    fn too_old<R: Request>(&self) -> WireError {
        WireError::Permanent(format!(
            "the broker at {} does not speak a version of API {} that rowhook can use; use Kafka 2.1 or later, or a broker compatible with it",
            self.addr,
            R::KEY
        ))
    }

    /// Writes `req` (buffered: [`Conn::flush`] sends it).
    pub async fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<Sent, WireError> {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(self.client_id.clone()));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header
            .encode(&mut frame, R::header_version(version))
            .and_then(|()| req.encode(&mut frame, version))
            .map_err(|e| WireError::Permanent(format!("encoding a request to {}: {e}", self.addr)))?;
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&frame).await.map_err(|e| self.cut(&e))?;
        Ok(Sent { correlation, version })
    }

    /// Sends what [`Conn::send`] buffered.
    pub async fn flush(&mut self) -> Result<(), WireError> {
        self.stream.flush().await.map_err(|e| self.cut(&e))
    }

    /// Reads the answer to `sent`; answers come in the order requests went.
    pub async fn receive<R: Request>(&mut self, sent: Sent) -> Result<R::Response, WireError> {
        let len = self.stream.get_mut().read_i32().await.map_err(|e| self.cut(&e))?;
        if len < 4 || len as usize > MAX_RESPONSE {
            return Err(WireError::Unavailable(format!(
                "{} sent a {len}-byte frame; is it a Kafka broker?",
                self.addr
            )));
        }
        self.read.clear();
        self.read.resize(len as usize, 0);
        self.stream
            .get_mut()
            .read_exact(&mut self.read)
            .await
            .map_err(|e| self.cut(&e))?;
        let mut buf = self.read.split().freeze();
        let garbled = |e: anyhow::Error| WireError::Unavailable(format!("reading an answer from {}: {e}", self.addr));
        let header = ResponseHeader::decode(&mut buf, R::Response::header_version(sent.version)).map_err(garbled)?;
        if header.correlation_id != sent.correlation {
            return Err(WireError::Unavailable(format!(
                "{} answered request {} when {} was due",
                self.addr, header.correlation_id, sent.correlation
            )));
        }
        R::Response::decode(&mut buf, sent.version).map_err(garbled)
    }

    /// Sends one request and reads its answer.
    pub async fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response, WireError> {
        let sent = self.send(req, version).await?;
        self.flush().await?;
        self.receive::<R>(sent).await
    }

    fn cut(&self, e: &std::io::Error) -> WireError {
        WireError::Unavailable(format!("the connection to {} broke: {e}", self.addr))
    }

    async fn learn_versions(&mut self) -> Result<(), WireError> {
        // Version 0: every broker answers it, and names its ranges.
        let answer = self.call(&ApiVersionsRequest::default(), 0).await?;
        if answer.error_code != 0 {
            return Err(WireError::Permanent(format!(
                "{} refused to list its API versions (error {}); is it a Kafka broker?",
                self.addr, answer.error_code
            )));
        }
        for k in answer.api_keys {
            let Ok(key) = usize::try_from(k.api_key) else { continue };
            if self.versions.len() <= key {
                self.versions.resize(key + 1, None);
            }
            self.versions[key] = Some((k.min_version, k.max_version));
        }
        Ok(())
    }

    async fn authenticate(&mut self, auth: &Auth) -> Result<(), WireError> {
        let Auth::Sasl {
            mechanism,
            user,
            password,
        } = auth
        else {
            return Ok(());
        };
        let v = self.version::<SaslHandshakeRequest>(1)?;
        let name = mechanism.name();
        let shake = self
            .call(
                &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(name)),
                v,
            )
            .await?;
        if shake.error_code != 0 {
            let offered: Vec<&str> = shake.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(WireError::Permanent(format!(
                "{} does not accept SASL {name} (it offers {}); set sasl_mechanism to one of those",
                self.addr,
                if offered.is_empty() {
                    "none".to_owned()
                } else {
                    offered.join(", ")
                }
            )));
        }
        let password = password.expose();
        match mechanism {
            Mechanism::Plain => {
                let mut token = Vec::with_capacity(user.len() + password.len() + 2);
                token.push(0);
                token.extend_from_slice(user.as_bytes());
                token.push(0);
                token.extend_from_slice(password.as_bytes());
                self.sasl_step(Bytes::from(token)).await?;
                Ok(())
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let mut scram = Scram::new(*mechanism, user, password);
                let first = scram.client_first();
                let server_first = self.sasl_step(Bytes::from(first)).await?;
                let last = scram
                    .client_final(&server_first)
                    .map_err(|e| WireError::Permanent(format!("SASL {name} with {}: {e}", self.addr)))?;
                let server_final = self.sasl_step(Bytes::from(last)).await?;
                if let Some(why) = server_final.strip_prefix(b"e=") {
                    return Err(self.refused(&format!("SCRAM: {}", String::from_utf8_lossy(why))));
                }
                scram.verify_server(&server_final).map_err(|e| {
                    WireError::Permanent(format!(
                        "SASL {name} with {}: {e}; the broker may not be the one you meant",
                        self.addr
                    ))
                })
            }
        }
    }

    async fn sasl_step(&mut self, bytes: Bytes) -> Result<Bytes, WireError> {
        let v = self.version::<SaslAuthenticateRequest>(2)?;
        let answer = self
            .call(&SaslAuthenticateRequest::default().with_auth_bytes(bytes), v)
            .await?;
        if answer.error_code != 0 {
            let code = kafka_protocol::error::ResponseError::try_from_code(answer.error_code)
                .map_or_else(String::new, |e| e.to_string());
            let why = answer.error_message.as_ref().map_or("", |m| m.as_str());
            return Err(self.refused(&if why.is_empty() { code } else { format!("{code}: {why}") }));
        }
        Ok(answer.auth_bytes)
    }

    fn refused(&self, why: &str) -> WireError {
        WireError::Permanent(format!(
            "{} refused the credentials ({why}); check user and password, and that the user exists for this mechanism",
            self.addr
        ))
    }
}

/// The client side of SCRAM (RFC 5802), without channel binding.
struct Scram {
    mechanism: Mechanism,
    password: String,
    /// `n=USER,r=NONCE`.
    client_first_bare: String,
    nonce: String,
    /// What the server must prove, once computed.
    server_signature: Vec<u8>,
}

impl Scram {
    fn new(mechanism: Mechanism, user: &str, password: &str) -> Scram {
        let mut raw = [0u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).expect("the system has randomness");
        let nonce = B64.encode(raw);
        let user = user.replace('=', "=3D").replace(',', "=2C");
        Scram {
            mechanism,
            password: password.to_owned(),
            client_first_bare: format!("n={user},r={nonce}"),
            nonce,
            server_signature: Vec::new(),
        }
    }

    fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    fn hmac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let alg = match self.mechanism {
            Mechanism::ScramSha512 => ring::hmac::HMAC_SHA512,
            _ => ring::hmac::HMAC_SHA256,
        };
        ring::hmac::sign(&ring::hmac::Key::new(alg, key), data)
            .as_ref()
            .to_vec()
    }

    fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(server_first).map_err(|_| "the server's first message is not UTF-8")?;
        let field = |name: &str| {
            text.split(',')
                .find_map(|f| f.strip_prefix(name))
                .ok_or_else(|| format!("the server's first message has no `{name}`"))
        };
        let nonce = field("r=")?;
        if !nonce.starts_with(&self.nonce) {
            return Err("the server's nonce does not extend ours".into());
        }
        let salt = B64
            .decode(field("s=")?)
            .map_err(|_| "the server's salt is not base64")?;
        let iterations: u32 = field("i=")?
            .parse()
            .map_err(|_| "the server's iteration count is not a number")?;
        let iterations = NonZeroU32::new(iterations).ok_or("the server's iteration count is 0")?;
        let (pbkdf, digest, len) = match self.mechanism {
            Mechanism::ScramSha512 => (ring::pbkdf2::PBKDF2_HMAC_SHA512, &ring::digest::SHA512, 64),
            _ => (ring::pbkdf2::PBKDF2_HMAC_SHA256, &ring::digest::SHA256, 32),
        };
        let mut salted = vec![0u8; len];
        ring::pbkdf2::derive(pbkdf, iterations, &salt, self.password.as_bytes(), &mut salted);
        let client_key = self.hmac(&salted, b"Client Key");
        let stored_key = ring::digest::digest(digest, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = self.hmac(stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let server_key = self.hmac(&salted, b"Server Key");
        self.server_signature = self.hmac(&server_key, auth_message.as_bytes());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    fn verify_server(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).map_err(|_| "the server's last message is not UTF-8")?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("the server refused: {e}"));
        }
        let v = text
            .split(',')
            .find_map(|f| f.strip_prefix("v="))
            .ok_or("the server's last message has no signature")?;
        match B64.decode(v) {
            Ok(sig) if sig == self.server_signature => Ok(()),
            _ => Err("the server's signature does not match the password".into()),
        }
    }
}

/// The TLS client for brokers.
pub fn tls_connector(files: &crate::sink::tls::TlsFiles) -> Result<TlsConnector, String> {
    crate::sink::tls::client_config(files, "broker").map(|c| TlsConnector::from(Arc::new(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_sha256_follows_rfc7677() {
        // The exchange of RFC 7677, section 3 (user "user", password "pencil").
        let mut s = Scram::new(Mechanism::ScramSha256, "user", "pencil");
        s.nonce = "rOprNGfwEbeRWgbNEkqO".into();
        s.client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".into();
        assert_eq!(s.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let last = s
            .client_final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.verify_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(s.verify_server(b"v=AAAA").is_err());
        assert!(
            s.verify_server(b"e=invalid-proof")
                .unwrap_err()
                .contains("invalid-proof")
        );
    }

    #[test]
    fn scram_refuses_a_nonce_it_did_not_start() {
        let mut s = Scram::new(Mechanism::ScramSha512, "a=b,c", "pw");
        assert!(s.client_first_bare.starts_with("n=a=3Db=2Cc,r="));
        let err = s.client_final(b"r=other,s=AAAA,i=4096").unwrap_err();
        assert!(err.contains("nonce"), "{err}");
    }
}
