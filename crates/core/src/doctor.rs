//! The keyring doctor: is a Secret Service reachable, is it locked, which program answers, and
//! which mailboxes have lost their stored sign-in.
//!
//! On Linux the secrets live in whatever program owns `org.freedesktop.secrets` on the D-Bus
//! session bus (freedesktop Secret Service API 0.2): gnome-keyring-daemon, KeePassXC, or KDE's
//! ksecretd/kwalletd. The doctor asks the bus directly (not through the keyring crate) so it can
//! tell the three states apart that the keyring crate folds together: no session bus or nobody
//! owning the name (unavailable), the default collection's `Locked` property (locked), and the
//! owner's process name (the backend, read from `/proc/<pid>/comm`). Every bus call runs on the
//! blocking pool under one overall deadline, so a hung daemon cannot hang the doctor.
//!
//! A mailbox "recorded as signed in" is one whose sign-in date is in the data store (written
//! when a sign-in stored its refresh token, deleted by `forget`/`remove`): when its keyring
//! entry is gone, the keyring was reset or the data directory was moved to another machine,
//! and the fix is to authenticate again — "Sign-in missing — Authenticate again" — not the
//! generic "not authenticated" of a mailbox that was never signed in. App-only mailboxes have no
//! sign-in date; a missing client secret is reported as such.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::app::App;
use crate::health::HealthRecord;
use crate::lock::Locks;
use crate::mailbox::{Flow, Mailbox};
use crate::secret::{self, SecretKind};
use crate::store::Store;

/// The badge label of a mailbox whose sign-in was lost.
pub const SIGNIN_MISSING_LABEL: &str = "Sign-in missing — Authenticate again";
/// The code of that state (in health records and the doctor's report).
pub const SIGNIN_MISSING: &str = "signin_missing";
/// How long the doctor waits for the Secret Service as a whole.
pub const SERVICE_DEADLINE: Duration = Duration::from_secs(10);
/// How long the doctor waits for a mailbox whose sign-in another program is refreshing.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// What the doctor found out about the Secret Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ServiceState {
    /// A Secret Service answered.
    pub reachable: bool,
    /// The default collection is locked (`None`: unknown, or no default collection yet).
    pub locked: Option<bool>,
    /// The program that answers (`gnome-keyring-daemon`, `keepassxc`, `ksecretd`, …).
    pub backend: Option<String>,
    /// The default collection's label (`Login`, `Default keyring`, a KeePassXC database's group).
    pub collection: Option<String>,
    /// Why it is not reachable, or other facts worth a line.
    pub detail: Option<String>,
}

/// One mailbox's keyring entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct MailboxEntry {
    pub name: String,
    /// `ok`, `signin_missing`, `not_signed_in`, `no_client_secret`, `unchecked` (the keyring
    /// could not be asked), or a keyring error code.
    pub state: String,
    /// The state in words.
    pub label: String,
}

/// A problem and its fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Problem {
    pub code: String,
    pub message: String,
    pub fix: String,
}

/// How to get a working keyring, per desktop, in the admin's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Fix {
    pub setting: &'static str,
    pub steps: &'static [&'static str],
}

/// The doctor's whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Report {
    /// No problem found.
    pub ok: bool,
    /// The most serious problem's code (`keyring_unavailable`, `keyring_locked`,
    /// `signin_missing`), `None` when all is well.
    pub code: Option<String>,
    pub service: ServiceState,
    /// `XDG_CURRENT_DESKTOP` (or the platform), for choosing the fix.
    pub desktop: Option<String>,
    pub mailboxes: Vec<MailboxEntry>,
    pub problems: Vec<Problem>,
    /// The fixes for every setting, the one matching `desktop` first; empty when all is well.
    pub fixes: Vec<Fix>,
}

