//! OAuth2 flows (RFC 6749) with oauth2 5.x.
//!
//! - [`auth_code`]: authorization code + PKCE S256 (RFC 7636) through the system browser and the
//!   [`loopback`] redirect (RFC 8252), with an OpenID Connect `nonce` checked in the id_token
//!   when the scopes ask for `openid`;
//! - [`device`]: the device authorization grant (RFC 8628), for where no browser can reach
//!   this machine's loopback;
//! - [`client_credentials`]: app-only tokens with the app's client secret (RFC 6749 §4.4) or
//!   certificate (`private_key_jwt`, RFC 7523);
//! - [`refresh`]: the refresh_token grant, one refresh per mailbox at a time, rotated refresh
//!   tokens stored before the access token is used.
//!
//! Tokens are oauth2's newtypes (`AccessToken`, `RefreshToken`, `ClientSecret`): their `Debug`
//! is redacted and the value comes out only through `.secret()`, where wire bytes are built.

pub mod auth_code;
pub mod client_credentials;
pub mod device;
pub mod discovery;
pub mod loopback;
pub mod refresh;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AccessToken, AsyncHttpClient, AuthUrl, ClientId, ClientSecret, EndpointNotSet, EndpointSet, ExtraTokenFields,
    RefreshToken, RequestTokenError, StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::mailbox::Mailbox;
use crate::provider;

/// The id_token, when the provider returns one (OpenID Connect).
#[derive(Clone, Default, Deserialize, Serialize)]
pub struct IdTokenFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// Keycloak (and others) name the refresh token's idle lifetime in seconds; absent or
    /// unreadable means unknown.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_seconds")]
    pub refresh_expires_in: Option<u64>,
}
impl ExtraTokenFields for IdTokenFields {}

/// A lifetime in seconds as a number (or a numeric string); anything else is unknown, never a
/// failed sign-in: the field is informational.
fn lenient_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

// An id_token is a signed statement about the user; like the other tokens it never prints.
impl std::fmt::Debug for IdTokenFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTokenFields").field("id_token", &self.id_token.as_ref().map(|_| "[redacted]")).finish()
    }
}

pub type TokenResponseBody = StandardTokenResponse<IdTokenFields, BasicTokenType>;

