//! Encrypted hand-over: every mailbox, its history, its sign-in dates and its secrets in one
//! file encrypted with a passphrase, for a colleague or a new machine to take over without
//! signing every mailbox in again.
//!
//! The file is the age format (age-encryption.org/v1) with one scrypt passphrase stanza, made
//! with the `age` crate: ChaCha20-Poly1305 in 64 KiB chunks, each authenticated, with a header
//! MAC, so a wrong passphrase fails at the header and a truncated or altered file fails before
//! any of it is used. Inside is one JSON document ([`FORMAT`], version [`VERSION`]).
//!
//! Invariants (why):
//! - the plaintext exists only in memory, in buffers wiped on drop (`SecretSlice`): it holds
//!   refresh tokens, client secrets and certificate keys, so it never touches a file;
//! - each secret is read, and written on import, under the mailbox's lock (see [`crate::lock`]):
//!   a refresh in another program can neither rotate a token between the read and the export,
//!   nor write its successor over an imported one;
//! - an import reads, decrypts and checks the whole file before it changes anything: a wrong
//!   passphrase or a damaged file changes nothing.

use std::io::Read;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::{Deserialize, Serialize};

use crate::app::{App, AppError};
use crate::health::HealthRecord;
use crate::mailbox::Mailbox;
use crate::secret::{self, SecretKind};
use crate::store::StoreError;

pub const FORMAT: &str = "mailbox-auth-handover";
pub const VERSION: u32 = 1;
/// The bytes every age file starts with.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";
/// History records carried per mailbox (the store keeps about as many).
const HISTORY_LIMIT: usize = 10_000;
/// A passphrase shorter than this is refused for an export: the file travels.
pub const MIN_PASSPHRASE_CHARS: usize = 12;
/// The largest hand-over file read (far above any real one; a bound against a wrong file).
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// The kinds of secret a mailbox may have, as carried in the file.
const KINDS: [SecretKind; 3] = [SecretKind::RefreshToken, SecretKind::ClientSecret, SecretKind::ClientCertificate];

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("passphrase: {0}")]
    Passphrase(String),
    #[error(
        "the passphrase does not open {file} (wrong passphrase, or the file's header is damaged): nothing was imported"
    )]
    WrongPassphrase { file: String },
    #[error("{file} is damaged or incomplete ({detail}): nothing was imported")]
    Damaged { file: String, detail: String },
    #[error("{file} is not a Mailbox Auth hand-over file ({detail}): nothing was imported")]
    NotHandover { file: String, detail: String },
    #[error("cannot encrypt the hand-over: {0}")]
    Encrypt(String),
    #[error("mailbox `{name}` in {file}: {detail}; nothing was imported")]
    Invalid { file: String, name: String, detail: String },
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<StoreError> for HandoverError {
    fn from(e: StoreError) -> Self {
        HandoverError::App(e.into())
    }
}
impl From<secret::SecretError> for HandoverError {
    fn from(e: secret::SecretError) -> Self {
        HandoverError::App(e.into())
    }
}
impl From<crate::lock::LockError> for HandoverError {
    fn from(e: crate::lock::LockError) -> Self {
        HandoverError::App(e.into())
    }
}

/// The sign-in dates, as stored (no token).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SignIn {
    issued_at: DateTime<Utc>,
    refreshed_at: Option<DateTime<Utc>>,
    rotated_at: Option<DateTime<Utc>>,
    idle_lifetime_secs: Option<u64>,
}

/// One mailbox's secrets. Custom `Debug`: never printed.
#[derive(Default, Serialize, Deserialize)]
struct Secrets {
    refresh_token: Option<String>,
    client_secret: Option<String>,
    client_certificate: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets([redacted])")
    }
}

impl Secrets {
    fn slot(&mut self, kind: SecretKind) -> &mut Option<String> {
        match kind {
            SecretKind::RefreshToken => &mut self.refresh_token,
            SecretKind::ClientSecret => &mut self.client_secret,
            SecretKind::ClientCertificate => &mut self.client_certificate,
            // Not a mailbox's secret: never in KINDS.
            SecretKind::AlertWebhook => unreachable!("the alert webhook is not carried in a hand-over"),
        }
    }
}

// Why: the strings are copies of secrets; wipe them when the document is dropped.
impl Drop for Secrets {
    fn drop(&mut self) {
        use secrecy::zeroize::Zeroize;
        for s in [&mut self.refresh_token, &mut self.client_secret, &mut self.client_certificate] {
            s.zeroize();
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    mailbox: Mailbox,
    /// Oldest first.
    history: Vec<HealthRecord>,
    signin: Option<SignIn>,
    secrets: Secrets,
}

#[derive(Debug, Serialize, Deserialize)]
struct Document {
    format: String,
    version: u32,
    created_at: DateTime<Utc>,
    app_version: String,
    mailboxes: Vec<Entry>,
}

/// What an export wrote (no secret).
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub mailboxes: Vec<String>,
    /// Mailboxes whose stored sign-in or credential went into the file.
    pub with_secrets: Vec<String>,
}

/// What importing one mailbox did.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Imported {
    pub name: String,
    /// A mailbox of that name existed: its settings, sign-in dates and secrets were replaced.
    pub replaced: bool,
    /// The secrets the file carried for it (`refresh_token`, `client_secret`, `client_certificate`).
    pub secrets: Vec<&'static str>,
    /// History records added (those already present are not added twice).
    pub history_added: usize,
}

