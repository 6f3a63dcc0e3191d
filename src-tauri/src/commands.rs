//! The window's commands. Each is `async` (off the main thread: keyring, network and SQLite
//! calls must never block the UI) and makes one call into the core.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mailbox_auth_core::app::{ImportPreview, ImportReport, Verification};
use mailbox_auth_core::health::HealthRecord;
use mailbox_auth_core::mailbox::{Mailbox, Protocol, ProviderKind, Security};
use mailbox_auth_core::oauth::auth_code::{AuthStep, DEFAULT_TIMEOUT};
use mailbox_auth_core::oauth::OAuthError;
use mailbox_auth_core::{provider, AppError, MailboxView};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tauri::ipc::Channel;
use tauri::{AppHandle, Runtime, State};
use tracing::instrument;
use url::Url;

use crate::error::IpcError;
use crate::events::SignInEvent;
use crate::{browser, Shell};

type Result<T> = std::result::Result<T, IpcError>;

/// A secret typed in the window (a client secret, a passphrase). Why a type of its own: it is
/// read straight into a `SecretString` (redacted in `Debug`, zeroized on drop), never a plain
/// `String` on the way, while the bindings type it as the `string` the window sends.
#[derive(Debug, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub SecretString);

impl specta::Type for Secret {
    fn definition(types: &mut specta::Types) -> specta::datatype::DataType {
        <String as specta::Type>::definition(types)
    }
}

/// Mailboxes verified at once by Verify selected / Verify all.
const VERIFY_CONCURRENCY: usize = mailbox_auth_core::app::VERIFY_CONCURRENCY;

/// A CSV chosen in the file dialog larger than this is refused (a mailbox list is a few KiB).
const MAX_CSV_BYTES: u64 = 4 * 1024 * 1024;

#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state), err)]
pub async fn list_mailboxes(state: State<'_, Shell>) -> Result<Vec<MailboxView>> {
    Ok(state.core.list().await?)
}

#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state), err)]
pub async fn get_mailbox(state: State<'_, Shell>, name: String) -> Result<MailboxView> {
    let m = state.core.get(&name)?;
    Ok(state.core.view(m).await?)
}

/// Saves a mailbox. `is_new` refuses to overwrite an existing one of the same name (the name is
/// the key of its keyring entries and history, so the editor does not rename).
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state, mailbox), fields(name = %mailbox.name), err)]
pub async fn save_mailbox(state: State<'_, Shell>, mailbox: Mailbox, is_new: bool) -> Result<MailboxView> {
    if is_new {
        state.core.create(&mailbox).await?;
    } else {
        state.core.save(&mailbox).await?;
    }
    Ok(state.core.view(mailbox).await?)
}

#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state), err)]
pub async fn delete_mailbox(state: State<'_, Shell>, name: String) -> Result<()> {
    Ok(state.core.remove(&name).await?)
}

/// Signs in (browser, device code or app-only, as the mailbox says) and verifies. Progress goes
/// over `on_progress`; the final record is both sent (`done`) and returned.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state, app, on_progress), err)]
pub async fn authenticate<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shell>,
    name: String,
    timeout_secs: Option<u64>,
    on_progress: Channel<SignInEvent>,
) -> Result<HealthRecord> {
    let core = state.core.clone();
    let progress_channel = on_progress.clone();
    let mailbox = name.clone();
    let timeout = timeout_secs.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
    let task = tokio::spawn(async move {
        let open = move |url: &Url| browser::open(&app, url);
        let progress = move |step: AuthStep| {
            let _ = progress_channel.send(SignInEvent::from(step));
        };
        core.authenticate(&mailbox, None, timeout, &open, &progress).await
    });
    state.sign_ins.lock().expect("sign-in table").insert(name.clone(), task.abort_handle());
    let outcome = task.await;
    state.sign_ins.lock().expect("sign-in table").remove(&name);
    match outcome {
        Ok(Ok(record)) => {
            let _ = on_progress.send(SignInEvent::Done { record: record.clone() });
            Ok(record)
        }
        Ok(Err(e)) => Err(e.into()),
        // Cancel pressed: the core's own error (code `cancelled`, the catalogue's hint).
        Err(e) if e.is_cancelled() => Err(AppError::OAuth(OAuthError::Cancelled).into()),
        Err(e) => Err(IpcError::new("internal", format!("the sign-in task failed: {e}"), "Try again.")),
    }
}

