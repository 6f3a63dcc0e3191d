//! Mailbox Auth desktop shell: a Tauri 2 window over [`mailbox_auth_core::App`].
//!
//! The shell holds no product logic: each command in [`commands`] makes one call into the core,
//! [`events`] maps the core's progress to what the window shows, [`error`] turns core errors
//! into `{code, message, hint, fields}`. Secrets only ever travel *into* the core (a client
//! secret typed in the editor); no command returns one.

pub mod bindings;
pub mod browser;
pub mod commands;
pub mod error;
pub mod events;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mailbox_auth_core::secret::KeyringStore;
use mailbox_auth_core::App;
use tauri::{Listener, Manager};

/// What the commands share: the core and the sign-ins under way (to cancel them).
#[derive(Debug)]
pub struct Shell {
    pub core: Arc<App>,
    /// Running sign-ins by mailbox name; Cancel aborts the task (which drops the loopback
    /// listener, so a late redirect finds nobody listening).
    pub sign_ins: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// The folder of the CSV the admin last chose in the open dialog: the only `base` (for
    /// relative `ca_file` paths) an import accepts from the window.
    pub csv_base: Mutex<Option<std::path::PathBuf>>,
}

impl Shell {
    pub fn new(core: App) -> Self {
        Self { core: Arc::new(core), sign_ins: Mutex::new(HashMap::new()), csv_base: Mutex::new(None) }
    }

    /// The import `base` from the window, accepted only when it is the chosen file's folder.
    pub fn chosen_base(&self, base: Option<std::path::PathBuf>) -> Result<Option<std::path::PathBuf>, error::IpcError> {
        match base {
            None => Ok(None),
            Some(b) if self.csv_base.lock().expect("csv base").as_ref() == Some(&b) => Ok(Some(b)),
            Some(_) => Err(error::IpcError::new(
                "read",
                "the CSV's folder does not match the file chosen",
                "Choose the CSV file again.",
            )),
        }
    }
}

/// Shown instead of the window when the data store cannot be opened (damaged, from a newer
/// version, unwritable): which file, what went wrong, what to do. The file is not touched.
fn start_failure(home: &std::path::Path, e: &mailbox_auth_core::AppError) -> String {
    let f = e.failure();
    format!(
        "Mailbox Auth cannot open its data in {}.\n\n{}\n\n{}",
        home.display(),
        f.message,
        if f.message.contains("left untouched") { String::new() } else { f.hint }
    )
}

/// The argument the autostart entry starts the app with: no window, only the tray.
const HIDDEN: &str = "--hidden";

/// Set, the shell writes one line to stderr when the board is interactive (the UI's
/// `board-ready` event: the first list rendered and painted): `scripts/bench` times the cold start.
const REPORT_READY: &str = "MAILBOX_AUTH_REPORT_READY";

pub fn run() {
    // The core's filter: no level of RUST_LOG prints the wire (and so a token).
    mailbox_auth_core::logging::init("RUST_LOG", "warn,mailbox_auth=info");
    let started = std::time::Instant::now();

    tauri::Builder::default()
        .plugin(tauri_plugin_opener::init())
        .plugin(tauri_plugin_dialog::init())
        .plugin(tauri_plugin_notification::init())
        // Started at login with `--hidden`: only the tray icon shows.
        .plugin(tauri_plugin_autostart::init(tauri_plugin_autostart::MacosLauncher::LaunchAgent, Some(vec![HIDDEN])))
        .setup(move |app| {
            if std::env::var_os(REPORT_READY).is_some() {
                app.listen_any("board-ready", move |e| {
                    eprintln!("board ready: {} rows, {} ms after start", e.payload(), started.elapsed().as_millis())
                });
            }
            let home = mailbox_auth_core::store::default_home();
            match App::open(&home, Arc::new(KeyringStore::from_env())) {
                Ok(core) => {
                    tracing::info!(home = %home.display(), "data directory");
                    let shell = Shell::new(core);
                    let core = shell.core.clone();
                    app.manage(shell);
                    // The monitor and the tray live as long as the process, not the window.
                    let watch = Arc::new(watch::Watch::default());
                    app.manage(watch.clone());
                    if let Err(e) = watch::tray(app.handle(), &watch) {
                        tracing::warn!("no tray icon: {e}");
                    }
                    // The monitor's first pass waits for the board (see `watch`'s module docs).
                    app.listen_any("board-ready", {
                        let watch = watch.clone();
                        move |_| watch.board_shown()
                    });
                    if std::env::args().any(|a| a == HIDDEN) {
                        watch.board_shown();
                        if let Some(w) = app.get_webview_window("main") {
                            let _ = w.hide();
                        }
                    }
                    tauri::async_runtime::spawn(watch::run(app.handle().clone(), core, home.clone(), watch));
                }
                Err(e) => {
                    // No panic and no change to the file: say what is wrong, then quit.
                    use tauri_plugin_dialog::{DialogExt, MessageDialogKind};
                    let text = start_failure(&home, &e);
                    eprintln!("error: {text}");
                    if let Some(w) = app.get_webview_window("main") {
                        let _ = w.hide();
                    }
                    let handle = app.handle().clone();
                    app.dialog()
                        .message(text)
                        .title("Mailbox Auth cannot start")
                        .kind(MessageDialogKind::Error)
                        .show(move |_| handle.exit(2));
                }
            }
            Ok(())
        })
        .on_window_event(|window, event| {
            // Closing the window hides it: the monitor and the tray keep running (Quit is in
            // the tray's menu). Only once the core is open: a start failure still quits.
            if let tauri::WindowEvent::CloseRequested { api, .. } = event {
                if window.label() == "main" && window.try_state::<Arc<watch::Watch>>().is_some() {
                    api.prevent_close();
                    let _ = window.hide();
                }
            }
        })
        // The commands are listed once, in `bindings::builder` (which also generates the UI's bindings).
        .invoke_handler(bindings::builder().invoke_handler())
        .run(tauri::generate_context!())
        .expect("error while running Mailbox Auth");
}

