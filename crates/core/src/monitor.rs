//! The monitor: every mailbox re-checked on a schedule, each change of badge alerted once.
//!
//! One pass ([`Monitor::pass`]) runs the same checks as Verify — [`App::verify`]: the incoming
//! server and, when an outbound server is configured, the SMTP server — for every mailbox, and
//! compares each badge ([`health::status`]) with the one the previous pass left.
//!
//! - **Connections.** A mailbox's checks run one after the other, so it never holds more than one
//!   connection. Across mailboxes at most `concurrency` connections are open, and at most
//!   `per_account` to one account on one server (login + host): many shared mailboxes opened by
//!   one delegate account count against that account, as the servers count them (Gmail allows
//!   15 simultaneous IMAP connections per account; Exchange Online throttles well before).
//! - **Schedule.** Passes every `interval` (default 30 minutes) or, when a mailbox asks for less
//!   (`check_interval_minutes`), every that often ([`tick`]), each ±10 % so monitors started
//!   together drift apart. A pass checks the mailboxes that are due ([`Schedule`]: each is due
//!   its own interval ±10 % after its last check), each starting at a stable offset in the
//!   first quarter of the pass, so checks do not all hit the servers at once.
//! - **Shards.** `--shard I/N` ([`Shard`]) checks the mailboxes whose name's SHA-256 picks share
//!   I: the same split in every process and version, so N monitors check each mailbox once.
//! - **Alerts.** Green→red, red→green ("recovered") and →amber each make one alert; when
//!   [`SUMMARY_AT`] or more mailboxes change in one pass they make one summary alert naming them
//!   all and, when they share it, the cause (an identity-provider outage is one alert, not forty).
//!   The badge each mailbox was last alerted with is kept in the data store
//!   (`monitor_alert_state`, schema 3), so `monitor --once` from cron alerts only on changes
//!   since its previous run. A badge whose alert could not be delivered is not recorded, so the next pass
//!   tries again.
//! - **Webhook.** A JSON POST per alert with a human `text` field (Slack's and Teams' incoming
//!   webhooks show it), retried with exponential back-off (and `Retry-After` on 429, RFC 9110
//!   §10.2.3), bounded. The URL carries the channel's credentials, so it lives in the OS keyring
//!   ([`SecretKind::AlertWebhook`]) and never appears in a log or an error.
//! - **Email.** Optionally one message per alert to an admin address, sent through a configured
//!   mailbox's own SMTP server signed in with XOAUTH2 / OAUTHBEARER ([`EmailChannel`],
//!   [`App::send_message`], the submission dialogue of `probe::smtp`). An alert any channel
//!   took counts as delivered.
//! - **Metrics.** [`Metrics`] holds the Prometheus families (`prometheus-client`, which escapes
//!   label values) and [`serve_metrics`] answers `GET /metrics` in the OpenMetrics text format.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::{App, AppError};
use crate::health::{self, Check, HealthRecord, SecretExpiry, Status};
use crate::mailbox::{Mailbox, ProviderKind};
use crate::secret::{self, SecretKind, ALERT_WEBHOOK};
use crate::store::StoreError;

/// Default time between passes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Default number of connections open at once, over all mailboxes.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Default number of connections open at once for one account on one server.
pub const DEFAULT_PER_ACCOUNT: usize = 8;
/// This many changes in one pass make one summary alert instead of one alert each.
pub const SUMMARY_AT: usize = 3;
/// Passes start `interval` ± this fraction apart.
pub const JITTER: f64 = 0.1;

/// How a monitor runs.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    pub interval: Duration,
    pub concurrency: usize,
    pub per_account: usize,
    pub summary_at: usize,
    pub backoff: Backoff,
    /// The share of the mailboxes this monitor checks ([`Shard::ALL`] alone).
    pub shard: Shard,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            concurrency: DEFAULT_CONCURRENCY,
            per_account: DEFAULT_PER_ACCOUNT,
            summary_at: SUMMARY_AT,
            backoff: Backoff::default(),
            shard: Shard::ALL,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Schedule

/// `interval` moved by up to ± `fraction` of itself; `unit` is a random number in [0, 1).
pub fn jittered(interval: Duration, fraction: f64, unit: f64) -> Duration {
    let f = fraction.clamp(0.0, 1.0);
    let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.5 };
    interval.mul_f64(1.0 - f + 2.0 * f * unit)
}

/// A stable start offset for a mailbox within a pass, in [0, `window`): the same mailbox starts
/// at the same point of every pass, and mailboxes spread evenly over the window.
pub fn spread_offset(name: &str, window: Duration) -> Duration {
    if window.is_zero() {
        return Duration::ZERO;
    }
    // SipHash with fixed keys: stable for a given build, which is all a schedule needs.
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    window.mul_f64(unit)
}

/// How often a mailbox is checked: its own `check_interval_minutes`, else the monitor's.
pub fn interval_for(m: &Mailbox, default: Duration) -> Duration {
    m.check_interval_minutes.map_or(default, |min| Duration::from_secs(u64::from(min) * 60))
}

/// The time between passes: the monitor's interval, or a mailbox's shorter one.
pub fn tick(mailboxes: &[Mailbox], default: Duration) -> Duration {
    mailboxes.iter().map(|m| interval_for(m, default)).fold(default, Duration::min)
}

/// When each mailbox is due again, in this process.
///
/// After a check a mailbox is due its own interval later, jittered by ± [`JITTER`] (so mailboxes
/// checked together drift apart). A pass every [`tick`] checks the mailboxes due before the
/// middle of the next tick: with the monitor's interval as the tick every mailbox is checked
/// every pass, and a mailbox with a longer interval sits out the passes in between. Mailboxes
/// never checked by this process are due at once.
#[derive(Debug, Default)]
pub struct Schedule {
    next: HashMap<String, Instant>,
}

impl Schedule {
    /// Whether `name` should be checked in a pass at `now`, passes being `tick` apart.
    pub fn is_due(&self, name: &str, now: Instant, tick: Duration) -> bool {
        self.next.get(name).is_none_or(|due| *due <= now + tick / 2)
    }

    /// `name` was checked at `at`; `unit` is a random number in [0, 1) for the jitter.
    pub fn checked(&mut self, name: &str, at: Instant, interval: Duration, unit: f64) {
        self.next.insert(name.to_string(), at + jittered(interval, JITTER, unit));
    }

    /// Forgets mailboxes that are gone.
    pub fn retain(&mut self, names: &HashSet<&str>) {
        self.next.retain(|n, _| names.contains(n.as_str()));
    }
}

/// One of `count` monitors sharing the mailboxes: `index` in 1..=`count`.
///
/// A mailbox belongs to the shard its name's SHA-256 picks (the first 8 bytes, big-endian,
/// modulo `count`). Why SHA-256 and not Rust's hasher: the share must be the same in every
/// process, build, version and platform, or two monitors would both check, or both skip, a
/// mailbox; `std`'s hasher promises none of that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Every mailbox: one monitor alone.
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    /// Whether mailbox `name` is this shard's.
    pub fn contains(&self, name: &str) -> bool {
        self.count <= 1 || shard_of(name, self.count) == self.index
    }
}

/// The shard (1..=`count`) mailbox `name` belongs to.
pub fn shard_of(name: &str, count: u32) -> u32 {
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    (u64::from_be_bytes(first) % u64::from(count.max(1))) as u32 + 1
}

impl std::str::FromStr for Shard {
    type Err = crate::mailbox::FieldError;

    /// `I/N`, e.g. `2/3`: the second of three monitors.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || crate::mailbox::FieldError::new("shard", format!("`{s}` is not I/N with 1 ≤ I ≤ N, e.g. 1/2"));
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

// ---------------------------------------------------------------------------------------------
// Connection limits

/// The key connections are counted under: the account that signs in, on one server.
pub fn account_key(login: &str, host: &str) -> String {
    format!("{} on {}", login.to_lowercase(), host.trim_end_matches('.').to_lowercase())
}

/// At most `all` connections at once, and at most `per_account` for one account key.
#[derive(Debug)]
pub struct Limits {
    all: Arc<Semaphore>,
    per_account: usize,
    accounts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Held while one connection is open.
#[derive(Debug)]
pub struct ConnectionPermit {
    _account: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

impl Limits {
    pub fn new(all: usize, per_account: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(all.max(1))),
            per_account: per_account.max(1),
            accounts: Default::default(),
        }
    }

