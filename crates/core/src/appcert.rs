//! Certificate credentials for app-only access: `private_key_jwt` client authentication
//! (RFC 7523 §2.2, OpenID Connect Core §9), as Microsoft recommends over client secrets.
//!
//! [`generate`] makes a 2048-bit RSA key pair and a self-signed certificate. The private key and
//! the certificate are kept together, PEM, in ONE keyring entry
//! ([`SecretKind::ClientCertificate`](crate::secret::SecretKind)): the key never touches a file.
//! The certificate alone (public) is written as a `.cer` for the app registration
//! (Entra → App registrations → Certificates & secrets → Certificates → Upload), which shows
//! its SHA-1 thumbprint in upper-case hex: [`Certificate::thumbprint`] is that same text.
//!
//! Each token request then carries a client assertion instead of a secret: a JWT signed RS256
//! whose header names the certificate by `x5t` (base64url SHA-1 of its DER — Microsoft finds
//! the key by it, "Microsoft identity platform certificate credentials"), with `aud` = the token
//! endpoint, `iss` = `sub` = the client id, a random `jti` and a short life (`exp` 5 minutes).
//! The assertion is sent as `client_assertion` with `client_assertion_type`
//! `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
//!
//! Why hand-written JWT code: the assertion is three base64url parts and one ring signature;
//! the JWT crates would bring a second crypto stack for that. Key generation uses the `rsa`
//! crate only because ring cannot generate RSA keys; ring signs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{Datelike, NaiveDate};
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use secrecy::{ExposeSecret, SecretString};

use crate::app::AppError;
use crate::mailbox::{FieldError, Flow};
use crate::secret::{self, SecretKind};

/// How long a new certificate is valid unless asked otherwise.
pub const DEFAULT_DAYS: u32 = 365;
/// The longest validity offered: a certificate is a credential, and shorter is safer.
pub const MAX_DAYS: u32 = 3 * 365;
/// The assertion's lifetime: long enough for one token request, short enough to be useless later.
pub const ASSERTION_LIFETIME_SECS: i64 = 300;
/// RFC 7523 §2.2.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("validity: {0}")]
    Validity(String),
    #[error("cannot make the certificate: {0}")]
    Generate(String),
    /// The keyring entry is not a key and a certificate this program wrote. Names no bytes.
    #[error("the certificate credential stored for mailbox `{mailbox}` is not readable ({what}); make a new one with `mailbox-auth app-cert create {mailbox}`")]
    Unreadable { mailbox: String, what: &'static str },
    #[error("cannot sign the client assertion: {0}")]
    Sign(String),
}

/// The public part of a certificate credential, as the admin needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Certificate {
    /// DER bytes: what a `.cer` file holds.
    #[serde(skip)]
    pub der: Vec<u8>,
    /// The SHA-1 thumbprint as Entra shows it: 40 upper-case hex digits.
    pub thumbprint: String,
    /// The same digest, base64url: the assertion's `x5t` header.
    pub x5t: String,
    /// The last day the certificate is valid (UTC).
    pub not_after: NaiveDate,
    pub subject: String,
}

/// A certificate credential read from the keyring: the signing key and its certificate.
pub struct Credential {
    key: RsaKeyPair,
    certificate: Certificate,
}

// Why: the key must never print; only the certificate's public facts do.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("thumbprint", &self.certificate.thumbprint).finish_non_exhaustive()
    }
}

/// The SHA-1 digest of a certificate's DER. SHA-1 because that is what `x5t` (RFC 7515 §4.1.7)
/// and Entra's thumbprint are; it identifies the certificate, it protects nothing.
fn sha1(der: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref().to_vec()
}

/// Entra's thumbprint text of a certificate.
pub fn thumbprint(der: &[u8]) -> String {
    sha1(der).iter().map(|b| format!("{b:02X}")).collect()
}

/// The `x5t` header value of a certificate.
pub fn x5t(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(sha1(der))
}

