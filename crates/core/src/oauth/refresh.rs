//! The refresh_token grant (RFC 6749 §6) with rotation-safe bookkeeping.
//!
//! Microsoft and rotating IdPs (Okta, Auth0, Keycloak, oidc-provider) return a new refresh
//! token on every refresh and revoke the whole grant when an old one is presented again
//! (reuse detection, RFC 9700 §4.14.2). So each refresh token must be presented exactly once,
//! across every process that uses the mailbox (the window, `verify --all`, `token` fetchers):
//!
//! 1. take the mailbox's in-process lock (concurrent callers in one process wait, then share
//!    the cached access token), then its lock file ([`crate::lock`]) so other processes wait;
//! 2. only then read the refresh token from the keyring: a process that waited sees the
//!    successor its predecessor stored, never the consumed token; a missing entry means the
//!    mailbox was forgotten meanwhile, so the result is "not authenticated" and nothing is
//!    written back;
//! 3. refresh, and store the rotated refresh token *before* the access token is handed out;
//! 4. release both locks.
//!
//! A new sign-in's refresh token is stored, and `forget` deletes, under the same two locks.
//!
//! When the keyring does not take a rotated refresh token, the write is retried a few times
//! with a short back-off. If it still fails, the new token is kept in memory (the old one in
//! the keyring is consumed already), the call fails with the keyring's error (no access
//! token is handed out as if all were well: a `token` process would exit and lose the only
//! valid refresh token), and the next call in this process first stores the kept token, or,
//! if it must refresh, presents the kept token rather than the keyring's consumed one.
//!
//! Access tokens are cached in memory only, until shortly before they expire; the lifetime a
//! provider announces is capped at [`MAX_LIFETIME`] (a huge `expires_in` must neither overflow
//! nor pin a stale token), and callers drop the cached token when a server refuses it
//! ([`TokenCache::clear`]).
//!
//! A refresh refused with HTTP 400/401 and no OAuth error body (what some providers send for
//! a revoked or replayed one-time refresh token) means the stored sign-in is no longer valid:
//! `refresh_rejected`, "sign in again", not "check the token URL".

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oauth2::{AccessToken, ClientSecret, RefreshToken, RequestTokenError};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OwnedMutexGuard;

use super::{client_credentials, endpoints, token_client, OAuthError, StatusNoting, Tokens};
use crate::lock::{Locks, MailboxLock};
use crate::mailbox::{Flow, Mailbox};
use crate::secret::{self, SecretError, SecretKind, SecretStore};

/// An access token is reused only while it has at least this long to live.
const MARGIN: Duration = Duration::from_secs(60);
/// A refresh's time budget from the call: the token request gets what is left of it after
/// waiting for another program's refresh of the same mailbox (never less than
/// [`MIN_REQUEST_TIME`]), so two programs queued behind a token endpoint that does not answer
/// end together instead of one after the other. The wait itself is bounded by the lock.
const REFRESH_DEADLINE: Duration = Duration::from_secs(40);
/// The least time given to the token request itself once the locks are taken.
const MIN_REQUEST_TIME: Duration = Duration::from_secs(5);
/// Lifetime assumed when the provider does not say.
const ASSUMED_LIFETIME: Duration = Duration::from_secs(300);
/// The longest an access token is trusted, whatever the provider says.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Pauses between attempts to store a rotated refresh token (four attempts in all).
const STORE_RETRIES: [Duration; 3] =
    [Duration::from_millis(100), Duration::from_millis(300), Duration::from_millis(900)];

#[derive(Debug)]
struct Cached {
    token: AccessToken,
    valid_until: Instant,
}

#[derive(Debug, Default)]
struct Slot {
    cached: Option<Cached>,
    /// A rotated refresh token the keyring has not taken yet: the only valid one.
    pending: Option<RefreshToken>,
}

/// Both locks of one mailbox, held together.
struct Held {
    slot: OwnedMutexGuard<Slot>,
    _file: MailboxLock,
}

/// Per-mailbox access-token cache with single-flight refresh across processes.
#[derive(Debug)]
pub struct TokenCache {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    locks: Locks,
    refreshes: AtomicU64,
    /// Refreshes not yet written to the data store (see [`TokenCache::take_refresh`]).
    used: Mutex<HashMap<String, RefreshUse>>,
}

/// When a mailbox's sign-in was last used for a refresh: the date, whether the refresh token
/// was rotated (and the new one stored), and the idle lifetime the response named. Dates only,
/// for the sign-in countdown ([`crate::health::signin_expiry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshUse {
    pub at: chrono::DateTime<chrono::Utc>,
    pub rotated: bool,
    pub idle_lifetime: Option<u64>,
}

