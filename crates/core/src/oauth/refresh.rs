//! The refresh_token grant (RFC 6749 §6) with rotation-safe bookkeeping.
//!
//! Microsoft and rotating IdPs return a new refresh token on every refresh and may revoke the
//! whole grant when an old one is presented again. So: one refresh per mailbox at a time (a
//! per-mailbox async lock — concurrent callers wait and then share the result), and the
//! rotated refresh token is written to the keyring *before* the new access token is handed out.
//! Access tokens are cached in memory only, until shortly before they expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oauth2::{AccessToken, ClientSecret, RefreshToken};
use secrecy::{ExposeSecret, SecretString};

use super::{client_credentials, endpoints, map_token_error, token_client, OAuthError, Tokens};
use crate::mailbox::{Flow, Mailbox};
use crate::secret::{self, SecretKind, SecretStore};

/// An access token is reused only while it has at least this long to live.
const MARGIN: Duration = Duration::from_secs(60);
/// Lifetime assumed when the provider does not say.
const ASSUMED_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Cached {
    token: AccessToken,
    valid_until: Instant,
}

/// Per-mailbox access-token cache with single-flight refresh.
#[derive(Debug, Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
    refreshes: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    fn slot(&self, mailbox: &str) -> Arc<tokio::sync::Mutex<Option<Cached>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).entry(mailbox.to_string()).or_default().clone()
    }

    /// How many refresh requests were sent (for tests of the single-flight rule).
    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keeps the access token of a fresh sign-in.
    pub async fn put(&self, mailbox: &str, tokens: &Tokens) {
        let mut slot = self.slot(mailbox).lock_owned().await;
        *slot = Some(Cached {
            token: tokens.access_token.clone(),
            valid_until: Instant::now() + tokens.expires_in.unwrap_or(ASSUMED_LIFETIME),
        });
    }

    /// Drops any cached access token (after a sign-in, forget or removal).
    pub async fn clear(&self, mailbox: &str) {
        *self.slot(mailbox).lock_owned().await = None;
    }

    /// A valid access token for the mailbox: the cached one, or a fresh one from the refresh
    /// token in the keyring.
    pub async fn access_token(
        &self,
        m: &Mailbox,
        secrets: &Arc<dyn SecretStore>,
        http: &reqwest::Client,
    ) -> Result<AccessToken, OAuthError> {
        let mut slot = self.slot(&m.name).lock_owned().await;
        if let Some(c) = slot.as_ref() {
            if c.valid_until > Instant::now() + MARGIN {
                return Ok(c.token.clone());
            }
        }
        let client_secret = secret::get(secrets, &m.name, SecretKind::ClientSecret)
            .await?
            .map(|s| ClientSecret::new(s.expose_secret().to_string()));
        let tokens = if m.flow == Flow::ClientCredentials {
            // App-only: no refresh token exists; every token is a new client credentials grant.
            let secret = client_secret.ok_or_else(|| OAuthError::NoClientSecret(m.name.clone()))?;
            self.refreshes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            client_credentials::token(m, secret, http).await?
        } else {
            let refresh = secret::get(secrets, &m.name, SecretKind::RefreshToken)
                .await?
                .ok_or_else(|| OAuthError::NotAuthenticated(m.name.clone()))?;
            let token_url = endpoints(m)?.token_url;
            self.refreshes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let resp = token_client(m, client_secret)?
                .exchange_refresh_token(&RefreshToken::new(refresh.expose_secret().to_string()))
                .request_async(http)
                .await
                .map_err(|e| map_token_error("refresh", &token_url, e))?;
            resp.into()
        };
        if let Some(rotated) = &tokens.refresh_token {
            // Store the rotated token first: if this fails, the caller must not use the access
            // token, because the next run would present the old, now revoked refresh token.
            secret::set(secrets, &m.name, SecretKind::RefreshToken, SecretString::from(rotated.secret().clone()))
                .await?;
        }
        *slot = Some(Cached {
            token: tokens.access_token.clone(),
            valid_until: Instant::now() + tokens.expires_in.unwrap_or(ASSUMED_LIFETIME),
        });
        Ok(tokens.access_token)
    }
}
