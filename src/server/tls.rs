//! TLS in front of the core, inside the driver's own loop: rustls is sans-IO
//! like the core, so a TLS client's socket bytes go through its
//! `ServerConnection` and only plaintext reaches the core, which knows
//! nothing of TLS. The certificate and key are read from PEM files, at start
//! and again on SIGHUP (for new connections only: live ones keep theirs).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// The most bytes a TLS connection buffers on either side of rustls: what
/// the core hands it beyond this stays in the core, under the output bound.
pub(super) const BUFFER_LIMIT: usize = 64 * 1024;

/// Where the certificate chain and its private key are, in PEM.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A server configuration from `files`: TLS 1.3 and 1.2 with rustls's
/// default cipher suites, ALPN `http/1.1` (a WebSocket upgrade is HTTP/1.1),
/// no client certificates.
pub(super) fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| format!("{}: {e}", files.key.display()))?;
    // ring has no post-quantum key exchange, for which rustls 0.23.48 marks it
    // deprecated; aws-lc-rs has it but brings a C library and its build. The
    // classical groups (X25519, P-256, P-384) stay what browsers negotiate
    // with most servers today.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// True if `bytes`, the first a client sent to the TLS port, look like a
/// plain HTTP request: it gets a plain 400 that says so, which is more use
/// to whoever typed `http://` than a TLS alert.
pub(super) fn looks_like_http(bytes: &[u8]) -> bool {
    const METHODS: [&[u8]; 7] = [b"GET ", b"HEAD ", b"POST ", b"PUT ", b"OPTIONS ", b"DELETE ", b"PATCH "];
    METHODS.iter().any(|m| bytes.starts_with(m))
}
