//! Mailbox Auth desktop shell: a Tauri 2 window over [`mailbox_auth_core::App`].
//!
//! The shell holds no product logic: each command in [`commands`] makes one call into the core,
//! [`events`] maps the core's progress to what the window shows, [`error`] turns core errors
//! into `{code, message, hint, fields}`. Secrets only ever travel *into* the core (a client
//! secret typed in the editor); no command returns one.

pub mod browser;
pub mod commands;
pub mod error;
pub mod events;
pub mod export;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mailbox_auth_core::secret::KeyringStore;
use mailbox_auth_core::App;
use tauri::Manager;

/// What the commands share: the core and the sign-ins under way (to cancel them).
#[derive(Debug)]
pub struct Shell {
    pub core: Arc<App>,
    /// Running sign-ins by mailbox name; Cancel aborts the task (which drops the loopback
    /// listener, so a late redirect finds nobody listening).
    pub sign_ins: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl Shell {
    pub fn new(core: App) -> Self {
        Self { core: Arc::new(core), sign_ins: Mutex::new(HashMap::new()) }
    }
}

pub fn run() {
    // The core's filter: no level of RUST_LOG prints the wire (and so a token).
    mailbox_auth_core::logging::init("RUST_LOG", "warn,mailbox_auth=info");

    tauri::Builder::default()
        .plugin(tauri_plugin_opener::init())
        .plugin(tauri_plugin_dialog::init())
        .setup(|app| {
            let home = mailbox_auth_core::store::default_home();
            let core = App::open(&home, Arc::new(KeyringStore::from_env()))
                .map_err(|e| format!("cannot open the Mailbox Auth data in {}: {e}", home.display()))?;
            tracing::info!(home = %home.display(), "data directory");
            app.manage(Shell::new(core));
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::list_mailboxes,
            commands::get_mailbox,
            commands::save_mailbox,
            commands::delete_mailbox,
            commands::authenticate,
            commands::cancel_authentication,
            commands::verify,
            commands::verify_many,
            commands::import_preview,
            commands::import_commit,
            commands::read_csv_file,
            commands::export_csv,
            commands::history,
            commands::provider_preset,
            commands::set_client_secret,
            commands::forget,
            commands::exchange_script,
            commands::open_sign_in_url,
        ])
        .run(tauri::generate_context!())
        .expect("error while running Mailbox Auth");
}