/// The fixes, one per setting. Why these words: the admin reading them may not know that
/// "Secret Service" is what gnome-keyring, KWallet and KeePassXC have in common.
pub const FIXES: &[Fix] = &[
    Fix {
        setting: "GNOME (and other desktops with gnome-keyring)",
        steps: &[
            "Open \"Passwords and Keys\" (seahorse), right-click the \"Login\" keyring and choose Unlock; it unlocks by itself when your login password and the keyring's password are the same.",
            "If there is no keyring at all, install it: sudo apt install gnome-keyring (Fedora: sudo dnf install gnome-keyring), then log out and in again.",
            "After a keyring reset or on a new machine, click Authenticate on every mailbox shown as \"Sign-in missing\".",
        ],
    },
    Fix {
        setting: "KDE Plasma",
        steps: &[
            "Plasma 6 answers the Secret Service through KWallet: in System Settings → KDE Wallet, enable the wallet subsystem and make sure the wallet is open (kwalletmanager5/kwalletmanager shows it).",
            "On older Plasma, which has no Secret Service in KWallet, install gnome-keyring or use KeePassXC (below) instead.",
        ],
    },
    Fix {
        setting: "Headless server (SSH, cron, systemd)",
        steps: &[
            "Install it: sudo apt install gnome-keyring dbus-user-session libsecret-tools.",
            "Run the session bus and the keyring in your shell: export $(dbus-launch) (not needed when systemd --user provides DBUS_SESSION_BUS_ADDRESS), then: printf '%s' \"$KEYRING_PASSWORD\" | gnome-keyring-daemon --unlock --components=secrets (it prints variables to export, and creates the login keyring with that password the first time).",
            "The keyring stays unlocked until the daemon ends; a systemd service runs that line in ExecStartPre with the password from a root-only credential file (LoadCredential=).",
            "Check with: mailbox-auth doctor.",
        ],
    },
    Fix {
        setting: "KeePassXC",
        steps: &[
            "In KeePassXC → Tools → Settings → Secret Service Integration, tick \"Enable KeePassXC Freedesktop.org Secret Service integration\" (quit gnome-keyring first: only one program can own the Secret Service).",
            "In Database → Database Settings → Secret Service Integration, expose a group of the database; the database must be open (unlocked) whenever Mailbox Auth runs.",
        ],
    },
];

/// The fixes, the one for `desktop` first.
pub fn fixes_for(desktop: Option<&str>) -> Vec<Fix> {
    let d = desktop.unwrap_or("").to_ascii_lowercase();
    let first = if d.contains("kde") || d.contains("plasma") {
        1
    } else if d.is_empty() {
        2
    } else {
        0
    };
    let mut out = vec![FIXES[first].clone()];
    out.extend(FIXES.iter().enumerate().filter(|(i, _)| *i != first).map(|(_, f)| f.clone()));
    out
}

/// The desktop the doctor is running in (`XDG_CURRENT_DESKTOP`), or the platform elsewhere.
pub fn desktop() -> Option<String> {
    if cfg!(target_os = "macos") {
        return Some("macOS".into());
    }
    if cfg!(windows) {
        return Some("Windows".into());
    }
    std::env::var("XDG_CURRENT_DESKTOP").ok().filter(|s| !s.trim().is_empty())
}

/// Asks the Secret Service what state it is in, under [`SERVICE_DEADLINE`].
pub async fn service_state() -> ServiceState {
    match tokio::time::timeout(SERVICE_DEADLINE, tokio::task::spawn_blocking(platform::service_state)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => ServiceState { detail: Some(format!("the keyring check ended unexpectedly: {e}")), ..Default::default() },
        Err(_) => ServiceState {
            detail: Some(format!(
                "the Secret Service did not answer within {} s (a hung keyring daemon, or an unlock prompt nobody sees)",
                SERVICE_DEADLINE.as_secs()
            )),
            ..Default::default()
        },
    }
}

/// Whether the mailbox was recorded as signed in (a user sign-in whose date the store keeps).
pub fn signin_recorded(store: &Store, m: &Mailbox) -> bool {
    m.flow != Flow::ClientCredentials && store.signin(&m.name).ok().flatten().is_some()
}

/// A "not authenticated" record of a mailbox recorded as signed in, said as what it is: the
/// keyring lost its sign-in. Any other record comes back unchanged.
pub fn name_lost_signin(store: &Store, mut rec: HealthRecord) -> HealthRecord {
    if rec.ok || rec.code.as_deref() != Some("not_authenticated") {
        return rec;
    }
    let Some(dates) = store.signin(&rec.mailbox).ok().flatten() else { return rec };
    let d = crate::diagnose::diagnose(SIGNIN_MISSING, None);
    rec.code = Some(SIGNIN_MISSING.into());
    rec.message = format!(
        "{SIGNIN_MISSING_LABEL}: mailbox `{}` was signed in on {}, but its refresh token is no longer in the OS keyring. {}",
        rec.mailbox,
        dates.issued_at.format("%Y-%m-%d"),
        d.cause
    );
    rec.hint = Some(d.fix.into());
    rec.fix = d.action;
    rec
}

