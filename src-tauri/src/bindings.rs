//! The window's IPC contract, generated: the commands the window may call (the list in
//! [`builder`]) and every type that crosses (`specta::Type`, derived in the core behind its
//! `specta` feature) become `ui/src/lib/bindings.ts` through tauri-specta. Why generated: a hand
//! copy of a Rust type in TypeScript drifts silently; with the file generated, a changed field
//! fails this crate's test until the file is regenerated, and then `svelte-check` (run by
//! `npm run build`) until the UI follows:
//!
//! ```sh
//! MAILBOX_AUTH_WRITE_BINDINGS=1 cargo test -p mailbox-auth-desktop bindings
//! ```
//!
//! `build.rs` (the permission manifest), this list (the invoke handler and the bindings) and
//! `capabilities/main.json` name the same commands: a test in `lib.rs` checks it.

use specta_typescript::Typescript;
use tauri_specta::{collect_commands, Builder, ErrorHandlingMode};

use crate::commands;

/// Where the window reads the file, relative to the workspace root.
pub const UI_FILE: &str = "ui/src/lib/bindings.ts";

/// The commands, once: the invoke handler (`lib.rs`) and the bindings both come from here.
pub fn builder() -> Builder<tauri::Wry> {
    Builder::<tauri::Wry>::new()
        // Rejections throw (as `invoke` does); `ipc.ts` turns them into one `IpcError`.
        .error_handling(ErrorHandlingMode::Throw)
        // Why: the counts and seconds that cross (`u64`, `usize`) are far below 2^53.
        .dangerously_cast_bigints_to_number()
        // One shape per type, the one Rust sends (what the window reads; what it sends back, a
        // `Mailbox`, is the same shape).
        .disable_serde_phases()
        .commands(collect_commands![
            commands::list_mailboxes,
            commands::get_mailbox,
            commands::save_mailbox,
            commands::delete_mailbox,
            commands::authenticate::<tauri::Wry>,
            commands::cancel_authentication,
            commands::verify,
            commands::verify_many,
            commands::import_preview,
            commands::import_commit,
            commands::read_csv_file::<tauri::Wry>,
            commands::export_csv::<tauri::Wry>,
            commands::history,
            commands::provider_preset,
            commands::set_client_secret,
            commands::forget,
            commands::exchange_script,
            commands::open_sign_in_url::<tauri::Wry>,
            commands::send_test_message,
            commands::create_app_cert::<tauri::Wry>,
            commands::app_cert,
            commands::export_handover::<tauri::Wry>,
            commands::import_handover::<tauri::Wry>,
            commands::uptime,
            commands::monitor_state,
            commands::set_monitoring_paused,
            commands::check_all_now,
            commands::set_start_at_login,
            commands::keyring_doctor,
            commands::support_bundle::<tauri::Wry>,
        ])
}

/// The text of `ui/src/lib/bindings.ts` as the commands and types are today.
///
/// The generated runtime imports `invoke` and `Channel` from `@tauri-apps/api/core`; here that
/// import is pointed at `./ipc` instead, so `ipc.ts` stays the one module that reaches Tauri
/// (the UI's boundary test) and re-exports both for this file.
pub fn typescript() -> String {
    // The exporter writes a file: a folder of its own per call (tests call this concurrently).
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mailbox-auth-bindings-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let path = dir.join("bindings.ts");
    builder()
        .export(Typescript::default().header(HEADER), &path)
        .expect("the bindings export (a type the window cannot read?)");
    let text = std::fs::read_to_string(&path).expect("the exported bindings");
    let _ = std::fs::remove_dir_all(&dir);
    let from = "from \"@tauri-apps/api/core\";";
    assert_eq!(text.matches(from).count(), 1, "the generated runtime's Tauri import changed shape");
    assert!(!text.contains("@tauri-apps/api/event"), "events would need a second Tauri import");
    text.replace(from, "from \"./ipc\";")
}

const HEADER: &str = "// Generated from the Rust commands and types by src-tauri/src/bindings.rs: do not edit.
// Regenerate: MAILBOX_AUTH_WRITE_BINDINGS=1 cargo test -p mailbox-auth-desktop bindings";

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed file is what the Rust code generates (regenerate with the env var).
    #[test]
    fn bindings_ts_is_what_the_rust_code_generates() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(UI_FILE);
        let want = typescript();
        if std::env::var_os("MAILBOX_AUTH_WRITE_BINDINGS").is_some() {
            std::fs::write(&path, &want).expect("write the bindings");
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        let first = have.lines().zip(want.lines()).position(|(h, w)| h != w).map_or_else(
            || format!("the files differ in length ({} and {} lines)", have.lines().count(), want.lines().count()),
            |i| {
                format!(
                    "line {}: the file has\n  {}\nthe code makes\n  {}",
                    i + 1,
                    have.lines().nth(i).unwrap_or_default(),
                    want.lines().nth(i).unwrap_or_default()
                )
            },
        );
        assert!(
            have == want,
            "{UI_FILE} does not match the Rust commands and types ({first}); regenerate it with \
             MAILBOX_AUTH_WRITE_BINDINGS=1 cargo test -p mailbox-auth-desktop bindings"
        );
    }

    /// The names of the fields of `export type NAME = {…}` in the bindings, `?` kept for optional ones.
    fn ts_fields(ts: &str, name: &str) -> Vec<String> {
        let start = ts.find(&format!("export type {name} = {{")).unwrap_or_else(|| panic!("no type {name}"));
        let body = &ts[start..];
        let body = &body[..body.find("\n}").expect("the type's end")];
        body.lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.starts_with('/') && !l.starts_with('*'))
            .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_string()))
            .collect()
    }

    /// Every key the Rust side sends is a field of the generated type, and every field the type
    /// requires is sent. `HealthRecord` serialises by hand (it adds `throttled`) and
    /// `MailboxView` flattens the mailbox: these are where a derived type could drift.
    fn assert_shape(ts: &str, names: &[&str], value: serde_json::Value) {
        let fields: Vec<String> = names.iter().flat_map(|n| ts_fields(ts, n)).collect();
        let keys: Vec<&String> = value.as_object().expect("an object").keys().collect();
        for k in &keys {
            assert!(
                fields.iter().any(|f| f.trim_end_matches('?') == k.as_str()),
                "{names:?} in the bindings lack `{k}`"
            );
        }
        for f in fields.iter().filter(|f| !f.ends_with('?')) {
            assert!(keys.iter().any(|k| k.as_str() == f), "{names:?}: `{f}` is required but not sent");
        }
    }

    #[test]
    fn what_rust_sends_has_the_shape_the_bindings_say() {
        use mailbox_auth_core::health::Status;
        let ts = typescript();
        let record = crate::events::tests::record();
        assert_shape(&ts, &["HealthRecord"], serde_json::to_value(&record).unwrap());
        let mut mailbox = mailbox_auth_core::mailbox::Mailbox::unreadable("m");
        mailbox.issuer = Some("https://idp".into());
        let view = mailbox_auth_core::MailboxView {
            mailbox,
            status: Status::Verified,
            status_label: "Verified",
            authenticated: true,
            last_check: Some(record.clone()),
            incoming_check: Some(record),
            smtp_check: None,
            throttled: false,
            signin_expires_at: None,
        };
        assert_shape(&ts, &["MailboxView", "Mailbox"], serde_json::to_value(&view).unwrap());
    }
}
