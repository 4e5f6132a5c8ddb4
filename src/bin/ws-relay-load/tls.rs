//! The client side of `--tls`: a rustls configuration (ring, like the
//! relay) that trusts the certificates in `--tls-ca`, and the helpers the
//! loop uses to push a client's bytes through its session. rustls is sans-IO,
//! so a TLS client is the plain client with a `ClientConnection` between its
//! buffers and its socket.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Where the CA bundle is on Debian and its relatives, when `--tls-ca` is not given.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What every TLS client of a run connects with.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    /// The file of certificates it trusts, to name when a handshake fails.
    trusting: String,
}

impl TlsClient {
    /// A configuration trusting the PEM certificates in `ca` (or the system's
    /// bundle: `$SSL_CERT_FILE`, else Debian's), sending `server_name` as SNI
    /// and checking the relay's certificate against it. TLS 1.3 and 1.2, ALPN
    /// `http/1.1`, as a browser offers them for `wss://`.
    pub fn new(ca: Option<&Path>, server_name: &str) -> Result<Self, String> {
        let bundle = match ca {
            Some(path) => path.to_owned(),
            None => std::env::var_os("SSL_CERT_FILE").map_or_else(|| SYSTEM_BUNDLE.into(), Into::into),
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&bundle)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| format!("{}: {e}", bundle.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate in it", bundle.display()));
        }
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(certs.iter().cloned());
        // ring has no post-quantum key exchange, for which rustls marks it
        // deprecated; the relay uses it for the same reason (no C build).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("{}: {e}", bundle.display()))?;
        let verifier = Arc::new(Verifier { webpki, pinned: certs });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| format!("--tls-server-name {server_name}: {e}"))?;
        Ok(Self { config: Arc::new(config), server_name, trusting: bundle.display().to_string() })
    }

    /// Why a session failed, and for a certificate that is not trusted, what is.
    pub fn explain(&self, e: &rustls::Error) -> String {
        match e {
            rustls::Error::InvalidCertificate(_) => {
                format!("{e} (trusting the certificates in {}: --tls-ca names others)", self.trusting)
            }
            _ => e.to_string(),
        }
    }

    /// A new session for one connection.
    pub fn session(&self) -> Result<ClientConnection, String> {
        ClientConnection::new(self.config.clone(), self.server_name.clone()).map_err(|e| e.to_string())
    }
}

/// The web PKI's checks, except that a certificate named in `--tls-ca`
/// itself is trusted as the relay's own whatever its extensions say: a
/// self-signed test certificate made by `openssl req -x509` is marked as a
/// CA, which the web PKI refuses as a server's certificate. The handshake's
/// signatures are checked against it all the same.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pinned.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Feeds `input`, read from the socket, to `tls` and appends the plaintext
/// that comes out to `plain`. An error ends the connection.
pub fn receive(tls: &mut ClientConnection, mut input: &[u8], plain: &mut Vec<u8>) -> Result<(), rustls::Error> {
    while !input.is_empty() {
        match tls.read_tls(&mut input) {
            Ok(0) => return Err(rustls::Error::General("the TLS session took no input".into())),
            Ok(_) => {}
            Err(e) => return Err(rustls::Error::General(e.to_string())),
        }
        let state = tls.process_new_packets()?;
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            let at = plain.len();
            plain.resize(at + n, 0);
            tls.reader().read_exact(&mut plain[at..]).map_err(|e| rustls::Error::General(e.to_string()))?;
        }
    }
    Ok(())
}

/// Hands `tls` as much of `plain` as it takes and writes its records to
/// `stream` until the socket would block. Returns the plaintext bytes taken.
pub fn send(tls: &mut ClientConnection, plain: &[u8], stream: &mut impl Write) -> io::Result<usize> {
    let mut taken = 0;
    loop {
        if taken < plain.len() {
            taken += tls.writer().write(&plain[taken..])?;
        }
        if !tls.wants_write() {
            return Ok(taken);
        }
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(taken),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The protocol version and cipher suite a finished handshake agreed on.
pub fn describe(tls: &ClientConnection) -> String {
    let version = tls.protocol_version().map_or_else(|| "?".into(), |v| format!("{v:?}"));
    let suite = tls.negotiated_cipher_suite().map_or_else(|| "?".into(), |s| format!("{:?}", s.suite()));
    let alpn = tls.alpn_protocol().map_or_else(|| "none".into(), |p| String::from_utf8_lossy(p).into_owned());
    format!("{version} {suite}, ALPN {alpn}")
}
