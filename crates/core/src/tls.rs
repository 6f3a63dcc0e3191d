//! TLS for talking to mail servers (IMAP, POP3, SMTP): rustls (TLS 1.2, RFC 5246, and
//! TLS 1.3, RFC 8446) with the `ring` provider, certificates verified against the system roots
//! plus the mailbox's optional extra CA (PEM, RFC 7468), and the server identity checked
//! against the host name or IP address (RFC 9525, webpki).
//!
//! Verification is never turned off: a bearer token sent to an unverified server can be
//! replayed by whoever holds that server. A mailbox behind a private CA names that CA in
//! `ca_file` instead. Handshake failures are classified (untrusted issuer, wrong host name,
//! expired, other) so the admin is told which of them it was.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Setting up TLS failed before any byte was sent.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot use the CA certificate file {path}: {detail}")]
    CaFile { path: PathBuf, detail: String },
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("cannot set up TLS: {0}")]
    Config(String),
}

impl TlsError {
    /// Stable machine code: `ca_file` or `tls`.
    pub fn code(&self) -> &'static str {
        match self {
            TlsError::CaFile { .. } => "ca_file",
            TlsError::ServerName(_) | TlsError::Config(_) => "tls",
        }
    }
}

/// A client configuration trusting the system roots and every certificate in `ca_file`.
///
/// Built once per process and per `ca_file` (as it is on disk: a file that changed is read
/// again) and shared: reading the system store means opening and decoding every root
/// certificate, which for a bulk check of hundreds of mailboxes used to dominate the client's
/// CPU. A file that cannot be used is reported every time, never cached.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let key = match ca_file {
        None => None,
        Some(path) => {
            // The same checks as reading it, so a FIFO or device is refused before any open.
            if let Some(p) = ca_file_problem(path) {
                return Err(TlsError::CaFile { path: path.to_path_buf(), detail: p });
            }
            let md = std::fs::metadata(path)
                .map_err(|e| TlsError::CaFile { path: path.to_path_buf(), detail: e.to_string() })?;
            Some((path.to_path_buf(), md.modified().ok(), md.len()))
        }
    };
    let cache = CONFIGS.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(Arc::clone(c));
    }
    let config = build_config(ca_file)?;
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    // A handful of CA files in practice; a bound all the same (files edited again and again).
    if cache.len() >= MAX_CACHED_CONFIGS {
        cache.clear();
    }
    Ok(Arc::clone(cache.entry(key).or_insert(config)))
}

/// A `ca_file` as it is on disk (path, modification time, size), or none.
type ConfigKey = Option<(PathBuf, Option<std::time::SystemTime>, u64)>;

static CONFIGS: OnceLock<Mutex<HashMap<ConfigKey, Arc<ClientConfig>>>> = OnceLock::new();
const MAX_CACHED_CONFIGS: usize = 64;

/// The system's root certificates, read once per process.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        // Some system stores hold files or certificates that cannot be read or parsed; the rest
        // are still good, and a private CA may come from `ca_file` anyway.
        let native = rustls_native_certs::load_native_certs();
        if !native.errors.is_empty() {
            tracing::debug!(errors = native.errors.len(), "some system root certificates could not be loaded");
        }
        let (_added, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            tracing::debug!(ignored, "some system root certificates could not be parsed");
        }
        roots
    })
}

fn build_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = system_roots().clone();
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots.add(cert).map_err(|e| TlsError::CaFile {
                path: path.to_path_buf(),
                detail: format!("a certificate in it cannot be used as a trust anchor ({e})"),
            })?;
        }
    }
    // `ring` explicitly: the process-wide default provider is not set (and aws-lc is not built).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        // Not a weaker verifier: webpki's own, which judges every chain exactly as
        // `with_root_certificates` would; the wrapper only notes the chain for the transcript.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Noting { webpki }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// webpki's server verifier, noting the presented chain in the running probe's transcript
/// before judging it (so an untrusted or expired chain is on record too). Every decision is
/// webpki's: verification is never relaxed.
#[derive(Debug)]
struct Noting {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for Noting {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        crate::probe::transcript::note_chain(end_entity, intermediates);
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

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.webpki.root_hint_subjects()
    }
}