/// Makes a key pair and a self-signed certificate valid from `today` for `days` days.
/// Returns the keyring value (key and certificate, PEM) and the certificate's public facts.
pub fn generate(mailbox: &str, days: u32, today: NaiveDate) -> Result<(SecretString, Certificate), CertError> {
    use rsa::pkcs8::EncodePrivateKey;
    if days == 0 || days > MAX_DAYS {
        return Err(CertError::Validity(format!("give 1 to {MAX_DAYS} days, not {days}")));
    }
    let rsa_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
        .map_err(|e| CertError::Generate(format!("RSA key generation failed: {e}")))?;
    // Zeroised when dropped (pkcs8's SecretDocument).
    let pkcs8 = rsa_key.to_pkcs8_der().map_err(|e| CertError::Generate(format!("PKCS#8 encoding failed: {e}")))?;
    let key_pem = rsa_key
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| CertError::Generate(format!("PKCS#8 encoding failed: {e}")))?;
    drop(rsa_key);
    let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.as_bytes()),
        &rcgen::PKCS_RSA_SHA256,
    )
    .map_err(|e| CertError::Generate(e.to_string()))?;
    let last = today + chrono::Duration::days(i64::from(days));
    let subject = format!("Mailbox Auth app-only {}", mailbox.chars().filter(|c| !c.is_control()).collect::<String>());
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| CertError::Generate(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, subject.clone());
    params.not_before = rcgen::date_time_ymd(today.year(), today.month() as u8, today.day() as u8);
    params.not_after = rcgen::date_time_ymd(last.year(), last.month() as u8, last.day() as u8);
    let cert = params.self_signed(&signer).map_err(|e| CertError::Generate(e.to_string()))?;
    let der = cert.der().to_vec();
    let stored = format!("{}{}", key_pem.as_str(), cert.pem());
    // The certificate ends at the start of `last` (00:00 UTC): the day before is its last full day.
    let not_after = last.pred_opt().unwrap_or(last);
    let certificate = Certificate { thumbprint: thumbprint(&der), x5t: x5t(&der), der, not_after, subject };
    Ok((SecretString::from(stored), certificate))
}

/// Reads a keyring value written by [`generate`].
pub fn parse(mailbox: &str, stored: &SecretString) -> Result<Credential, CertError> {
    let bad = |what| CertError::Unreadable { mailbox: mailbox.to_string(), what };
    let text = stored.expose_secret().as_bytes();
    let key = PrivatePkcs8KeyDer::from_pem_slice(text).map_err(|_| bad("no PKCS#8 private key"))?;
    let cert = CertificateDer::from_pem_slice(text).map_err(|_| bad("no certificate"))?;
    let key = RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()).map_err(|_| bad("the private key is not an RSA key"))?;
    let info = describe(mailbox, &cert)?;
    // Why: a key and a certificate that do not belong together would sign assertions the
    // identity provider refuses with a thumbprint that points at the wrong key.
    if !spki_matches(&cert, key.public().as_ref()) {
        return Err(bad("the private key does not belong to the certificate"));
    }
    Ok(Credential { key, certificate: info })
}

/// The certificate's subject and last valid day, read with x509-parser (through rcgen's
/// dependency set we already trust: rustls' webpki parses only what it verifies).
fn describe(mailbox: &str, der: &CertificateDer<'_>) -> Result<Certificate, CertError> {
    let bad = || CertError::Unreadable { mailbox: mailbox.to_string(), what: "the certificate is not valid DER" };
    let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| bad())?;
    let end = c.validity().not_after.timestamp();
    let end = chrono::DateTime::from_timestamp(end, 0).ok_or_else(bad)?;
    // The last day the certificate is valid through: its end instant, minus a second, as a date.
    let not_after = (end - chrono::Duration::seconds(1)).date_naive();
    let subject = c.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or_default().to_string();
    Ok(Certificate { thumbprint: thumbprint(der), x5t: x5t(der), der: der.to_vec(), not_after, subject })
}

/// Whether the certificate's public key is `rsa_public_key` (PKCS#1 RSAPublicKey DER, as ring
/// gives it).
fn spki_matches(der: &CertificateDer<'_>, rsa_public_key: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, c)| c.public_key().subject_public_key.data.as_ref() == rsa_public_key)
        .unwrap_or(false)
}