/// How long an access token is trusted: the announced lifetime, capped.
fn lifetime(expires_in: Option<Duration>) -> Duration {
    expires_in.unwrap_or(ASSUMED_LIFETIME).min(MAX_LIFETIME)
}

fn cached(tokens: &Tokens) -> Cached {
    let now = Instant::now();
    // `checked_add`: even the capped lifetime must not panic on a platform with a small
    // `Instant` range.
    let valid_until = now.checked_add(lifetime(tokens.expires_in)).unwrap_or(now);
    Cached { token: tokens.access_token.clone(), valid_until }
}

impl TokenCache {
    /// A cache whose cross-process locks live in `lock_dir` (`<home>/locks`).
    pub fn new(lock_dir: impl Into<PathBuf>) -> Self {
        Self::with_locks(Locks::new(lock_dir))
    }

    pub fn with_locks(locks: Locks) -> Self {
        Self { slots: Mutex::default(), locks, refreshes: AtomicU64::new(0), used: Mutex::default() }
    }

    fn slot(&self, mailbox: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).entry(mailbox.to_string()).or_default().clone()
    }

    /// Takes the in-process lock, then the lock file (in that order, so a process's own
    /// callers queue in memory and only one of them holds the file).
    async fn hold(&self, mailbox: &str) -> Result<Held, OAuthError> {
        let slot = self.slot(mailbox).lock_owned().await;
        let file = self.locks.acquire(mailbox).await?;
        Ok(Held { slot, _file: file })
    }

    /// The newest refresh of the mailbox's sign-in since the last call, if any.
    pub fn take_refresh(&self, mailbox: &str) -> Option<RefreshUse> {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).remove(mailbox)
    }

    fn note_use(&self, mailbox: &str, rotated: bool, idle_lifetime: Option<u64>) {
        let u = RefreshUse { at: chrono::Utc::now(), rotated, idle_lifetime };
        self.used.lock().unwrap_or_else(|p| p.into_inner()).insert(mailbox.to_string(), u);
    }

    /// The cross-process lock files, for other keyring reads and writes that must not meet a
    /// refresh (a new certificate credential, a hand-over export or import).
    pub fn locks(&self) -> &Locks {
        &self.locks
    }

    /// How many refresh requests were sent (for tests of the single-flight rule).
    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(Ordering::SeqCst)
    }

    /// Stores the refresh token of a fresh sign-in (when it has one) and keeps its access
    /// token, under the mailbox's locks, so that no refresh in another process can overwrite
    /// the new refresh token with a successor of the old one.
    pub async fn signed_in(
        &self,
        mailbox: &str,
        tokens: &Tokens,
        secrets: &Arc<dyn SecretStore>,
    ) -> Result<(), OAuthError> {
        let mut held = self.hold(mailbox).await?;
        // The old grant's unstored successor is worthless now.
        held.slot.pending = None;
        held.slot.cached = None;
        if let Some(refresh) = &tokens.refresh_token {
            store_with_retries(secrets, mailbox, refresh).await?;
        }
        held.slot.cached = Some(cached(tokens));
        Ok(())
    }

    /// Drops the cached access token (after a server refused it, or a new client secret). A
    /// rotated refresh token still waiting for the keyring is kept: it is a credential.
    pub async fn clear(&self, mailbox: &str) {
        self.slot(mailbox).lock_owned().await.cached = None;
    }

    /// Deletes the mailbox's keyring entries under its locks, and forgets everything cached:
    /// a refresh running in another process finishes first, and one starting later finds no
    /// refresh token and writes nothing back.
    pub async fn forget(&self, mailbox: &str, secrets: &Arc<dyn SecretStore>) -> Result<(), OAuthError> {
        let mut held = self.hold(mailbox).await?;
        held.slot.cached = None;
        held.slot.pending = None;
        secret::delete(secrets, mailbox, SecretKind::RefreshToken).await?;
        secret::delete(secrets, mailbox, SecretKind::ClientSecret).await?;
        secret::delete(secrets, mailbox, SecretKind::ClientCertificate).await?;
        Ok(())
    }

    /// A valid access token for the mailbox: the cached one, or a fresh one from the refresh
    /// token in the keyring.
    pub async fn access_token(
        &self,
        m: &Mailbox,
        secrets: &Arc<dyn SecretStore>,
        http: &reqwest::Client,
    ) -> Result<AccessToken, OAuthError> {
        self.access_token_noting(m, secrets, http, None).await
    }

    /// [`TokenCache::access_token`], saying on `going` when a stored credential was found and
    /// the token request is about to go out (nothing is said when the token comes from the
    /// cache or the call fails before): the moment a caller may start using the network for
    /// this mailbox too (see [`crate::app::App::verify`]).
    pub async fn access_token_noting(
        &self,
        m: &Mailbox,
        secrets: &Arc<dyn SecretStore>,
        http: &reqwest::Client,
        going: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<AccessToken, OAuthError> {
        let going = || {
            if let Some(tx) = going {
                let _ = tx.send(());
            }
        };
        // Waiting for another program's refresh counts against this call's own deadline.
        let deadline = Instant::now() + REFRESH_DEADLINE;
        let mut held = self.hold(&m.name).await?;
        let mut unstored = None;
        if let Some(pending) = held.slot.pending.clone() {
            // A refresh token rotated earlier in this process that the keyring did not take.
            // The keyring's entry, if any, is its consumed predecessor; none means the
            // mailbox was forgotten by another program, and the kept token goes with it.
            if secret::get(secrets, &m.name, SecretKind::RefreshToken).await?.is_none() {
                *held.slot = Slot::default();
                return Err(OAuthError::NotAuthenticated(m.name.clone()));
            }
            match store_with_retries(secrets, &m.name, &pending).await {
                Ok(()) => held.slot.pending = None,
                Err(e) => unstored = Some(e),
            }
        }
        if let Some(c) = held.slot.cached.as_ref() {
            if c.valid_until > Instant::now() + MARGIN {
                return match unstored {
                    Some(source) => Err(OAuthError::RotatedNotStored { mailbox: m.name.clone(), source }),
                    None => Ok(c.token.clone()),
                };
            }
        }
        // Secrets are read after the locks are taken (see the module docs).
        // The refresh token read from the keyring just now, under the locks (not a kept one).
        let mut from_keyring: Option<RefreshToken> = None;
        let tokens = if m.flow == Flow::ClientCredentials {
            // App-only: no refresh token exists; every token is a new client credentials grant,
            // with the certificate or secret read here, under the locks.
            let credential = client_credentials::load(secrets, &m.name)
                .await?
                .ok_or_else(|| OAuthError::NoClientSecret(m.name.clone()))?;
            self.refreshes.fetch_add(1, Ordering::SeqCst);
            going();
            client_credentials::token(m, credential, http).await?
        } else {
            let refresh = match held.slot.pending.clone() {
                Some(p) => p,
                None => {
                    let stored = secret::get(secrets, &m.name, SecretKind::RefreshToken)
                        .await?
                        .map(|s| RefreshToken::new(s.expose_secret().to_string()))
                        .ok_or_else(|| OAuthError::NotAuthenticated(m.name.clone()))?;
                    from_keyring = Some(stored.clone());
                    stored
                }
            };
            let client_secret = super::client_secret(secrets, &m.name).await?;
            self.refreshes.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(mailbox = %m.name, "refreshing the access token");
            going();
            refresh_grant(m, client_secret, &refresh, http, deadline).await?
        };
        held.slot.cached = None;
        // The same refresh token back (a provider that does not rotate but repeats it) is what
        // the keyring holds already, as read under these locks: writing it again would cost a
        // keyring write (gnome-keyring saves the whole collection file on each) for nothing.
        let rotated =
            tokens.refresh_token.as_ref().filter(|r| from_keyring.as_ref().is_none_or(|k| k.secret() != r.secret()));
        if let Some(rotated) = rotated {
            // From here the presented token is consumed: the rotated one is the only valid
            // credential, so it is kept in memory until the keyring has it.
            held.slot.pending = Some(rotated.clone());
            if let Err(source) = store_with_retries(secrets, &m.name, rotated).await {
                // The access token is kept for when the keyring recovers, but not handed out:
                // a caller that exits now would lose the only valid refresh token unnoticed.
                held.slot.cached = Some(cached(&tokens));
                return Err(OAuthError::RotatedNotStored { mailbox: m.name.clone(), source });
            }
            held.slot.pending = None;
        } else if let Some(source) = unstored {
            return Err(OAuthError::RotatedNotStored { mailbox: m.name.clone(), source });
        }
        if m.flow != Flow::ClientCredentials {
            // The sign-in was used (and, rotated, its successor is stored): its idle lifetime
            // starts again now.
            self.note_use(&m.name, rotated.is_some(), tokens.refresh_expires_in);
        }
        held.slot.cached = Some(cached(&tokens));
        Ok(tokens.access_token)
    }
}

