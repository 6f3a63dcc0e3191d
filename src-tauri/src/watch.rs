//! The desktop app's living health: the core monitor ([`mailbox_auth_core::monitor`]) runs in
//! the background for as long as the process runs, closing the window only hides it to the tray
//! icon, and each alert the monitor makes becomes one desktop notification.
//!
//! - **Tray** (Tauri's `tray-icon`: a StatusNotifierItem through libayatana-appindicator on
//!   Linux): the icon's colour is the worst badge (red, amber, green; grey while nothing is
//!   monitored or monitoring is paused); its menu is Open, Check all now, Pause/Resume
//!   monitoring, Start at login, Quit.
//! - **Notifications** (tauri-plugin-notification: org.freedesktop.Notifications on Linux): one
//!   per [`Alert`], which is one per transition or one summary when many mailboxes changed
//!   together ([`mailbox_auth_core::monitor::group`]). The monitor retries an alert whose webhook
//!   delivery failed on its next pass; the badges already notified are remembered here, so a
//!   retried alert does not notify twice.
//! - **Start at login**: tauri-plugin-autostart, an XDG autostart entry
//!   (`~/.config/autostart/Mailbox Auth.desktop`) on Linux.
//!
//! - **Start**: the first pass waits until the window's board is on screen (the UI's
//!   `board-ready`, [`Watch::board_shown`]) or [`FIRST_PASS_WAIT`], whichever comes first: the
//!   pass reads every mailbox's settings, history and keyring entries, as the board's first
//!   `list_mailboxes` does, and on two cores the two together held the board back by seconds
//!   with 1,000 mailboxes. Started hidden (at login, `--hidden`) nothing is waited for.
//!
//! `MAILBOX_AUTH_MONITOR_INTERVAL` (seconds) overrides the monitor's interval (default 30 min).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailbox_auth_core::health::Status;
use mailbox_auth_core::monitor::{Alert, Monitor, MonitorConfig, PassReport};
use mailbox_auth_core::App;
use serde::Serialize;
use tauri::image::Image;
use tauri::menu::{CheckMenuItem, Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Emitter, Manager, Runtime};
use tokio::sync::Notify;

/// The tray icon's id.
pub const TRAY: &str = "main";
/// The event the window listens to: a monitor pass ended (the board reloads).
pub const PASS_EVENT: &str = "monitor-pass";

/// The longest the monitor's first pass waits for the board to be shown (a window whose page
/// never reports still gets its mailboxes checked).
pub const FIRST_PASS_WAIT: Duration = Duration::from_secs(10);

/// The worst badge over the mailboxes the monitor checks, as the tray shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum Worst {
    /// Nothing is monitored (no signed-in mailbox), or monitoring is paused.
    Idle,
    Ok,
    Warn,
    Bad,
}

impl Worst {
    /// Red over amber over green; mailboxes never signed in are not monitored and count for
    /// nothing.
    pub fn of(statuses: impl IntoIterator<Item = Status>) -> Worst {
        statuses.into_iter().fold(Worst::Idle, |w, s| {
            let this = match s {
                Status::Failed => Worst::Bad,
                Status::NeedsAttention => Worst::Warn,
                Status::Verified => Worst::Ok,
                Status::NotAuthenticated => Worst::Idle,
            };
            w.worse(this)
        })
    }

    fn rank(self) -> u8 {
        match self {
            Worst::Idle => 0,
            Worst::Ok => 1,
            Worst::Warn => 2,
            Worst::Bad => 3,
        }
    }

    fn worse(self, o: Worst) -> Worst {
        if o.rank() > self.rank() {
            o
        } else {
            self
        }
    }

    /// The icon's colour (RGB), and words for the tray's tooltip/title.
    pub fn colour(self) -> [u8; 3] {
        match self {
            Worst::Idle => [0x8a, 0x8f, 0x98],
            Worst::Ok => [0x1e, 0x9e, 0x4a],
            Worst::Warn => [0xe0, 0x9b, 0x12],
            Worst::Bad => [0xd4, 0x2a, 0x2a],
        }
    }

    pub fn words(self) -> &'static str {
        match self {
            Worst::Idle => "nothing monitored",
            Worst::Ok => "all mailboxes verified",
            Worst::Warn => "a mailbox needs attention",
            Worst::Bad => "a mailbox failed",
        }
    }
}