    /// Waits for room for one more connection of `account`. The account's permit is taken
    /// first and the overall one second, and a task holds at most one of each: no task ever
    /// waits while holding what another waits for, so no pass can deadlock, and mailboxes
    /// waiting for a busy account do not take the overall slots others could use.
    pub async fn connection(&self, account: &str) -> ConnectionPermit {
        let sem = {
            let mut map = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(account.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_account))).clone()
        };
        // The semaphores are never closed, so acquiring cannot fail.
        let account = sem.acquire_owned().await.expect("account semaphore closed");
        let all = self.all.clone().acquire_owned().await.expect("semaphore closed");
        ConnectionPermit { _account: account, _all: all }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks and transitions

/// One mailbox's checks in one pass.
#[derive(Debug, Clone, Serialize)]
pub struct MailboxCheck {
    pub mailbox: String,
    /// The badge before the checks, from the health history.
    pub before: Status,
    pub after: Status,
    /// This pass's records: the incoming server's, then the SMTP server's.
    pub records: Vec<HealthRecord>,
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub duration: Duration,
    pub client_secret_expires: Option<NaiveDate>,
    /// When the sign-in expires, where known ([`crate::app::MailboxView::signin_expires_at`]).
    pub signin_expires_at: Option<DateTime<Utc>>,
    /// The code, words and advice that explain `after`, and the endpoint to blame.
    pub reason: Reason,
}

/// Why a badge is what it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: Option<String>,
    pub message: String,
    pub hint: Option<String>,
    /// What failed, by name: "the token endpoint https://…", "the mail server host:993".
    pub cause: Option<String>,
}

/// What kind of change an alert reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Turned red.
    Failed,
    /// Turned amber (needs attention: a client secret about to expire, a stale check).
    Attention,
    /// Back to green from red or amber.
    Recovered,
}

/// Whether going from badge `from` to badge `to` is news. A first green after signing in
/// (`NotAuthenticated` → `Verified`) is not; turning red from anything else is.
pub fn change(from: Status, to: Status) -> Option<Change> {
    use Status::*;
    match (from, to) {
        (a, b) if a == b => None,
        (_, Failed) => Some(Change::Failed),
        (Verified | Failed, NeedsAttention) => Some(Change::Attention),
        (Failed | NeedsAttention, Verified) => Some(Change::Recovered),
        _ => None,
    }
}

/// One mailbox's change of badge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub mailbox: String,
    pub from: Status,
    pub to: Status,
    pub change: Change,
    #[serde(flatten)]
    pub reason: Reason,
    pub at: DateTime<Utc>,
}

impl Transition {
    /// One line for a person: "support: Verified → Failed — the token endpoint … (code)".
    pub fn text(&self) -> String {
        let mut t = format!("{}: {} → {}", self.mailbox, self.from.label(), self.to.label());
        if self.change != Change::Recovered {
            if !self.reason.message.is_empty() {
                t.push_str(&format!(" — {}", self.reason.message));
            }
            if let Some(c) = &self.reason.code {
                t.push_str(&format!(" ({c})"));
            }
            if let Some(h) = &self.reason.hint {
                t.push_str(&format!(" What to do: {h}"));
            }
        }
        t
    }
}

/// Changes of one pass compared with the badges last alerted (`previous`); a mailbox the
/// monitor has not seen yet is compared with its badge before the checks.
pub fn transitions(previous: &HashMap<String, Status>, checks: &[MailboxCheck]) -> Vec<Transition> {
    checks
        .iter()
        .filter_map(|c| {
            let from = previous.get(&c.mailbox).copied().unwrap_or(c.before);
            change(from, c.after).map(|change| Transition {
                mailbox: c.mailbox.clone(),
                from,
                to: c.after,
                change,
                reason: c.reason.clone(),
                at: c.at,
            })
        })
        .collect()
}

/// What is sent: one transition, or one summary of many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alert {
    One(Transition),
    Summary(Summary),
}

/// Many mailboxes that changed in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub transitions: Vec<Transition>,
    /// The badges, code, advice and cause every transition shares, if they all share one.
    pub from: Option<Status>,
    pub to: Option<Status>,
    pub code: Option<String>,
    pub hint: Option<String>,
    pub cause: Option<String>,
    pub at: DateTime<Utc>,
}

fn shared<T: PartialEq + Clone>(items: impl IntoIterator<Item = Option<T>>) -> Option<T> {
    let mut it = items.into_iter();
    let first = it.next()??;
    it.all(|x| x.as_ref() == Some(&first)).then_some(first)
}

/// Groups a pass's transitions: fewer than `summary_at` make one alert each, more make one
/// summary.
pub fn group(transitions: Vec<Transition>, summary_at: usize) -> Vec<Alert> {
    if transitions.len() < summary_at.max(2) {
        return transitions.into_iter().map(Alert::One).collect();
    }
    let s = Summary {
        from: shared(transitions.iter().map(|t| Some(t.from))),
        to: shared(transitions.iter().map(|t| Some(t.to))),
        code: shared(transitions.iter().map(|t| t.reason.code.clone())),
        hint: shared(transitions.iter().map(|t| t.reason.hint.clone())),
        cause: shared(transitions.iter().map(|t| t.reason.cause.clone())),
        at: transitions.iter().map(|t| t.at).max().unwrap_or_else(Utc::now),
        transitions,
    };
    vec![Alert::Summary(s)]
}

impl Summary {
    pub fn text(&self) -> String {
        let names: Vec<&str> = self.transitions.iter().map(|t| t.mailbox.as_str()).collect();
        let mut t = format!("{} mailboxes changed together: {}", names.len(), names.join(", "));
        if let (Some(f), Some(to)) = (self.from, self.to) {
            t.push_str(&format!(" ({} → {})", f.label(), to.label()));
        } else {
            let counts = self.transitions.iter().fold(HashMap::<&str, usize>::new(), |mut m, t| {
                *m.entry(t.to.label()).or_default() += 1;
                m
            });
            let mut parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            parts.sort();
            t.push_str(&format!(" (now {})", parts.join(", ")));
        }
        match (&self.cause, &self.code) {
            (Some(c), Some(code)) => t.push_str(&format!(". Shared cause: {c} ({code})")),
            (Some(c), None) => t.push_str(&format!(". Shared cause: {c}")),
            (None, Some(code)) => t.push_str(&format!(". Shared failure: {code}")),
            (None, None) => {}
        }
        if let Some(h) = &self.hint {
            t.push_str(&format!(". What to do: {h}"));
        }
        t
    }
}

impl Alert {
    pub fn mailboxes(&self) -> Vec<&str> {
        match self {
            Alert::One(t) => vec![t.mailbox.as_str()],
            Alert::Summary(s) => s.transitions.iter().map(|t| t.mailbox.as_str()).collect(),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Alert::One(t) => t.text(),
            Alert::Summary(s) => s.text(),
        }
    }

    /// The webhook's JSON body: `mailbox`, `from`, `to` (badge names), `code`, `message`,
    /// `hint`, `at` and a human `text` (the field Slack's and Teams' incoming webhooks show).
    pub fn body(&self) -> Value {
        match self {
            Alert::One(t) => json!({
                "kind": "transition",
                "mailbox": t.mailbox,
                "from": t.from,
                "to": t.to,
                "change": t.change,
                "code": t.reason.code,
                "message": t.reason.message,
                "hint": t.reason.hint,
                "cause": t.reason.cause,
                "at": t.at.to_rfc3339(),
                "text": format!("Mailbox Auth: {}", t.text()),
            }),
            Alert::Summary(s) => json!({
                "kind": "summary",
                "mailbox": self.mailboxes().join(", "),
                "mailboxes": self.mailboxes(),
                "from": s.from,
                "to": s.to,
                "code": s.code,
                "message": s.text(),
                "hint": s.hint,
                "cause": s.cause,
                "at": s.at.to_rfc3339(),
                "text": format!("Mailbox Auth: {}", s.text()),
                "transitions": s.transitions,
            }),
        }
    }
}

/// The body of `alerts test`.
pub fn test_body(now: DateTime<Utc>) -> Value {
    json!({
        "kind": "test",
        "mailbox": null,
        "from": null,
        "to": null,
        "code": null,
        "message": "This is a test alert from Mailbox Auth.",
        "hint": null,
        "at": now.to_rfc3339(),
        "text": "Mailbox Auth: this is a test alert; mailbox alerts will arrive here.",
    })
}

/// The token endpoint a mailbox uses, for naming it as a cause.
fn token_endpoint(m: &Mailbox) -> Option<String> {
    m.token_url
        .clone()
        .or_else(|| crate::provider::preset(m.provider, m.protocol, m.tenant.as_deref()).token_url)
        .or_else(|| m.issuer.clone().filter(|_| m.provider == ProviderKind::Generic))
}

