//! Authorization code + PKCE (RFC 6749 §4.1, RFC 7636 S256) through the system browser and a
//! loopback redirect (RFC 8252).
//!
//! Order matters: bind the listener first (so the redirect URI carries the real port), build the
//! URL with a fresh `state` and PKCE challenge, hand it to the browser (and to the admin, in case
//! no browser opens), wait for the one matching callback, then exchange the code with the
//! verifier. The verifier never leaves this function; `PkceCodeVerifier` is not `Clone`.
//!
//! With the `openid` scope a fresh `nonce` goes with the request (OpenID Connect Core §3.1.2.1;
//! some providers refuse a request without one), and the id_token that comes back must carry it
//! (§3.1.3.7): a token minted for another sign-in is refused with `nonce_mismatch`.
//!
//! The listener port is free unless the mailbox fixes `redirect_port`, for providers that match
//! the registered redirect URI exactly, port included.

use std::time::Duration;

use oauth2::{ClientSecret, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope};
use secrecy::ExposeSecret;
use url::Url;

use super::loopback::Loopback;
use super::{auth_client, endpoints, map_token_error, NonceProblem, OAuthError, Tokens};
use crate::mailbox::Mailbox;
use crate::provider;

/// Default time the admin has to finish signing in.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Steps of a sign-in, for progress display.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
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

/// One authorization request: the URL for the browser and what the rest of the flow checks.
pub struct AuthRequest {
    pub url: Url,
    pub state: CsrfToken,
    pub verifier: oauth2::PkceCodeVerifier,
    pub redirect: RedirectUrl,
    /// The `nonce` sent (OpenID Connect Core §3.1.2.1), which the id_token must carry back.
    pub nonce: Option<String>,
}

