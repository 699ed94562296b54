//! TLS for the server, with tokio-rustls: the settings Rocket's own TLS listener uses (ring's
//! default cipher suites in the server's order, TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`,
//! session resumption), so clients see the same handshake whichever server answers.

use std::io;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::ServerSessionMemoryCache;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// An acceptor for the certificate chain in `cert` and the private key in `key` (PEM; the
/// key PKCS#8, PKCS#1 or SEC1). An error names the file and what is wrong with it.
pub fn acceptor(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidData, format!("bad TLS {what} {}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("certificate chain", cert, &e))?;
    if chain.is_empty() {
        return Err(bad("certificate chain", cert, &"no certificate in it"));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("private key", key, &e))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|c| c.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad TLS configuration: {e}")))?;
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(1024);
    config.ticketer =
        ring::Ticketer::new().map_err(|e| io::Error::other(format!("cannot make TLS session tickets: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