/// Writes a refresh token to the keyring, retrying a failed write a few times: a keyring
/// daemon that is restarting, or an unlock prompt that was just answered, recovers quickly.
async fn store_with_retries(
    secrets: &Arc<dyn SecretStore>,
    mailbox: &str,
    token: &RefreshToken,
) -> Result<(), SecretError> {
    let mut pauses = STORE_RETRIES.iter();
    loop {
        let value = SecretString::from(token.secret().clone());
        match secret::set(secrets, mailbox, SecretKind::RefreshToken, value).await {
            Ok(()) => return Ok(()),
            Err(e) => match pauses.next() {
                Some(pause) => {
                    tracing::warn!(mailbox, error = %e, "the keyring did not store the rotated refresh token; retrying");
                    tokio::time::sleep(*pause).await;
                }
                None => return Err(e),
            },
        }
    }
}

/// One refresh_token grant. The HTTP status is noted on the way through, because oauth2
/// drops it: a 400/401 without an OAuth error body means the refresh token is dead.
async fn refresh_grant(
    m: &Mailbox,
    client_secret: Option<ClientSecret>,
    refresh: &RefreshToken,
    http: &reqwest::Client,
    deadline: Instant,
) -> Result<Tokens, OAuthError> {
    let token_url = endpoints(m)?.token_url;
    let client = StatusNoting::new(http);
    // What is left of the call's deadline, but never less than a few seconds for the request.
    let budget = deadline.saturating_duration_since(Instant::now()).max(MIN_REQUEST_TIME);
    let oauth = token_client(m, client_secret)?;
    let request = oauth.exchange_refresh_token(refresh);
    let answer =
        tokio::time::timeout(budget, request.request_async(&client)).await.map_err(|_| OAuthError::Request {
            op: "refresh",
            url: token_url.clone(),
            detail: format!("no answer within {} seconds", budget.as_secs()),
        })?;
    let resp = answer.map_err(|e| match (client.status(), e) {
        // A body that is an OAuth error (`invalid_grant` …) keeps its own words; an empty
        // or non-OAuth body with 400/401 is the endpoint refusing the token.
        (s @ (400 | 401), RequestTokenError::Other(_) | RequestTokenError::Parse(..)) => {
            OAuthError::RefreshRejected { url: token_url.clone(), status: s }
        }
        // Down or throttled: not a verdict on the refresh token, which stays as it is.
        (_, e) => client.token_error("refresh", &token_url, e),
    })?;
    Ok(resp.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::MemoryStore;
    use std::sync::atomic::AtomicU32;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the test token endpoint answers.
    #[derive(Clone, Copy)]
    enum Answer {
        /// Rotating refresh tokens with reuse detection, like oidc-provider: each token works
        /// once; a second presentation is `invalid_grant`.
        Rotate { expires_in: u64 },
        /// No rotation: the presented refresh token comes back with each access token.
        Repeat,
        /// A bare status with an empty body.
        Empty(u16),
        /// 429 with `Retry-After: 120` and an HTML body, as a throttling proxy sends it.
        Throttled,
        /// 429 with `Retry-After: 120` and an OAuth-style error body.
        ThrottledOAuth,
    }

    #[derive(Default)]
    struct Seen {
        presented: Vec<String>,
        issued: u32,
    }

    /// A real HTTP token endpoint on a loopback socket (hand-written: the tests need exact
    /// control of status and body, which no mock of reqwest would exercise).
    async fn token_endpoint(
        answer: Answer,
        delay: Duration,
    ) -> (String, Arc<Mutex<Seen>>, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut c, _) = l.accept().await.unwrap();
                let (s, arrived_tx) = (s.clone(), arrived_tx.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let body = loop {
                        let mut chunk = [0u8; 4096];
                        let n = c.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap())
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break text[end + 4..end + 4 + len].to_string();
                            }
                        }
                    };
                    let _ = arrived_tx.send(());
                    tokio::time::sleep(delay).await;
                    let presented = url::form_urlencoded::parse(body.as_bytes())
                        .find(|(k, _)| k == "refresh_token")
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_default();
                    let (status, body) = {
                        let mut seen = s.lock().unwrap();
                        let reused = seen.presented.contains(&presented);
                        seen.presented.push(presented.clone());
                        match answer {
                            Answer::Empty(status) => (status, String::new()),
                            Answer::Repeat => (
                                200,
                                format!(
                                    r#"{{"access_token":"at-repeat","token_type":"Bearer","expires_in":600,"refresh_token":"{presented}"}}"#
                                ),
                            ),
                            Answer::Throttled => (429, "<html>slow down</html>".to_string()),
                            Answer::ThrottledOAuth => {
                                (429, r#"{"error":"slow_down","error_description":"rate limited"}"#.to_string())
                            }
                            Answer::Rotate { .. } if reused => (
                                400,
                                r#"{"error":"invalid_grant","error_description":"refresh token already used"}"#
                                    .to_string(),
                            ),
                            Answer::Rotate { expires_in } => {
                                seen.issued += 1;
                                let n = seen.issued;
                                (
                                    200,
                                    format!(
                                        r#"{{"access_token":"at-{n}","token_type":"Bearer","expires_in":{expires_in},"refresh_token":"rt-{n}","refresh_expires_in":1800}}"#
                                    ),
                                )
                            }
                        }
                    };
                    let reason = if status == 200 { "OK" } else { "Bad Request" };
                    let retry = if status == 429 { "Retry-After: 120\r\n" } else { "" };
                    let head = format!(
                        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{retry}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = c.write_all(format!("{head}{body}").as_bytes()).await;
                    let _ = c.shutdown().await;
                });
            }
        });
        (url, seen, arrived)
    }

    fn mailbox(token_url: &str) -> Mailbox {
        let mut m = crate::mailbox::sample();
        m.provider = crate::mailbox::ProviderKind::Generic;
        m.auth_url = Some(format!("{token_url}/authorize"));
        m.token_url = Some(token_url.to_string());
        m
    }

    fn store_with(rt: &str, m: &Mailbox) -> (MemoryStore, Arc<dyn SecretStore>) {
        let mem = MemoryStore::default();
        mem.set(&m.name, SecretKind::RefreshToken, &SecretString::from(rt)).unwrap();
        (mem.clone(), Arc::new(mem))
    }

    fn stored(mem: &MemoryStore, m: &Mailbox) -> Option<String> {
        mem.get(&m.name, SecretKind::RefreshToken).unwrap().map(|s| s.expose_secret().to_string())
    }

    /// A store whose next `failures` writes fail, like a keyring that is locked for a moment.
    #[derive(Debug)]
    struct FlakyStore {
        inner: MemoryStore,
        failures: AtomicU32,
        sets: AtomicU32,
    }

    impl SecretStore for FlakyStore {
        fn get(&self, mailbox: &str, kind: SecretKind) -> Result<Option<SecretString>, SecretError> {
            self.inner.get(mailbox, kind)
        }
        fn set(&self, mailbox: &str, kind: SecretKind, value: &SecretString) -> Result<(), SecretError> {
            self.sets.fetch_add(1, Ordering::SeqCst);
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err(SecretError::Locked {
                    key: secret::entry_key(mailbox, kind),
                    detail: "prompt dismissed".into(),
                });
            }
            self.inner.set(mailbox, kind, value)
        }
        fn delete(&self, mailbox: &str, kind: SecretKind) -> Result<(), SecretError> {
            self.inner.delete(mailbox, kind)
        }
    }

    fn flaky(rt: &str, m: &Mailbox, failures: u32) -> (Arc<FlakyStore>, Arc<dyn SecretStore>) {
        let inner = MemoryStore::default();
        inner.set(&m.name, SecretKind::RefreshToken, &SecretString::from(rt)).unwrap();
        let f = Arc::new(FlakyStore { inner, failures: AtomicU32::new(failures), sets: AtomicU32::new(0) });
        (f.clone(), f)
    }

    #[tokio::test]
    async fn a_refresh_token_that_comes_back_unchanged_is_not_written_again() {
        let (url, seen, _) = token_endpoint(Answer::Repeat, Duration::ZERO).await;
        let m = mailbox(&url);
        let (store, secrets) = flaky("rt-same", &m, 0);
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(dir.path().to_path_buf());
        let at = cache.access_token(&m, &secrets, &super::super::http_client()).await.unwrap();
        assert_eq!(at.secret(), "at-repeat");
        assert_eq!(seen.lock().unwrap().presented, vec!["rt-same".to_string()]);
        assert_eq!(store.sets.load(Ordering::SeqCst), 0, "the keyring holds that token already");
        assert_eq!(store.inner.get(&m.name, SecretKind::RefreshToken).unwrap().unwrap().expose_secret(), "rt-same");
        assert!(cache.take_refresh(&m.name).is_some_and(|u| !u.rotated), "used, not rotated");

        // A rotating provider's new token is written, once.
        let (url, _, _) = token_endpoint(Answer::Rotate { expires_in: 600 }, Duration::ZERO).await;
        let m = mailbox(&url);
        let (store, secrets) = flaky("rt-0", &m, 0);
        TokenCache::new(dir.path().to_path_buf())
            .access_token(&m, &secrets, &super::super::http_client())
            .await
            .unwrap();
        assert_eq!(store.sets.load(Ordering::SeqCst), 1);
        assert_eq!(store.inner.get(&m.name, SecretKind::RefreshToken).unwrap().unwrap().expose_secret(), "rt-1");
    }

    #[tokio::test]
    async fn caches_that_share_a_lock_folder_present_each_refresh_token_once() {
        // Ten caches over one lock folder and one keyring behave like ten processes: each
        // refreshes once, and each presents the token its predecessor stored.
        let (url, seen, _) = token_endpoint(Answer::Rotate { expires_in: 600 }, Duration::from_millis(20)).await;
        let m = mailbox(&url);
        let (mem, secrets) = store_with("rt-0", &m);
        let dir = tempfile::tempdir().unwrap();
        let http = super::super::http_client();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (m, secrets, http, dir) = (m.clone(), secrets.clone(), http.clone(), dir.path().to_path_buf());
                tokio::spawn(async move { TokenCache::new(dir).access_token(&m, &secrets, &http).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().expect("every process gets a token");
        }
        let seen = seen.lock().unwrap();
        let unique: std::collections::HashSet<_> = seen.presented.iter().collect();
        assert_eq!(seen.presented.len(), 10, "{:?}", seen.presented);
        assert_eq!(unique.len(), 10, "a refresh token was presented twice: {:?}", seen.presented);
        assert_eq!(stored(&mem, &m).as_deref(), Some("rt-10"));
    }

    #[tokio::test]
    async fn forget_racing_a_refresh_does_not_bring_the_entry_back() {
        let (url, _, mut arrived) =
            token_endpoint(Answer::Rotate { expires_in: 600 }, Duration::from_millis(300)).await;
        let m = mailbox(&url);
        let (mem, secrets) = store_with("rt-0", &m);
        let dir = tempfile::tempdir().unwrap();
        let http = super::super::http_client();
        let refresher = TokenCache::new(dir.path());
        let forgetter = TokenCache::new(dir.path());
        let refresh = refresher.access_token(&m, &secrets, &http);
        let forget = async {
            arrived.recv().await.unwrap();
            // The refresh is in flight at the token endpoint now.
            forgetter.forget(&m.name, &secrets).await
        };
        let (r, f) = tokio::join!(refresh, forget);
        r.unwrap();
        f.unwrap();
        assert_eq!(stored(&mem, &m), None, "forget ran last, so the rotated token must be gone");
        // A refresh after forget finds nothing and writes nothing.
        let later = TokenCache::new(dir.path()).access_token(&m, &secrets, &http).await.unwrap_err();
        assert_eq!(later.code(), "not_authenticated");
        assert_eq!(stored(&mem, &m), None);
    }

    #[tokio::test]
    async fn a_rotated_token_the_keyring_refuses_once_is_stored_on_retry() {
        let (url, _, _) = token_endpoint(Answer::Rotate { expires_in: 600 }, Duration::ZERO).await;
        let m = mailbox(&url);
        let (store, secrets) = flaky("rt-0", &m, 1);
        let dir = tempfile::tempdir().unwrap();
        let t = TokenCache::new(dir.path()).access_token(&m, &secrets, &super::super::http_client()).await.unwrap();
        assert_eq!(t.secret(), "at-1");
        assert_eq!(stored(&store.inner, &m).as_deref(), Some("rt-1"));
        assert_eq!(store.sets.load(Ordering::SeqCst), 2, "one failed write, one retry");
    }

    #[tokio::test]
    async fn a_rotated_token_the_keyring_keeps_refusing_is_kept_in_memory_and_presented_next() {
        // expires_in 0: every call must refresh again.
        let (url, seen, _) = token_endpoint(Answer::Rotate { expires_in: 0 }, Duration::ZERO).await;
        let m = mailbox(&url);
        let attempts = STORE_RETRIES.len() as u32 + 1;
        // Every write of the first call fails, and every attempt to store the kept token in
        // the second call too; only the write after its refresh succeeds.
        let (store, secrets) = flaky("rt-0", &m, 2 * attempts);
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(dir.path());
        let http = super::super::http_client();

        let err = cache.access_token(&m, &secrets, &http).await.unwrap_err();
        assert_eq!(err.code(), "keyring_locked", "{err}");
        assert!(err.to_string().contains("keeps it in memory"), "{err}");
        assert!(!err.to_string().contains("rt-1"), "no secret in the message: {err}");
        assert_eq!(stored(&store.inner, &m).as_deref(), Some("rt-0"), "the keyring still has the consumed token");

        // The next refresh presents the kept token (not the keyring's consumed rt-0), and its
        // successor is stored once the keyring recovers.
        let t = cache.access_token(&m, &secrets, &http).await.unwrap();
        assert_eq!(t.secret(), "at-2");
        assert_eq!(seen.lock().unwrap().presented, ["rt-0", "rt-1"]);
        assert_eq!(stored(&store.inner, &m).as_deref(), Some("rt-2"));
    }

    #[tokio::test]
    async fn a_kept_token_is_dropped_when_another_program_forgot_the_mailbox() {
        let (url, seen, _) = token_endpoint(Answer::Rotate { expires_in: 600 }, Duration::ZERO).await;
        let m = mailbox(&url);
        let (store, secrets) = flaky("rt-0", &m, STORE_RETRIES.len() as u32 + 1);
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(dir.path());
        let http = super::super::http_client();
        assert!(cache.access_token(&m, &secrets, &http).await.is_err());
        TokenCache::new(dir.path()).forget(&m.name, &secrets).await.unwrap();
        let err = cache.access_token(&m, &secrets, &http).await.unwrap_err();
        assert_eq!(err.code(), "not_authenticated");
        assert_eq!(stored(&store.inner, &m), None, "the forgotten entry must not come back");
        assert_eq!(seen.lock().unwrap().presented.len(), 1);
    }

    #[tokio::test]
    async fn a_huge_expires_in_neither_panics_nor_pins_the_token() {
        let (url, _, _) = token_endpoint(Answer::Rotate { expires_in: u64::MAX }, Duration::ZERO).await;
        let m = mailbox(&url);
        let (_, secrets) = store_with("rt-0", &m);
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(dir.path());
        let t = cache.access_token(&m, &secrets, &super::super::http_client()).await.unwrap();
        assert_eq!(t.secret(), "at-1");
        let slot = cache.slot(&m.name);
        let until = slot.lock().await.cached.as_ref().unwrap().valid_until;
        assert!(until <= Instant::now() + MAX_LIFETIME, "capped at {MAX_LIFETIME:?}");
        assert_eq!(lifetime(Some(Duration::from_secs(u64::MAX))), MAX_LIFETIME);
        assert_eq!(lifetime(Some(Duration::from_secs(3600))), Duration::from_secs(3600));
        assert_eq!(lifetime(None), ASSUMED_LIFETIME);
        // A sign-in's tokens with a huge lifetime do not panic either.
        let tokens = Tokens {
            access_token: AccessToken::new("at-x".into()),
            refresh_token: None,
            expires_in: Some(Duration::from_secs(u64::MAX)),
            id_token: None,
            refresh_expires_in: None,
        };
        cache.signed_in(&m.name, &tokens, &secrets).await.unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn any_announced_lifetime_is_capped_and_never_panics(secs in proptest::prelude::any::<u64>(), nanos in 0u32..1_000_000_000) {
            let expires_in = Some(Duration::new(secs, nanos));
            let l = lifetime(expires_in);
            proptest::prop_assert!(l <= MAX_LIFETIME);
            proptest::prop_assert_eq!(l, Duration::new(secs, nanos).min(MAX_LIFETIME));
            let tokens = Tokens { access_token: AccessToken::new("at".into()), refresh_token: None, expires_in, id_token: None, refresh_expires_in: None };
            proptest::prop_assert!(cached(&tokens).valid_until <= Instant::now() + MAX_LIFETIME);
        }
    }

    #[tokio::test]
    async fn a_cleared_token_is_refreshed_at_the_next_call() {
        let (url, _, _) = token_endpoint(Answer::Rotate { expires_in: 600 }, Duration::ZERO).await;
        let m = mailbox(&url);
        let (_, secrets) = store_with("rt-0", &m);
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(dir.path());
        let http = super::super::http_client();
        assert_eq!(cache.access_token(&m, &secrets, &http).await.unwrap().secret(), "at-1");
        assert_eq!(cache.access_token(&m, &secrets, &http).await.unwrap().secret(), "at-1", "cached");
        cache.clear(&m.name).await;
        assert_eq!(cache.access_token(&m, &secrets, &http).await.unwrap().secret(), "at-2");
        assert_eq!(cache.refresh_count(), 2);
    }

    #[tokio::test]
    async fn a_refresh_refused_with_an_empty_400_or_401_asks_to_sign_in_again() {
        for status in [400, 401] {
            let (url, _, _) = token_endpoint(Answer::Empty(status), Duration::ZERO).await;
            let m = mailbox(&url);
            let (mem, secrets) = store_with("rt-0", &m);
            let dir = tempfile::tempdir().unwrap();
            let err =
                TokenCache::new(dir.path()).access_token(&m, &secrets, &super::super::http_client()).await.unwrap_err();
            assert_eq!(err.code(), "refresh_rejected", "{status}: {err}");
            assert!(err.to_string().contains(&format!("HTTP {status}")), "{err}");
            let d = crate::diagnose::diagnose(&err.code(), err.server_words().as_deref());
            assert!(d.fix.contains("sign in again"), "{d:?}");
            assert_eq!(stored(&mem, &m).as_deref(), Some("rt-0"), "nothing written");
        }
        // A server error is no verdict on the sign-in.
        let (url, _, _) = token_endpoint(Answer::Empty(500), Duration::ZERO).await;
        let m = mailbox(&url);
        let (mem, secrets) = store_with("rt-0", &m);
        let dir = tempfile::tempdir().unwrap();
        let err =
            TokenCache::new(dir.path()).access_token(&m, &secrets, &super::super::http_client()).await.unwrap_err();
        assert_eq!(err.code(), "token_endpoint_unavailable", "{err}");
        assert_eq!(stored(&mem, &m).as_deref(), Some("rt-0"), "the refresh token is kept");
    }

    #[tokio::test]
    async fn a_refresh_notes_when_the_sign_in_was_used_and_rotated() {
        let (url, _, _) = token_endpoint(Answer::Rotate { expires_in: 600 }, Duration::ZERO).await;
        let m = mailbox(&url);
        let (_, secrets) = store_with("rt-0", &m);
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(dir.path());
        let http = super::super::http_client();
        assert_eq!(cache.take_refresh(&m.name), None);
        let before = chrono::Utc::now();
        cache.access_token(&m, &secrets, &http).await.unwrap();
        let used = cache.take_refresh(&m.name).expect("a refresh was noted");
        assert!(used.at >= before && used.rotated, "{used:?}");
        assert_eq!(used.idle_lifetime, Some(1800), "refresh_expires_in is read");
        assert_eq!(cache.take_refresh(&m.name), None, "taken once");
        cache.access_token(&m, &secrets, &http).await.unwrap();
        assert_eq!(cache.take_refresh(&m.name), None, "a cached token is no use of the sign-in");
    }

    #[tokio::test]
    async fn a_429_with_an_oauth_body_is_throttling_too() {
        let (url, _, _) = token_endpoint(Answer::ThrottledOAuth, Duration::ZERO).await;
        let m = mailbox(&url);
        let (mem, secrets) = store_with("rt-0", &m);
        let dir = tempfile::tempdir().unwrap();
        let err =
            TokenCache::new(dir.path()).access_token(&m, &secrets, &super::super::http_client()).await.unwrap_err();
        assert!(matches!(err, OAuthError::Unavailable { status: 429, retry_after: Some(120), .. }), "{err}");
        assert_eq!(stored(&mem, &m).as_deref(), Some("rt-0"), "the refresh token is kept");
    }

    #[tokio::test]
    async fn a_throttled_refresh_says_when_to_retry_and_keeps_the_sign_in() {
        let (url, _, _) = token_endpoint(Answer::Throttled, Duration::ZERO).await;
        let m = mailbox(&url);
        let (mem, secrets) = store_with("rt-0", &m);
        let dir = tempfile::tempdir().unwrap();
        let err =
            TokenCache::new(dir.path()).access_token(&m, &secrets, &super::super::http_client()).await.unwrap_err();
        assert_eq!(err.code(), "token_endpoint_unavailable", "{err}");
        assert!(err.to_string().contains("HTTP 429") && err.to_string().contains("120 seconds"), "{err}");
        let d = crate::diagnose::diagnose(&err.code(), err.server_words().as_deref());
        assert!(d.fix.contains("try again later"), "{d:?}");
        assert_eq!(stored(&mem, &m).as_deref(), Some("rt-0"), "the refresh token is kept");
    }

    #[tokio::test]
    async fn a_sign_in_waits_for_a_refresh_in_another_program_and_wins() {
        let (url, _, mut arrived) =
            token_endpoint(Answer::Rotate { expires_in: 600 }, Duration::from_millis(300)).await;
        let m = mailbox(&url);
        let (mem, secrets) = store_with("rt-old", &m);
        let dir = tempfile::tempdir().unwrap();
        let http = super::super::http_client();
        let refresher = TokenCache::new(dir.path());
        let signer = TokenCache::new(dir.path());
        let tokens = Tokens {
            access_token: AccessToken::new("at-new".into()),
            refresh_token: Some(RefreshToken::new("rt-new-sign-in".into())),
            expires_in: Some(Duration::from_secs(600)),
            id_token: None,
            refresh_expires_in: None,
        };
        let refresh = refresher.access_token(&m, &secrets, &http);
        let sign_in = async {
            arrived.recv().await.unwrap();
            signer.signed_in(&m.name, &tokens, &secrets).await
        };
        let (r, s) = tokio::join!(refresh, sign_in);
        r.unwrap();
        s.unwrap();
        assert_eq!(stored(&mem, &m).as_deref(), Some("rt-new-sign-in"));
    }
}