/// The reason for a badge from the records of this pass and the client secret's expiry.
fn reason(
    m: &Mailbox,
    after: Status,
    deciding: Option<&HealthRecord>,
    signin_expires: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Reason {
    let expiry = health::secret_expiry(m.client_secret_expires, now);
    let secret_cause = Some(format!("the client secret of app {}", m.client_id));
    let renew = "Create a new client secret for the app registration and store it with \
                 `mailbox-auth set-secret NAME --expires DATE`.";
    match (after, expiry, deciding) {
        (Status::Failed, SecretExpiry::Expired, d) if d.is_none_or(|r| r.ok) => Reason {
            code: Some("client_secret_expired".into()),
            message: format!(
                "the client secret expired on {}",
                m.client_secret_expires.map(|d| d.to_string()).unwrap_or_default()
            ),
            hint: Some(renew.into()),
            cause: secret_cause,
        },
        (Status::NeedsAttention, SecretExpiry::Soon, Some(r)) if r.ok => Reason {
            code: Some("client_secret_expiring".into()),
            message: format!(
                "the client secret expires on {}",
                m.client_secret_expires.map(|d| d.to_string()).unwrap_or_default()
            ),
            hint: Some(renew.into()),
            cause: secret_cause,
        },
        (Status::NeedsAttention, _, Some(r))
            if r.ok && signin_expires.is_some_and(|at| at - now <= health::SIGNIN_WARNING) =>
        {
            let d = crate::diagnose::diagnose("signin_expiring", None);
            Reason {
                code: Some("signin_expiring".into()),
                message: format!(
                    "the sign-in expires on {}",
                    signin_expires.map(|at| at.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default()
                ),
                hint: Some(d.fix.into()),
                cause: Some(format!("the sign-in of {}", m.sasl_user())),
            }
        }
        (_, _, Some(r)) => Reason {
            code: r.code.clone(),
            message: r.message.clone(),
            hint: r.hint.clone(),
            cause: (!r.ok).then(|| match r.check {
                Check::Refresh | Check::Authenticate => match token_endpoint(m) {
                    Some(u) => format!("the token endpoint {u}"),
                    None => "the identity provider".to_string(),
                },
                Check::Smtp => match &m.smtp {
                    Some(s) => format!("the SMTP server {}:{}", s.host, s.port),
                    None => "the SMTP server".into(),
                },
                _ => format!("the mail server {}:{}", m.host, m.port),
            }),
        },
        (_, _, None) => Reason::default(),
    }
}

/// Checks one mailbox: the incoming server, then (unless the sign-in itself failed) the SMTP
/// server, one after the other under the incoming server's connection permit. A mailbox never signed in is not checked (its badge
/// stays "Not authenticated").
pub async fn check_one(app: &App, limits: &Limits, m: &Mailbox) -> Result<MailboxCheck, AppError> {
    let started = Instant::now();
    // The badge before is read under the first permit, so a pass over many mailboxes has at
    // most `concurrency` of them reading the keyring at once too.
    let permit = limits.connection(&account_key(m.sasl_user(), &m.host)).await;
    // Why boxed, and only now: a pass holds every mailbox's check future at once while they
    // wait for a permit, and an unboxed one carries the whole probe's state (TLS handshake,
    // token refresh, SMTP dialogue: tens of kilobytes). Allocating it once the permit is held
    // keeps a pass's memory to `concurrency` checks, not one per mailbox: with 1,000 mailboxes
    // the monitor's peak (and so its idle RSS, as the allocator keeps the heap) fell from
    // 59 MB to the figure in the README's "Performance" section.
    Box::pin(check_with_permit(app, permit, m, started)).await
}

/// [`check_one`] once its connection permit is held.
async fn check_with_permit(
    app: &App,
    permit: ConnectionPermit,
    m: &Mailbox,
    started: Instant,
) -> Result<MailboxCheck, AppError> {
    let mut records = Vec::new();
    let before_view = app.view(m.clone()).await?;
    let before = before_view.status;
    // A throttled mailbox is left alone until the back-off its server asked for has passed;
    // a later pass retries it. Its badge stays what it was.
    let recent = app.store().history(&m.name, 20)?;
    if let Some(until) = health::retry_at(&recent).filter(|t| *t > Utc::now()) {
        tracing::debug!("{}: throttled, next try after {until}", m.name);
        let now = Utc::now();
        return Ok(MailboxCheck {
            mailbox: m.name.clone(),
            before,
            after: before,
            records,
            // Not checked now: the time of its newest check stands (the metrics' last check).
            at: recent.first().map_or(now, |r| r.at),
            duration: started.elapsed(),
            client_secret_expires: m.client_secret_expires,
            signin_expires_at: before_view.signin_expires_at,
            reason: reason(m, before, before_view.last_check.as_ref(), before_view.signin_expires_at, now),
        });
    }
    if before == Status::NotAuthenticated {
        // Never signed in and never checked: nothing to watch yet, and no alert about it.
        let d = crate::diagnose::diagnose("not_authenticated", None);
        return Ok(MailboxCheck {
            mailbox: m.name.clone(),
            before,
            after: before,
            records,
            at: Utc::now(),
            duration: started.elapsed(),
            client_secret_expires: m.client_secret_expires,
            signin_expires_at: None,
            reason: Reason {
                code: Some("not_authenticated".into()),
                message: "never signed in".into(),
                hint: Some(d.fix.to_string()),
                cause: None,
            },
        });
    }
    // The incoming server, then the SMTP server (skipped when the sign-in itself failed): one
    // connection at a time, both under this permit.
    records.extend(app.verify(&m.name).await?.into_records());
    drop(permit);
    let duration = started.elapsed();
    let view = app.view(m.clone()).await?;
    let now = Utc::now();
    let reason = reason(m, view.status, view.last_check.as_ref(), view.signin_expires_at, now);
    Ok(MailboxCheck {
        mailbox: m.name.clone(),
        before,
        after: view.status,
        records,
        at: now,
        duration,
        client_secret_expires: m.client_secret_expires,
        signin_expires_at: view.signin_expires_at,
        reason,
    })
}

/// Checks every mailbox `select` picks, once. With `spread`, each mailbox waits its [`spread_offset`] within
/// that window first. A mailbox that cannot be read or checked (unreadable stored settings, a
/// store or keyring error) is named in the second list with why, and the others go on.
pub async fn check_all(
    app: &App,
    limits: &Limits,
    spread: Option<Duration>,
    select: &(dyn Fn(&Mailbox) -> bool + Sync),
) -> Result<(Vec<MailboxCheck>, Vec<(String, String)>), AppError> {
    let (mailboxes, problems) = app.store().list_readable()?;
    let mailboxes: Vec<Mailbox> = mailboxes.into_iter().filter(|m| select(m)).collect();
    check_these(app, limits, spread, &mailboxes, problems).await
}

/// [`check_all`] over a list already read.
async fn check_these(
    app: &App,
    limits: &Limits,
    spread: Option<Duration>,
    mailboxes: &[Mailbox],
    mut problems: Vec<(String, String)>,
) -> Result<(Vec<MailboxCheck>, Vec<(String, String)>), AppError> {
    let checks = mailboxes.iter().map(|m| async move {
        if let Some(w) = spread {
            tokio::time::sleep(spread_offset(&m.name, w)).await;
        }
        check_one(app, limits, m).await.map_err(|e| (m.name.clone(), e.to_string()))
    });
    let mut done = Vec::with_capacity(mailboxes.len());
    for r in futures::future::join_all(checks).await {
        match r {
            Ok(c) => done.push(c),
            Err(p) => problems.push(p),
        }
    }
    Ok((done, problems))
}

// ---------------------------------------------------------------------------------------------
// Alert state

/// The badge each mailbox was last alerted with, from the data store's `monitor_alert_state`
/// table (schema 3).
fn alert_states(app: &App) -> Result<HashMap<String, Status>, StoreError> {
    Ok(app.store().alert_states()?.into_iter().filter_map(|(m, b)| badge_from_name(&b).map(|s| (m, s))).collect())
}

fn badge_name(s: Status) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn badge_from_name(s: &str) -> Option<Status> {
    serde_json::from_value(Value::String(s.to_string())).ok()
}

// ---------------------------------------------------------------------------------------------
// Webhook

/// Retries of a webhook POST: `attempts` in all, waiting `first`, then twice as long each time,
/// at most `max` (also the most a `Retry-After` is honoured).
#[derive(Debug, Clone)]
pub struct Backoff {
    pub attempts: u32,
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { attempts: 4, first: Duration::from_secs(1), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The wait before attempt `n + 1` (n ≥ 1), given the server's `Retry-After` if any.
    pub fn delay(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self.first.saturating_mul(1u32 << (n.saturating_sub(1)).min(16));
        retry_after.unwrap_or(exp).min(self.max)
    }
}

/// A webhook that could not be reached. Names the attempts and the failure, never the URL.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("the alert webhook did not take the alert after {attempts} attempt(s): {detail}")]
    Delivery { attempts: u32, detail: String },
    #[error("the stored alert webhook is not an http(s) URL; store it again with `mailbox-auth alerts webhook`")]
    BadUrl,
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    #[error("the alert email through mailbox `{via}` was not sent: {detail}")]
    Email { via: String, detail: String },
}

/// Checks a webhook URL before it is stored. The error names the field, never the value.
pub fn parse_webhook_url(s: &str) -> Result<url::Url, crate::mailbox::FieldError> {
    let field = "webhook URL";
    let u =
        url::Url::parse(s.trim()).map_err(|e| crate::mailbox::FieldError::new(field, format!("not a URL ({e})")))?;
    if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none() {
        return Err(crate::mailbox::FieldError::new(field, "use an https:// (or http://) address with a host"));
    }
    Ok(u)
}

/// POSTs `body` as JSON, retrying network errors, 429 and 5xx with back-off. Other answers
/// are final.
pub async fn post(
    http: &reqwest::Client,
    url: &SecretString,
    body: &Value,
    backoff: &Backoff,
) -> Result<(), AlertError> {
    let url = parse_webhook_url(url.expose_secret()).map_err(|_| AlertError::BadUrl)?;
    let attempts = backoff.attempts.max(1);
    let mut detail = String::new();
    for n in 1..=attempts {
        let sent = http.post(url.clone()).timeout(Duration::from_secs(15)).json(body).send().await;
        let retry_after = match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                let status = r.status();
                detail = format!("HTTP {}", status.as_u16());
                if !(status.is_server_error() || status.as_u16() == 429) {
                    return Err(AlertError::Delivery { attempts: n, detail });
                }
                r.headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
            }
            Err(e) => {
                // The URL is a credential: reqwest puts it in its errors, so it is taken out.
                detail = e.without_url().to_string();
                None
            }
        };
        if n < attempts {
            tokio::time::sleep(backoff.delay(n, retry_after)).await;
        }
    }
    Err(AlertError::Delivery { attempts, detail })
}

