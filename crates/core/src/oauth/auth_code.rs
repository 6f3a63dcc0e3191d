//! Authorization code + PKCE (RFC 6749 §4.1, RFC 7636 S256) through the system browser and a
//! loopback redirect (RFC 8252).
//!
//! Order matters: bind the listener first (so the redirect URI carries the real port), build the
//! URL with a fresh `state` and PKCE challenge, hand it to the browser (and to the admin, in case
//! no browser opens), wait for the one matching callback, then exchange the code with the
//! verifier. The verifier never leaves this function; `PkceCodeVerifier` is not `Clone`.

use std::time::Duration;

use oauth2::{AuthorizationCode, ClientSecret, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope};
use url::Url;

use super::loopback::Loopback;
use super::{auth_client, endpoints, map_token_error, OAuthError, Tokens};
use crate::mailbox::Mailbox;
use crate::provider;

/// Default time the admin has to finish signing in.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Steps of a sign-in, for progress display.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum AuthStep {
    /// The authorization URL is ready; `opened` says whether a browser was started.
    BrowserOpened { url: String, opened: bool, error: Option<String> },
    /// Waiting for the redirect back from the browser.
    WaitingForSignIn,
    /// Device flow: the code to type in at the verification address.
    DeviceCode {
        user_code: String,
        verification_uri: String,
        verification_uri_complete: Option<String>,
        expires_in: u64,
    },
    /// The code arrived; exchanging it for tokens.
    Exchanging,
    /// Signed in; now logging in to the mail server.
    Verifying,
}

/// Builds the authorization URL for a given redirect port. Returns the URL, the state and the
/// PKCE verifier.
pub fn authorization_url(
    m: &Mailbox,
    port: u16,
) -> Result<(Url, CsrfToken, oauth2::PkceCodeVerifier, RedirectUrl), OAuthError> {
    let e = endpoints(m)?;
    let preset = provider::preset(m.provider, m.protocol, m.tenant.as_deref());
    let redirect = RedirectUrl::new(format!("http://{}:{port}/", preset.redirect_host))
        .map_err(|err| OAuthError::Config { field: "redirect", message: err.to_string() })?;
    let client = auth_client(m, None)?.set_redirect_uri(redirect.clone());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(e.scopes.into_iter().map(Scope::new))
        .set_pkce_challenge(challenge);
    for (k, v) in provider::effective_auth_params(m) {
        req = req.add_extra_param(k, v);
    }
    let (url, state) = req.url();
    Ok((url, state, verifier, redirect))
}

/// Runs the whole sign-in. `open` starts the browser on the URL; its failure is not fatal (the
/// URL is reported in [`AuthStep::BrowserOpened`] for the admin to open by hand).
pub async fn sign_in(
    m: &Mailbox,
    client_secret: Option<ClientSecret>,
    http: &reqwest::Client,
    timeout: Duration,
    open: &(dyn Fn(&Url) -> Result<(), String> + Send + Sync),
    progress: &(dyn Fn(AuthStep) + Send + Sync),
) -> Result<Tokens, OAuthError> {
    let listener = Loopback::bind().await?;
    let (url, state, verifier, redirect) = authorization_url(m, listener.port())?;
    let opened = open(&url);
    progress(AuthStep::BrowserOpened { url: url.to_string(), opened: opened.is_ok(), error: opened.err() });
    progress(AuthStep::WaitingForSignIn);
    let code = listener.wait(state.secret(), timeout).await?;
    progress(AuthStep::Exchanging);
    let token_url = endpoints(m)?.token_url;
    let client = auth_client(m, client_secret)?.set_redirect_uri(redirect);
    let resp = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(http)
        .await
        .map_err(|e| map_token_error("code exchange", &token_url, e))?;
    Ok(resp.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::sample;

    #[test]
    fn url_carries_pkce_state_scopes_and_extra_params() {
        let mut m = sample();
        m.scopes = vec!["openid".into(), "offline_access".into()];
        m.auth_params = vec![("prompt".into(), "consent".into()), ("resource".into(), "https://r.example".into())];
        let (url, state, _v, redirect) = authorization_url(&m, 45678).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "client");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:45678/");
        assert_eq!(redirect.as_str(), "http://127.0.0.1:45678/");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"].len(), 43);
        assert_eq!(&q["state"], state.secret());
        assert_eq!(q["scope"], "openid offline_access");
        assert_eq!(q["prompt"], "consent");
        assert_eq!(q["resource"], "https://r.example");
        assert!(url.as_str().starts_with("https://idp.example.com/auth?"));
    }

    #[test]
    fn each_url_has_fresh_state_and_challenge() {
        let m = sample();
        let (a, sa, ..) = authorization_url(&m, 1).unwrap();
        let (b, sb, ..) = authorization_url(&m, 1).unwrap();
        assert_ne!(sa.secret(), sb.secret());
        assert_ne!(a, b);
    }
}