/// Records that the mailbox's sign-in is gone from the keyring (once: not again while it is
/// the mailbox's deciding record). Why: the board takes "signed in" from the data store and
/// reads no keyring entry (see `App::view`), so this record is what turns its badge red.
fn note_lost(store: &Store, name: &str) {
    let already = store
        .history(name, 20)
        .ok()
        .and_then(|h| crate::health::deciding(&h).and_then(|r| r.code.clone()))
        .is_some_and(|c| c == SIGNIN_MISSING);
    if already {
        return;
    }
    let rec = name_lost_signin(
        store,
        HealthRecord {
            mailbox: name.into(),
            at: chrono::Utc::now(),
            check: crate::health::Check::Refresh,
            ok: false,
            code: Some("not_authenticated".into()),
            message: String::new(),
            hint: None,
            fix: None,
            server_words: None,
            messages: None,
        },
    );
    // The sign-in's dates went away since the entry was found missing (`forget` in another
    // program deletes the token, then the dates): nothing was lost, so nothing is recorded.
    if rec.code.as_deref() != Some(SIGNIN_MISSING) {
        return;
    }
    if let Err(e) = store.record(&rec) {
        tracing::warn!(mailbox = name, error = %e, "cannot record the lost sign-in");
    }
}

/// Examines the keyring and every mailbox's entry. Each entry is read under the mailbox's
/// lock (as every read of a stored secret is, see `lock.rs`), waiting at most [`LOCK_WAIT`]
/// for a refresh running elsewhere; the values are dropped at once, never shown.
pub async fn examine(app: &App, locks: &Locks) -> Result<Report, crate::AppError> {
    let service = service_state().await;
    examine_with(app, locks, service, desktop()).await
}

/// [`examine`] with a known service state (for tests of the logic with an in-memory store).
pub async fn examine_with(
    app: &App,
    locks: &Locks,
    service: ServiceState,
    desktop: Option<String>,
) -> Result<Report, crate::AppError> {
    let locks = locks.clone().with_wait(LOCK_WAIT);
    let mut problems = Vec::new();
    let usable = service.reachable && service.locked != Some(true);
    if !service.reachable {
        let d = crate::diagnose::diagnose("keyring_unavailable", None);
        problems.push(Problem {
            code: "keyring_unavailable".into(),
            message: format!(
                "No Secret Service is reachable{}: no mailbox can be signed in or verified.",
                service.detail.as_deref().map(|x| format!(" ({x})")).unwrap_or_default()
            ),
            fix: d.fix.into(),
        });
    } else if service.locked == Some(true) {
        let d = crate::diagnose::diagnose("keyring_locked", None);
        problems.push(Problem {
            code: "keyring_locked".into(),
            message: format!(
                "The keyring{} of {} is locked: stored sign-ins cannot be read until it is unlocked.",
                service.collection.as_deref().map(|c| format!(" \"{c}\"")).unwrap_or_default(),
                service.backend.as_deref().unwrap_or("the Secret Service")
            ),
            fix: d.fix.into(),
        });
    }
    let (readable, _) = app.store().list_readable()?;
    let mut mailboxes = Vec::new();
    let mut missing = Vec::new();
    for m in readable {
        let recorded = signin_recorded(app.store(), &m);
        let kind = if m.flow == Flow::ClientCredentials { SecretKind::ClientSecret } else { SecretKind::RefreshToken };
        let (state, label) = if !usable {
            ("unchecked".to_string(), "Not checked: the keyring cannot be read".to_string())
        } else {
            match present(app.secret_store(), &locks, &m.name, kind).await {
                Ok(true) => ("ok".into(), "Sign-in stored".into()),
                Ok(false) if recorded => {
                    missing.push(m.name.clone());
                    note_lost(app.store(), &m.name);
                    (SIGNIN_MISSING.into(), SIGNIN_MISSING_LABEL.into())
                }
                Ok(false) if kind == SecretKind::ClientSecret => {
                    ("no_client_secret".into(), "No client secret stored".into())
                }
                Ok(false) => ("not_signed_in".into(), "Not signed in yet".into()),
                Err(e) => (e.code().into(), e.to_string()),
            }
        };
        mailboxes.push(MailboxEntry { name: m.name, state, label });
    }
    if !missing.is_empty() {
        let d = crate::diagnose::diagnose(SIGNIN_MISSING, None);
        problems.push(Problem {
            code: SIGNIN_MISSING.into(),
            message: format!("Sign-in missing for {}. {}", missing.join(", "), d.cause),
            fix: d.fix.into(),
        });
    }
    let code = problems.first().map(|p| p.code.clone());
    let fixes = if problems.is_empty() { vec![] } else { fixes_for(desktop.as_deref()) };
    Ok(Report { ok: problems.is_empty(), code, service, desktop, mailboxes, problems, fixes })
}

