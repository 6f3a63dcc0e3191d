//! The device authorization grant (RFC 8628).
//!
//! For where a browser redirect to this machine does not fit (a remote server, a locked-down
//! desktop): the provider hands out a short user code and a verification address; the admin opens
//! it on any device and signs in, while we poll the token endpoint at the interval the provider
//! asks for. oauth2's poller honours `authorization_pending` (keep waiting) and `slow_down` (add
//! five seconds); `expired_token` and `access_denied` end the flow with the provider's words.
//! Cancelling is dropping the future.

use std::time::Duration;

use oauth2::{ClientSecret, DeviceAuthorizationUrl, Scope, StandardDeviceAuthorizationResponse};

use super::auth_code::AuthStep;
use super::{endpoints, map_token_error, token_client, OAuthError, Tokens};
use crate::mailbox::Mailbox;
use crate::provider;

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
        .request_async(http, tokio::time::sleep, Some(timeout))
        .await
        .map_err(|err| map_token_error("device sign-in", &e.token_url, err))?;
    Ok(resp.into())
}
