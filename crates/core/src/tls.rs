//! TLS for the mail-server probes: rustls with the `ring` provider, full certificate
//! verification against the system roots plus the mailbox's optional extra CA (PEM).
//!
//! Verification is never turned off: a mailbox behind a private CA names that CA in `ca_file`.
//! Handshake failures are classified (untrusted issuer, wrong host name, expired, other) so the
//! admin is told which of them it was.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA certificate file {path}: {detail}")]
    CaFile { path: PathBuf, detail: String },
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("cannot set up TLS: {0}")]
    Config(String),
}

/// A client configuration trusting the system roots and every certificate in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    // Some system stores hold certificates rustls cannot parse; the rest are still good.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let err = |detail: String| TlsError::CaFile { path: path.to_path_buf(), detail };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| err(format!("not a PEM certificate file ({e})")))?;
        if certs.is_empty() {
            return Err(err("it contains no PEM certificate".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| err(format!("a certificate in it is not usable as a trust anchor: {e}")))?;
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server name to verify: a DNS name, or an IP address (checked against IP SANs).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.into()))
}

/// What kind of TLS failure an I/O error from a handshake is.
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

/// Classifies a handshake error by the rustls error inside it.
pub fn classify(err: &std::io::Error) -> TlsFailure {
    use rustls::{CertificateError, Error as E};
    let Some(inner) = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return TlsFailure::Other;
    };
    match inner {
        E::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => TlsFailure::Untrusted,
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => TlsFailure::Hostname,
        E::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => TlsFailure::Expired,
        E::InvalidCertificate(CertificateError::Other(o)) if o.to_string().contains("CaUsedAsEndEntity") => {
            TlsFailure::Untrusted
        }
        _ => TlsFailure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_file_names_the_path() {
        let e = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "just text\n").unwrap();
        let e = client_config(Some(&p)).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn system_roots_load() {
        assert!(client_config(None).is_ok());
    }

    #[test]
    fn ip_addresses_are_server_names() {
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("outlook.office365.com").is_ok());
        assert!(server_name("bad host").is_err());
    }

    #[test]
    fn classifies_rustls_errors_inside_io_errors() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(
            classify(&io(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))),
            TlsFailure::Untrusted
        );
        assert_eq!(
            classify(&io(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))),
            TlsFailure::Hostname
        );
        assert_eq!(classify(&io(rustls::Error::InvalidCertificate(rustls::CertificateError::Expired))), TlsFailure::Expired);
        assert_eq!(classify(&std::io::Error::other("x")), TlsFailure::Other);
    }
}