/// Whether the mailbox's entry exists, read under its lock. Why the lock: a refresh in another
/// program replaces the entry; reading between its steps would be reading a consumed token's
/// slot, and the rule that every read of a stored secret holds the lock keeps that reasoning
/// in one place (`lock.rs`).
async fn present(
    secrets: &Arc<dyn secret::SecretStore>,
    locks: &Locks,
    name: &str,
    kind: SecretKind,
) -> Result<bool, crate::AppError> {
    let _held = locks.acquire(name).await?;
    Ok(secret::get(secrets, name, kind).await?.is_some())
}

#[cfg(all(unix, not(any(target_os = "macos", target_os = "ios", target_os = "android"))))]
mod platform {
    use super::ServiceState;
    use zbus::blocking::{fdo::DBusProxy, Connection, Proxy};
    use zbus::zvariant::OwnedObjectPath;

    const SECRETS: &str = "org.freedesktop.secrets";

    pub fn service_state() -> ServiceState {
        let mut s = ServiceState::default();
        let conn = match Connection::session() {
            Ok(c) => c,
            Err(e) => {
                s.detail = Some(format!("no D-Bus session bus: {e}"));
                return s;
            }
        };
        let service = match Proxy::new(&conn, SECRETS, "/org/freedesktop/secrets", "org.freedesktop.Secret.Service") {
            Ok(p) => p,
            Err(e) => {
                s.detail = Some(format!("cannot address the Secret Service: {e}"));
                return s;
            }
        };
        // ReadAlias starts an activatable Secret Service, as the keyring calls would.
        let default: OwnedObjectPath = match service.call("ReadAlias", &("default",)) {
            Ok(p) => p,
            Err(e) => {
                s.detail = Some(format!("nothing answers as {SECRETS} on the session bus: {e}"));
                return s;
            }
        };
        s.reachable = true;
        s.backend = owner(&conn);
        if default.as_str() == "/" {
            s.detail = Some(
                "there is no default keyring yet; the first sign-in creates one (it may ask for a password)".into(),
            );
            return s;
        }
        if let Ok(c) = Proxy::new(&conn, SECRETS, default.as_str(), "org.freedesktop.Secret.Collection") {
            s.locked = c.get_property::<bool>("Locked").ok();
            s.collection = c.get_property::<String>("Label").ok().filter(|l| !l.is_empty());
        }
        s
    }

    /// The name of the program that owns the Secret Service on the bus.
    fn owner(conn: &Connection) -> Option<String> {
        let dbus = DBusProxy::new(conn).ok()?;
        let name = zbus::names::BusName::try_from(SECRETS).ok()?;
        let pid = dbus.get_connection_unix_process_id(name).ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        Some(comm.trim().to_string()).filter(|c| !c.is_empty())
    }
}

#[cfg(not(all(unix, not(any(target_os = "macos", target_os = "ios", target_os = "android")))))]
mod platform {
    use super::ServiceState;