/// [`client_config`] on a blocking thread: reading `ca_file` (and the system roots) is file I/O
/// and must not stall the async runtime's workers.
pub async fn client_config_off_runtime(ca_file: Option<PathBuf>) -> Result<Arc<ClientConfig>, TlsError> {
    tokio::task::spawn_blocking(move || client_config(ca_file.as_deref()))
        .await
        .unwrap_or_else(|e| Err(TlsError::Config(format!("the TLS set-up task failed: {e}"))))
}

/// The largest `ca_file` read: a bundle of a few hundred PEM certificates fits easily.
pub const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// Why `ca_file` cannot be used, before reading a byte of it: it must be a regular file (not a
/// device such as `/dev/zero`, which never ends, nor a FIFO, whose open blocks until a writer
/// comes, nor a directory) of at most [`MAX_CA_FILE_BYTES`].
fn ca_file_problem(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Err(e) => Some(format!("cannot be read ({e})")),
        Ok(md) if !md.is_file() => Some("must be a regular file (not a directory, device or pipe)".into()),
        Ok(md) if md.len() > MAX_CA_FILE_BYTES => {
            Some(format!("is {} bytes; a CA certificate file is at most 1 MiB", md.len()))
        }
        Ok(_) => None,
    }
}

/// The check done when a mailbox is saved or imported, as a field error naming `ca_file`.
pub fn check_ca_file(path: &Path) -> Result<(), crate::mailbox::FieldError> {
    match ca_file_problem(path) {
        Some(p) => Err(crate::mailbox::FieldError::new("ca_file", format!("{}: {p}", path.display()))),
        None => Ok(()),
    }
}

/// Every certificate in a PEM file; other sections (keys, parameters) are skipped.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use std::io::Read;
    let err = |detail: String| TlsError::CaFile { path: path.to_path_buf(), detail };
    // Why: the path comes from a CSV or the editor; checked before opening (opening a FIFO
    // would block), and the read is capped in case the file was swapped since.
    if let Some(p) = ca_file_problem(path) {
        return Err(err(p));
    }
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut pem))
        .map_err(|e| err(e.to_string()))?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(err("it is larger than 1 MiB".into()));
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("it is not a valid PEM file ({e})")))?;
    if certs.is_empty() {
        return Err(err("it contains no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}

/// The server name to verify: a DNS name, or an IP address (checked against IP SANs).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.into()))
}

/// What kind of TLS failure a handshake error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The certificate chain does not lead to a trusted root.
    Untrusted,
    /// The certificate is not valid for the host name.
    Hostname,
    /// The certificate is expired or not yet valid.
    Expired,
    /// Anything else (protocol mismatch, alert from the server, plain text on a TLS port…).
    Other,
}

impl TlsFailure {
    /// Stable machine code: `tls_untrusted`, `tls_hostname`, `tls_expired` or `tls`.
    pub fn code(self) -> &'static str {
        match self {
            TlsFailure::Untrusted => "tls_untrusted",
            TlsFailure::Hostname => "tls_hostname",
            TlsFailure::Expired => "tls_expired",
            TlsFailure::Other => "tls",
        }
    }
}

/// Classifies a handshake error by the rustls error inside it.
pub fn classify(err: &io::Error) -> TlsFailure {
    use rustls::{CertificateError as C, Error as E};
    let Some(inner) = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return TlsFailure::Other;
    };
    match inner {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => TlsFailure::Untrusted,
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => TlsFailure::Hostname,
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => TlsFailure::Expired,
        // webpki refuses a CA certificate presented as the server's own: it is not a chain to a
        // trusted root either.
        E::InvalidCertificate(C::Other(o)) if o.to_string().contains("CaUsedAsEndEntity") => TlsFailure::Untrusted,
        _ => TlsFailure::Other,
    }
}

/// A failed TLS handshake, classified, with the TLS library's own words in `detail`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.explain())]
pub struct HandshakeError {
    pub kind: TlsFailure,
    /// The host name the certificate was checked against.
    pub host: String,
    /// The TLS library's error text, e.g. `invalid peer certificate: UnknownIssuer`.
    pub detail: String,
}

impl HandshakeError {
    /// Classifies the I/O error a handshake (tokio-rustls `connect`) returned.
    pub fn from_io(err: &io::Error, host: &str) -> Self {
        let detail = if err.kind() == io::ErrorKind::UnexpectedEof {
            "the server closed the connection during the handshake".to_string()
        } else {
            err.to_string()
        };
        Self { kind: classify(err), host: host.to_string(), detail }
    }