/// Cancels a running sign-in of `name` (no-op when none runs).
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state), err)]
pub async fn cancel_authentication(state: State<'_, Shell>, name: String) -> Result<bool> {
    let handle = state.sign_ins.lock().expect("sign-in table").remove(&name);
    Ok(handle.map(|h| h.abort()).is_some())
}

#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state), err)]
pub async fn verify(state: State<'_, Shell>, name: String) -> Result<Verification> {
    Ok(state.core.verify(&name).await?)
}

/// Sends a real test message through the mailbox's SMTP server to `to` (Send test message…).
/// The recipient is checked first: a line break in it would start an SMTP command of its own.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state, to), err)]
pub async fn send_test_message(state: State<'_, Shell>, name: String, to: String) -> Result<HealthRecord> {
    let to = to.trim();
    if let Err(problem) = mailbox_auth_core::probe::smtp::check_recipient(to) {
        // The value is not repeated (it may hold control characters).
        return Err(IpcError::field("to", format!("the recipient {problem}")));
    }
    match state.core.verify_smtp(&name, Some(to)).await? {
        Some(rec) => Ok(rec),
        None => Err(IpcError::field("smtp_host", "enter the outgoing (SMTP) server first")),
    }
}

/// Verifies several mailboxes at once; each record is sent over `on_record` as it arrives.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state, on_record), err)]
pub async fn verify_many(
    state: State<'_, Shell>,
    names: Vec<String>,
    on_record: Channel<HealthRecord>,
) -> Result<Vec<HealthRecord>> {
    let done = move |r: &HealthRecord| {
        let _ = on_record.send(r.clone());
    };
    Ok(state.core.verify_many(&names, VERIFY_CONCURRENCY, &done).await?)
}

/// What an import would do, row by row, without saving anything (the core's preview: new,
/// update with the changed fields and whether the mailbox is signed out, unchanged, refused).
/// `base` must be the folder of the file the admin chose in this session, if any.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state, text), err)]
pub async fn import_preview(state: State<'_, Shell>, text: String, base: Option<PathBuf>) -> Result<ImportPreview> {
    let base = state.chosen_base(base)?;
    Ok(state.core.import_preview(&text, base.as_deref())?)
}

#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state, text), err)]
pub async fn import_commit(state: State<'_, Shell>, text: String, base: Option<PathBuf>) -> Result<ImportReport> {
    let base = state.chosen_base(base)?;
    Ok(state.core.import_csv(&text, base.as_deref()).await?)
}

/// A CSV file the admin chose in the open dialog, with its folder (relative `ca_file` paths
/// resolve against it).
#[derive(Debug, Serialize, specta::Type)]
pub struct CsvFile {
    pub text: String,
    pub base: Option<PathBuf>,
}

/// Why: the webview must not be able to make the shell read or write a path of its choosing
/// (a compromised page could read `~/.ssh` or overwrite a startup file). So the shell itself
/// asks the admin in the native dialog, and only reads or writes the path the dialog returned.
async fn ask_path<R: Runtime>(app: &AppHandle<R>, save: bool) -> Result<Option<PathBuf>> {
    use tauri_plugin_dialog::DialogExt;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let dialog = app.dialog().file().add_filter("CSV", if save { &["csv"] } else { &["csv", "txt"] });
    let done = move |p: Option<tauri_plugin_dialog::FilePath>| {
        let _ = tx.send(p.and_then(|p| p.into_path().ok()));
    };
    if save {
        dialog.set_file_name("mailboxes.csv").save_file(done);
    } else {
        dialog.pick_file(done);
    }
    Ok(rx.await.unwrap_or(None))
}