/// Whether `bytes` begin like an age file (a hand-over rather than a CSV).
pub fn is_age(bytes: &[u8]) -> bool {
    bytes.starts_with(AGE_MAGIC)
}

/// Reads a hand-over file, bounded in size.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, HandoverError> {
    let file = path.display().to_string();
    let f = std::fs::File::open(path)
        .map_err(|e| HandoverError::NotHandover { file: file.clone(), detail: format!("cannot open it: {e}") })?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| HandoverError::Damaged { file: file.clone(), detail: format!("cannot read it: {e}") })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(HandoverError::NotHandover { file, detail: format!("it is larger than {MAX_FILE_BYTES} bytes") });
    }
    Ok(bytes)
}

/// Checks a passphrase chosen for an export.
pub fn check_new_passphrase(p: &SecretString) -> Result<(), HandoverError> {
    let n = p.expose_secret().chars().count();
    if n < MIN_PASSPHRASE_CHARS {
        return Err(HandoverError::Passphrase(format!(
            "use at least {MIN_PASSPHRASE_CHARS} characters (this one has {n}); the file carries every sign-in"
        )));
    }
    Ok(())
}

/// Encrypts `plaintext` to a passphrase (age, scrypt).
fn encrypt(passphrase: SecretString, plaintext: &[u8]) -> Result<Vec<u8>, HandoverError> {
    let recipient = age::scrypt::Recipient::new(passphrase);
    age::encrypt(&recipient, plaintext).map_err(|e| HandoverError::Encrypt(e.to_string()))
}

/// Decrypts an age file with a passphrase; the errors tell a wrong passphrase from damage.
fn decrypt(file: &str, passphrase: SecretString, bytes: &[u8]) -> Result<SecretSlice<u8>, HandoverError> {
    use age::DecryptError as D;
    let damaged = |detail: String| HandoverError::Damaged { file: file.to_string(), detail };
    if !bytes.starts_with(AGE_MAGIC) {
        return Err(HandoverError::NotHandover {
            file: file.to_string(),
            detail: "it is not an age-encrypted file".into(),
        });
    }
    let map = |e: D| match e {
        D::NoMatchingKeys | D::KeyDecryptionFailed => HandoverError::WrongPassphrase { file: file.to_string() },
        D::ExcessiveWork { .. } => HandoverError::NotHandover {
            file: file.to_string(),
            detail: "its passphrase needs more work than this program allows".into(),
        },
        D::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => damaged("it ends too early".into()),
        D::Io(e) => damaged(e.to_string()),
        D::DecryptionFailed => damaged("its contents do not authenticate".into()),
        D::InvalidHeader => damaged("its header is not readable".into()),
        D::InvalidMac => damaged("its header was altered".into()),
        other => damaged(other.to_string()),
    };
    let decryptor = age::Decryptor::new_buffered(bytes).map_err(map)?;
    if !decryptor.is_scrypt() {
        return Err(HandoverError::NotHandover {
            file: file.to_string(),
            detail: "it is encrypted to a key, not to a passphrase".into(),
        });
    }
    let identity = age::scrypt::Identity::new(passphrase);
    // At this step the passphrase unwraps the file key: a failure to decrypt it means a wrong
    // passphrase (or a damaged stanza, which no passphrase opens either).
    let mut reader = decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)).map_err(|e| match e {
        D::DecryptionFailed => HandoverError::WrongPassphrase { file: file.to_string() },
        other => map(other),
    })?;
    let mut out = Vec::new();
    if let Err(e) = reader.read_to_end(&mut out) {
        use secrecy::zeroize::Zeroize;
        out.zeroize();
        // The STREAM construction reports a truncated or altered chunk as an I/O error.
        return Err(damaged(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "it ends too early".into(),
            _ => format!("its contents do not authenticate: {e}"),
        }));
    }
    Ok(SecretSlice::from(out))
}

