//! The one place where the core's progress becomes what the window is told (style example 5).

use mailbox_auth_core::health::HealthRecord;
use mailbox_auth_core::oauth::auth_code::AuthStep;
use serde::Serialize;

/// Progress of one Authenticate, sent over a `tauri::ipc::Channel`: the core's own steps
/// (`{"step": "browser_opened", "url": …}`, `waiting_for_sign_in`, `device_code`, `exchanging`,
/// `verifying`), then `{"step": "done", "record": …}`. The window shows the sign-in address
/// of `browser_opened` too, to copy when no browser opened.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum SignInEvent {
    /// The newest health record: a verification's, or the sign-in failure's.
    Done { record: HealthRecord },
    /// A step of the sign-in, exactly as the core reports it.
    #[serde(untagged)]
    Progress(AuthStep),
}

impl From<AuthStep> for SignInEvent {
    fn from(s: AuthStep) -> Self {
        SignInEvent::Progress(s)
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
        assert_eq!(v["url"], "https://idp/auth");
    }

    /// A passed IMAP check with three messages.
    pub(crate) fn record() -> HealthRecord {
        HealthRecord {
            mailbox: "m".into(),
            at: chrono::Utc::now(),
            check: mailbox_auth_core::health::Check::Imap,
            ok: true,
            code: None,
            message: "INBOX opened".into(),
            hint: None,
            fix: None,
            server_words: None,
            messages: Some(3),
        }
    }

    #[test]
    fn done_carries_the_record() {
        let record = record();
        let v = serde_json::to_value(SignInEvent::Done { record }).unwrap();
        assert_eq!((v["step"].as_str(), v["record"]["messages"].as_u64()), (Some("done"), Some(3)));
    }
}