// ---------------------------------------------------------------------------------------------
// Email

/// Setting keys of the email channel in the data store (an address and a mailbox name are not
/// secrets; the mailbox's own sign-in, in the keyring, sends the mail).
const EMAIL_TO: &str = "alert_email_to";
const EMAIL_VIA: &str = "alert_email_via";

/// Alert emails: sent to `to` through mailbox `via`'s SMTP server, signed in as that mailbox
/// with XOAUTH2 / OAUTHBEARER (the same submission dialogue as Verify's SMTP check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailChannel {
    pub to: String,
    pub via: String,
}

/// The stored email channel, if one is set.
pub fn email_channel(app: &App) -> Result<Option<EmailChannel>, StoreError> {
    let s = app.store();
    Ok(match (s.setting(EMAIL_TO)?, s.setting(EMAIL_VIA)?) {
        (Some(to), Some(via)) => Some(EmailChannel { to, via }),
        _ => None,
    })
}

/// Stores the email channel after checking it: `to` is one address, `via` a stored mailbox
/// with an SMTP server. Errors name the field; nothing is stored then.
pub fn set_email_channel(app: &App, to: &str, via: &str) -> Result<EmailChannel, AppError> {
    let to = to.trim();
    crate::probe::smtp::check_recipient(to)
        .map_err(|p| AppError::Invalid(vec![crate::mailbox::FieldError::new("alert email address", p)]))?;
    let m = app.get(via)?;
    if m.smtp.is_none() {
        return Err(AppError::Invalid(vec![crate::mailbox::FieldError::new(
            "--via",
            format!("mailbox `{via}` has no outbound SMTP server (set its smtp_host) to send alerts through"),
        )]));
    }
    app.store().set_settings(&[(EMAIL_TO, Some(to)), (EMAIL_VIA, Some(via))])?;
    Ok(EmailChannel { to: to.into(), via: via.into() })
}

/// Removes the email channel.
pub fn clear_email_channel(app: &App) -> Result<(), StoreError> {
    app.store().set_settings(&[(EMAIL_TO, None), (EMAIL_VIA, None)])
}

/// Sends one alert email; the mailbox's SMTP server's refusal, in its words, is the error.
pub async fn send_email(app: &App, ch: &EmailChannel, subject: &str, body: &str) -> Result<(), AlertError> {
    let message = crate::probe::smtp::TestMessage { to: ch.to.clone(), subject: subject.into(), body: body.into() };
    let rec = app
        .send_message(&ch.via, &message)
        .await
        .map_err(|e| AlertError::Email { via: ch.via.clone(), detail: e.to_string() })?;
    if rec.ok {
        Ok(())
    } else {
        let mut detail = rec.message;
        if let Some(w) = rec.server_words {
            detail.push_str(&format!(" (server: {w})"));
        }
        Err(AlertError::Email { via: ch.via.clone(), detail })
    }
}

impl Alert {
    /// The subject of the alert email: which mailbox(es) and the change.
    pub fn subject(&self) -> String {
        match self {
            Alert::One(t) => format!("Mailbox Auth: {} is {} (was {})", t.mailbox, t.to.label(), t.from.label()),
            Alert::Summary(s) => format!("Mailbox Auth: {} mailboxes changed together", s.transitions.len()),
        }
    }

    /// The plain-text body of the alert email: the human line, then the details.
    pub fn email_body(&self) -> String {
        let b = self.body();
        let mut out = format!("{}\n\n", self.text());
        for k in ["mailbox", "from", "to", "code", "cause", "hint", "at"] {
            if let Some(v) = b[k].as_str().filter(|v| !v.is_empty()) {
                out.push_str(&format!("{k}: {v}\n"));
            }
        }
        out.push_str("\nSent by the Mailbox Auth monitor.\n");
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct MailboxLabels {
    mailbox: String,
}

/// The Prometheus families the monitor keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    up: prometheus_client::metrics::family::Family<MailboxLabels, prometheus_client::metrics::gauge::Gauge>,
    last_check: prometheus_client::metrics::family::Family<MailboxLabels, prometheus_client::metrics::gauge::Gauge>,
    secret_expiry: prometheus_client::metrics::family::Family<MailboxLabels, prometheus_client::metrics::gauge::Gauge>,
    signin_expiry: prometheus_client::metrics::family::Family<MailboxLabels, prometheus_client::metrics::gauge::Gauge>,
    throttled: prometheus_client::metrics::family::Family<MailboxLabels, prometheus_client::metrics::counter::Counter>,
    duration: prometheus_client::metrics::histogram::Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
        let mut registry = prometheus_client::registry::Registry::with_prefix("mailbox_auth");
        let up = Default::default();
        let last_check = Default::default();
        let secret_expiry = Default::default();
        let signin_expiry = Default::default();
        let throttled = Default::default();
        let duration = Histogram::new(exponential_buckets(0.05, 2.0, 10));
        registry.register("up", "1 when the mailbox's newest checks passed, 0 when it is red", Clone::clone(&up));
        registry.register(
            "last_check_timestamp_seconds",
            "When the mailbox was last checked (Unix time)",
            Clone::clone(&last_check),
        );
        registry.register(
            "client_secret_expiry_timestamp_seconds",
            "When the mailbox's client secret expires (Unix time, end of the expiry day), where known",
            Clone::clone(&secret_expiry),
        );
        registry.register(
            "signin_expiry_timestamp_seconds",
            "When the mailbox's sign-in (refresh token) expires (Unix time), where known",
            Clone::clone(&signin_expiry),
        );
        registry.register(
            "throttled",
            "Checks the server throttled and that were retried later",
            Clone::clone(&throttled),
        );
        registry.register("check_duration_seconds", "Time to check one mailbox (all its servers)", duration.clone());
        Self { registry, up, last_check, secret_expiry, signin_expiry, throttled, duration }
    }

    fn labels(name: &str) -> MailboxLabels {
        MailboxLabels { mailbox: name.to_string() }
    }

