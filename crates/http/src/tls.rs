//! TLS for the server: a certificate chain and its key, from PEM files, and
//! optionally the authorities whose client certificates it takes (mutual
//! TLS between the nodes of a cluster).

use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the server's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The certificate file holds no certificate.
    #[error("{0}: no certificate in it")]
    NoCertificate(String),
    /// rustls refused the certificate and key (a key that does not match,
    /// say).
    #[error("certificate and key: {0}")]
    Config(String),
    /// The client CA file holds no usable authority.
    #[error("{path}: {message}")]
    ClientCa {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
}

/// Marks a request that came over a connection whose client presented a
/// certificate the server verified against its client authorities.
#[derive(Debug, Clone, Copy)]
pub struct ClientCertified;

/// The server's TLS: what accepts a connection's handshake.
#[derive(Clone)]
pub struct Tls(pub(crate) TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Serves the certificate chain in `cert` (leaf first) with the private
    /// key in `key`, both PEM; HTTP/1.1 only, TLS 1.2 and 1.3. With
    /// `client_ca`, the server asks every client for a certificate and
    /// verifies one that is presented against those authorities (a client
    /// may present none: the routes decide what they need, see
    /// [`ClientCertified`]); one that does not verify fails the handshake.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Tls, TlsError> {
        let chain = certificates(cert)?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert.display().to_string()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(pem_error(key))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let bad = |message: String| TlsError::ClientCa {
                    path: path.display().to_string(),
                    message,
                };
                let mut roots = rustls::RootCertStore::empty();
                for ca in certificates(path)? {
                    roots.add(ca).map_err(|e| bad(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(bad("no certificate in it".into()));
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| bad(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls(TlsAcceptor::from(Arc::new(config))))
    }
}

fn pem_error(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + use<> {
    let path = path.display().to_string();
    move |e| TlsError::Pem {
        path: path.clone(),
        message: e.to_string(),
    }
}

/// Every certificate in the PEM file at `path`.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_file_iter(path)
        .map_err(pem_error(path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(path))
}