impl App {
    /// Every mailbox, its history, sign-in dates and secrets, encrypted to `passphrase`. Each
    /// mailbox's secrets are read under its lock. Returns the file's bytes (ciphertext only).
    pub async fn export_handover(&self, passphrase: SecretString) -> Result<(Vec<u8>, Exported), HandoverError> {
        check_new_passphrase(&passphrase)?;
        let mut doc = Document {
            format: FORMAT.into(),
            version: VERSION,
            created_at: Utc::now(),
            app_version: env!("CARGO_PKG_VERSION").into(),
            mailboxes: Vec::new(),
        };
        let mut with_secrets = Vec::new();
        for m in self.store().list()? {
            let mut history = self.store().history(&m.name, HISTORY_LIMIT)?;
            history.reverse();
            let signin = self.store().signin(&m.name)?.map(|d| SignIn {
                issued_at: d.issued_at,
                refreshed_at: d.refreshed_at,
                rotated_at: d.rotated_at,
                idle_lifetime_secs: d.idle_lifetime.map(|l| l.as_secs()),
            });
            let mut secrets = Secrets::default();
            {
                let _lock = self.tokens().locks().acquire(&m.name).await?;
                for kind in KINDS {
                    *secrets.slot(kind) =
                        secret::get(self.secret_store(), &m.name, kind).await?.map(|s| s.expose_secret().to_string());
                }
            }
            if KINDS.iter().any(|k| secrets.slot(*k).is_some()) {
                with_secrets.push(m.name.clone());
            }
            doc.mailboxes.push(Entry { mailbox: m, history, signin, secrets });
        }
        let names = doc.mailboxes.iter().map(|e| e.mailbox.name.clone()).collect();
        let plaintext = SecretSlice::from(
            serde_json::to_vec(&doc).map_err(|e| HandoverError::Encrypt(format!("cannot write the document: {e}")))?,
        );
        drop(doc);
        let bytes = tokio::task::spawn_blocking(move || encrypt(passphrase, plaintext.expose_secret()))
            .await
            .map_err(|e| HandoverError::Encrypt(e.to_string()))??;
        Ok((bytes, Exported { mailboxes: names, with_secrets }))
    }