    /// Sets a mailbox's series from its badge, newest record and client secret expiry.
    pub fn set(
        &self,
        name: &str,
        status: Status,
        last_check: Option<DateTime<Utc>>,
        secret_expires: Option<NaiveDate>,
    ) {
        let l = Self::labels(name);
        self.up.get_or_create(&l).set(i64::from(matches!(status, Status::Verified | Status::NeedsAttention)));
        if let Some(at) = last_check {
            self.last_check.get_or_create(&l).set(at.timestamp());
        }
        match secret_expires.and_then(|d| d.succ_opt()).and_then(|d| d.and_hms_opt(0, 0, 0)) {
            Some(end) => {
                self.secret_expiry.get_or_create(&l).set(end.and_utc().timestamp());
            }
            None => {
                self.secret_expiry.remove(&l);
            }
        }
        // Created at 0, so the series exists before anything is throttled.
        drop(self.throttled.get_or_create(&l));
    }

    /// Sets (or, unknown, drops) a mailbox's sign-in expiry series.
    pub fn set_signin(&self, name: &str, expires: Option<DateTime<Utc>>) {
        let l = Self::labels(name);
        match expires {
            Some(at) => {
                self.signin_expiry.get_or_create(&l).set(at.timestamp());
            }
            None => {
                self.signin_expiry.remove(&l);
            }
        }
    }

    pub fn observe(&self, c: &MailboxCheck) {
        self.set(&c.mailbox, c.after, Some(c.at), c.client_secret_expires);
        self.set_signin(&c.mailbox, c.signin_expires_at);
        let throttled = c.records.iter().filter(|r| r.throttled()).count() as u64;
        self.throttled.get_or_create(&Self::labels(&c.mailbox)).inc_by(throttled);
        self.duration.observe(c.duration.as_secs_f64());
    }

    /// Drops the series of mailboxes that no longer exist.
    pub fn retain(&self, names: &HashSet<&str>, known: &BTreeSet<String>) {
        for gone in known.iter().filter(|k| !names.contains(k.as_str())) {
            let l = Self::labels(gone);
            self.up.remove(&l);
            self.last_check.remove(&l);
            self.secret_expiry.remove(&l);
            self.signin_expiry.remove(&l);
            self.throttled.remove(&l);
        }
    }

    /// The text exposition: OpenMetrics 1.0 when `openmetrics`, else the Prometheus text
    /// format 0.0.4 (what `promtool check metrics` and older scrapers read).
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        out
    }
}

/// Answers `GET /metrics` (HTTP/1.1, hyper) until the listener fails.
pub async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    loop {
        let (stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let (status, ctype, body) = if req.method() != hyper::Method::GET {
                        (405, "text/plain; charset=utf-8", "only GET\n".to_string())
                    } else if req.uri().path() == "/metrics" {
                        // Content negotiation as Prometheus does it: OpenMetrics when asked for.
                        let openmetrics = req
                            .headers()
                            .get(hyper::header::ACCEPT)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.contains("application/openmetrics-text"));
                        if openmetrics {
                            (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode(true))
                        } else {
                            (200, "text/plain; version=0.0.4; charset=utf-8", metrics.encode(false))
                        }
                    } else {
                        (404, "text/plain; charset=utf-8", "see /metrics\n".to_string())
                    };
                    hyper::Response::builder()
                        .status(status)
                        .header(hyper::header::CONTENT_TYPE, ctype)
                        .body(Full::new(Bytes::from(body)))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                tracing::debug!("metrics connection ended: {e}");
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The monitor

/// What one pass did.
#[derive(Debug)]
pub struct PassReport {
    pub checks: Vec<MailboxCheck>,
    pub alerts: Vec<Alert>,
    /// Alerts no channel took, with why; their mailboxes alert again next pass.
    pub undelivered: Vec<(Alert, AlertError)>,
    /// Alerts one channel did not take while another did (not sent again), with why.
    pub partly_delivered: Vec<(Alert, AlertError)>,
    /// Whether a webhook is configured.
    pub webhook: bool,
    /// Whether alert emails are configured.
    pub email: bool,
    /// Mailboxes that could not be checked, with why.
    pub problems: Vec<(String, String)>,
}

impl PassReport {
    pub fn count(&self, s: Status) -> usize {
        self.checks.iter().filter(|c| c.after == s).count()
    }
}

/// A monitor over one [`App`].
#[derive(Debug)]
pub struct Monitor<'a> {
    app: &'a App,
    pub config: MonitorConfig,
    limits: Limits,
    http: reqwest::Client,
    pub metrics: Option<Arc<Metrics>>,
    known: Mutex<BTreeSet<String>>,
    schedule: Mutex<Schedule>,
    /// The time between passes, as the last pass found it ([`tick`]).
    tick: Mutex<Duration>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update under these locks is a single assignment or insert: a poisoned lock holds
    // consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<'a> Monitor<'a> {
    /// `_home` is the data directory the app was opened on; the alert state lives in its store.
    pub fn new(app: &'a App, _home: &Path, config: MonitorConfig) -> Result<Self, AppError> {
        Ok(Self {
            app,
            limits: Limits::new(config.concurrency, config.per_account),
            tick: Mutex::new(config.interval),
            config,
            http: crate::oauth::http_client(),
            metrics: None,
            known: Default::default(),
            schedule: Default::default(),
        })
    }

    /// Fills the metrics of this monitor's mailboxes from the stored history, before the first
    /// pass ends.
    pub async fn prime_metrics(&self) -> Result<(), AppError> {
        if let Some(metrics) = &self.metrics {
            for v in self.app.list().await? {
                if !self.config.shard.contains(&v.mailbox.name) {
                    continue;
                }
                metrics.set(
                    &v.mailbox.name,
                    v.status,
                    v.last_check.as_ref().map(|r| r.at),
                    v.mailbox.client_secret_expires,
                );
                metrics.set_signin(&v.mailbox.name, v.signin_expires_at);
                locked(&self.known).insert(v.mailbox.name.clone());
            }
        }
        Ok(())
    }

    /// The webhook URL, if one is stored.
    pub async fn webhook(&self) -> Result<Option<SecretString>, secret::SecretError> {
        secret::get(self.app.secret_store(), ALERT_WEBHOOK, SecretKind::AlertWebhook).await
    }

    /// Sends one body to the stored webhook. `Ok(false)` when none is stored.
    pub async fn send(&self, body: &Value) -> Result<bool, AlertError> {
        match self.webhook().await? {
            Some(url) => post(&self.http, &url, body, &self.config.backoff).await.map(|_| true),
            None => Ok(false),
        }
    }

    /// Checks every mailbox of this monitor's shard, alerts on changes since the previous pass
    /// (of this process or of an earlier `--once`), records the badges and updates the metrics.
    pub async fn pass(&self, spread: bool) -> Result<PassReport, AppError> {
        self.run(spread, false).await
    }

    /// Like [`Monitor::pass`], for the mailboxes that are due ([`Schedule`]): what a running
    /// monitor does every [`Monitor::next_wait`].
    pub async fn pass_due(&self, spread: bool) -> Result<PassReport, AppError> {
        self.run(spread, true).await
    }

    async fn run(&self, spread: bool, only_due: bool) -> Result<PassReport, AppError> {
        let shard = self.config.shard;
        let (all, unreadable) = self.app.store().list_readable()?;
        let mine: Vec<Mailbox> = all.into_iter().filter(|m| shard.contains(&m.name)).collect();
        let problems: Vec<(String, String)> = unreadable.into_iter().filter(|(n, _)| shard.contains(n)).collect();
        let tick = tick(&mine, self.config.interval);
        *locked(&self.tick) = tick;
        let started = Instant::now();
        let due: Vec<Mailbox> = if only_due {
            let s = locked(&self.schedule);
            mine.iter().filter(|m| s.is_due(&m.name, started, tick)).cloned().collect()
        } else {
            mine.clone()
        };
        let window = spread.then(|| tick.mul_f64(0.25));
        let (checks, problems) = check_these(self.app, &self.limits, window, &due, problems).await?;
        let names: HashSet<&str> =
            mine.iter().map(|m| m.name.as_str()).chain(problems.iter().map(|(n, _)| n.as_str())).collect();
        {
            let mut s = locked(&self.schedule);
            for m in &due {
                s.checked(&m.name, started, interval_for(m, self.config.interval), fastrand::f64());
            }
            s.retain(&names);
        }
        let previous = alert_states(self.app)?;
        let alerts = group(transitions(&previous, &checks), self.config.summary_at);
        let webhook = self.webhook().await?;
        let email = email_channel(self.app)?;
        let (mut undelivered, mut partly_delivered) = (Vec::new(), Vec::new());
        for a in &alerts {
            // An alert is delivered when any configured channel took it (with none, it is only
            // logged). One no channel took is sent again next pass; a channel that failed while
            // another took it is reported, not retried, so the other gets no duplicates.
            let mut took = webhook.is_none() && email.is_none();
            let mut failed = Vec::new();
            if let Some(url) = &webhook {
                match post(&self.http, url, &a.body(), &self.config.backoff).await {
                    Ok(()) => took = true,
                    Err(e) => failed.push(e),
                }
            }
            if let Some(ch) = &email {
                match send_email(self.app, ch, &a.subject(), &a.email_body()).await {
                    Ok(()) => took = true,
                    Err(e) => failed.push(e),
                }
            }
            let list = if took { &mut partly_delivered } else { &mut undelivered };
            list.extend(failed.into_iter().map(|e| (a.clone(), e)));
        }
        let retry: HashSet<&str> = undelivered.iter().flat_map(|(a, _)| a.mailboxes()).collect();
        for c in checks.iter().filter(|c| !retry.contains(c.mailbox.as_str())) {
            self.app.store().set_alert_state(&c.mailbox, &badge_name(c.after), c.at)?;
        }
        // By the mailboxes stored, not this shard's: other shards' state stays.
        self.app.store().prune_alert_states()?;
        if let Some(metrics) = &self.metrics {
            let mut known = locked(&self.known);
            metrics.retain(&names, &known);
            for c in &checks {
                metrics.observe(c);
            }
            // Mailboxes not due or not checkable this time keep their series as they were.
            *known = names.iter().map(|n| n.to_string()).collect();
        }
        Ok(PassReport {
            checks,
            alerts,
            undelivered,
            partly_delivered,
            webhook: webhook.is_some(),
            email: email.is_some(),
            problems,
        })
    }

    /// The wait before the next pass: the [`tick`], jittered.
    pub fn next_wait(&self) -> Duration {
        jittered(*locked(&self.tick), JITTER, fastrand::f64())
    }
}

