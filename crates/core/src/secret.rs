//! Secrets — refresh tokens and client secrets — live only in the OS keyring.
//!
//! The native store of keyring 4.x is used: the Secret Service on Linux (gnome-keyring,
//! KeePassXC), the Keychain on macOS, the Credential Manager on Windows. Entries are keyed by
//! service (`mailbox-auth`, or `$MAILBOX_AUTH_KEYRING_SERVICE`) and `"<kind>:<mailbox name>"`.
//! Values come back as [`SecretString`], which never prints itself.
//!
//! Keyring calls block (D-Bus round trips, maybe an unlock prompt), so async callers go through
//! [`SecretStore`] methods inside `spawn_blocking` (see [`get`], [`set`], [`delete`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret, SecretString};

/// What kind of secret an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    RefreshToken,
    ClientSecret,
    /// The monitor's alert webhook URL (it carries the channel's credentials, as Slack's and
    /// Teams' do), kept under the fixed pseudo-mailbox name [`ALERT_WEBHOOK`].
    AlertWebhook,
    /// An app-only mailbox's certificate credential: its private key and certificate, PEM
    /// (see [`crate::appcert`]).
    ClientCertificate,
}

/// The entry name the alert webhook is kept under (`alert_webhook:webhook`); a mailbox of that
/// name keeps its own secrets under other kinds, so they never meet.
pub const ALERT_WEBHOOK: &str = "webhook";

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::RefreshToken => "refresh_token",
            SecretKind::ClientSecret => "client_secret",
            SecretKind::AlertWebhook => "alert_webhook",
            SecretKind::ClientCertificate => "client_certificate",
        }
    }
}

/// Errors name the operation and the entry, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the OS keyring is not available ({detail}); install and unlock a Secret Service such as gnome-keyring or KeePassXC, then try again")]
    Unavailable { detail: String },
    #[error("the OS keyring refused access to `{key}` ({detail}); unlock the keyring and try again")]
    Locked { key: String, detail: String },
    #[error("cannot {op} secret `{key}` in the OS keyring: {detail}")]
    Failed { op: &'static str, key: String, detail: String },
}

impl SecretError {
    pub fn code(&self) -> &'static str {
        match self {
            SecretError::Unavailable { .. } => "keyring_unavailable",
            SecretError::Locked { .. } => "keyring_locked",
            SecretError::Failed { .. } => "keyring_failed",
        }
    }
}

/// A place to keep secrets. `get` of a missing entry is `Ok(None)`.
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    fn get(&self, mailbox: &str, kind: SecretKind) -> Result<Option<SecretString>, SecretError>;
    fn set(&self, mailbox: &str, kind: SecretKind, value: &SecretString) -> Result<(), SecretError>;
    /// Deleting a missing entry is not an error.
    fn delete(&self, mailbox: &str, kind: SecretKind) -> Result<(), SecretError>;
}

/// The OS keyring.
#[derive(Debug, Clone)]
pub struct KeyringStore {
    service: String,
}

impl KeyringStore {
    pub fn new(service: impl Into<String>) -> Self {
        Self { service: service.into() }
    }

    /// Service name from `$MAILBOX_AUTH_KEYRING_SERVICE`, default `mailbox-auth`.
    pub fn from_env() -> Self {
        Self::new(std::env::var("MAILBOX_AUTH_KEYRING_SERVICE").unwrap_or_else(|_| "mailbox-auth".into()))
    }

    fn entry(&self, key: &str) -> Result<keyring::Entry, keyring::Error> {
        keyring::Entry::new(&self.service, key)
    }
}

pub fn entry_key(mailbox: &str, kind: SecretKind) -> String {
    format!("{}:{mailbox}", kind.as_str())
}

fn map_err(op: &'static str, key: &str, e: keyring::Error) -> SecretError {
    use keyring::Error as E;
    // Describe the failure without echoing any payload: BadEncoding/BadDataFormat carry the
    // secret's bytes, so they are reduced to a fixed text here.
    match e {
        E::NoDefaultStore => SecretError::Unavailable { detail: "no credential store could be initialised".into() },
        E::PlatformFailure(p) => {
            let detail = p.to_string();
            if looks_unavailable(&detail) {
                SecretError::Unavailable { detail }
            } else {
                SecretError::Failed { op, key: key.into(), detail }
            }
        }
        E::NoStorageAccess(p) => {
            let detail = p.to_string();
            if looks_unavailable(&detail) {
                SecretError::Unavailable { detail }
            } else {
                SecretError::Locked { key: key.into(), detail }
            }
        }
        E::BadEncoding(_) | E::BadDataFormat(..) => {
            SecretError::Failed { op, key: key.into(), detail: "the stored value is not readable".into() }
        }
        other => SecretError::Failed { op, key: key.into(), detail: other.to_string() },
    }
}

fn looks_unavailable(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    ["dbus", "d-bus", "org.freedesktop.secrets", "serviceunknown", "no such file", "connection refused", "address"]
        .iter()
        .any(|w| d.contains(w))
}

impl KeyringStore {
    /// Runs a keyring call; when it fails because the Secret Service session went away (the
    /// keyring daemon was restarted: every later call of this process would fail with
    /// `NoSession`), connects anew once and tries again. Why it matters: a rotated refresh
    /// token that cannot be written after a daemon restart would be lost with the grant.
    fn with_reconnect<T>(&self, call: impl Fn() -> Result<T, keyring::Error>) -> Result<T, keyring::Error> {
        match call() {
            Err(e) if stale_session(&e) && reconnect() => call(),
            other => other,
        }
    }
}