/// Asks for a CSV file in the native dialog and reads it; `None` when the admin cancels.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(app, state), err)]
pub async fn read_csv_file<R: Runtime>(app: AppHandle<R>, state: State<'_, Shell>) -> Result<Option<CsvFile>> {
    let Some(path) = ask_path(&app, false).await? else { return Ok(None) };
    let io = |e: std::io::Error| {
        IpcError::new("read", format!("cannot read {}: {e}", path.display()), "Choose a readable CSV file.")
    };
    let md = tokio::fs::metadata(&path).await.map_err(io)?;
    if !md.is_file() {
        return Err(IpcError::new("read", format!("{} is not a file", path.display()), "Choose a CSV file."));
    }
    if md.len() > MAX_CSV_BYTES {
        return Err(IpcError::new(
            "read",
            format!("{} is {} bytes", path.display(), md.len()),
            "A mailbox CSV is at most 4 MiB.",
        ));
    }
    let bytes = tokio::fs::read(&path).await.map_err(io)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        IpcError::new("read", format!("{} is not UTF-8 text", path.display()), "Save the CSV as UTF-8.")
    })?;
    let base = path.parent().map(Path::to_path_buf);
    *state.csv_base.lock().expect("csv base") = base.clone();
    Ok(Some(CsvFile { text, base }))
}

/// Exports all mailboxes as CSV (the import's columns; no secrets; formula cells neutralised)
/// to a file the admin chooses in the native save dialog. Returns the path written, `None`
/// when the admin cancels.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(app, state), err)]
pub async fn export_csv<R: Runtime>(app: AppHandle<R>, state: State<'_, Shell>) -> Result<Option<String>> {
    let text = state.core.export_csv()?;
    let Some(path) = ask_path(&app, true).await? else { return Ok(None) };
    tokio::fs::write(&path, &text).await.map_err(|e| {
        IpcError::new("export", format!("cannot write {}: {e}", path.display()), "Choose a writable folder.")
    })?;
    Ok(Some(path.display().to_string()))
}

#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state), err)]
pub async fn history(state: State<'_, Shell>, name: String, limit: Option<usize>) -> Result<Vec<HealthRecord>> {
    Ok(state.core.history(&name, limit.unwrap_or(50))?)
}

/// A provider's defaults for the editor to fill in.
#[derive(Debug, Serialize, specta::Type)]
pub struct PresetView {
    pub host: Option<String>,
    pub port: u16,
    pub scopes: Vec<String>,
    pub auth_url: Option<String>,
    pub token_url: Option<String>,
    pub device_url: Option<String>,
    pub auth_params: Vec<(String, String)>,
    pub tenant: Option<String>,
    /// The provider's SMTP submission server, its usual security and the port for the security
    /// asked for (or the usual one).
    pub smtp_host: Option<String>,
    pub smtp_security: Security,
    pub smtp_port: u16,
}

#[tauri::command(async)]
#[specta::specta]
pub async fn provider_preset(
    provider: ProviderKind,
    protocol: Protocol,
    security: Security,
    tenant: Option<String>,
    smtp_security: Option<Security>,
) -> Result<PresetView> {
    let tenant = provider::default_tenant(provider)
        .map(|default| tenant.filter(|t| !t.trim().is_empty()).unwrap_or_else(|| default.into()));
    let p = provider::preset(provider, protocol, tenant.as_deref());
    Ok(PresetView {
        host: p.host.map(String::from),
        port: provider::default_port(protocol, security),
        scopes: p.scopes,
        auth_url: p.auth_url,
        token_url: p.token_url,
        device_url: p.device_url,
        auth_params: p.auth_params,
        tenant,
        smtp_host: p.smtp_host.map(String::from),
        smtp_security: smtp_security.unwrap_or(p.smtp_security),
        smtp_port: provider::default_smtp_port(smtp_security.unwrap_or(p.smtp_security)),
    })
}

/// Stores the app's client secret in the keyring. The value only goes in: nothing returns it.
/// Why [`Secret`] (a `SecretString`) as the argument: the value is redacted in `Debug` and
/// zeroized when dropped from the moment the IPC message is read, never a plain `String`.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state, secret), err)]
pub async fn set_client_secret(
    state: State<'_, Shell>,
    name: String,
    secret: Secret,
    expires: Option<String>,
) -> Result<()> {
    let secret = secret.0;
    if secret.expose_secret().trim().is_empty() {
        return Err(IpcError::field("client_secret", "is empty"));
    }
    Ok(state.core.set_client_secret(&name, secret, expiry(expires)?).await?)
}

