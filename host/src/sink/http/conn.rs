//! The receiver's URL, TLS, and one HTTP/1.1 connection to it that sends
//! one request at a time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, LOCATION, RETRY_AFTER};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::sink::tls::{TlsFiles, client_config};

/// Bytes of a response body read to keep the connection for the next
/// request; a longer body closes it instead.
const DRAIN_MAX: usize = 64 << 10;
/// Bytes of a response body kept for an error message.
const KEEP: usize = 400;

/// Where requests go: an `http://` or `https://` URL without credentials.
/// It may hold a secret in its path or query (many webhook URLs do), so
/// `Debug` and [`Endpoint::origin`] show only the scheme, host and port.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://`.
    pub tls: bool,
    /// The host as written, without the brackets of an IPv6 address.
    pub host: String,
    /// The port, given or the scheme's.
    pub port: u16,
    /// The `Host` header: the URL's authority as written.
    pub authority: String,
    /// The request target: path and query (`/` at least).
    pub target: String,
}

impl Endpoint {
    /// Checks the URL. The error never repeats the URL's path or query.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let scheme = text.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let tls = match scheme.as_deref() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(format!("`{other}://` is not an HTTP URL scheme")),
            None => return Err("is not a URL".into()),
        };
        if text.contains('#') {
            return Err("holds a fragment (`#…`), which is never sent".into());
        }
        let uri: Uri = text
            .parse()
            .map_err(|_| "is not a valid URL (host, port, path or query)".to_owned())?;
        let authority = uri.authority().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err("holds credentials".into());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("has no host".into());
        }
        let auth = authority.as_str();
        let port = match auth.rfind(':').filter(|&i| !auth[i..].contains(']')) {
            None if tls => 443,
            None => 80,
            Some(i) => match auth[i + 1..].parse::<u16>() {
                Ok(0) => return Err("has port 0".into()),
                Ok(p) => p,
                Err(_) => return Err(format!("`{}` is not a port", &auth[i + 1..])),
            },
        };
        Ok(Endpoint {
            tls,
            host: host.to_owned(),
            port,
            authority: authority.as_str().to_owned(),
            target: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        })
    }

    /// `scheme://host:port`, for messages.
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.origin())
    }
}

/// The TLS client of `files`: rustls with ring (see
/// [`crate::sink::tls::client_config`]), HTTP/1.1 by ALPN.
pub fn tls_connector(files: &TlsFiles) -> Result<TlsConnector, String> {
    let mut config = client_config(files, "server")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Why no connection was made.
#[derive(Debug)]
pub enum ConnectError {
    /// Nothing listens, the host is not found or unreachable, or it took
    /// too long: it may clear up.
    Unreachable(String),
    /// The TLS handshake failed on the certificates: it will not clear up.
    Tls(String),
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// The connection broke, or the response took too long.
    Broken(String),
    /// The server answered with something that is not HTTP/1.1.
    NotHttp(String),
}

/// What the server answered.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// `Retry-After`, if given.
    pub retry_after: Option<String>,
    /// `Location`, if given.
    pub location: Option<String>,
    /// The start of the body.
    pub body: Vec<u8>,
}