impl Credential {
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The signed client assertion for one token request to `token_url` (RFC 7523 §3: `aud`
    /// is the token endpoint; `iss` and `sub` are the client id).
    pub fn assertion(&self, client_id: &str, token_url: &str, now: i64) -> Result<SecretString, CertError> {
        let mut jti = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jti)
            .map_err(|_| CertError::Sign("no randomness for the assertion id".into()))?;
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5t": self.certificate.x5t });
        let claims = serde_json::json!({
            "aud": token_url,
            "iss": client_id,
            "sub": client_id,
            "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing_input.as_bytes(), &mut sig)
            .map_err(|_| CertError::Sign("the RSA signature failed".into()))?;
        Ok(SecretString::from(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))))
    }
}

/// What `app-cert create` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Created {
    pub mailbox: String,
    pub certificate: Certificate,
    /// A certificate credential was stored before and is replaced.
    pub replaced: Option<String>,
}

impl crate::app::App {
    /// Makes a certificate credential for an app-only mailbox: the key and certificate go to
    /// the keyring under the mailbox's lock (so no token request in another program meets a
    /// half-written credential), the certificate's last day becomes the mailbox's credential
    /// expiry (amber 30 days before, red after, as for a client secret).
    pub async fn create_app_cert(&self, name: &str, days: u32) -> Result<Created, AppError> {
        let mut m = self.store().get(name)?;
        if m.flow != Flow::ClientCredentials {
            return Err(AppError::Invalid(vec![FieldError::new(
                "flow",
                format!(
                    "mailbox `{name}` signs in as a user; a certificate is for app-only access (set its flow to client_credentials first)"
                ),
            )]));
        }
        let today = chrono::Utc::now().date_naive();
        let label = name.to_string();
        // Key generation is CPU work: off the async runtime.
        let (stored, certificate) = tokio::task::spawn_blocking(move || generate(&label, days, today))
            .await
            .map_err(|e| AppError::Invalid(vec![FieldError::new("certificate", e.to_string())]))?
            .map_err(|e| AppError::Invalid(vec![FieldError::new("certificate", e.to_string())]))?;
        let lock = self.tokens().locks().acquire(name).await?;
        let old = secret::get(self.secret_store(), name, SecretKind::ClientCertificate).await?;
        let replaced = old.and_then(|o| parse(name, &o).ok()).map(|c| c.certificate.thumbprint);
        secret::set(self.secret_store(), name, SecretKind::ClientCertificate, stored).await?;
        m.client_secret_expires = Some(certificate.not_after);
        self.store().save(&m)?;
        drop(lock);
        // A token bought with the old credential stays valid, but the next one uses the new.
        self.tokens().clear(name).await;
        Ok(Created { mailbox: name.to_string(), certificate, replaced })
    }

