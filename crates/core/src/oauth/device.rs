//! The device authorization grant (RFC 8628).
//!
//! For where a browser redirect to this machine does not fit (a remote server, a locked-down
//! desktop): the provider hands out a short user code and a verification address; the admin opens
//! it on any device and signs in, while we poll the token endpoint at the interval the provider
//! asks for. oauth2's poller honours `authorization_pending` (keep waiting) and `slow_down` (add
//! five seconds); `expired_token` and `access_denied` end the flow with the provider's words.
//! Cancelling is dropping the future.
//!
//! The provider's `interval` is not taken blindly: oauth2 sleeps exactly what the response says
//! (and adds five seconds on every `slow_down`, without limit), so `"interval": 0` would poll
//! the token endpoint in a busy loop and a huge one would outlast any timeout. Every wait is
//! clamped to [`MIN_INTERVAL`]..=[`MAX_INTERVAL`]; an absent interval is five seconds
//! (RFC 8628 §3.2, oauth2's default too).

use std::time::Duration;

use oauth2::{ClientSecret, DeviceAuthorizationUrl, Scope, StandardDeviceAuthorizationResponse};

use super::auth_code::AuthStep;
use super::{endpoints, map_token_error, token_client, OAuthError, Tokens};
use crate::mailbox::Mailbox;
use crate::provider;

/// The shortest wait between two polls, whatever the provider says.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between two polls: the admin is typing a code, the sign-in must be noticed.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// The wait before the next poll, for the interval oauth2 asks for.
pub fn poll_wait(asked: Duration) -> Duration {
    asked.clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// The device authorization endpoint of a mailbox: its own, else its provider's.
pub fn device_url(m: &Mailbox) -> Result<String, OAuthError> {
    m.device_url
        .clone()
        .or(provider::preset(m.provider, m.protocol, m.tenant.as_deref()).device_url)
        .ok_or(OAuthError::Config { field: "device_url", message: "is required for the device flow".into() })
}

/// Runs the device flow: asks for a user code, reports it, polls until the admin has signed in,
/// the code expires, or `timeout` passes.
pub async fn sign_in(
    m: &Mailbox,
    client_secret: Option<ClientSecret>,
    http: &reqwest::Client,
    timeout: Duration,
    progress: &(dyn Fn(AuthStep) + Send + Sync),
) -> Result<Tokens, OAuthError> {
    let url = device_url(m)?;
    let e = endpoints(m)?;
    let device_auth_url = DeviceAuthorizationUrl::new(url.clone())
        .map_err(|err| OAuthError::Config { field: "device_url", message: err.to_string() })?;
    let client = token_client(m, client_secret)?.set_device_authorization_url(device_auth_url);
    let mut req = client.exchange_device_code().add_scopes(e.scopes.into_iter().map(Scope::new));
    // The admin's own extra parameters (a generic IdP may need `prompt=consent` for a refresh
    // token, or `resource=…`) go here too; the presets' ones (`prompt=select_account`,
    // `login_hint`) belong to the browser page and stay off the device endpoint.
    for (k, v) in &m.auth_params {
        req = req.add_extra_param(k.clone(), v.clone());
    }
    let details: StandardDeviceAuthorizationResponse =
        req.request_async(http).await.map_err(|err| map_token_error("device authorization", &url, err))?;
    progress(AuthStep::DeviceCode {
        user_code: details.user_code().secret().clone(),
        verification_uri: details.verification_uri().to_string(),
        verification_uri_complete: details.verification_uri_complete().map(|u| u.secret().clone()),
        expires_in: details.expires_in().as_secs(),
    });
    progress(AuthStep::WaitingForSignIn);
    let resp = client
        .exchange_device_access_token(&details)
        .request_async(http, |asked| tokio::time::sleep(poll_wait(asked)), Some(timeout))
        .await
        .map_err(|err| map_token_error("device sign-in", &e.token_url, err))?;
    Ok(resp.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::sample;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn waits_are_clamped() {
        assert_eq!(poll_wait(Duration::ZERO), MIN_INTERVAL);
        assert_eq!(poll_wait(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(poll_wait(Duration::from_secs(u64::MAX)), MAX_INTERVAL);
    }

    /// A provider that asks for `"interval": 0` and then answers every poll with
    /// `authorization_pending`: a real socket, counting the polls.
    async fn eager_provider() -> (u16, Arc<AtomicUsize>) {
        let polls = Arc::new(AtomicUsize::new(0));
        let counter = polls.clone();
        let port = crate::oauth::test_http::serve(move |port, path| {
            if path == "/device" {
                (
                    "200 OK",
                    format!(
                        r#"{{"device_code":"dc","user_code":"ABCD-EFGH","verification_uri":"http://127.0.0.1:{port}/verify","expires_in":600,"interval":0}}"#
                    ),
                )
            } else {
                counter.fetch_add(1, Ordering::SeqCst);
                ("400 Bad Request", r#"{"error":"authorization_pending"}"#.to_string())
            }
        })
        .await;
        (port, polls)
    }

    #[tokio::test]
    async fn interval_zero_does_not_busy_poll() {
        let (port, polls) = eager_provider().await;
        let mut m = sample();
        m.flow = crate::mailbox::Flow::Device;
        m.auth_url = Some(format!("http://127.0.0.1:{port}/auth"));
        m.token_url = Some(format!("http://127.0.0.1:{port}/token"));
        m.device_url = Some(format!("http://127.0.0.1:{port}/device"));
        let window = Duration::from_secs(3);
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            sign_in(&m, None, &crate::oauth::http_client(), window, &|_| {}),
        )
        .await
        .expect("the sign-in ends after its timeout");
        let err = outcome.unwrap_err();
        assert_eq!(err.code(), "expired_token", "{err}");
        let n = polls.load(Ordering::SeqCst);
        // One poll per second at most (plus the first): the unclamped poller made hundreds.
        assert!((1..=window.as_secs() as usize + 2).contains(&n), "{n} polls in {window:?}");
    }
}