pub(crate) type Client<HasAuthUrl> = oauth2::Client<
    BasicErrorResponse,
    TokenResponseBody,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    HasAuthUrl,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{field}: {message}")]
    Config { field: &'static str, message: String },
    /// The provider answered with an OAuth error (RFC 6749 §5.2); its own words are kept.
    #[error("the identity provider refused the {op}: {error}{}", description.as_deref().map(|d| format!(" — {d}")).unwrap_or_default())]
    Provider { op: &'static str, error: String, description: Option<String> },
    #[error("cannot reach the token endpoint {url} for the {op}: {detail}")]
    Request { op: &'static str, url: String, detail: String },
    #[error("the token endpoint {url} answered the {op} with something that is not an OAuth token response: {detail}")]
    Parse { op: &'static str, url: String, detail: String },
    #[error("cannot read the OpenID configuration of the issuer {issuer}: {detail}")]
    Discovery { issuer: String, detail: String },
    #[error("the identity provider returned no refresh token, so the mailbox could not stay authorised")]
    NoRefreshToken,
    #[error("mailbox `{0}` is not authenticated yet (no refresh token in the keyring)")]
    NotAuthenticated(String),
    #[error("mailbox `{0}` uses app-only access but no client secret or certificate is stored in the keyring")]
    NoClientSecret(String),
    /// The stored certificate credential cannot be read or cannot sign (names no key bytes).
    #[error("{0}")]
    Certificate(String),
    #[error(transparent)]
    Loopback(#[from] loopback::LoopbackError),
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// A refresh refused with HTTP 400/401 and no OAuth error in the body (an empty body is
    /// what some providers send for a revoked or replayed one-time refresh token).
    #[error("the token endpoint {url} refused the stored sign-in (HTTP {status} with no OAuth error): the refresh token was revoked, expired or already used")]
    RefreshRejected { url: String, status: u16 },
    /// The token endpoint is down or throttling (HTTP 5xx, or 429 with its `Retry-After`): the
    /// stored sign-in is not in question, so nothing is signed out and the refresh token is kept.
    #[error("the token endpoint {url} is unavailable (HTTP {status}){}", retry_after.map(|s| format!("; it asks to retry after {s} seconds")).unwrap_or_default())]
    Unavailable { url: String, status: u16, retry_after: Option<u64> },
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// The provider rotated the refresh token but the keyring did not take the new one.
    #[error("the identity provider replaced the refresh token of mailbox `{mailbox}`, but the OS keyring did not store the new one ({source}); this program keeps it in memory only and stores it at its next use, so unlock or repair the keyring now")]
    RotatedNotStored { mailbox: String, source: crate::secret::SecretError },
    /// The admin cancelled a running sign-in (the window's Cancel).
    #[error("the sign-in was cancelled")]
    Cancelled,
    /// The id_token does not answer this sign-in's `nonce` (OpenID Connect Core §3.1.3.7).
    /// Carries no nonce value: neither the one sent nor the one received is printed.
    #[error("{reason}")]
    IdToken { reason: NonceProblem },
}

/// Why an id_token's `nonce` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceProblem {
    #[error("the identity provider's id_token does not carry the nonce this sign-in sent, so it may not belong to this sign-in")]
    Missing,
    #[error("the identity provider's id_token carries a different nonce than this sign-in sent, so it belongs to another sign-in")]
    Mismatch,
    #[error("the identity provider's id_token is not a readable JWT, so its nonce cannot be checked")]
    Unreadable,
}

impl OAuthError {
    /// Stable code for the UI and diagnosis; OAuth error codes pass through as they are.
    pub fn code(&self) -> String {
        match self {
            OAuthError::Config { .. } => "config".into(),
            OAuthError::Provider { error, .. } => error.clone(),
            OAuthError::Request { .. } => "token_endpoint_unreachable".into(),
            OAuthError::Parse { .. } => "token_response_invalid".into(),
            OAuthError::Discovery { .. } => "discovery_failed".into(),
            OAuthError::NoRefreshToken => "no_refresh_token".into(),
            OAuthError::NotAuthenticated(_) => "not_authenticated".into(),
            OAuthError::NoClientSecret(_) => "no_client_secret".into(),
            OAuthError::Certificate(_) => "client_certificate_unreadable".into(),
            OAuthError::Loopback(loopback::LoopbackError::Timeout { .. }) => "signin_timeout".into(),
            OAuthError::Loopback(loopback::LoopbackError::PortTaken { .. }) => "redirect_port_taken".into(),
            OAuthError::Loopback(loopback::LoopbackError::Provider { error, .. }) => error.clone(),
            OAuthError::Loopback(_) => "loopback".into(),
            OAuthError::Secret(e) => e.code().into(),
            OAuthError::RefreshRejected { .. } => "refresh_rejected".into(),
            OAuthError::Unavailable { .. } => "token_endpoint_unavailable".into(),
            OAuthError::Lock(e) => e.code().into(),
            OAuthError::RotatedNotStored { source, .. } => source.code().into(),
            OAuthError::Cancelled => "cancelled".into(),
            OAuthError::IdToken { .. } => "nonce_mismatch".into(),
        }
    }

    /// The provider's own words, when it said something.
    pub fn server_words(&self) -> Option<String> {
        match self {
            OAuthError::Provider { error, description, .. }
            | OAuthError::Loopback(loopback::LoopbackError::Provider { error, description }) => {
                Some(description.as_ref().map(|d| format!("{error}: {d}")).unwrap_or_else(|| error.clone()))
            }
            _ => None,
        }
    }
}

/// The tokens of one successful grant. The access token stays in memory only.
#[derive(Debug)]
pub struct Tokens {
    pub access_token: AccessToken,
    pub refresh_token: Option<RefreshToken>,
    pub expires_in: Option<Duration>,
    pub id_token: Option<secrecy::SecretString>,
    /// The refresh token's idle lifetime, when the provider named it (`refresh_expires_in`).
    pub refresh_expires_in: Option<u64>,
}

impl From<TokenResponseBody> for Tokens {
    fn from(r: TokenResponseBody) -> Self {
        Tokens {
            access_token: r.access_token().clone(),
            refresh_token: r.refresh_token().cloned(),
            expires_in: r.expires_in(),
            id_token: r.extra_fields().id_token.clone().map(secrecy::SecretString::from),
            refresh_expires_in: r.extra_fields().refresh_expires_in,
        }
    }
}

/// The HTTP client for token calls: no redirects (a token endpoint never redirects, and
/// following one could send the code elsewhere) and no proxy (RFC 8252 loopback and token
/// calls go direct), a bounded time per call.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        // Why: servers close idle keep-alive connections on their own clock (Node.js after 5 s,
        // many proxies after a few seconds more), and a request written to a connection the
        // server is closing fails with "connection closed before message completed". A token
        // request cannot simply be sent again (an authorization code is good for one exchange),
        // so idle connections are dropped before the shortest such timeout; connections in use
        // during bulk work are reused as before.
        .pool_idle_timeout(Duration::from_secs(4))
        .user_agent(concat!("mailbox-auth/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("static reqwest configuration is valid")
}

/// Endpoints and scopes for a mailbox: the mailbox's own values, else its provider preset's.
pub(crate) struct Endpoints {
    pub auth_url: String,
    pub token_url: String,
    pub scopes: Vec<String>,
}

pub(crate) fn endpoints(m: &Mailbox) -> Result<Endpoints, OAuthError> {
    let p = provider::preset(m.provider, m.protocol, m.tenant.as_deref());
    let auth_url = m
        .auth_url
        .clone()
        .or(p.auth_url)
        .ok_or(OAuthError::Config { field: "auth_url", message: "is required for a generic provider".into() })?;
    let token_url = m
        .token_url
        .clone()
        .or(p.token_url)
        .ok_or(OAuthError::Config { field: "token_url", message: "is required for a generic provider".into() })?;
    let scopes = if m.scopes.is_empty() { p.scopes } else { m.scopes.clone() };
    Ok(Endpoints { auth_url, token_url, scopes })
}

/// The mailbox's stored client secret from the keyring, as oauth2's `ClientSecret` (whose
/// `Debug` prints no value). The one place it is read for a grant: the browser and device
/// sign-ins, the refresh and the app-only credential all take it from here.
pub(crate) async fn client_secret(
    secrets: &std::sync::Arc<dyn crate::secret::SecretStore>,
    mailbox: &str,
) -> Result<Option<ClientSecret>, crate::secret::SecretError> {
    use secrecy::ExposeSecret;
    Ok(crate::secret::get(secrets, mailbox, crate::secret::SecretKind::ClientSecret)
        .await?
        .map(|s| ClientSecret::new(s.expose_secret().to_string())))
}

pub(crate) fn token_client(m: &Mailbox, secret: Option<ClientSecret>) -> Result<Client<EndpointNotSet>, OAuthError> {
    let e = endpoints(m)?;
    let token_url = TokenUrl::new(e.token_url)
        .map_err(|err| OAuthError::Config { field: "token_url", message: err.to_string() })?;
    let mut c = oauth2::Client::new(ClientId::new(m.client_id.clone()))
        .set_token_uri(token_url)
        // A client secret goes in HTTP Basic, which every authorization server must accept
        // (RFC 6749 §2.3.1); a public client has none and sends its client_id in the body.
        .set_auth_type(oauth2::AuthType::BasicAuth);
    if let Some(s) = secret {
        c = c.set_client_secret(s);
    }
    Ok(c)
}

pub(crate) fn auth_client(m: &Mailbox, secret: Option<ClientSecret>) -> Result<Client<EndpointSet>, OAuthError> {
    let e = endpoints(m)?;
    let auth_url =
        AuthUrl::new(e.auth_url).map_err(|err| OAuthError::Config { field: "auth_url", message: err.to_string() })?;
    Ok(token_client(m, secret)?.set_auth_uri(auth_url))
}

/// Maps an oauth2 request error, keeping the provider's words.
pub(crate) fn map_token_error<RE, T>(
    op: &'static str,
    url: &str,
    e: RequestTokenError<RE, oauth2::StandardErrorResponse<T>>,
) -> OAuthError
where
    RE: std::error::Error + 'static,
    T: oauth2::ErrorResponseType + AsRef<str> + std::fmt::Display + 'static,
{
    match e {
        RequestTokenError::ServerResponse(r) => OAuthError::Provider {
            op,
            error: r.error().as_ref().to_string(),
            description: r.error_description().cloned(),
        },
        RequestTokenError::Request(re) => {
            let mut detail = re.to_string();
            let mut src = re.source();
            while let Some(s) = src {
                detail = format!("{detail}: {s}");
                src = s.source();
            }
            OAuthError::Request { op, url: url.into(), detail }
        }
        // The body of a bad response may echo tokens, so it is not kept; the parse error
        // says where parsing stopped.
        RequestTokenError::Parse(pe, _) => OAuthError::Parse { op, url: url.into(), detail: pe.to_string() },
        RequestTokenError::Other(s) => OAuthError::Parse { op, url: url.into(), detail: s },
    }
}

/// reqwest as oauth2's HTTP client, noting the status of the response and its `Retry-After`
/// in seconds (`u64::MAX` when absent; the HTTP-date form is not used by token endpoints).
/// Why: oauth2 drops both, and they decide whether a failed grant is a verdict on the stored
/// credential or the endpoint being down or throttling.
pub(crate) struct StatusNoting<'a> {
    http: &'a reqwest::Client,
    status: AtomicU16,
    retry_after: AtomicU64,
}

impl<'a> StatusNoting<'a> {
    pub(crate) fn new(http: &'a reqwest::Client) -> Self {
        Self { http, status: AtomicU16::new(0), retry_after: AtomicU64::new(u64::MAX) }
    }

    /// The status of the last response (0 before any).
    pub(crate) fn status(&self) -> u16 {
        self.status.load(Ordering::SeqCst)
    }

    /// A failed grant as an [`OAuthError`]: the endpoint down or throttling is
    /// [`OAuthError::Unavailable`] (HTTP 429 whatever its body says, since some providers add an
    /// OAuth-style `slow_down`; 5xx without an OAuth error), anything else as
    /// [`map_token_error`] says.
    pub(crate) fn token_error<RE, T>(
        &self,
        op: &'static str,
        url: &str,
        e: RequestTokenError<RE, oauth2::StandardErrorResponse<T>>,
    ) -> OAuthError
    where
        RE: std::error::Error + 'static,
        T: oauth2::ErrorResponseType + AsRef<str> + std::fmt::Display + 'static,
    {
        match (self.status(), e) {
            (s @ 429, _) | (s @ 500..=599, RequestTokenError::Other(_) | RequestTokenError::Parse(..)) => {
                let retry_after = Some(self.retry_after.load(Ordering::SeqCst)).filter(|v| *v != u64::MAX);
                OAuthError::Unavailable { url: url.into(), status: s, retry_after }
            }
            (_, e) => map_token_error(op, url, e),
        }
    }
}

impl<'c> AsyncHttpClient<'c> for StatusNoting<'_> {
    type Error = oauth2::HttpClientError<reqwest::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let resp = self.http.call(request).await?;
            self.status.store(resp.status().as_u16(), Ordering::SeqCst);
            let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()?.trim().parse().ok());
            self.retry_after.store(retry_after.unwrap_or(u64::MAX), Ordering::SeqCst);
            Ok(resp)
        })
    }
}