#[cfg(test)]
mod tests {
    /// The names between `start` and the next `end` that look like `"name"` or `commands::name`.
    fn names(text: &str, start: &str, end: &str, prefix: &str) -> Vec<String> {
        let from = text.find(start).expect("start marker") + start.len();
        let body = &text[from..from + text[from..].find(end).expect("end marker")];
        let mut v: Vec<String> = body
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter_map(|w| w.trim().trim_matches('"').strip_prefix(prefix).map(str::to_string))
            .filter(|w| !w.is_empty())
            .collect();
        v.sort();
        v
    }

    /// The window cannot point an import at a folder of its choosing: only the chosen file's.
    #[test]
    fn import_base_must_be_the_chosen_files_folder() {
        let dir = tempfile::tempdir().unwrap();
        let core = mailbox_auth_core::App::open(
            dir.path(),
            std::sync::Arc::new(mailbox_auth_core::secret::MemoryStore::default()),
        )
        .unwrap();
        let shell = super::Shell::new(core);
        assert_eq!(shell.chosen_base(None).unwrap(), None);
        assert!(shell.chosen_base(Some("/home/a/.ssh".into())).is_err());
        *shell.csv_base.lock().unwrap() = Some("/data/import".into());
        assert_eq!(shell.chosen_base(Some("/data/import".into())).unwrap(), Some("/data/import".into()));
        assert!(shell.chosen_base(Some("/etc".into())).is_err());
    }

    /// build.rs's permission list, the command list (the invoke handler), the capability grant
    /// and the committed bindings name the same commands: no grant for a command that does not
    /// exist, no command nobody may call, no binding the shell does not answer.
    #[test]
    fn build_list_handler_capability_and_bindings_agree() {
        let build = names(include_str!("../build.rs"), "const COMMANDS: &[&str] = &[", "];", "");
        let mut handler: Vec<String> = names(include_str!("bindings.rs"), "collect_commands![", "]", "commands::")
            .into_iter()
            .map(|n| n.split("::<").next().unwrap_or_default().to_string())
            .collect();
        handler.sort();
        let cap: serde_json::Value = serde_json::from_str(include_str!("../capabilities/main.json")).unwrap();
        let mut granted: Vec<String> = cap["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p.as_str()?.strip_prefix("allow-").map(|n| n.replace('-', "_")))
            .collect();
        granted.sort();
        let ts =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../", "ui/src/lib/bindings.ts")).unwrap();
        let mut bound: Vec<String> = ts
            .split("__TAURI_INVOKE<")
            .skip(1)
            .filter_map(|rest| rest.split_once("(\"")?.1.split_once('"').map(|(name, _)| name.to_string()))
            .collect();
        bound.sort();
        assert!(handler.len() >= 20, "the command list was not read: {handler:?}");
        assert_eq!(build, handler, "build.rs vs the command list in bindings.rs");
        assert_eq!(granted, handler, "capability vs the command list in bindings.rs");
        assert_eq!(bound, handler, "ui/src/lib/bindings.ts vs the command list in bindings.rs");
        // Every permission file build.rs leaves behind is for a command that exists.
        let mut manifests: Vec<String> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/permissions/autogenerated"))
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".toml").map(str::to_string))
                .collect();
        manifests.sort();
        assert_eq!(manifests, handler, "permissions/autogenerated vs the command list");
        let csp = include_str!("../tauri.conf.json");
        assert!(csp.contains("base-uri 'none'") && csp.contains("form-action 'none'"));
    }
}