/// The client secret's expiry as the window sends it (its date input, or nothing), read by the
/// core's one date parser; a bad date is a field error on `client_secret_expires`.
fn expiry(expires: Option<String>) -> Result<Option<chrono::NaiveDate>> {
    expires
        .filter(|e| !e.trim().is_empty())
        .map(|d| mailbox_auth_core::mailbox::parse_date("client_secret_expires", &d))
        .transpose()
        .map_err(|e| IpcError::field(e.field, e.message))
}

/// The Exchange Online PowerShell that grants the app of the named (app-only) mailboxes access to
/// them: `New-ServicePrincipal` with the Enterprise application's Object ID, then
/// `Add-MailboxPermission … FullAccess` per mailbox. Field errors name `mailboxes`, `object_id`,
/// `display_name` or `client_id` (mailboxes of different apps).
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state), err)]
pub async fn exchange_script(
    state: State<'_, Shell>,
    names: Vec<String>,
    object_id: String,
    display_name: String,
) -> Result<String> {
    Ok(state.core.exchange_script(&names, &object_id, &display_name)?)
}

/// Deletes the mailbox's keyring entries (signs it out).
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state), err)]
pub async fn forget(state: State<'_, Shell>, name: String) -> Result<()> {
    Ok(state.core.forget(&name).await?)
}

/// Opens a sign-in address again (the "Open browser" button), http/https only.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(app), err)]
pub async fn open_sign_in_url<R: Runtime>(app: AppHandle<R>, url: String) -> Result<()> {
    let url = Url::parse(&url).map_err(|e| IpcError::field("url", e.to_string()))?;
    browser::open(&app, &url).map_err(|e| IpcError::new("browser", e, "Copy the address into a browser by hand."))
}

// ---------------------------------------------------------------------------------------------
// Certificate credentials and the encrypted hand-over

/// Asks for a path in the native dialog (see [`ask_path`] for why the shell asks, never the
/// page); `None` when the admin cancels.
async fn ask_file<R: Runtime>(
    app: &AppHandle<R>,
    save: Option<&str>,
    filter: &str,
    extensions: &[&str],
) -> Result<Option<PathBuf>> {
    use tauri_plugin_dialog::DialogExt;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let dialog = app.dialog().file().add_filter(filter, extensions);
    let done = move |p: Option<tauri_plugin_dialog::FilePath>| {
        let _ = tx.send(p.and_then(|p| p.into_path().ok()));
    };
    match save {
        Some(name) => dialog.set_file_name(name).save_file(done),
        None => dialog.pick_file(done),
    }
    Ok(rx.await.unwrap_or(None))
}

fn handover_error(e: mailbox_auth_core::handover::HandoverError) -> IpcError {
    use mailbox_auth_core::handover::HandoverError as H;
    match e {
        H::App(e) => e.into(),
        H::Passphrase(m) => IpcError::field("passphrase", m),
        H::WrongPassphrase { .. } => {
            IpcError::new("wrong_passphrase", e.to_string(), "Type the passphrase the file was exported with.")
        }
        other => {
            IpcError::new("handover", other.to_string(), "Export the file again on the old machine and copy it whole.")
        }
    }
}

/// What creating a certificate did, for the window.
#[derive(Debug, Serialize, specta::Type)]
pub struct CreatedCertView {
    pub thumbprint: String,
    pub not_after: String,
    pub replaced: Option<String>,
    pub path: String,
}

