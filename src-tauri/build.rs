//! Generates the permission manifest for exactly the commands the window may call
//! (see `capabilities/main.json`).

const COMMANDS: &[&str] = &[
    "list_mailboxes",
    "get_mailbox",
    "save_mailbox",
    "delete_mailbox",
    "authenticate",
    "cancel_authentication",
    "verify",
    "verify_many",
    "import_preview",
    "import_commit",
    "read_csv_file",
    "export_csv",
    "history",
    "provider_preset",
    "set_client_secret",
    "forget",
    "exchange_script",
    "open_sign_in_url",
    "send_test_message",
    "create_app_cert",
    "app_cert",
    "export_handover",
    "import_handover",
    "uptime",
    "monitor_state",
    "set_monitoring_paused",
    "check_all_now",
    "set_start_at_login",
    "keyring_doctor",
    "support_bundle",
];

fn main() {
    tauri_build::try_build(
        tauri_build::Attributes::new().app_manifest(tauri_build::AppManifest::new().commands(COMMANDS)),
    )
    .expect("tauri build step");
}