/// A failure that a fresh connection to the Secret Service may cure.
fn stale_session(e: &keyring::Error) -> bool {
    let detail = match e {
        keyring::Error::PlatformFailure(p) | keyring::Error::NoStorageAccess(p) => p.to_string(),
        _ => return false,
    };
    ["NoSession", "ServiceUnknown", "UnknownObject", "NoReply", "Disconnected", "not provided by any .service"]
        .iter()
        .any(|w| detail.contains(w))
}

/// Replaces keyring's default store with a fresh Secret Service connection; false when no
/// Secret Service answers (the caller then reports the original error).
fn reconnect() -> bool {
    #[cfg(all(unix, not(any(target_os = "macos", target_os = "ios", target_os = "android"))))]
    {
        match zbus_secret_service_keyring_store::Store::new() {
            Ok(store) => {
                tracing::info!("reconnected to the Secret Service after its session went away");
                keyring_core::set_default_store(store);
                true
            }
            Err(_) => false,
        }
    }
    #[cfg(not(all(unix, not(any(target_os = "macos", target_os = "ios", target_os = "android")))))]
    {
        false
    }
}

impl SecretStore for KeyringStore {
    fn get(&self, mailbox: &str, kind: SecretKind) -> Result<Option<SecretString>, SecretError> {
        let key = entry_key(mailbox, kind);
        match self.with_reconnect(|| self.entry(&key)?.get_password()) {
            Ok(v) => Ok(Some(SecretString::from(v))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(map_err("get", &key, e)),
        }
    }

    fn set(&self, mailbox: &str, kind: SecretKind, value: &SecretString) -> Result<(), SecretError> {
        let key = entry_key(mailbox, kind);
        self.with_reconnect(|| self.entry(&key)?.set_password(value.expose_secret()))
            .map_err(|e| map_err("set", &key, e))
    }

    fn delete(&self, mailbox: &str, kind: SecretKind) -> Result<(), SecretError> {
        let key = entry_key(mailbox, kind);
        match self.with_reconnect(|| self.entry(&key)?.delete_credential()) {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(map_err("delete", &key, e)),
        }
    }
}

/// An in-memory store for unit tests of pure logic.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<HashMap<(String, SecretKind), SecretString>>>,
}

impl SecretStore for MemoryStore {
    fn get(&self, mailbox: &str, kind: SecretKind) -> Result<Option<SecretString>, SecretError> {
        Ok(self.inner.lock().expect("poisoned").get(&(mailbox.to_string(), kind)).cloned())
    }
    fn set(&self, mailbox: &str, kind: SecretKind, value: &SecretString) -> Result<(), SecretError> {
        self.inner.lock().expect("poisoned").insert((mailbox.to_string(), kind), value.clone());
        Ok(())
    }
    fn delete(&self, mailbox: &str, kind: SecretKind) -> Result<(), SecretError> {
        self.inner.lock().expect("poisoned").remove(&(mailbox.to_string(), kind));
        Ok(())
    }
}

/// Async wrappers: the keyring call runs on the blocking pool so it never stalls the runtime
/// (or the desktop shell's main thread).
pub async fn get(
    store: &Arc<dyn SecretStore>,
    mailbox: &str,
    kind: SecretKind,
) -> Result<Option<SecretString>, SecretError> {
    let (s, m) = (store.clone(), mailbox.to_string());
    tokio::task::spawn_blocking(move || s.get(&m, kind)).await.map_err(joined)?
}

pub async fn set(
    store: &Arc<dyn SecretStore>,
    mailbox: &str,
    kind: SecretKind,
    value: SecretString,
) -> Result<(), SecretError> {
    let (s, m) = (store.clone(), mailbox.to_string());
    tokio::task::spawn_blocking(move || s.set(&m, kind, &value)).await.map_err(joined)?
}

pub async fn delete(store: &Arc<dyn SecretStore>, mailbox: &str, kind: SecretKind) -> Result<(), SecretError> {
    let (s, m) = (store.clone(), mailbox.to_string());
    tokio::task::spawn_blocking(move || s.delete(&m, kind)).await.map_err(joined)?
}

fn joined(e: tokio::task::JoinError) -> SecretError {
    SecretError::Failed { op: "reach", key: String::new(), detail: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_round_trip_and_missing_is_none() {
        let s = MemoryStore::default();
        assert!(s.get("a", SecretKind::RefreshToken).unwrap().is_none());
        s.set("a", SecretKind::RefreshToken, &SecretString::from("rt-value")).unwrap();
        assert_eq!(s.get("a", SecretKind::RefreshToken).unwrap().unwrap().expose_secret(), "rt-value");
        assert!(s.get("a", SecretKind::ClientSecret).unwrap().is_none());
        s.delete("a", SecretKind::RefreshToken).unwrap();
        s.delete("a", SecretKind::RefreshToken).unwrap();
        assert!(s.get("a", SecretKind::RefreshToken).unwrap().is_none());
    }

    #[test]
    fn secret_values_do_not_print() {
        let v = SecretString::from("rt-SECRET-123");
        assert!(!format!("{v:?}").contains("SECRET"));
        let s = MemoryStore::default();
        s.set("a", SecretKind::RefreshToken, &v).unwrap();
        assert!(!format!("{s:?}").contains("SECRET"), "{s:?}");
    }

    #[test]
    fn unavailable_error_says_what_to_install() {
        let e = map_err("get", "refresh_token:a", keyring::Error::NoDefaultStore);
        assert_eq!(e.code(), "keyring_unavailable");
        assert!(e.to_string().contains("gnome-keyring"), "{e}");
    }

    #[test]
    fn bad_encoding_does_not_echo_bytes() {
        let e = map_err("get", "refresh_token:a", keyring::Error::BadEncoding(b"leaky-bytes".to_vec()));
        assert!(!format!("{e} {e:?}").contains("leaky"), "{e:?}");
    }
}
