//! The values the window shows that the core decides (the Microsoft tenant default, the SMTP
//! submission ports, the badge's words, the checks' names), written for the UI to import:
//! `ui/src/lib/core.json`. Why a generated file: the UI must not keep a hand copy of a default
//! or a label (a copy drifts silently); a JSON import is there before the first command
//! returns (the empty editor needs the tenant default synchronously), and the test below fails
//! when the file no longer matches the core, so a change here breaks `cargo test` until the
//! file is regenerated:
//!
//! ```sh
//! MAILBOX_AUTH_WRITE_UI_CONTRACT=1 cargo test -p mailbox-auth-core contract
//! ```

use serde_json::{json, Value};

use crate::health::{Check, Status};
use crate::mailbox::{ProviderKind, Security};
use crate::provider;

/// Where the UI reads the file, relative to the workspace root.
pub const UI_FILE: &str = "ui/src/lib/core.json";

/// Everything `ui/src/lib/core.json` holds, as the core decides it today.
pub fn ui_contract() -> Value {
    let statuses = [Status::Verified, Status::NeedsAttention, Status::Failed, Status::NotAuthenticated];
    let labels: serde_json::Map<String, Value> = statuses
        .iter()
        .map(|s| (serde_json::to_value(s).expect("status").as_str().expect("a string").to_string(), s.label().into()))
        .collect();
    let smtp_ports: serde_json::Map<String, Value> = [Security::Tls, Security::Starttls]
        .iter()
        .map(|s| {
            (
                serde_json::to_value(s).expect("security").as_str().expect("a string").to_string(),
                provider::default_smtp_port(*s).into(),
            )
        })
        .collect();
    let check_labels: serde_json::Map<String, Value> =
        Check::ALL.iter().map(|c| (c.as_str().to_string(), c.label().into())).collect();
    json!({
        "check_labels": check_labels,
        "default_tenant": provider::default_tenant(ProviderKind::Microsoft),
        "smtp_ports": smtp_ports,
        "status_labels": labels,
        "throttled_label": crate::health::THROTTLED_LABEL,
    })
}

/// The file's text: pretty JSON with a closing newline (what Prettier and editors leave).
pub fn ui_contract_text() -> String {
    serde_json::to_string_pretty(&ui_contract()).expect("JSON") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ui_file_is_the_core_s_values() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(UI_FILE);
        let want = ui_contract_text();
        if std::env::var_os("MAILBOX_AUTH_WRITE_UI_CONTRACT").is_some() {
            std::fs::write(&path, &want).expect("write the UI contract");
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{UI_FILE} does not match the core; regenerate it with \
             MAILBOX_AUTH_WRITE_UI_CONTRACT=1 cargo test -p mailbox-auth-core contract\n--- file\n{have}\n--- core\n{want}"
        );
    }

    #[test]
    fn it_names_every_status_and_both_smtp_securities() {
        let c = ui_contract();
        assert_eq!(c["default_tenant"], "organizations");
        assert_eq!(c["smtp_ports"], json!({"tls": 465, "starttls": 587}));
        assert_eq!(c["status_labels"]["needs_attention"], "Needs attention");
        assert_eq!(c["status_labels"].as_object().unwrap().len(), 4);
        assert_eq!(c["throttled_label"], "Throttled");
        assert_eq!(c["check_labels"]["smtp"], "SMTP login");
        assert_eq!(c["check_labels"].as_object().unwrap().len(), Check::ALL.len());
    }
}
