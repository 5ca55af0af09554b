//! Connecting to PostgreSQL: a TCP connection, TLS through rustls when
//! the sink uses it, then tokio-postgres's startup and authentication. The
//! connection's task runs until the client is dropped.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, NoTls, TlsConnect, TlsStream};

use crate::sink::sql::config::SqlOptions;

/// Why a connection could not be made.
pub enum ConnectError {
    /// The TCP connection (the server is down, unreachable).
    Io(io::Error),
    /// The server's refusal, or a broken startup.
    Pg(tokio_postgres::Error),
}

/// Connects as `opts` say, over TLS when `tls` is given.
pub async fn connect(opts: &SqlOptions, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Client, ConnectError> {
    let url = &opts.url;
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(ConnectError::Io)?;
    let _ = tcp.set_nodelay(true);
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(&url.user).dbname(&url.database).application_name("rowhook");
    if let Some(p) = &url.password {
        cfg.password(p.expose());
    }
    let client = match tls {
        None => {
            cfg.ssl_mode(SslMode::Disable);
            let (client, connection) = cfg.connect_raw(tcp, NoTls).await.map_err(ConnectError::Pg)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
        Some(config) => {
            cfg.ssl_mode(SslMode::Require);
            let server = rustls::pki_types::ServerName::try_from(url.host.clone())
                .map_err(|e| ConnectError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
            let (client, connection) = cfg
                .connect_raw(tcp, RustlsConnect { config, server })
                .await
                .map_err(ConnectError::Pg)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
    };
    Ok(client)
}

/// The TLS handshake tokio-postgres runs after its `SSLRequest`.
struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    server: rustls::pki_types::ServerName<'static>,
}

impl TlsConnect<TcpStream> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: TcpStream) -> Self::Future {
        Box::pin(async move {
            let s = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.server, stream)
                .await?;
            Ok(RustlsStream(Box::new(s)))
        })
    }
}

/// A TLS stream to the server.
struct RustlsStream(Box<tokio_rustls::client::TlsStream<TcpStream>>);

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}
