//! The one place where the core's progress becomes what the window is told (style example 5).

use mailbox_auth_core::health::HealthRecord;
use mailbox_auth_core::oauth::auth_code::AuthStep;
use serde::Serialize;

/// Progress of one Authenticate, sent over a `tauri::ipc::Channel`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum SignInEvent {
    /// The sign-in address is ready; `opened` says whether a browser was started. The window
    /// shows the address too, to copy when no browser opened.
    BrowserOpened {
        url: String,
        opened: bool,
        error: Option<String>,
    },
    WaitingForSignIn,
    DeviceCode {
        user_code: String,
        verification_uri: String,
        verification_uri_complete: Option<String>,
        expires_in: u64,
    },
    Exchanging,
    Verifying,
    /// The newest health record: a verification's, or the sign-in failure's.
    Done {
        record: HealthRecord,
    },
}

impl From<AuthStep> for SignInEvent {
    fn from(s: AuthStep) -> Self {
        match s {
            AuthStep::BrowserOpened { url, opened, error } => SignInEvent::BrowserOpened { url, opened, error },
            AuthStep::WaitingForSignIn => SignInEvent::WaitingForSignIn,
            AuthStep::DeviceCode { user_code, verification_uri, verification_uri_complete, expires_in } => {
                SignInEvent::DeviceCode { user_code, verification_uri, verification_uri_complete, expires_in }
            }
            AuthStep::Exchanging => SignInEvent::Exchanging,
            AuthStep::Verifying => SignInEvent::Verifying,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_serialize_with_a_snake_case_tag() {
        let v = serde_json::to_value(SignInEvent::from(AuthStep::WaitingForSignIn)).unwrap();
        assert_eq!(v, serde_json::json!({"step": "waiting_for_sign_in"}));
        let v = serde_json::to_value(SignInEvent::from(AuthStep::BrowserOpened {
            url: "https://idp/auth".into(),
            opened: false,
            error: Some("no browser".into()),
        }))
        .unwrap();
        assert_eq!(v["step"], "browser_opened");
        assert_eq!(v["opened"], false);
    }
}