// The state, the verifier and the nonce are single-use secrets of this sign-in.
impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequest")
            .field("redirect", &self.redirect.as_str())
            .field("nonce", &self.nonce.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// The redirect URI for a loopback port: the provider's redirect host (`localhost` for
/// Microsoft, which registers `http://localhost`; `127.0.0.1` otherwise, RFC 8252 §7.3).
pub fn redirect_uri(m: &Mailbox, port: u16) -> Result<RedirectUrl, OAuthError> {
    let preset = provider::preset(m.provider, m.protocol, m.tenant.as_deref());
    RedirectUrl::new(format!("http://{}:{port}/", preset.redirect_host))
        .map_err(|err| OAuthError::Config { field: "redirect", message: err.to_string() })
}

/// Builds the authorization request for a given redirect port: a fresh `state` and PKCE
/// challenge, and — when the scopes ask for `openid` — a fresh `nonce`. A `nonce` the admin put
/// in `auth_params` (some providers are documented with a fixed one) is sent as it is and
/// checked the same way.
pub fn authorization_url(m: &Mailbox, port: u16) -> Result<AuthRequest, OAuthError> {
    let e = endpoints(m)?;
    let redirect = redirect_uri(m, port)?;
    let client = auth_client(m, None)?.set_redirect_uri(redirect.clone());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let params = provider::effective_auth_params(m);
    let admin_nonce = params.iter().find(|(k, _)| k == "nonce").map(|(_, v)| v.clone());
    // The nonce binds the id_token to this very request, so a token minted for another sign-in
    // (an injected code) is refused. It is as unguessable as the state.
    let nonce = admin_nonce
        .clone()
        .or_else(|| e.scopes.iter().any(|s| s == "openid").then(|| CsrfToken::new_random().secret().clone()));
    let mut req = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(e.scopes.into_iter().map(Scope::new))
        .set_pkce_challenge(challenge);
    for (k, v) in params {
        req = req.add_extra_param(k, v);
    }
    if let (Some(n), None) = (&nonce, &admin_nonce) {
        req = req.add_extra_param("nonce", n.clone());
    }
    let (url, state) = req.url();
    Ok(AuthRequest { url, state, verifier, redirect, nonce })
}

/// Checks that the id_token carries the nonce this sign-in sent (OpenID Connect Core
/// §3.1.3.7 step 11). A token response without an id_token has nothing to check: the id_token
/// only names the signed-in account for a hint. The claims are read without checking the
/// signature, like [`crate::app::signed_in_account`]: the token came straight from the token
/// endpoint over TLS, in answer to this sign-in's code and PKCE verifier.
pub fn check_nonce(id_token: Option<&str>, expected: &str) -> Result<(), OAuthError> {
    use base64::Engine;
    let Some(id_token) = id_token else { return Ok(()) };
    let claims = id_token
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let Some(claims) = claims else { return Err(OAuthError::IdToken { reason: NonceProblem::Unreadable }) };
    match claims.get("nonce").and_then(|n| n.as_str()) {
        None => Err(OAuthError::IdToken { reason: NonceProblem::Missing }),
        // Whole values, never prefixes; a timing-safe compare is not needed for a single-use
        // value the provider already knows.
        Some(n) if n != expected => Err(OAuthError::IdToken { reason: NonceProblem::Mismatch }),
        Some(_) => Ok(()),
    }
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
    let preset = provider::preset(m.provider, m.protocol, m.tenant.as_deref());
    let listener = Loopback::bind(preset.redirect_host, m.redirect_port).await?;
    let AuthRequest { url, state, verifier, redirect, nonce } = authorization_url(m, listener.port())?;
    let opened = open(&url);
    progress(AuthStep::BrowserOpened { url: url.to_string(), opened: opened.is_ok(), error: opened.err() });
    progress(AuthStep::WaitingForSignIn);
    let code = listener.wait(state.secret(), timeout).await?;
    progress(AuthStep::Exchanging);
    let token_url = endpoints(m)?.token_url;
    let client = auth_client(m, client_secret)?.set_redirect_uri(redirect);
    let resp = client
        .exchange_code(code)
        .set_pkce_verifier(verifier)
        .request_async(http)
        .await
        .map_err(|e| map_token_error("code exchange", &token_url, e))?;
    let tokens: Tokens = resp.into();
    if let Some(n) = &nonce {
        check_nonce(tokens.id_token.as_ref().map(|t| t.expose_secret()), n)?;
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::sample;
    use base64::Engine;

    fn query(url: &Url) -> std::collections::HashMap<String, String> {
        url.query_pairs().into_owned().collect()
    }

    fn jwt(claims: &str) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b(r#"{"alg":"RS256"}"#), b(claims))
    }

    #[test]
    fn url_carries_pkce_state_scopes_and_extra_params() {
        let mut m = sample();
        m.scopes = vec!["openid".into(), "offline_access".into()];
        m.auth_params = vec![("prompt".into(), "consent".into()), ("resource".into(), "https://r.example".into())];
        let r = authorization_url(&m, 45678).unwrap();
        let q = query(&r.url);
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "client");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:45678/");
        assert_eq!(r.redirect.as_str(), "http://127.0.0.1:45678/");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"].len(), 43);
        assert_eq!(&q["state"], r.state.secret());
        assert_eq!(q["scope"], "openid offline_access");
        assert_eq!(q["prompt"], "consent");
        assert_eq!(q["resource"], "https://r.example");
        assert!(r.url.as_str().starts_with("https://idp.example.com/auth?"));
    }

    #[test]
    fn each_url_has_fresh_state_challenge_and_nonce() {
        let m = sample();
        let a = authorization_url(&m, 1).unwrap();
        let b = authorization_url(&m, 1).unwrap();
        assert_ne!(a.state.secret(), b.state.secret());
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.url, b.url);
    }

    #[test]
    fn openid_sign_ins_send_a_random_nonce_once() {
        let m = sample(); // scopes: openid
        let r = authorization_url(&m, 1).unwrap();
        let nonce = r.nonce.clone().expect("a nonce for openid");
        assert!(nonce.len() >= 22, "as unguessable as the state: {}", nonce.len());
        assert_ne!(&nonce, r.state.secret());
        let sent: Vec<_> = r.url.query_pairs().filter(|(k, _)| k == "nonce").map(|(_, v)| v.into_owned()).collect();
        assert_eq!(sent, vec![nonce]);
        // Not asked without openid: plain OAuth2 has no id_token to carry it back.
        let mut plain = sample();
        plain.scopes = vec!["mail".into(), "offline_access".into()];
        let r = authorization_url(&plain, 1).unwrap();
        assert_eq!(r.nonce, None);
        assert!(!query(&r.url).contains_key("nonce"), "{}", r.url);
    }

    #[test]
    fn an_admins_fixed_nonce_is_sent_once_and_checked() {
        let mut m = sample();
        m.auth_params = vec![("nonce".into(), "fixed-by-admin".into())];
        let r = authorization_url(&m, 1).unwrap();
        assert_eq!(r.nonce.as_deref(), Some("fixed-by-admin"));
        let sent: Vec<_> = r.url.query_pairs().filter(|(k, _)| k == "nonce").map(|(_, v)| v.into_owned()).collect();
        assert_eq!(sent, vec!["fixed-by-admin".to_string()]);
    }

    #[test]
    fn the_id_token_must_carry_the_nonce_sent() {
        assert!(check_nonce(Some(&jwt(r#"{"sub":"a","nonce":"n-123"}"#)), "n-123").is_ok());
        assert!(check_nonce(None, "n-123").is_ok(), "no id_token, nothing to check");
        let cases = [
            (jwt(r#"{"sub":"a","nonce":"n-999"}"#), NonceProblem::Mismatch),
            (jwt(r#"{"sub":"a","nonce":"n-1234"}"#), NonceProblem::Mismatch),
            (jwt(r#"{"sub":"a","nonce":"n-12"}"#), NonceProblem::Mismatch),
            (jwt(r#"{"sub":"a"}"#), NonceProblem::Missing),
            (jwt(r#"{"sub":"a","nonce":123}"#), NonceProblem::Missing),
            ("not-a-jwt".to_string(), NonceProblem::Unreadable),
        ];
        for (token, want) in cases {
            let e = check_nonce(Some(&token), "n-123").unwrap_err();
            assert!(matches!(e, OAuthError::IdToken { reason } if reason == want), "{e:?}");
            assert_eq!(e.code(), "nonce_mismatch");
            // Neither value is ever printed.
            let text = format!("{e} {e:?}");
            assert!(!text.contains("n-123") && !text.contains("n-999"), "{text}");
        }
    }

    #[test]
    fn microsoft_redirects_to_localhost() {
        let mut m = sample();
        m.provider = crate::mailbox::ProviderKind::Microsoft;
        m.tenant = Some("organizations".into());
        assert_eq!(redirect_uri(&m, 8400).unwrap().as_str(), "http://localhost:8400/");
    }

    /// The whole browser sign-in over real sockets: a stand-in browser follows the redirect to
    /// the loopback listener, a stand-in token endpoint answers with an id_token whose nonce is
    /// the one sent (signed in) or another one (refused, and no tokens come back).
    #[tokio::test]
    async fn sign_in_refuses_an_id_token_for_another_nonce() {
        use std::sync::{Arc, Mutex};
        for echo in [true, false] {
            let sent_nonce = Arc::new(Mutex::new(String::new()));
            let seen = sent_nonce.clone();
            let port = crate::oauth::test_http::serve(move |_, path| {
                assert_eq!(path, "/token");
                let nonce = if echo { seen.lock().unwrap().clone() } else { "from-another-sign-in".into() };
                let idt = jwt(&format!(r#"{{"sub":"a","nonce":"{nonce}"}}"#));
                (
                    "200 OK",
                    format!(r#"{{"access_token":"at","token_type":"Bearer","refresh_token":"rt","id_token":"{idt}"}}"#),
                )
            })
            .await;
            let mut m = sample();
            m.auth_url = Some(format!("http://127.0.0.1:{port}/auth"));
            m.token_url = Some(format!("http://127.0.0.1:{port}/token"));
            let record = sent_nonce.clone();
            let browser = move |url: &Url| -> Result<(), String> {
                let q = query(url);
                *record.lock().unwrap() = q["nonce"].clone();
                let target = format!("{}?code=the-code&state={}", q["redirect_uri"], q["state"]);
                std::thread::spawn(move || {
                    let u = Url::parse(&target).unwrap();
                    let mut s = std::net::TcpStream::connect(("127.0.0.1", u.port().unwrap())).unwrap();
                    std::io::Write::write_all(
                        &mut s,
                        format!("GET /?{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", u.query().unwrap()).as_bytes(),
                    )
                    .unwrap();
                    std::io::Read::read_to_end(&mut s, &mut Vec::new()).unwrap();
                });
                Ok(())
            };
            let http = crate::oauth::http_client();
            let got = sign_in(&m, None, &http, Duration::from_secs(20), &browser, &|_| {}).await;
            if echo {
                let t = got.expect("the id_token carries this sign-in's nonce");
                assert_eq!(t.access_token.secret(), "at");
            } else {
                let e = got.unwrap_err();
                assert_eq!(e.code(), "nonce_mismatch", "{e}");
                assert!(!e.to_string().contains("from-another-sign-in"), "{e}");
            }
        }
    }
}