/// Makes a certificate credential for an app-only mailbox: asks where to save the `.cer` first
/// (nothing is made when the admin cancels), then stores the key in the keyring and writes the
/// certificate there. `None` when cancelled.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(app, state), err)]
pub async fn create_app_cert<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shell>,
    name: String,
    days: u32,
) -> Result<Option<CreatedCertView>> {
    // Refused before the dialog: a user mailbox cannot take a certificate.
    if state.core.get(&name)?.flow != mailbox_auth_core::mailbox::Flow::ClientCredentials {
        return Err(IpcError::field("flow", "a certificate is for app-only access: choose the app-only flow first"));
    }
    let stem: String = name.chars().map(|c| if c.is_alphanumeric() || "-_".contains(c) { c } else { '_' }).collect();
    let Some(path) = ask_file(&app, Some(&format!("{stem}.cer")), "Certificate", &["cer"]).await? else {
        return Ok(None);
    };
    let created = state.core.create_app_cert(&name, days).await?;
    tokio::fs::write(&path, &created.certificate.der).await.map_err(|e| {
        IpcError::new(
            "export",
            format!("the key is stored, but the certificate could not be written to {}: {e}", path.display()),
            "Make the certificate again and choose a writable folder.",
        )
    })?;
    Ok(Some(CreatedCertView {
        thumbprint: created.certificate.thumbprint,
        not_after: created.certificate.not_after.to_string(),
        replaced: created.replaced,
        path: path.display().to_string(),
    }))
}

/// The stored certificate's thumbprint, last day and subject; `None` when there is none.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state), err)]
pub async fn app_cert(
    state: State<'_, Shell>,
    name: String,
) -> Result<Option<mailbox_auth_core::appcert::Certificate>> {
    Ok(state.core.app_cert(&name).await?)
}

/// Exports everything, secrets included, encrypted with the passphrase, to a file chosen in the
/// save dialog (written `0600`). The passphrase only goes in. `None` when cancelled.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(app, state, passphrase), err)]
pub async fn export_handover<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shell>,
    passphrase: Secret,
) -> Result<Option<String>> {
    let passphrase = passphrase.0;
    mailbox_auth_core::handover::check_new_passphrase(&passphrase).map_err(handover_error)?;
    let Some(path) = ask_file(&app, Some("mailboxes.age"), "Encrypted hand-over", &["age"]).await? else {
        return Ok(None);
    };
    let (bytes, _) = state.core.export_handover(passphrase).await.map_err(handover_error)?;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    std::io::Write::write_all(
        &mut o.open(&path).map_err(|e| {
            IpcError::new("export", format!("cannot write {}: {e}", path.display()), "Choose a writable folder.")
        })?,
        &bytes,
    )
    .map_err(|e| {
        IpcError::new("export", format!("cannot write {}: {e}", path.display()), "Choose a writable folder.")
    })?;
    Ok(Some(path.display().to_string()))
}

/// Imports a hand-over file chosen in the open dialog with its passphrase; what each mailbox
/// became (new or replaced). `None` when cancelled.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(app, state, passphrase), err)]
pub async fn import_handover<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shell>,
    passphrase: Secret,
) -> Result<Option<Vec<mailbox_auth_core::handover::Imported>>> {
    let passphrase = passphrase.0;
    let Some(path) = ask_file(&app, None, "Encrypted hand-over", &["age"]).await? else { return Ok(None) };
    let bytes = mailbox_auth_core::handover::read_file(&path).map_err(handover_error)?;
    let done =
        state.core.import_handover(&path.display().to_string(), bytes, passphrase).await.map_err(handover_error)?;
    Ok(Some(done))
}

/// Uptime over 7 and 30 days and the up/down transitions of one mailbox.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state), err)]
pub async fn uptime(state: State<'_, Shell>, name: String) -> Result<mailbox_auth_core::uptime::Uptime> {
    Ok(state.core.uptime(&name)?)
}

/// The background monitor's state (paused, worst badge, interval, last pass, start at login),
/// with the worst badge (and so the tray icon) brought up to date with the window's own checks.
#[tauri::command(async)]
#[specta::specta]
pub async fn monitor_state(
    app: AppHandle,
    state: State<'_, Shell>,
    watch: State<'_, std::sync::Arc<crate::watch::Watch>>,
) -> Result<crate::watch::MonitorState> {
    let list = state.core.list().await?;
    crate::watch::update_worst(&app, list.iter().map(|v| v.status));
    Ok(watch.state(&app))
}

/// Pauses or resumes the background monitor (the tray's Pause/Resume monitoring).
#[tauri::command(async)]
#[specta::specta]
pub async fn set_monitoring_paused(
    app: AppHandle,
    watch: State<'_, std::sync::Arc<crate::watch::Watch>>,
    paused: bool,
) -> Result<crate::watch::MonitorState> {
    crate::watch::set_paused(&app, paused);
    Ok(watch.state(&app))
}