    /// The Keychain and the Credential Manager are part of the system: always there.
    pub fn service_state() -> ServiceState {
        let backend = if cfg!(target_os = "macos") { "macOS Keychain" } else { "Windows Credential Manager" };
        ServiceState { reachable: true, backend: Some(backend.into()), ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{MemoryStore, SecretStore};
    use secrecy::SecretString;

    fn mailbox(name: &str) -> Mailbox {
        Mailbox { name: name.into(), ..crate::mailbox::sample() }
    }

    fn app(dir: &std::path::Path, mem: &MemoryStore) -> App {
        App::open(dir, Arc::new(mem.clone())).unwrap()
    }

    fn up() -> ServiceState {
        ServiceState {
            reachable: true,
            locked: Some(false),
            backend: Some("gnome-keyring-d".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_signed_in_mailbox_without_its_entry_is_sign_in_missing() {
        let dir = tempfile::tempdir().unwrap();
        let mem = MemoryStore::default();
        let a = app(dir.path(), &mem);
        for n in ["kept", "lost", "never"] {
            a.store().save(&mailbox(n)).unwrap();
        }
        for n in ["kept", "lost"] {
            a.store().note_signin(n, chrono::Utc::now(), None).unwrap();
        }
        mem.set("kept", SecretKind::RefreshToken, &SecretString::from("rt")).unwrap();
        let locks = Locks::new(dir.path().join("locks"));
        let r = examine_with(&a, &locks, up(), Some("GNOME".into())).await.unwrap();
        let state = |n: &str| r.mailboxes.iter().find(|m| m.name == n).unwrap().state.clone();
        assert_eq!(state("kept"), "ok");
        assert_eq!(state("lost"), SIGNIN_MISSING);
        assert_eq!(state("never"), "not_signed_in");
        assert!(!r.ok);
        assert_eq!(r.code.as_deref(), Some(SIGNIN_MISSING));
        assert!(r.problems[0].message.contains("lost"), "{:?}", r.problems);
        assert!(r.fixes[0].setting.starts_with("GNOME"));

        // And the badge and a failed check say so too.
        let views = a.list().await.unwrap();
        let lost = views.iter().find(|v| v.mailbox.name == "lost").unwrap();
        assert_eq!(lost.status_label, SIGNIN_MISSING_LABEL);
        assert_eq!(lost.status, crate::health::Status::Failed);
        let never = views.iter().find(|v| v.mailbox.name == "never").unwrap();
        assert_eq!(never.status_label, "Not authenticated");
        let rec = a.verify("lost").await.unwrap().incoming;
        assert_eq!(rec.code.as_deref(), Some(SIGNIN_MISSING), "{rec:?}");
        assert!(rec.message.contains(SIGNIN_MISSING_LABEL), "{}", rec.message);
        let rec = a.verify("never").await.unwrap().incoming;
        assert_eq!(rec.code.as_deref(), Some("not_authenticated"));
    }

    #[tokio::test]
    async fn a_locked_or_absent_keyring_is_the_problem_and_no_entry_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let mem = MemoryStore::default();
        let a = app(dir.path(), &mem);
        a.store().save(&mailbox("lost")).unwrap();
        a.store().note_signin("lost", chrono::Utc::now(), None).unwrap();
        let locks = Locks::new(dir.path().join("locks"));
        let locked = ServiceState { locked: Some(true), collection: Some("Login".into()), ..up() };
        let r = examine_with(&a, &locks, locked, Some("KDE".into())).await.unwrap();
        assert_eq!(r.code.as_deref(), Some("keyring_locked"));
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].message.contains("\"Login\""), "{}", r.problems[0].message);
        assert_eq!(r.mailboxes[0].state, "unchecked");
        assert_eq!(r.fixes[0].setting, "KDE Plasma");
        let absent = ServiceState { detail: Some("no D-Bus session bus".into()), ..Default::default() };
        let r = examine_with(&a, &locks, absent, None).await.unwrap();
        assert_eq!(r.code.as_deref(), Some("keyring_unavailable"));
        assert!(r.problems[0].message.contains("no D-Bus session bus"));
        assert!(r.fixes[0].setting.starts_with("Headless"));
    }

    #[test]
    fn a_sign_in_forgotten_meanwhile_is_not_recorded_as_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mem = MemoryStore::default();
        let a = app(dir.path(), &mem);
        a.store().save(&mailbox("gone")).unwrap();
        note_lost(a.store(), "gone");
        assert!(a.store().history("gone", 5).unwrap().is_empty(), "no sign-in dates: nothing lost");
        a.store().note_signin("gone", chrono::Utc::now(), None).unwrap();
        note_lost(a.store(), "gone");
        let h = a.store().history("gone", 5).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].code.as_deref(), Some(SIGNIN_MISSING));
    }

    #[tokio::test]
    async fn all_well_has_no_problem_and_no_fixes() {
        let dir = tempfile::tempdir().unwrap();
        let mem = MemoryStore::default();
        let a = app(dir.path(), &mem);
        a.store().save(&mailbox("kept")).unwrap();
        a.store().note_signin("kept", chrono::Utc::now(), None).unwrap();
        mem.set("kept", SecretKind::RefreshToken, &SecretString::from("rt")).unwrap();
        let r = examine_with(&a, &Locks::new(dir.path().join("locks")), up(), None).await.unwrap();
        assert!(r.ok && r.code.is_none() && r.problems.is_empty() && r.fixes.is_empty(), "{r:?}");
    }

    #[test]
    fn every_setting_has_its_fix_and_the_headless_one_says_how_to_unlock() {
        let all: Vec<_> = fixes_for(Some("GNOME")).into_iter().map(|f| f.setting).collect();
        assert_eq!(all.len(), 4);
        for w in ["GNOME", "KDE", "Headless", "KeePassXC"] {
            assert!(all.iter().any(|s| s.contains(w)), "{w}");
        }
        let headless = FIXES.iter().find(|f| f.setting.starts_with("Headless")).unwrap();
        assert!(headless.steps.iter().any(|s| s.contains("gnome-keyring-daemon --unlock")));
    }
}
