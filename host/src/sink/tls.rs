//! What the sink kinds that connect to a server share about credentials
//! and TLS: [`Secret`], the `tls_ca_file`, `tls_cert_file` and
//! `tls_key_file` keys ([`TlsFiles`]), and, for the kinds that drive rustls
//! themselves (amqp, mqtt, http), the client config made from them
//! ([`client_config`]); what a refused server certificate means, for the
//! SQL sinks' errors ([`certificate_refusal`]); and [`percent_decode`], for
//! the credentials and names in their URLs.

use std::fmt;
use std::path::PathBuf;

use crate::problem::SinkContext;

/// A configured credential (a password, a token, a header value, an HMAC
/// key): `Debug` hides it, and nothing prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) String);

impl Secret {
    /// The secret itself, to hand to the protocol.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The TLS files of a sink: the CA certificates to check the server's
/// certificate with (the system's when `None`), and a client certificate
/// and key for mutual TLS. Paths are resolved against the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA certificates for the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and private key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    /// Resolves the keys `tls_ca_file`, `tls_cert_file` and `tls_key_file`
    /// as written; `None` when a problem was reported to `cx` (an empty
    /// path, a certificate without its key or a key without its certificate).
    pub fn resolve(
        ca_file: Option<&str>,
        cert_file: Option<&str>,
        key_file: Option<&str>,
        cx: &mut SinkContext<'_>,
    ) -> Option<TlsFiles> {
        // `None`: not set; `Some(None)`: a problem was reported.
        let ca_file = ca_file.map(|p| cx.path("tls_ca_file", p));
        let client_cert = match (cert_file, key_file) {
            (None, None) => Some(None),
            (Some(cert), Some(key)) => {
                let cert = cx.path("tls_cert_file", cert);
                let key = cx.path("tls_key_file", key);
                cert.zip(key).map(Some)
            }
            (Some(_), None) => {
                cx.problem(
                    "tls_key_file",
                    "is missing",
                    "set it to the client certificate's private key (PEM)",
                );
                None
            }
            (None, Some(_)) => {
                cx.problem("tls_cert_file", "is missing", "set it to the client certificate (PEM)");
                None
            }
        };
        Some(TlsFiles {
            ca_file: ca_file.map_or(Some(None), |p| p.map(Some))?,
            client_cert: client_cert?,
        })
    }

    /// The first of the keys that is set (`tls_ca_file`, then
    /// `tls_cert_file`), to name when TLS files are given for a connection
    /// without TLS; `None` when none is.
    pub fn first_key(&self) -> Option<&'static str> {
        if self.ca_file.is_some() {
            Some("tls_ca_file")
        } else if self.client_cert.is_some() {
            Some("tls_cert_file")
        } else {
            None
        }
    }
}

/// The rustls client config of `files`: the ring provider (the one rowhook
/// builds; no aws-lc), the roots of `ca_file` or else the system's
/// (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured), and the client
/// certificate when there is one. `peer` names the other side in errors
/// ("broker", "server"). The error names the key and the fix.
#[cfg(any(
    feature = "sink-amqp",
    feature = "sink-mqtt",
    feature = "sink-http",
    feature = "sink-kafka",
    feature = "sink-postgres"
))]
pub fn client_config(files: &TlsFiles, peer: &str) -> Result<rustls::ClientConfig, String> {
    use std::sync::Arc;

    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match &files.ca_file {
        Some(path) => {
            for c in read_certs(path, "tls_ca_file")? {
                roots
                    .add(c)
                    .map_err(|e| format!("tls_ca_file {}: {e}; give the CA's PEM certificate", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "the system has no CA certificates to check the {peer}'s certificate with; set tls_ca_file (or install ca-certificates)"
                ));
            }
        }
    }
    // rustls marks ring's provider deprecated only because its key exchange
    // is not post-quantum.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    match &files.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = read_certs(cert, "tls_cert_file")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("reading tls_key_file {}: {e}; give a PEM private key", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("tls_cert_file and tls_key_file do not go together: {e}"))
        }
    }
}

/// The PEM certificates in `path`, the file of config key `key`; at least one.
#[cfg(any(
    feature = "sink-amqp",
    feature = "sink-mqtt",
    feature = "sink-http",
    feature = "sink-kafka",
    feature = "sink-postgres"
))]
fn read_certs(path: &std::path::Path, key: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading {key} {}: {e}; give a PEM file", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} {} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// What it means when rustls refused the server's certificate somewhere in
/// `e`'s chain of causes (through `io::Error`s too): the reason and the fix,
/// naming `host` (the url's) and `tls_ca_file` when `ca_file` is set; `None`
/// for any other error.
#[cfg(any(feature = "sink-postgres", feature = "sink-mysql"))]
pub fn certificate_refusal(e: &(dyn std::error::Error + 'static), host: &str, ca_file: bool) -> Option<String> {
    use rustls::CertificateError as C;

    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(rustls::Error::InvalidCertificate(c)) = err.downcast_ref::<rustls::Error>() {
            let roots = if ca_file {
                "a CA of tls_ca_file"
            } else {
                "a CA the system trusts"
            };
            return Some(match c {
                // BadSignature: a CA of the same name, but not the one that signed it.
                C::UnknownIssuer | C::BadSignature => format!(
                    "the server's certificate is not signed by {roots}; set tls_ca_file to the CA that signed it"
                ),
                C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                    "the server's certificate does not name the url's host {host}; connect by a name or address the certificate holds"
                ),
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => format!(
                    "the server's certificate is outside its validity period ({c:?}); renew it, or check this machine's clock"
                ),
                other => format!(
                    "the server's certificate is refused ({other:?}); check tls_ca_file and the server's certificate"
                ),
            });
        }
        cause = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// Decodes the `%XX` escapes of a part of a URL (a user, a password, a
/// database or vhost); the result must be UTF-8.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let bad = || "has a bad %-escape".to_owned();
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }
}