/// A `size`×`size` RGBA image: a filled disc of `colour` with a white envelope-flap stroke, so
/// the state also reads by shape on a monochrome panel (the flap is omitted when idle).
pub fn icon_rgba(worst: Worst, size: u32) -> Vec<u8> {
    let [r, g, b] = worst.colour();
    let c = (size as f32 - 1.0) / 2.0;
    let radius = size as f32 / 2.0 - 0.5;
    let mut out = Vec::with_capacity((size * size * 4) as usize);
    for y in 0..size {
        for x in 0..size {
            let (dx, dy) = (x as f32 - c, y as f32 - c);
            let d = (dx * dx + dy * dy).sqrt();
            // Anti-aliased edge.
            let alpha = (radius - d + 0.5).clamp(0.0, 1.0);
            // A "V" (the flap of an envelope) in white across the middle.
            let u = dx.abs() / radius;
            let v = dy / radius;
            let on_flap = worst != Worst::Idle && u < 0.55 && (v - (u * 0.8 - 0.25)).abs() < 0.11;
            let (pr, pg, pb) = if on_flap { (255, 255, 255) } else { (r, g, b) };
            out.extend_from_slice(&[pr, pg, pb, (alpha * 255.0) as u8]);
        }
    }
    out
}

/// What the window and the tray share about the background monitor.
pub struct Watch {
    paused: AtomicBool,
    /// Whether the tray icon was set at least once (later only changes of state redraw it).
    icon_set: AtomicBool,
    wake: Notify,
    /// Whether the board has been shown (see the module docs), and its signal.
    shown: AtomicBool,
    shown_signal: Notify,
    worst: Mutex<Worst>,
    /// The badge each mailbox was last notified with (see the module docs).
    notified: Mutex<HashMap<String, Status>>,
    /// The time of the newest finished pass.
    last_pass: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    pause_item: Mutex<Option<MenuItem<tauri::Wry>>>,
    autostart_item: Mutex<Option<CheckMenuItem<tauri::Wry>>>,
}

/// What the window's settings menu shows.
#[derive(Debug, Clone, Serialize, specta::Type)]
pub struct MonitorState {
    pub paused: bool,
    pub worst: Worst,
    pub interval_secs: u64,
    pub last_pass: Option<chrono::DateTime<chrono::Utc>>,
    pub start_at_login: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("paused", &self.paused())
            .field("worst", &*lock(&self.worst))
            .field("last_pass", &*lock(&self.last_pass))
            .finish_non_exhaustive()
    }
}