/// Starts a monitor pass now (the tray's Check all now).
#[tauri::command(async)]
#[specta::specta]
pub async fn check_all_now(app: AppHandle) -> Result<()> {
    crate::watch::check_now(&app);
    Ok(())
}

/// Turns "start at login" on or off; returns whether it is on.
#[tauri::command(async)]
#[specta::specta]
pub async fn set_start_at_login(app: AppHandle, on: bool) -> Result<bool> {
    crate::watch::set_start_at_login(&app, on)
        .map_err(|e| IpcError::new("autostart", e, "Check that ~/.config/autostart can be written, then try again."))
}

/// The keyring doctor for the banner above the board: is the Secret Service reachable and
/// unlocked, which mailboxes lost their stored sign-in, and the fixes. The data directory is the
/// one the shell opened (`default_home`), so its lock files are the ones every program uses.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(state), err)]
pub async fn keyring_doctor(state: State<'_, Shell>) -> Result<mailbox_auth_core::doctor::Report> {
    let locks = mailbox_auth_core::lock::Locks::new(mailbox_auth_core::store::default_home().join("locks"));
    Ok(mailbox_auth_core::doctor::examine(&state.core, &locks).await?)
}

/// Writes a support bundle (see `mailbox_auth_core::bundle`) of the named mailboxes to a zip the
/// admin chooses in the native save dialog. Every name is looked up before the dialog opens.
/// Returns the path written, `None` when the admin cancels.
#[tauri::command(async)]
#[specta::specta]
#[instrument(skip(app, state), err)]
pub async fn support_bundle<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shell>,
    names: Vec<String>,
) -> Result<Option<String>> {
    use mailbox_auth_core::bundle::{self, BundleError};
    use tauri_plugin_dialog::DialogExt;
    if names.is_empty() {
        return Err(IpcError::field("names", "select at least one mailbox for the support bundle"));
    }
    for n in &names {
        state.core.get(n)?;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    app.dialog().file().add_filter("Zip", &["zip"]).set_file_name("mailbox-auth-support.zip").save_file(
        move |p: Option<tauri_plugin_dialog::FilePath>| {
            let _ = tx.send(p.and_then(|p| p.into_path().ok()));
        },
    );
    let Some(path) = rx.await.unwrap_or(None) else { return Ok(None) };
    let locks = mailbox_auth_core::lock::Locks::new(mailbox_auth_core::store::default_home().join("locks"));
    match bundle::write(&state.core, &locks, &names, &path).await {
        Ok(s) => Ok(Some(s.path.display().to_string())),
        Err(BundleError::App(e)) => Err(e.into()),
        Err(e) => Err(IpcError::new(&e.code(), e.to_string(), "Choose a writable folder and try again.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret from the window is a `SecretString` from the first byte: never printed, and
    /// typed as the plain `string` the window sends.
    #[test]
    fn a_secret_argument_is_read_into_a_secret_string_and_never_printed() {
        let s: Secret = serde_json::from_str("\"hunter2-value\"").unwrap();
        assert_eq!(s.0.expose_secret(), "hunter2-value");
        assert!(!format!("{s:?}").contains("hunter2"), "{s:?}");
        let ts = crate::bindings::typescript();
        assert!(ts.contains("setClientSecret: (name: string, secret: string, expires: string | null)"));
        assert!(ts.contains("exportHandover: (passphrase: string)"));
    }

    #[test]
    fn the_expiry_date_is_read_by_the_core_and_a_bad_one_names_its_field() {
        assert_eq!(expiry(None).unwrap(), None);
        assert_eq!(expiry(Some(" ".into())).unwrap(), None);
        assert_eq!(expiry(Some("2027-03-31".into())).unwrap(), chrono::NaiveDate::from_ymd_opt(2027, 3, 31));
        let e = expiry(Some("31/03/2027".into())).unwrap_err();
        assert_eq!(e.code, "invalid");
        assert_eq!(e.fields[0].field, "client_secret_expires");
        assert!(e.fields[0].message.contains("is not a date like 2027-03-31"), "{}", e.fields[0].message);
    }
}