// ---------------------------------------------------------------------------------------------
// Nagios / Icinga

/// One mailbox as the plugin line sees it.
#[derive(Debug, Clone)]
pub struct PluginItem {
    pub mailbox: String,
    pub status: Status,
    /// A few words on why it is not green (a code, or the secret's expiry).
    pub detail: Option<String>,
}

/// Plugin output: no `|` (it starts the performance data) and one line.
fn plugin_words(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '|' {
                '/'
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// The Nagios/Icinga plugin status line and exit code (0 OK, 1 WARNING, 2 CRITICAL) for checked
/// mailboxes, with performance data after `|` (Nagios Plugin Development Guidelines).
pub fn plugin_line(items: &[PluginItem]) -> (u8, String) {
    let red: Vec<&PluginItem> =
        items.iter().filter(|i| matches!(i.status, Status::Failed | Status::NotAuthenticated)).collect();
    let amber: Vec<&PluginItem> = items.iter().filter(|i| i.status == Status::NeedsAttention).collect();
    let green = items.len() - red.len() - amber.len();
    let list = |v: &[&PluginItem]| {
        v.iter()
            .map(|i| match &i.detail {
                Some(d) => format!("{} ({})", plugin_words(&i.mailbox), plugin_words(d)),
                None => plugin_words(&i.mailbox),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let n = items.len();
    let plural = |k: usize| if k == 1 { "mailbox" } else { "mailboxes" };
    let (code, state, mut text) = if !red.is_empty() {
        (2, "CRITICAL", format!("{} of {n} {} failed: {}", red.len(), plural(n), list(&red)))
    } else if !amber.is_empty() {
        (1, "WARNING", format!("{} of {n} {} need attention: {}", amber.len(), plural(n), list(&amber)))
    } else {
        (0, "OK", format!("{n} {} verified", plural(n)))
    };
    if code == 2 && !amber.is_empty() {
        text.push_str(&format!("; {} need attention: {}", amber.len(), list(&amber)));
    }
    let perf = format!("verified={green};;;0;{n} needs_attention={};;;0;{n} failed={};;;0;{n}", amber.len(), red.len());
    (code, format!("MAILBOX-AUTH {state} - {text} | {perf}"))
}

/// The plugin line for a check that could not run (exit code 3).
pub fn plugin_unknown(why: &str) -> String {
    format!("MAILBOX-AUTH UNKNOWN - {}", plugin_words(why))
}

/// The plugin view of a checked mailbox.
pub fn plugin_item(c: &MailboxCheck) -> PluginItem {
    let detail = match c.after {
        Status::Verified => None,
        _ => c.reason.code.clone().or_else(|| Some(c.reason.message.clone()).filter(|m| !m.is_empty())),
    };
    let detail = match (&detail, c.reason.code.as_deref(), c.client_secret_expires) {
        (_, Some("client_secret_expiring" | "client_secret_expired"), Some(d)) => {
            Some(format!("client secret expires {d}"))
        }
        _ => detail,
    };
    PluginItem { mailbox: c.mailbox.clone(), status: c.after, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Status::*;

    fn tr(name: &str, from: Status, to: Status, code: Option<&str>, cause: Option<&str>) -> Transition {
        Transition {
            mailbox: name.into(),
            from,
            to,
            change: change(from, to).expect("a change"),
            reason: Reason {
                code: code.map(Into::into),
                message: "m".into(),
                hint: Some("h".into()),
                cause: cause.map(Into::into),
            },
            at: Utc::now(),
        }
    }

    fn check(name: &str, before: Status, after: Status) -> MailboxCheck {
        MailboxCheck {
            mailbox: name.into(),
            before,
            after,
            records: vec![],
            at: Utc::now(),
            duration: Duration::from_millis(5),
            client_secret_expires: None,
            signin_expires_at: None,
            reason: Reason::default(),
        }
    }

    #[test]
    fn a_pass_is_send_so_a_desktop_task_can_run_it() {
        fn assert_send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(dir.path(), Arc::new(crate::secret::MemoryStore::default())).unwrap();
        let mon = Monitor::new(&app, dir.path(), MonitorConfig::default()).unwrap();
        let fut = mon.pass(true);
        assert_send(&fut);
    }

    #[test]
    fn changes_that_make_news() {
        assert_eq!(change(Verified, Failed), Some(Change::Failed));
        assert_eq!(change(NotAuthenticated, Failed), Some(Change::Failed));
        assert_eq!(change(NeedsAttention, Failed), Some(Change::Failed));
        assert_eq!(change(Failed, Verified), Some(Change::Recovered));
        assert_eq!(change(NeedsAttention, Verified), Some(Change::Recovered));
        assert_eq!(change(Verified, NeedsAttention), Some(Change::Attention));
        assert_eq!(change(Failed, NeedsAttention), Some(Change::Attention));
        assert_eq!(change(NotAuthenticated, Verified), None, "a first green is not news");
        assert_eq!(change(NotAuthenticated, NeedsAttention), None);
        for s in [Verified, NeedsAttention, Failed, NotAuthenticated] {
            assert_eq!(change(s, s), None);
        }
    }

    #[test]
    fn transitions_compare_with_the_last_alerted_badge_else_the_badge_before() {
        let checks = vec![check("a", Verified, Failed), check("b", Failed, Failed), check("c", Verified, Verified)];
        // Never seen: compared with the history's badge before the checks.
        let t = transitions(&HashMap::new(), &checks);
        assert_eq!(t.iter().map(|t| (t.mailbox.as_str(), t.change)).collect::<Vec<_>>(), [("a", Change::Failed)]);
        // b turned red in a run the monitor saw as green (e.g. a manual verify in between).
        let prev = HashMap::from([("a".to_string(), Failed), ("b".to_string(), Verified)]);
        let t = transitions(&prev, &checks);
        assert_eq!(t.iter().map(|t| (t.mailbox.as_str(), t.from)).collect::<Vec<_>>(), [("b", Verified)]);
    }

    #[test]
    fn many_changes_make_one_summary_naming_the_shared_cause() {
        let few = vec![tr("a", Verified, Failed, Some("x"), None), tr("b", Verified, Failed, Some("x"), None)];
        assert!(group(few, 3).iter().all(|a| matches!(a, Alert::One(_))));
        let cause = "the token endpoint http://idp/token";
        let many: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| tr(n, Verified, Failed, Some("token_endpoint_unreachable"), Some(cause)))
            .collect();
        let alerts = group(many, 3);
        assert_eq!(alerts.len(), 1);
        let Alert::Summary(s) = &alerts[0] else { panic!("summary expected") };
        assert_eq!(s.cause.as_deref(), Some(cause));
        assert_eq!(s.code.as_deref(), Some("token_endpoint_unreachable"));
        let text = alerts[0].text();
        assert!(text.starts_with("4 mailboxes changed together: a, b, c, d (Verified → Failed)"), "{text}");
        assert!(text.contains(cause), "{text}");
        // Mixed causes: no shared cause is claimed.
        let mixed = vec![
            tr("a", Verified, Failed, Some("x"), Some("one")),
            tr("b", Verified, Failed, Some("x"), Some("two")),
            tr("c", Failed, Verified, None, None),
        ];
        let Alert::Summary(s) = &group(mixed, 3)[0] else { panic!("summary expected") };
        assert_eq!((s.cause.as_deref(), s.code.as_deref(), s.to), (None, None, None));
        assert!(s.text().contains("now 1 Verified, 2 Failed"), "{}", s.text());
    }

    #[test]
    fn webhook_body_has_the_promised_fields() {
        let one = Alert::One(tr("support", Verified, Failed, Some("auth_rejected"), Some("the mail server h:993")));
        let b = one.body();
        for k in ["mailbox", "from", "to", "code", "message", "hint", "at", "text"] {
            assert!(!b[k].is_null(), "{k} missing in {b}");
        }
        assert_eq!(
            (b["mailbox"].as_str(), b["from"].as_str(), b["to"].as_str()),
            (Some("support"), Some("verified"), Some("failed"))
        );
        assert_eq!(b["kind"], "transition");
        assert!(b["text"].as_str().unwrap().contains("support: Verified → Failed"), "{b}");
        DateTime::parse_from_rfc3339(b["at"].as_str().unwrap()).unwrap();
        let many = group(["x", "y", "z"].iter().map(|n| tr(n, Failed, Verified, None, None)).collect(), 3);
        let b = many[0].body();
        assert_eq!(b["kind"], "summary");
        assert_eq!(b["mailboxes"], json!(["x", "y", "z"]));
        assert_eq!((b["from"].as_str(), b["to"].as_str()), (Some("failed"), Some("verified")));
        assert!(b["text"].as_str().unwrap().contains("x, y, z"), "{b}");
        assert_eq!(b["transitions"].as_array().unwrap().len(), 3);
        assert_eq!(test_body(Utc::now())["kind"], "test");
    }

    #[test]
    fn alert_emails_name_the_change_in_the_subject_and_the_details_in_the_body() {
        let one = Alert::One(tr("support", Verified, Failed, Some("auth_rejected"), Some("the mail server h:993")));
        assert_eq!(one.subject(), "Mailbox Auth: support is Failed (was Verified)");
        let body = one.email_body();
        assert!(body.starts_with("support: Verified → Failed — m (auth_rejected) What to do: h\n\n"), "{body}");
        for line in ["code: auth_rejected\n", "cause: the mail server h:993\n", "hint: h\n", "to: failed\n"] {
            assert!(body.contains(line), "{line:?} in {body}");
        }
        let many = group(["x", "y", "z"].iter().map(|n| tr(n, Verified, Failed, Some("c"), None)).collect(), 3);
        assert_eq!(many[0].subject(), "Mailbox Auth: 3 mailboxes changed together");
        assert!(many[0].email_body().contains("mailbox: x, y, z\n"), "{}", many[0].email_body());
    }

    #[test]
    fn per_account_cap_is_counted_per_login_and_host() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            use futures::FutureExt;
            let limits = Limits::new(3, 2);
            let acct = account_key("Delegate@Contoso.com", "Outlook.Office365.com.");
            assert_eq!(acct, account_key("delegate@contoso.com", "outlook.office365.com"));
            let a = limits.connection(&acct).await;
            let _b = limits.connection(&acct).await;
            assert!(limits.connection(&acct).now_or_never().is_none(), "a third connection of one account waits");
            let other = limits.connection(&account_key("delegate@contoso.com", "smtp.office365.com")).await;
            assert!(
                limits.connection(&account_key("x", "y")).now_or_never().is_none(),
                "the overall cap of 3 is reached"
            );
            drop(other);
            drop(a);
            assert!(limits.connection(&acct).now_or_never().is_some(), "a freed slot is taken again");
        });
    }

    #[test]
    fn a_mailbox_waiting_for_its_permit_holds_a_small_future_not_a_whole_check() {
        // A pass holds one `check_one` future per mailbox at once; only the ones holding a
        // permit may carry a check's state, or 1,000 mailboxes cost 1,000 checks of memory.
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(dir.path(), Arc::new(crate::secret::MemoryStore::default())).unwrap();
        let limits = Limits::new(1, 1);
        let m = crate::mailbox::sample();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let permit = rt.block_on(limits.connection("other"));
        let waiting = std::mem::size_of_val(&check_one(&app, &limits, &m));
        let whole = std::mem::size_of_val(&check_with_permit(&app, permit, &m, Instant::now()));
        assert!(waiting <= 1024, "a waiting check holds {waiting} bytes");
        assert!(whole >= 8 * waiting, "a running check ({whole} bytes) is what the box keeps out of the wait");
    }

    #[test]
    fn plugin_lines_follow_the_nagios_convention() {
        let item = |n: &str, s, d: Option<&str>| PluginItem { mailbox: n.into(), status: s, detail: d.map(Into::into) };
        let (code, line) = plugin_line(&[item("a", Verified, None), item("b", Verified, None)]);
        assert_eq!(code, 0);
        assert_eq!(
            line,
            "MAILBOX-AUTH OK - 2 mailboxes verified | verified=2;;;0;2 needs_attention=0;;;0;2 failed=0;;;0;2"
        );
        let (code, line) = plugin_line(&[
            item("a", Verified, None),
            item("b", NeedsAttention, Some("client secret expires 2026-12-01")),
        ]);
        assert_eq!(code, 1);
        assert!(
            line.starts_with(
                "MAILBOX-AUTH WARNING - 1 of 2 mailboxes need attention: b (client secret expires 2026-12-01) | "
            ),
            "{line}"
        );
        let (code, line) = plugin_line(&[
            item("a|b", Failed, Some("auth_rejected\nx")),
            item("c", NeedsAttention, None),
            item("d", Verified, None),
        ]);
        assert_eq!(code, 2);
        assert!(
            line.starts_with(
                "MAILBOX-AUTH CRITICAL - 1 of 3 mailboxes failed: a/b (auth_rejected x); 1 need attention: c | "
            ),
            "{line}"
        );
        assert_eq!(line.matches('|').count(), 1, "{line}");
        assert!(line.ends_with("verified=1;;;0;3 needs_attention=1;;;0;3 failed=1;;;0;3"), "{line}");
        assert_eq!(plugin_unknown("no mailbox named `z|y`\n"), "MAILBOX-AUTH UNKNOWN - no mailbox named `z/y` ");
    }

    #[test]
    fn metrics_encode_up_and_escape_label_values() {
        let m = Metrics::new();
        m.set("green", Verified, Some(Utc::now()), "2030-01-01".parse().ok());
        m.set("red \"quoted\"\n", Failed, None, None);
        let text = m.encode(false);
        assert!(m.encode(true).ends_with("# EOF\n"));
        assert!(text.contains("mailbox_auth_up{mailbox=\"green\"} 1"), "{text}");
        assert!(text.contains("mailbox_auth_up{mailbox=\"red \\\"quoted\\\"\\n\"} 0"), "{text}");
        assert!(
            text.contains("mailbox_auth_client_secret_expiry_timestamp_seconds{mailbox=\"green\"} 1893542400"),
            "{text}"
        );
        assert!(text.contains("mailbox_auth_throttled_total{mailbox=\"green\"} 0"), "{text}");
        let mut c = check("green", Verified, Verified);
        let throttled = HealthRecord {
            mailbox: "green".into(),
            at: Utc::now(),
            check: Check::Imap,
            ok: false,
            code: Some("throttled".into()),
            message: "throttled".into(),
            hint: None,
            fix: None,
            server_words: Some("NO [LIMIT] Maximum number of connections from user+IP exceeded".into()),
            messages: None,
        };
        c.records = vec![throttled.clone(), HealthRecord { code: Some("auth_rejected".into()), ..throttled }];
        c.signin_expires_at = "2026-12-09T12:00:00Z".parse().ok();
        m.observe(&c);
        m.observe(&c);
        let text = m.encode(false);
        assert!(
            text.contains("mailbox_auth_throttled_total{mailbox=\"green\"} 2"),
            "only throttled checks count: {text}"
        );
        assert!(text.contains("mailbox_auth_up{mailbox=\"green\"} 1"), "{text}");
        assert!(text.contains("mailbox_auth_signin_expiry_timestamp_seconds{mailbox=\"green\"} 1796817600"), "{text}");
        m.retain(&HashSet::from(["green"]), &BTreeSet::from(["green".to_string(), "red \"quoted\"\n".to_string()]));
        assert!(!m.encode(false).contains("quoted"));
    }

    #[test]
    fn the_shipped_alerting_rules_use_only_metrics_the_monitor_serves() {
        let rules = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/prometheus/mailbox-auth.rules.yml"),
        )
        .unwrap();
        let m = Metrics::new();
        m.set("x", Verified, Some(Utc::now()), "2030-01-01".parse().ok());
        m.set_signin("x", Some(Utc::now()));
        let served = m.encode(false);
        let used: BTreeSet<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("mailbox_auth_"))
            .collect();
        assert!(used.len() >= 5, "{used:?}");
        for name in used {
            assert!(served.lines().any(|l| l.starts_with(&format!("{name}{{"))), "{name} is not served:\n{served}");
        }
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let b = Backoff { attempts: 5, first: Duration::from_secs(1), max: Duration::from_secs(5) };
        assert_eq!((1..=4).map(|n| b.delay(n, None).as_secs()).collect::<Vec<_>>(), [1, 2, 4, 5]);
        assert_eq!(b.delay(1, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(b.delay(1, Some(Duration::from_secs(3600))), Duration::from_secs(5));
    }

    #[test]
    fn webhook_url_errors_never_echo_the_url() {
        let e = parse_webhook_url("ftp://hooks.example/T0SECRET").unwrap_err();
        assert_eq!(e.field, "webhook URL");
        assert!(!e.to_string().contains("T0SECRET"), "{e}");
        let e = parse_webhook_url("not a url T0SECRET").unwrap_err();
        assert!(!e.to_string().contains("T0SECRET"), "{e}");
        assert!(parse_webhook_url(" https://hooks.slack.com/services/T/B/X\n").is_ok());
    }

    fn mailbox(name: &str, minutes: Option<u32>) -> Mailbox {
        Mailbox { name: name.into(), check_interval_minutes: minutes, ..crate::mailbox::sample() }
    }

    #[test]
    fn a_mailbox_interval_overrides_the_monitors_and_sets_the_tick() {
        let default = Duration::from_secs(30 * 60);
        let fast = mailbox("fast", Some(5));
        let slow = mailbox("slow", Some(120));
        let plain = mailbox("plain", None);
        assert_eq!(interval_for(&fast, default), Duration::from_secs(300));
        assert_eq!(interval_for(&slow, default), Duration::from_secs(7200));
        assert_eq!(interval_for(&plain, default), default);
        assert_eq!(tick(&[plain.clone(), slow.clone()], default), default, "a longer interval never slows the tick");
        assert_eq!(tick(&[plain.clone(), fast.clone(), slow.clone()], default), Duration::from_secs(300));

        // Ticks of 5 minutes for 100 minutes: how often each mailbox is checked.
        let t0 = Instant::now();
        let tick = Duration::from_secs(300);
        let mut sched = Schedule::default();
        let mut count = HashMap::<&str, usize>::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for k in 0..20u32 {
            let now = t0 + tick * k;
            for m in [&fast, &slow, &plain] {
                if sched.is_due(&m.name, now, tick) {
                    *count.entry(m.name.as_str()).or_default() += 1;
                    sched.checked(&m.name, now, interval_for(m, default), rng.f64());
                }
            }
        }
        assert_eq!(count["fast"], 20, "every tick");
        assert_eq!(count["slow"], 1, "once: its next check is two hours later");
        assert!((3..=4).contains(&count["plain"]), "about every 30 minutes: {count:?}");
        // With the monitor's interval as the tick, every mailbox is checked every pass, however
        // its jitter fell.
        let mut sched = Schedule::default();
        for k in 0..10u32 {
            let now = t0 + default.mul_f64(0.9) * k;
            assert!(sched.is_due("plain", now, default), "pass {k}");
            sched.checked("plain", now, default, if k % 2 == 0 { 0.999 } else { 0.0 });
        }
    }

    #[test]
    fn the_next_check_is_jittered_around_the_mailbox_interval() {
        let t0 = Instant::now();
        let five = Duration::from_secs(300);
        let mut sched = Schedule::default();
        let mut dues = BTreeSet::new();
        for (i, unit) in [0.0, 0.25, 0.5, 0.75, 0.999].into_iter().enumerate() {
            let name = format!("m{i}");
            sched.checked(&name, t0, five, unit);
            let due = sched.next[&name] - t0;
            assert!(due >= five.mul_f64(0.9) && due <= five.mul_f64(1.1), "{due:?}");
            dues.insert(due);
            // Not due a tick of one minute before its time, due once it has come.
            let minute = Duration::from_secs(60);
            assert!(!sched.is_due(&name, t0 + five.mul_f64(0.9) - minute, minute));
            assert!(sched.is_due(&name, t0 + five.mul_f64(1.1), minute));
        }
        assert_eq!(dues.len(), 5, "different draws spread the checks apart");
        sched.retain(&HashSet::from(["m1"]));
        assert!(sched.is_due("m0", t0, five), "a forgotten mailbox is due at once");
        assert!(!sched.is_due("m1", t0, Duration::from_secs(1)));
    }

    #[test]
    fn shards_are_disjoint_cover_everything_and_are_stable() {
        let names: Vec<String> = (0..1000).map(|i| format!("mailbox-{i}@contoso.com")).collect();
        for n in 1..=5u32 {
            let shards: Vec<Shard> = (1..=n).map(|index| Shard { index, count: n }).collect();
            let mut sizes = vec![0usize; n as usize];
            for name in &names {
                let owners: Vec<&Shard> = shards.iter().filter(|s| s.contains(name)).collect();
                assert_eq!(owners.len(), 1, "{name} in {owners:?} of {n}");
                sizes[owners[0].index as usize - 1] += 1;
            }
            // A hash spreads them: no shard gets less than half its fair share.
            assert!(sizes.iter().all(|&k| k * 2 * n as usize >= names.len()), "{sizes:?}");
        }
        // Fixed values: the same in every process, build and platform (SHA-256, not SipHash
        // with per-process keys). Changing them would move mailboxes between running monitors.
        let got: Vec<u32> = ["support", "sales", "info@contoso.com", "", "ü"].iter().map(|n| shard_of(n, 7)).collect();
        assert_eq!(got, [2, 2, 6, 2, 3], "the first 8 bytes of SHA-256, mod 7, plus 1");
        assert!(Shard::ALL.contains("anything"));
    }

    #[test]
    fn shard_parses_i_of_n_and_names_the_field() {
        assert_eq!("2/3".parse::<Shard>().unwrap(), Shard { index: 2, count: 3 });
        assert_eq!(" 1 / 1 ".parse::<Shard>().unwrap(), Shard::ALL);
        assert_eq!(Shard { index: 2, count: 3 }.to_string(), "2/3");
        for bad in ["0/2", "3/2", "1/0", "2", "a/b", "1/2/3", "-1/2"] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert_eq!(e.field, "shard", "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn every_name_is_in_exactly_one_shard(name in ".{0,60}", count in 1u32..64) {
            let owners = (1..=count).filter(|&index| Shard { index, count }.contains(&name)).count();
            prop_assert_eq!(owners, 1);
        }

        #[test]
        fn jitter_stays_within_its_fraction(secs in 1u64..100_000, unit in 0.0f64..1.0) {
            let i = Duration::from_secs(secs);
            let j = jittered(i, JITTER, unit);
            prop_assert!(j >= i.mul_f64(1.0 - JITTER) && j <= i.mul_f64(1.0 + JITTER), "{j:?} for {i:?}");
        }

        #[test]
        fn spread_offsets_stay_in_the_window_and_are_stable(name in ".{0,40}", ms in 0u64..10_000_000) {
            let w = Duration::from_millis(ms);
            let o = spread_offset(&name, w);
            prop_assert!(o < w || w.is_zero());
            prop_assert_eq!(o, spread_offset(&name, w));
        }
    }
}