    /// Stable machine code, see [`TlsFailure::code`].
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    fn explain(&self) -> String {
        let d = &self.detail;
        match self.kind {
            TlsFailure::Untrusted => {
                format!(
                    "the server's certificate is not trusted: it is not signed by a known certificate authority ({d})"
                )
            }
            TlsFailure::Hostname => format!("the server's certificate is not valid for `{}` ({d})", self.host),
            TlsFailure::Expired => format!("the server's certificate has expired or is not valid yet ({d})"),
            TlsFailure::Other => format!("the TLS handshake failed ({d})"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A test CA and a server certificate it signed, for loopback TLS servers.
    pub(crate) struct TestPki {
        pub ca_pem: String,
        pub server: Arc<rustls::ServerConfig>,
    }

    /// A CA, and a leaf for `names` (DNS names or IP addresses) signed by it; `expired` dates
    /// the leaf in 2000.
    pub(crate) fn test_pki(names: &[&str], expired: bool) -> TestPki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        ca.distinguished_name.push(rcgen::DnType::CommonName, "Mailbox Auth test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();

        let mut leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        leaf.use_authority_key_identifier_extension = true;
        if expired {
            leaf.not_before = rcgen::date_time_ymd(2000, 1, 1);
            leaf.not_after = rcgen::date_time_ymd(2000, 2, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca).unwrap();

        let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        TestPki { ca_pem: ca.pem(), server: Arc::new(server) }
    }

    /// Handshakes with a loopback TLS server using `pki`, as `host`, trusting `ca_file`.
    async fn handshake(pki: &TestPki, host: &str, ca_file: Option<&Path>) -> Result<String, HandshakeError> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server.clone());
        tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"hello over TLS\n").await;
                let _ = tls.shutdown().await;
            }
        });
        let config = client_config(ca_file).unwrap();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name(host).unwrap(), tcp)
            .await
            .map_err(|e| HandshakeError::from_io(&e, host))?;
        let mut got = String::new();
        let _ = tls.read_to_string(&mut got).await;
        Ok(got)
    }

    fn write_ca(pki: &TestPki) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, &pki.ca_pem).unwrap();
        (dir, p)
    }

    #[tokio::test]
    async fn unknown_issuer_is_untrusted() {
        let pki = test_pki(&["127.0.0.1"], false);
        let e = handshake(&pki, "127.0.0.1", None).await.unwrap_err();
        assert_eq!(e.code(), "tls_untrusted", "{e}");
        assert!(e.to_string().contains("certificate is not trusted"), "{e}");
        assert!(e.detail.contains("UnknownIssuer"), "{}", e.detail);
    }

    #[tokio::test]
    async fn the_ca_file_makes_it_trusted() {
        let pki = test_pki(&["127.0.0.1", "localhost"], false);
        let (_dir, ca) = write_ca(&pki);
        assert_eq!(handshake(&pki, "127.0.0.1", Some(&ca)).await.unwrap(), "hello over TLS\n");
        assert_eq!(handshake(&pki, "localhost", Some(&ca)).await.unwrap(), "hello over TLS\n");
    }

    #[tokio::test]
    async fn wrong_name_and_expired_are_told_apart() {
        let pki = test_pki(&["mail.example.com"], false);
        let (_dir, ca) = write_ca(&pki);
        let e = handshake(&pki, "localhost", Some(&ca)).await.unwrap_err();
        assert_eq!(e.code(), "tls_hostname", "{e}");
        assert!(e.to_string().contains("not valid for `localhost`"), "{e}");

        let pki = test_pki(&["localhost"], true);
        let (_dir, ca) = write_ca(&pki);
        let e = handshake(&pki, "localhost", Some(&ca)).await.unwrap_err();
        assert_eq!(e.code(), "tls_expired", "{e}");
    }

    #[test]
    fn missing_ca_file_names_the_path() {
        let e = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert_eq!(e.code(), "ca_file");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "just text\n").unwrap();
        let e = client_config(Some(&p)).unwrap_err();
        assert_eq!(e.code(), "ca_file");
        assert!(e.to_string().contains("no PEM certificate") && e.to_string().contains("empty.pem"), "{e}");
    }

    #[test]
    fn ca_file_keys_are_skipped_certificates_kept() {
        let pki = test_pki(&["localhost"], false);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bundle.pem");
        let key = KeyPair::generate().unwrap().serialize_pem();
        std::fs::write(&p, format!("{key}{}", pki.ca_pem)).unwrap();
        assert_eq!(read_ca_file(&p).unwrap().len(), 1);
        assert!(client_config(Some(&p)).is_ok());
    }

    /// Runs `f` on a thread and fails the test if it does not end within 10 s (a hang).
    fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("reading ca_file hung")
    }

    #[test]
    fn ca_file_of_a_device_fifo_directory_or_big_file_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.pem");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; 2 * 1024 * 1024]).unwrap();
        for p in [PathBuf::from("/dev/zero"), fifo, big, dir.path().to_path_buf()] {
            let shown = p.display().to_string();
            let e = within_10s(move || client_config(Some(&p)).err()).expect("refused");
            assert_eq!(e.code(), "ca_file", "{shown}: {e}");
            assert!(e.to_string().contains(&shown), "{e}");
        }
    }

    #[tokio::test]
    async fn client_config_off_runtime_reads_the_ca_file() {
        let pki = test_pki(&["localhost"], false);
        let (_dir, path) = write_ca(&pki);
        assert!(client_config_off_runtime(Some(path)).await.is_ok());
        let e = client_config_off_runtime(Some("/dev/zero".into())).await.unwrap_err();
        assert_eq!(e.code(), "ca_file");
    }

    #[test]
    fn configurations_are_shared_per_process_and_per_ca_file() {
        let a = test_pki(&["localhost"], false);
        let b = test_pki(&["localhost"], false);
        let (_da, pa) = write_ca(&a);
        let (_db, pb) = write_ca(&b);
        let first = client_config(Some(&pa)).unwrap();
        assert!(Arc::ptr_eq(&first, &client_config(Some(&pa)).unwrap()), "the same CA file: the same configuration");
        let other = client_config(Some(&pb)).unwrap();
        assert!(!Arc::ptr_eq(&first, &other), "another CA file: another configuration");
        let system = client_config(None).unwrap();
        assert!(Arc::ptr_eq(&system, &client_config(None).unwrap()), "no CA file: one configuration");
        assert!(!Arc::ptr_eq(&system, &first));
        // The file changed on disk (another CA in it): read again, not served from the cache.
        std::fs::write(&pa, format!("{}{}", a.ca_pem, b.ca_pem)).unwrap();
        assert!(!Arc::ptr_eq(&first, &client_config(Some(&pa)).unwrap()));
        // And a file that became unusable is reported, not served from the cache.
        std::fs::remove_file(&pb).unwrap();
        assert_eq!(client_config(Some(&pb)).unwrap_err().code(), "ca_file");
    }

    #[test]
    fn the_system_roots_are_read_once() {
        let first: *const RootCertStore = system_roots();
        assert!(std::ptr::eq(first, system_roots()));
    }

    #[test]
    fn system_roots_load() {
        assert!(client_config(None).is_ok());
    }

    #[test]
    fn ip_addresses_are_server_names() {
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("::1").is_ok());
        assert!(server_name("outlook.office365.com").is_ok());
        assert!(server_name("bad host").is_err());
    }

    #[test]
    fn classifies_rustls_errors_inside_io_errors() {
        use rustls::CertificateError as C;
        let io = |e: C| io::Error::new(io::ErrorKind::InvalidData, rustls::Error::InvalidCertificate(e));
        assert_eq!(classify(&io(C::UnknownIssuer)), TlsFailure::Untrusted);
        assert_eq!(classify(&io(C::BadSignature)), TlsFailure::Untrusted);
        assert_eq!(classify(&io(C::NotValidForName)), TlsFailure::Hostname);
        assert_eq!(classify(&io(C::Expired)), TlsFailure::Expired);
        assert_eq!(classify(&io(C::NotValidYet)), TlsFailure::Expired);
        assert_eq!(classify(&io(C::Revoked)), TlsFailure::Other);
        assert_eq!(classify(&io::Error::other("x")), TlsFailure::Other);
        let eof = HandshakeError::from_io(&io::Error::from(io::ErrorKind::UnexpectedEof), "h");
        assert_eq!((eof.code(), eof.detail.as_str()), ("tls", "the server closed the connection during the handshake"));
    }
}