/// One HTTP/1.1 connection; its driver task ends when it is dropped.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Conn {
    /// Connects (TCP, then TLS for `https://`) within `timeout`.
    pub async fn open(at: &Endpoint, tls: Option<&TlsConnector>, timeout: Duration) -> Result<Conn, ConnectError> {
        let origin = at.origin();
        let connect = async {
            let tcp = TcpStream::connect((at.host.as_str(), at.port))
                .await
                .map_err(|e| ConnectError::Unreachable(format!("cannot connect to {origin}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            match tls {
                None => handshake(tcp).await,
                Some(tls) => {
                    let name = ServerName::try_from(at.host.clone()).map_err(|e| {
                        ConnectError::Tls(format!("{origin}: `{}` is not a TLS server name: {e}", at.host))
                    })?;
                    let stream = tls.connect(name, tcp).await.map_err(|e| {
                        if e.kind() == std::io::ErrorKind::InvalidData {
                            ConnectError::Tls(format!("TLS with {origin} failed: {e}"))
                        } else {
                            ConnectError::Unreachable(format!("TLS with {origin} was cut: {e}"))
                        }
                    })?;
                    handshake(stream).await
                }
            }
        };
        tokio::time::timeout(timeout, connect).await.unwrap_or_else(|_| {
            Err(ConnectError::Unreachable(format!(
                "connecting to {origin} took longer than {} ms",
                timeout.as_millis()
            )))
        })
    }

    /// Whether the server closed the connection (or it broke).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends `request` and reads the response within `timeout`. Returns
    /// the reply and whether the connection can take the next request.
    pub async fn send(&mut self, request: Request<Full<Bytes>>, timeout: Duration) -> Result<(Reply, bool), SendError> {
        let exchange = async {
            self.sender.ready().await.map_err(broken)?;
            let response = self.sender.send_request(request).await.map_err(broken)?;
            let header = |name: hyper::header::HeaderName| {
                response
                    .headers()
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            };
            let (retry_after, location) = (header(RETRY_AFTER), header(LOCATION));
            let status = response.status();
            let mut body = response.into_body();
            let (mut kept, mut read) = (Vec::new(), 0);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(broken)?;
                if let Ok(data) = frame.into_data() {
                    read += data.len();
                    let room = KEEP.saturating_sub(kept.len());
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                    if read > DRAIN_MAX {
                        break;
                    }
                }
            }
            Ok::<_, SendError>((
                Reply {
                    status,
                    retry_after,
                    location,
                    body: kept,
                },
                read <= DRAIN_MAX,
            ))
        };
        tokio::time::timeout(timeout, exchange).await.unwrap_or_else(|_| {
            Err(SendError::Broken(format!(
                "no response within {} ms",
                timeout.as_millis()
            )))
        })
    }
}

async fn handshake<T>(io: T) -> Result<Conn, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::Unreachable(format!("HTTP/1.1 handshake: {}", chain(&e))))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Conn { sender, driver })
}

fn broken(e: hyper::Error) -> SendError {
    if e.is_parse() || e.is_parse_status() {
        SendError::NotHttp(chain(&e))
    } else {
        SendError::Broken(chain(&e))
    }
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// Request headers as configured, each value marked sensitive (hyper then
/// keeps it out of its own debug output).
pub fn header_map(headers: &[(String, super::Secret)]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len() + 8);
    for (name, value) in headers {
        let name = hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("checked by resolve");
        let mut value = hyper::header::HeaderValue::from_str(value.expose()).expect("checked by resolve");
        value.set_sensitive(true);
        map.append(name, value);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_path() {
        let e = Endpoint::parse("https://hooks.example.com/services/T0/B0/s3cret?x=1").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.authority.as_str(), e.target.as_str()),
            (
                true,
                "hooks.example.com",
                443,
                "hooks.example.com",
                "/services/T0/B0/s3cret?x=1"
            )
        );
        assert_eq!(format!("{e:?}"), "Endpoint(https://hooks.example.com:443)");
        let e = Endpoint::parse("http://[::1]:8080").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.target.as_str()), ("::1", 8080, "/"));
        assert_eq!(e.origin(), "http://[::1]:8080");
        assert_eq!(e.authority, "[::1]:8080");
        assert_eq!(Endpoint::parse("HTTP://h").unwrap().port, 80);
        for (bad, what) in [
            ("ftp://h/x", "`ftp://` is not an HTTP URL scheme"),
            ("h:80/x", "is not a URL"),
            ("http://u:p@h/x", "holds credentials"),
            ("http://h:0/", "has port 0"),
            ("http://h:99999/", "`99999` is not a port"),
            ("http://h:/", "`` is not a port"),
            ("http://h/a b", "is not a valid URL (host, port, path or query)"),
            ("http://h/x#top", "holds a fragment (`#…`), which is never sent"),
        ] {
            assert_eq!(Endpoint::parse(bad).unwrap_err(), what, "{bad}");
        }
    }
}