/// A tiny HTTP/1.1 server on a real loopback socket, standing in for an identity provider's
/// endpoints in unit tests.
#[cfg(test)]
pub(crate) mod test_http {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one request (head and `Content-Length` body) and returns its path.
    async fn read_request(s: &mut tokio::net::TcpStream) -> Option<String> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        head.split_whitespace().nth(1).map(str::to_string)
    }

    /// Serves JSON answers from `answer(port, path) -> (status, body)`; returns the port.
    pub(crate) async fn serve<F>(answer: F) -> u16
    where
        F: Fn(u16, &str) -> (&'static str, String) + Send + Sync + 'static,
    {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = std::sync::Arc::new(answer);
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { continue };
                let answer = answer.clone();
                tokio::spawn(async move {
                    while let Some(path) = read_request(&mut s).await {
                        let (status, body) = answer(port, &path);
                        let resp = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers the first request on a connection and drops any later one unanswered,
    /// as a server closing an idle keep-alive connection does when a request crosses its close.
    #[tokio::test]
    async fn an_idle_connection_is_not_reused_after_the_servers_usual_keep_alive() {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming().take(3) {
                let Ok(conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    // Headers of the first request (no body), then one answer, keep-alive.
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                        line.clear();
                    }
                    let mut w = conn;
                    let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                    // A later request on this connection is read and dropped unanswered.
                    line.clear();
                    let _ = reader.read_line(&mut line);
                });
            }
        });
        let client = http_client();
        assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(4500)).await;
        let second = client.get(&url).send().await;
        assert!(second.is_ok(), "the idle connection was reused: {:?}", second.err());
    }

    #[tokio::test]
    async fn the_client_secret_is_read_from_the_keyring_as_a_redacted_type() {
        let secrets: std::sync::Arc<dyn crate::secret::SecretStore> =
            std::sync::Arc::new(crate::secret::MemoryStore::default());
        assert!(client_secret(&secrets, "a").await.unwrap().is_none());
        crate::secret::set(&secrets, "a", crate::secret::SecretKind::ClientSecret, "cs-SECRET".into()).await.unwrap();
        let s = client_secret(&secrets, "a").await.unwrap().unwrap();
        assert_eq!(s.secret(), "cs-SECRET");
        assert!(!format!("{s:?}").contains("cs-SECRET"));
        assert!(client_secret(&secrets, "b").await.unwrap().is_none());
    }

    #[test]
    fn token_types_do_not_print_their_values() {
        let t = Tokens {
            access_token: AccessToken::new("at-SECRET".into()),
            refresh_token: Some(RefreshToken::new("rt-SECRET".into())),
            expires_in: None,
            id_token: Some(secrecy::SecretString::from("idt-SECRET")),
            refresh_expires_in: None,
        };
        assert!(!format!("{t:?}").contains("SECRET"), "{t:?}");
    }

    #[test]
    fn provider_error_keeps_its_words_and_code() {
        let e = OAuthError::Provider {
            op: "refresh",
            error: "invalid_grant".into(),
            description: Some("grant request is invalid".into()),
        };
        assert_eq!(e.code(), "invalid_grant");
        assert_eq!(e.server_words().as_deref(), Some("invalid_grant: grant request is invalid"));
        assert!(e.to_string().contains("grant request is invalid"));
    }
}