    /// The public facts of the mailbox's stored certificate (read under its lock); `None` when
    /// it has none.
    pub async fn app_cert(&self, name: &str) -> Result<Option<Certificate>, AppError> {
        self.store().get(name)?;
        let lock = self.tokens().locks().acquire(name).await?;
        let stored = secret::get(self.secret_store(), name, SecretKind::ClientCertificate).await?;
        drop(lock);
        match stored {
            None => Ok(None),
            Some(s) => parse(name, &s)
                .map(|c| Some(c.certificate))
                .map_err(|e| AppError::Invalid(vec![FieldError::new("certificate", e.to_string())])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 29).unwrap()
    }

    fn part(jwt: &str, i: usize) -> serde_json::Value {
        let p = jwt.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
    }

    #[test]
    fn a_new_certificate_signs_assertions_its_public_key_verifies() {
        let (stored, cert) = generate("support", 30, today()).unwrap();
        assert_eq!(cert.not_after, NaiveDate::from_ymd_opt(2026, 12, 28).unwrap());
        assert_eq!(cert.thumbprint.len(), 40);
        assert!(cert.thumbprint.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
        assert_eq!(URL_SAFE_NO_PAD.decode(&cert.x5t).unwrap(), sha1(&cert.der));
        let c = parse("support", &stored).unwrap();
        assert_eq!(c.certificate(), &cert, "the stored certificate is the one shown");
        let jwt = c.assertion("app-1", "https://login.example/token", 1_000).unwrap();
        let jwt = jwt.expose_secret();
        assert_eq!(part(jwt, 0), serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": cert.x5t}));
        let claims = part(jwt, 1);
        assert_eq!(claims["aud"], "https://login.example/token");
        assert_eq!((claims["iss"].as_str(), claims["sub"].as_str()), (Some("app-1"), Some("app-1")));
        assert_eq!((claims["iat"].as_i64(), claims["exp"].as_i64()), (Some(1_000), Some(1_300)));
        assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
        let other = c.assertion("app-1", "https://login.example/token", 1_000).unwrap();
        assert_ne!(part(other.expose_secret(), 1)["jti"], claims["jti"], "every assertion has its own id");
        // The signature verifies with the certificate's public key, and not after a change.
        let (_, x) = x509_parser::parse_x509_certificate(&cert.der).unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            x.public_key().subject_public_key.data.to_vec(),
        );
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        public.verify(input.as_bytes(), &sig).unwrap();
        assert!(public.verify(format!("{input}x").as_bytes(), &sig).is_err());
    }

    #[test]
    fn the_key_never_prints() {
        let (stored, _) = generate("m", 1, today()).unwrap();
        let c = parse("m", &stored).unwrap();
        let key_line = stored.expose_secret().lines().nth(1).unwrap().to_string();
        assert!(!format!("{c:?}{stored:?}").contains(&key_line));
    }

    #[test]
    fn a_key_of_another_certificate_or_garbage_is_refused_by_name() {
        let (a, _) = generate("m", 1, today()).unwrap();
        let (b, _) = generate("m", 1, today()).unwrap();
        let key_a = a.expose_secret().split("-----BEGIN CERTIFICATE-----").next().unwrap();
        let cert_b = &b.expose_secret()[b.expose_secret().find("-----BEGIN CERTIFICATE-----").unwrap()..];
        let mixed = SecretString::from(format!("{key_a}{cert_b}"));
        let e = parse("m", &mixed).unwrap_err();
        assert!(e.to_string().contains("does not belong"), "{e}");
        for junk in ["", "not pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"] {
            let e = parse("m", &SecretString::from(junk.to_string())).unwrap_err();
            assert!(e.to_string().contains("mailbox-auth app-cert create m"), "{e}");
        }
    }

    #[test]
    fn validity_is_bounded() {
        assert!(matches!(generate("m", 0, today()), Err(CertError::Validity(_))));
        assert!(matches!(generate("m", MAX_DAYS + 1, today()), Err(CertError::Validity(_))));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever a keyring entry holds — PEM markers around anything included — reading it
        /// ends in a credential or an error naming the mailbox, never a panic, never its bytes.
        #[test]
        fn any_stored_text_is_read_or_refused_by_name(
            body in "[A-Za-z0-9+/=\n]{0,400}",
            kind in proptest::sample::select(vec!["PRIVATE KEY", "CERTIFICATE", "RSA PRIVATE KEY"]),
        ) {
            let text = format!("-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n{body}");
            match parse("m", &SecretString::from(text)) {
                Ok(_) => {}
                Err(e) => {
                    let shown = e.to_string();
                    proptest::prop_assert!(shown.contains("`m`"));
                    if body.len() > 8 {
                        proptest::prop_assert!(!shown.contains(&body));
                    }
                }
            }
        }
    }

    #[test]
    fn thumbprint_is_entras_text_of_the_sha1() {
        // SHA-1("abc") = a9993e36 4706816a ba3e2571 7850c26c 9cd0d89d (FIPS 180-1 appendix A).
        assert_eq!(thumbprint(b"abc"), "A9993E364706816ABA3E25717850C26C9CD0D89D");
        assert_eq!(x5t(b"abc"), "qZk-NkcGgWq6PiVxeFDCbJzQ2J0");
    }
}