    /// Reads a hand-over file completely (decrypts, parses, validates every mailbox) and only
    /// then imports it: settings, sign-in dates and secrets replace those of a mailbox of the
    /// same name (secrets written under its lock; kinds the file does not carry are deleted),
    /// history records not yet present are added.
    pub async fn import_handover(
        &self,
        file: &str,
        bytes: Vec<u8>,
        passphrase: SecretString,
    ) -> Result<Vec<Imported>, HandoverError> {
        let name = file.to_string();
        let plaintext = tokio::task::spawn_blocking(move || decrypt(&name, passphrase, &bytes))
            .await
            .map_err(|e| HandoverError::Damaged { file: file.to_string(), detail: e.to_string() })??;
        let not = |detail: String| HandoverError::NotHandover { file: file.to_string(), detail };
        let doc: Document = serde_json::from_slice(plaintext.expose_secret())
            .map_err(|e| not(format!("its contents are not a hand-over document: {e}")))?;
        drop(plaintext);
        if doc.format != FORMAT {
            return Err(not(format!("its format is `{}`", doc.format)));
        }
        if doc.version != VERSION {
            return Err(not(format!(
                "it is version {} of the format; this program reads version {VERSION}",
                doc.version
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for e in &doc.mailboxes {
            let invalid = |detail: String| HandoverError::Invalid {
                file: file.to_string(),
                name: e.mailbox.name.clone(),
                detail,
            };
            if !seen.insert(e.mailbox.name.clone()) {
                return Err(invalid("it appears twice".into()));
            }
            e.mailbox
                .validate()
                .map_err(|errs| invalid(errs.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("; ")))?;
            if let Some(c) = &e.secrets.client_certificate {
                crate::appcert::parse(&e.mailbox.name, &SecretString::from(c.clone()))
                    .map_err(|err| invalid(err.to_string()))?;
            }
            if e.history.iter().any(|r| r.mailbox != e.mailbox.name) {
                return Err(invalid("its history names another mailbox".into()));
            }
        }
        let mut out = Vec::new();
        for mut e in doc.mailboxes {
            let name = e.mailbox.name.clone();
            let replaced = match self.store().get(&name) {
                Ok(_) | Err(StoreError::Corrupt { .. }) => true,
                Err(StoreError::NotFound(_)) => false,
                Err(err) => return Err(err.into()),
            };
            let mut carried = Vec::new();
            {
                let _lock = self.tokens().locks().acquire(&name).await?;
                for kind in KINDS {
                    match e.secrets.slot(kind).take() {
                        Some(v) => {
                            secret::set(self.secret_store(), &name, kind, SecretString::from(v)).await?;
                            carried.push(kind.as_str());
                        }
                        // Replacing: a secret of the old mailbox must not outlive its settings.
                        None => secret::delete(self.secret_store(), &name, kind).await?,
                    }
                }
                self.store().save(&e.mailbox)?;
                self.store().forget_signin(&name)?;
                if let Some(s) = &e.signin {
                    self.store().note_signin(&name, s.issued_at, s.idle_lifetime_secs)?;
                    if let Some(r) = s.rotated_at {
                        self.store().note_refresh(&name, r, true, None)?;
                    }
                    if let Some(r) = s.refreshed_at {
                        self.store().note_refresh(&name, r, false, None)?;
                    }
                } else if carried.contains(&SecretKind::RefreshToken.as_str()) {
                    // A sign-in from before the dates were kept: the keyring decides.
                    self.store().set_signin_known(&name, false)?;
                }
            }
            // Nothing cached from the old settings may serve the new ones.
            self.tokens().clear(&name).await;
            let present = self.store().history(&name, HISTORY_LIMIT)?;
            let mut history_added = 0;
            for r in &e.history {
                if !present.iter().any(|p| p.at == r.at && p.check == r.check) {
                    self.store().record(r)?;
                    history_added += 1;
                }
            }
            out.push(Imported { name, replaced, secrets: carried, history_added });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    /// A low scrypt work factor keeps unit tests fast; the format is the same.
    fn quick_encrypt(p: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut r = age::scrypt::Recipient::new(pass(p));
        r.set_work_factor(10);
        age::encrypt(&r, plaintext).unwrap()
    }

    #[test]
    fn round_trip_and_wrong_passphrase_and_damage_are_told_apart() {
        let plain = vec![7u8; 200_000];
        let file = quick_encrypt("correct horse battery", &plain);
        assert_eq!(decrypt("f", pass("correct horse battery"), &file).unwrap().expose_secret(), &plain[..]);
        assert!(matches!(decrypt("f", pass("wrong horse battery"), &file), Err(HandoverError::WrongPassphrase { .. })));
        // Cut anywhere past the header: damaged, never a partial plaintext.
        for cut in [file.len() - 1, file.len() - 100, file.len() / 2, 200] {
            let e = decrypt("f", pass("correct horse battery"), &file[..cut]).unwrap_err();
            assert!(matches!(e, HandoverError::Damaged { .. }), "cut at {cut}: {e:?}");
        }
        let mut flipped = file.clone();
        let i = flipped.len() - 10;
        flipped[i] ^= 1;
        assert!(matches!(decrypt("f", pass("correct horse battery"), &flipped), Err(HandoverError::Damaged { .. })));
        assert!(matches!(decrypt("f", pass("x"), b"name,email\n"), Err(HandoverError::NotHandover { .. })));
    }

    #[tokio::test]
    async fn a_carried_sign_in_without_dates_is_listed_from_the_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = std::sync::Arc::new(crate::secret::MemoryStore::default());
        let app = App::open(dir.path(), keyring.clone()).unwrap();
        let entry = |name: &str, dated: bool| {
            let mut mailbox = crate::mailbox::sample();
            mailbox.name = name.into();
            let signin = dated.then(|| SignIn {
                issued_at: Utc::now(),
                refreshed_at: None,
                rotated_at: None,
                idle_lifetime_secs: None,
            });
            let mut secrets = Secrets::default();
            secrets.refresh_token = Some(format!("rt-{name}"));
            Entry { mailbox, history: vec![], signin, secrets }
        };
        // Both names exist here already, signed out: the import replaces them.
        for name in ["dated", "undated"] {
            let mut m = crate::mailbox::sample();
            m.name = name.into();
            app.create(&m).await.unwrap();
        }
        let doc = Document {
            format: FORMAT.into(),
            version: VERSION,
            created_at: Utc::now(),
            app_version: "test".into(),
            mailboxes: vec![entry("dated", true), entry("undated", false)],
        };
        let file = quick_encrypt("correct horse battery", &serde_json::to_vec(&doc).unwrap());
        app.import_handover("f", file, pass("correct horse battery")).await.unwrap();
        assert!(app.store().signin_known("dated").unwrap());
        assert!(!app.store().signin_known("undated").unwrap(), "its keyring entry decides");
        let views = app.list().await.unwrap();
        assert!(views.iter().all(|v| v.authenticated), "{views:?}");
    }

    #[test]
    fn short_passphrases_are_refused_for_an_export() {
        assert!(check_new_passphrase(&pass("short")).is_err());
        assert!(check_new_passphrase(&pass("twelve chars")).is_ok());
    }

    #[test]
    fn secrets_never_print() {
        let mut s = Secrets::default();
        s.refresh_token = Some("rt-SECRET".into());
        assert!(!format!("{s:?}").contains("SECRET"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// Whatever bytes arrive, decryption ends in an error or the plaintext, never a panic.
        #[test]
        fn any_bytes_are_an_error_not_a_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut bytes = AGE_MAGIC.to_vec();
            bytes.extend_from_slice(&tail);
            proptest::prop_assert!(decrypt("f", pass("passphrase!!"), &bytes).is_err());
        }
    }
}