impl Default for Watch {
    fn default() -> Self {
        Self {
            paused: AtomicBool::new(false),
            icon_set: AtomicBool::new(false),
            wake: Notify::new(),
            shown: AtomicBool::new(false),
            shown_signal: Notify::new(),
            worst: Mutex::new(Worst::Idle),
            notified: Mutex::new(HashMap::new()),
            last_pass: Mutex::new(None),
            pause_item: Mutex::new(None),
            autostart_item: Mutex::new(None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The monitor's interval: `MAILBOX_AUTH_MONITOR_INTERVAL` seconds, else the core's default.
pub fn interval() -> Duration {
    std::env::var("MAILBOX_AUTH_MONITOR_INTERVAL")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(mailbox_auth_core::monitor::DEFAULT_INTERVAL)
}

impl Watch {
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// The board is on screen (or there is no window to wait for): the first pass may start.
    pub fn board_shown(&self) {
        self.shown.store(true, Ordering::SeqCst);
        self.shown_signal.notify_waiters();
    }

    /// Waits until [`Watch::board_shown`], or `at_most`; whether the board was shown.
    pub async fn until_board_shown(&self, at_most: Duration) -> bool {
        // Made before the flag is read: `notify_waiters` wakes a `Notified` from its creation on.
        let signal = self.shown_signal.notified();
        if self.shown.load(Ordering::SeqCst) {
            return true;
        }
        tokio::time::timeout(at_most, signal).await.is_ok()
    }

    /// The alerts of a pass not notified yet, remembering them as notified.
    pub fn to_notify(&self, alerts: &[Alert]) -> Vec<Alert> {
        let mut notified = lock(&self.notified);
        alerts
            .iter()
            .filter_map(|a| {
                let fresh: Vec<_> = match a {
                    Alert::One(t) => vec![t.clone()],
                    Alert::Summary(s) => s.transitions.clone(),
                }
                .into_iter()
                .filter(|t| notified.get(&t.mailbox) != Some(&t.to))
                .collect();
                for t in &fresh {
                    notified.insert(t.mailbox.clone(), t.to);
                }
                match (a, fresh.len()) {
                    (_, 0) => None,
                    (Alert::One(_), _) => Some(a.clone()),
                    (Alert::Summary(_), n) if n == a.mailboxes().len() => Some(a.clone()),
                    // Part of a summary was notified already: regroup what is left.
                    (Alert::Summary(_), _) => {
                        let mut g = mailbox_auth_core::monitor::group(fresh, 2);
                        (g.len() == 1).then(|| g.remove(0))
                    }
                }
            })
            .collect()
    }

    pub fn state<R: Runtime>(&self, app: &AppHandle<R>) -> MonitorState {
        MonitorState {
            paused: self.paused(),
            worst: *lock(&self.worst),
            interval_secs: interval().as_secs(),
            last_pass: *lock(&self.last_pass),
            start_at_login: start_at_login(app),
        }
    }
}

/// The notification's title and body for one alert.
pub fn notification(a: &Alert) -> (String, String) {
    use mailbox_auth_core::monitor::Change;
    let title = match a {
        Alert::One(t) => match t.change {
            Change::Failed => format!("{} failed", t.mailbox),
            Change::Attention => format!("{} needs attention", t.mailbox),
            Change::Recovered => format!("{} recovered", t.mailbox),
        },
        Alert::Summary(s) => format!("{} mailboxes changed", s.transitions.len()),
    };
    (format!("Mailbox Auth: {title}"), a.text())
}

fn start_at_login<R: Runtime>(app: &AppHandle<R>) -> bool {
    use tauri_plugin_autostart::ManagerExt;
    app.autolaunch().is_enabled().unwrap_or(false)
}

/// Turns "start at login" on or off, and ticks the tray's item to match.
pub fn set_start_at_login<R: Runtime>(app: &AppHandle<R>, on: bool) -> Result<bool, String> {
    use tauri_plugin_autostart::ManagerExt;
    let l = app.autolaunch();
    let r = if on { l.enable() } else { l.disable() };
    r.map_err(|e| format!("cannot change the autostart entry: {e}"))?;
    let now = start_at_login(app);
    if let Some(w) = app.try_state::<Arc<Watch>>() {
        if let Some(item) = lock(&w.autostart_item).as_ref() {
            let _ = item.set_checked(now);
        }
        // The window's checkbox follows a change made from the tray.
        let _ = app.emit(PASS_EVENT, w.state(app));
    }
    Ok(now)
}

/// Pauses or resumes the background checks; resuming checks at once.
pub fn set_paused<R: Runtime>(app: &AppHandle<R>, paused: bool) {
    let Some(w) = app.try_state::<Arc<Watch>>() else { return };
    w.paused.store(paused, Ordering::SeqCst);
    if let Some(item) = lock(&w.pause_item).as_ref() {
        let _ = item.set_text(if paused { "Resume monitoring" } else { "Pause monitoring" });
    }
    if paused {
        set_worst(app, Worst::Idle);
    } else {
        w.wake.notify_one();
    }
    let _ = app.emit(PASS_EVENT, w.state(app));
}

/// Starts a pass now (unless paused).
pub fn check_now<R: Runtime>(app: &AppHandle<R>) {
    if let Some(w) = app.try_state::<Arc<Watch>>() {
        w.wake.notify_one();
    }
}

/// Shows, unminimises and focuses the main window.
pub fn open_window<R: Runtime>(app: &AppHandle<R>) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
    }
}

/// Recomputes the worst badge from `statuses` (unless paused) and shows it in the tray.
pub fn update_worst<R: Runtime>(app: &AppHandle<R>, statuses: impl IntoIterator<Item = Status>) {
    if app.try_state::<Arc<Watch>>().is_some_and(|w| !w.paused()) {
        set_worst(app, Worst::of(statuses));
    }
}

fn set_worst<R: Runtime>(app: &AppHandle<R>, worst: Worst) {
    if let Some(w) = app.try_state::<Arc<Watch>>() {
        let mut current = lock(&w.worst);
        if *current == worst && w.icon_set.swap(true, Ordering::SeqCst) {
            return;
        }
        *current = worst;
    }
    if let Some(tray) = app.tray_by_id(TRAY) {
        let rgba = icon_rgba(worst, 32);
        if let Err(e) = tray.set_icon(Some(Image::new(&rgba, 32, 32))) {
            tracing::warn!("cannot change the tray icon: {e}");
        }
        let _ = tray.set_tooltip(Some(format!("Mailbox Auth: {}", worst.words())));
    }
}

/// Builds the tray icon and its menu.
pub fn tray(app: &AppHandle<tauri::Wry>, watch: &Watch) -> tauri::Result<TrayIcon<tauri::Wry>> {
    let open = MenuItem::with_id(app, "open", "Open", true, None::<&str>)?;
    let check = MenuItem::with_id(app, "check", "Check all now", true, None::<&str>)?;
    let pause = MenuItem::with_id(app, "pause", "Pause monitoring", true, None::<&str>)?;
    let login = CheckMenuItem::with_id(app, "autostart", "Start at login", true, start_at_login(app), None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let sep = PredefinedMenuItem::separator(app)?;
    let menu = Menu::with_items(app, &[&open, &check, &pause, &login, &sep, &quit])?;
    *lock(&watch.pause_item) = Some(pause);
    *lock(&watch.autostart_item) = Some(login);
    let rgba = icon_rgba(Worst::Idle, 32);
    let mut b = TrayIconBuilder::with_id(TRAY)
        .icon(Image::new(&rgba, 32, 32))
        .tooltip("Mailbox Auth")
        .menu(&menu)
        .on_menu_event(|app, e| match e.id().as_ref() {
            "open" => open_window(app),
            "check" => check_now(app),
            "pause" => {
                let paused = app.try_state::<Arc<Watch>>().is_some_and(|w| w.paused());
                set_paused(app, !paused);
            }
            "autostart" => {
                let on = !start_at_login(app);
                if let Err(e) = set_start_at_login(app, on) {
                    tracing::warn!("{e}");
                }
            }
            "quit" => app.exit(0),
            _ => {}
        });
    // The icon files go to a folder of their own (tests read the icon the panel is shown).
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        b = b.temp_dir_path(dir.join("mailbox-auth-tray"));
    }
    b.build(app)
}

fn notify<R: Runtime>(app: &AppHandle<R>, a: &Alert) {
    use tauri_plugin_notification::NotificationExt;
    let (title, body) = notification(a);
    if let Err(e) = app.notification().builder().title(title).body(body).show() {
        tracing::warn!("cannot show a desktop notification: {e}");
    }
}

/// The background monitor: a pass once the board is shown (see the module docs), then one every
/// interval (or when asked for), until the process ends.
pub async fn run(app: AppHandle<tauri::Wry>, core: Arc<App>, home: PathBuf, watch: Arc<Watch>) {
    let config = MonitorConfig { interval: interval(), ..MonitorConfig::default() };
    let mon = match Monitor::new(&core, &home, config) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("the monitor cannot start: {}", e.failure().message);
            return;
        }
    };
    tracing::info!(interval_secs = mon.config.interval.as_secs(), "monitoring");
    let shown = watch.until_board_shown(FIRST_PASS_WAIT).await;
    tracing::info!(board_shown = shown, "first monitor pass");
    // The tray's colour from the stored history before the first pass ends.
    if let Ok(list) = core.list().await {
        set_worst(&app, Worst::of(list.iter().map(|v| v.status)));
    }
    let mut first = true;
    loop {
        if !watch.paused() {
            // The first pass (and a requested one) checks at once; scheduled ones spread out.
            match mon.pass(!first).await {
                Ok(r) => after_pass(&app, &core, &watch, &r).await,
                Err(e) => tracing::warn!("monitor pass failed: {}", e.failure().message),
            }
            first = false;
        }
        tokio::select! {
            _ = tokio::time::sleep(mon.next_wait()) => {}
            _ = watch.wake.notified() => { first = true; }
        }
    }
}

async fn after_pass(app: &AppHandle<tauri::Wry>, core: &App, watch: &Watch, r: &PassReport) {
    tracing::info!(checked = r.checks.len(), alerts = r.alerts.len(), "monitor pass");
    for a in watch.to_notify(&r.alerts) {
        tracing::info!(mailboxes = ?a.mailboxes(), "notification");
        notify(app, &a);
    }
    *lock(&watch.last_pass) = Some(chrono::Utc::now());
    if !watch.paused() {
        // Every mailbox's badge, also those the window changed since.
        let statuses: Vec<Status> = match core.list().await {
            Ok(l) => l.iter().map(|v| v.status).collect(),
            Err(_) => r.checks.iter().map(|c| c.after).collect(),
        };
        set_worst(app, Worst::of(statuses));
    }
    let _ = app.emit(PASS_EVENT, watch.state(app));
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailbox_auth_core::monitor::{group, Change, Reason, Transition};

    fn t(name: &str, from: Status, to: Status, change: Change) -> Transition {
        Transition {
            mailbox: name.into(),
            from,
            to,
            change,
            reason: Reason { message: "connection refused".into(), ..Default::default() },
            at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn the_first_pass_waits_for_the_board_or_the_limit() {
        // Never shown: the wait ends at the limit, not before.
        let w = Watch::default();
        let t = std::time::Instant::now();
        assert!(!w.until_board_shown(Duration::from_millis(200)).await);
        assert!(t.elapsed() >= Duration::from_millis(200));
        // Shown while waiting: the wait ends then, long before the limit.
        let w = Arc::new(Watch::default());
        let waiting = tokio::spawn({
            let w = w.clone();
            async move { w.until_board_shown(Duration::from_secs(60)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the wait ended before the board was shown");
        w.board_shown();
        let shown = tokio::time::timeout(Duration::from_secs(20), waiting).await.expect("no hang").unwrap();
        assert!(shown);
        // Shown before the wait (or started hidden): no wait at all.
        assert!(tokio::time::timeout(Duration::from_secs(20), w.until_board_shown(Duration::from_secs(60)))
            .await
            .unwrap());
    }

    #[test]
    fn worst_is_red_over_amber_over_green_and_never_signed_in_counts_for_nothing() {
        use Status::*;
        assert_eq!(Worst::of([]), Worst::Idle);
        assert_eq!(Worst::of([NotAuthenticated]), Worst::Idle);
        assert_eq!(Worst::of([Verified, NotAuthenticated]), Worst::Ok);
        assert_eq!(Worst::of([Verified, NeedsAttention]), Worst::Warn);
        assert_eq!(Worst::of([Failed, NeedsAttention, Verified]), Worst::Bad);
    }

    #[test]
    fn icon_colour_is_the_worst_state() {
        let px = |w: Worst| {
            let img = icon_rgba(w, 32);
            // A pixel inside the disc, away from the flap.
            let i = ((26 * 32) + 16) * 4;
            [img[i], img[i + 1], img[i + 2], img[i + 3]]
        };
        assert_eq!(px(Worst::Bad), [0xd4, 0x2a, 0x2a, 255]);
        assert_eq!(px(Worst::Ok)[..3], Worst::Ok.colour());
        assert_eq!(px(Worst::Warn)[..3], Worst::Warn.colour());
        // Corners are transparent.
        assert_eq!(icon_rgba(Worst::Bad, 32)[3], 0);
    }

    #[test]
    fn one_notification_per_transition_even_when_the_monitor_retries_an_alert() {
        let w = Watch::default();
        let red = vec![Alert::One(t("a", Status::Verified, Status::Failed, Change::Failed))];
        assert_eq!(w.to_notify(&red).len(), 1);
        // The webhook did not take it: the next pass alerts again; no second notification.
        assert!(w.to_notify(&red).is_empty());
        let back = vec![Alert::One(t("a", Status::Failed, Status::Verified, Change::Recovered))];
        assert_eq!(w.to_notify(&back).len(), 1);
        assert_eq!(w.to_notify(&red).len(), 1, "failing again is news");
    }

    #[test]
    fn a_summary_is_one_notification_and_a_retried_one_only_names_what_is_new() {
        let w = Watch::default();
        let many: Vec<Transition> =
            (0..5).map(|i| t(&format!("m{i}"), Status::Verified, Status::Failed, Change::Failed)).collect();
        w.to_notify(&[Alert::One(many[0].clone())]);
        let alerts = group(many, 3);
        let n = w.to_notify(&alerts);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].mailboxes(), vec!["m1", "m2", "m3", "m4"]);
        let (title, body) = notification(&n[0]);
        assert_eq!(title, "Mailbox Auth: 4 mailboxes changed");
        assert!(body.contains("m1, m2, m3, m4"), "{body}");
        assert!(w.to_notify(&alerts).is_empty());
    }

    #[test]
    fn the_notification_names_the_mailbox() {
        let a = Alert::One(t("support", Status::Verified, Status::Failed, Change::Failed));
        let (title, body) = notification(&a);
        assert_eq!(title, "Mailbox Auth: support failed");
        assert!(body.starts_with("support: Verified → Failed"), "{body}");
    }
}
