//! The operations the CLI and the desktop shell share, over one store, one secret store, one
//! token cache and one HTTP client.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use oauth2::AccessToken;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use url::Url;

use crate::diagnose::{diagnose, Fix};
use crate::health::{self, Check, HealthRecord, Status};
use crate::import::{self, ImportError, RowError};
use crate::mailbox::{FieldError, Flow, Mailbox, Protocol, ProviderKind, Security, Smtp};
use crate::monitor;
use crate::oauth::auth_code::{self, AuthStep};
use crate::oauth::refresh::TokenCache;
use crate::oauth::{self, OAuthError};
use crate::oauth::{client_credentials, device, discovery};
use crate::probe::{self, ProbeTarget};
use crate::secret::{self, SecretError, SecretKind, SecretStore};
use crate::store::{Store, StoreError};

/// Default time for each network step of a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often [`App::verify_many`] retries a throttled mailbox, and the longest back-off it waits
/// for (a server asking for longer, e.g. Exchange's five minutes, is shown throttled at once
/// rather than waited for or asked again early).
pub const THROTTLE_RETRIES: u32 = 2;
pub const THROTTLE_BACKOFF_CAP: Duration = Duration::from_secs(60);
/// The wait when a throttled server names no back-off.
pub const THROTTLE_BACKOFF_DEFAULT: Duration = Duration::from_secs(2);

/// The wait before retrying a throttled check; `None` when the server asked for longer than
/// [`THROTTLE_BACKOFF_CAP`].
pub fn throttle_wait(rec: &HealthRecord) -> Option<Duration> {
    Some(rec.backoff().unwrap_or(THROTTLE_BACKOFF_DEFAULT)).filter(|w| *w <= THROTTLE_BACKOFF_CAP)
}

/// How long to wait before checking a mailbox again whose incoming or SMTP check was
/// throttled: the longest back-off asked for; `None` when nothing was throttled or a back-off
/// is too long to wait for.
fn verification_wait(v: &Verification) -> Option<Duration> {
    let throttled: Vec<&HealthRecord> =
        std::iter::once(&v.incoming).chain(v.smtp.as_ref()).filter(|r| r.throttled()).collect();
    if throttled.is_empty() {
        return None;
    }
    throttled.into_iter().map(throttle_wait).collect::<Option<Vec<_>>>()?.into_iter().max()
}

/// Default number of mailboxes verified at once (CLI `verify` and the window alike), chosen
/// from `scripts/bench` (README "Performance"): behind a 40 ms round trip 16 at once verify
/// about three times as many mailboxes per second as 4, and more gain little on a 2-core client
/// (the keyring daemon and the CPU, not the network, are then the limit); the per-account cap
/// keeps what one account opens at a server below its limit whatever this is.
pub const VERIFY_CONCURRENCY: usize = 16;
/// Default cap on the connections one account opens to one server at once during bulk work
/// (the monitor's default too): below Gmail's 15 and Dovecot's default 10 per user and IP.
pub const VERIFY_PER_ACCOUNT: usize = monitor::DEFAULT_PER_ACCOUNT;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// A token could not be had (refresh refused, identity provider unreachable, not signed
    /// in); its code is the OAuth one (`invalid_grant`, `not_authenticated` …).
    #[error(transparent)]
    OAuth(#[from] OAuthError),
}

impl AppError {
    /// Stable code for the UI and the CLI; an OAuth error's code passes through as it is.
    pub fn code(&self) -> std::borrow::Cow<'static, str> {
        match self {
            AppError::Store(e) => e.code().into(),
            AppError::Secret(e) => e.code().into(),
            AppError::Lock(e) => e.code().into(),
            AppError::Import(_) => "import".into(),
            AppError::Invalid(_) => "invalid".into(),
            AppError::OAuth(e) => e.code().into(),
        }
    }

    /// `{code, message, hint}` for the UI and the CLI's JSON. An OAuth error's hint reads the
    /// identity provider's own words too (as a health record's does).
    pub fn failure(&self) -> Failure {
        let hint = match self {
            AppError::Invalid(_) | AppError::Import(_) => "Correct the named field and try again.".to_string(),
            AppError::OAuth(e) => diagnose(&e.code(), e.server_words().as_deref()).fix.to_string(),
            _ => diagnose(&self.code(), None).fix.to_string(),
        };
        Failure { code: self.code().into_owned(), message: self.to_string(), hint }
    }
}

/// What crosses to the UI or the CLI's JSON for an error.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub hint: String,
}

/// A mailbox with its badge and newest record.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct MailboxView {
    #[serde(flatten)]
    pub mailbox: Mailbox,
    pub status: Status,
    pub status_label: &'static str,
    pub authenticated: bool,
    /// The record that decides the badge (see [`health::deciding`]).
    pub last_check: Option<HealthRecord>,
    /// The newest check of the incoming server (IMAP or POP3) since the last sign-in.
    pub incoming_check: Option<HealthRecord>,
    /// The newest check of the outbound SMTP server since the last sign-in; `None` when the
    /// mailbox has no SMTP server.
    pub smtp_check: Option<HealthRecord>,
    /// A check's newest attempt was throttled and waits for its back-off; the badge is the
    /// previous verdict (or amber "Throttled" when there is none).
    pub throttled: bool,
    /// When the sign-in expires, where known (see [`health::signin_expiry`]); `None` when
    /// unknown (never signed in, app-only, or a provider whose lifetime is not known).
    pub signin_expires_at: Option<chrono::DateTime<Utc>>,
}

/// What one verification proved: the incoming server (IMAP or POP3), and the outbound SMTP
/// server when the mailbox has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Verification {
    /// The incoming server's record (or the failed refresh's, or the unreadable settings').
    pub incoming: HealthRecord,
    /// `None` when the mailbox has no SMTP server, or no token could be had (the incoming
    /// record says why).
    pub smtp: Option<HealthRecord>,
}

impl Verification {
    /// The record that decides the badge, as [`health::deciding`] does for a history: the
    /// SMTP failure when only SMTP failed, else the incoming record.
    pub fn deciding(&self) -> &HealthRecord {
        match &self.smtp {
            Some(s) if self.incoming.ok && !s.ok => s,
            _ => &self.incoming,
        }
    }

    /// Both records, incoming first.
    pub fn into_records(self) -> Vec<HealthRecord> {
        std::iter::once(self.incoming).chain(self.smtp).collect()
    }
}

/// The result of an import: what was saved and what was refused.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ImportReport {
    pub imported: Vec<String>,
    pub errors: Vec<RowError>,
    /// Each row and what was done with it (as [`App::import_preview`] said).
    pub rows: Vec<ImportRow>,
    /// Mailboxes whose stored sign-in was deleted because where it goes changed.
    pub signed_out: Vec<String>,
}

/// What an import does with one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "lowercase")]
pub enum ImportAction {
    /// A mailbox of that name does not exist yet.
    New,
    /// It exists and some fields change.
    Update,
    /// It exists with exactly these settings.
    Unchanged,
    /// The row has errors and is not imported.
    Refused,
}

/// One row of an import preview or report: its line, its cells as the file has them, and the
/// mailbox it becomes (`action` new, update or unchanged) or its errors (`refused`).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ImportRow {
    pub line: u64,
    /// The `name` cell (the mailbox's name when it is imported).
    pub name: String,
    /// The row's cells by column, as typed (trimmed): what the preview table shows, also for
    /// a refused row.
    pub cells: std::collections::BTreeMap<String, String>,
    pub action: ImportAction,
    /// The columns whose value differs from the stored mailbox (update only).
    pub changed_fields: Vec<&'static str>,
    /// Those of them that decide where a secret or token goes
    /// ([`crate::mailbox::SECRET_ROUTING_FIELDS`]).
    pub routing_changes: Vec<&'static str>,
    /// The stored sign-in (refresh token, client secret) is deleted: the mailbox must sign in
    /// again.
    pub signs_out: bool,
    /// Each naming the row's line and a field (a column, or `row` for the row as a whole).
    pub errors: Vec<RowError>,
    /// The mailbox the row becomes (none when refused).
    pub mailbox: Option<Mailbox>,
}

/// The counts the preview's summary line and its Import button show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ImportSummary {
    /// Rows that are imported (new, update or unchanged).
    pub ready: usize,
    /// Rows with errors, not imported.
    pub refused: usize,
    /// Rows that change an existing mailbox.
    pub updates: usize,
    /// Of those, rows whose mailbox is signed out because where its secrets go changes.
    pub sign_outs: usize,
}

/// What saving a mailbox did.
#[derive(Debug, Clone, Serialize)]
pub struct SaveOutcome {
    /// The fields that decide where secrets go and changed; when any did, the stored sign-in
    /// was deleted.
    pub routing_changes: Vec<&'static str>,
    pub signed_out: bool,
}

/// The whole preview of an import: every row, in file order.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ImportPreview {
    pub rows: Vec<ImportRow>,
    /// Every row's errors, in file order (each belongs to one of `rows`).
    pub errors: Vec<RowError>,
    pub summary: ImportSummary,
}

#[derive(Debug)]
pub struct App {
    store: Store,
    secrets: Arc<dyn SecretStore>,
    tokens: TokenCache,
    http: reqwest::Client,
    /// Issuers' OpenID configurations, read once per issuer and process.
    discovered: std::sync::Mutex<std::collections::HashMap<String, discovery::Discovered>>,
    pub probe_timeout: Duration,
}

impl App {
    pub fn open(home: &Path, secrets: Arc<dyn SecretStore>) -> Result<Self, AppError> {
        Ok(Self {
            store: Store::open(home)?,
            secrets,
            // Refreshes of one mailbox are serialised across processes by lock files here.
            tokens: TokenCache::new(home.join("locks")),
            http: oauth::http_client(),
            discovered: Default::default(),
            probe_timeout: PROBE_TIMEOUT,
        })
    }

    /// The store, for the core's own modules (`impl App` blocks elsewhere, the monitor). Not
    /// public: the front ends go through `App`'s methods, so every rule (validation, signing out
    /// on a routing change, create-not-overwrite) applies whoever calls.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// The secret store, for secrets that belong to no mailbox (the monitor's alert webhook).
    pub fn secret_store(&self) -> &Arc<dyn SecretStore> {
        &self.secrets
    }

    pub async fn view(&self, m: Mailbox) -> Result<MailboxView, AppError> {
        let recent = self.store.history(&m.name, 20)?;
        let last_check = health::deciding(&recent).cloned();
        // A sign-in lost from the keyring, as the doctor or the latest check found it.
        let lost = last_check.as_ref().is_some_and(|r| r.code.as_deref() == Some(crate::doctor::SIGNIN_MISSING));
        // The sign-in's dates: user sign-ins only (app-only access has no sign-in to expire).
        let dates = if m.flow == Flow::ClientCredentials { None } else { self.store.signin(&m.name)? };
        let authenticated = match m.flow {
            // App-only: a certificate credential serves as well as a client secret.
            Flow::ClientCredentials => {
                secret::get(&self.secrets, &m.name, SecretKind::ClientCertificate).await?.is_some()
                    || secret::get(&self.secrets, &m.name, SecretKind::ClientSecret).await?.is_some()
            }
            // Signed in, as the data store records it: the sign-in date is written when a
            // sign-in stored its refresh token and deleted with it (`forget`, `remove`), so the
            // board reads no keyring entry per mailbox. Why: the Secret Service looks entries up
            // one call at a time, each costing more the more items the keyring holds (4 s for
            // 1,000 mailboxes). An entry deleted behind the app's back is noticed by the keyring
            // doctor (which the window runs when the board is shown) and by the next check, and
            // both record it, so the badge says so.
            _ if dates.is_some() => !lost,
            // No sign-in date, and the dates are complete (signed out here, or looked up once
            // below): not signed in, so no keyring read either.
            _ if self.store.signin_known(&m.name)? => false,
            // Just created or imported, or signed in before the dates were kept: the keyring
            // says. Once it says "no", the store remembers, so such a mailbox is looked up once.
            // Safe with another program meanwhile: a sign-in stores its token, then its dates,
            // so the dates decide from then on whatever is recorded here; and the lookup and the
            // record are made under the mailbox's lock, like every read of a stored secret, so a
            // hand-over import storing a token without dates (under the same lock) cannot fall
            // between them.
            _ => {
                let _lock = self.tokens.locks().acquire(&m.name).await?;
                let found = secret::get(&self.secrets, &m.name, SecretKind::RefreshToken).await?.is_some();
                if !found {
                    self.store.set_signin_known(&m.name, true)?;
                }
                found
            }
        };
        let signin =
            if authenticated { health::signin_expiry(dates.as_ref(), m.provider, m.signin_max_age_days) } else { None };
        let status = health::status_with_signin(
            last_check.as_ref(),
            authenticated,
            m.client_secret_expires,
            signin.as_ref(),
            Utc::now(),
        );
        let throttled = health::throttled(&recent);
        let status_label = match &last_check {
            Some(r) if r.throttled() && status == Status::NeedsAttention => health::THROTTLED_LABEL,
            _ => status.label(),
        };
        // Signed in once, entry gone (keyring reset, another machine): red, and said so.
        let (status, status_label) =
            if lost { (Status::Failed, crate::doctor::SIGNIN_MISSING_LABEL) } else { (status, status_label) };
        let incoming_check = newest_since_sign_in(&recent, &[Check::Imap, Check::Pop3]);
        let smtp_check = m.smtp.as_ref().and_then(|_| newest_since_sign_in(&recent, &[Check::Smtp]));
        let [last_check, incoming_check, smtp_check] =
            [last_check, incoming_check, smtp_check].map(|r| r.map(|r| with_fix(&m, r)));
        Ok(MailboxView {
            mailbox: m,
            status,
            status_label,
            authenticated,
            last_check,
            incoming_check,
            smtp_check,
            throttled,
            signin_expires_at: signin.map(|s| s.at),
        })
    }

    /// When the mailbox's sign-in expires, from the dates in the data store alone (no keyring:
    /// `forget` deletes the dates with the token). `None` for app-only access, which has no
    /// sign-in to expire.
    pub fn signin_expiry(&self, m: &Mailbox) -> Result<Option<health::SignInExpiry>, AppError> {
        if m.flow == Flow::ClientCredentials {
            return Ok(None);
        }
        Ok(health::signin_expiry(self.store.signin(&m.name)?.as_ref(), m.provider, m.signin_max_age_days))
    }

    /// Every mailbox with its badge. A row whose stored settings cannot be read does not hide
    /// the others: it is listed by name, red, with what went wrong and what to do.
    pub async fn list(&self) -> Result<Vec<MailboxView>, AppError> {
        let (readable, unreadable) = self.store.list_readable()?;
        let mut out = Vec::new();
        for m in readable {
            out.push(self.view(m).await?);
        }
        for (name, error) in unreadable {
            out.push(unreadable_view(name, error));
        }
        out.sort_by(|a, b| a.mailbox.name.cmp(&b.mailbox.name));
        Ok(out)
    }

    /// Every stored mailbox's name, those whose settings cannot be read included.
    pub fn names(&self) -> Result<Vec<String>, AppError> {
        let (readable, unreadable) = self.store.list_readable()?;
        let mut names: Vec<String> =
            readable.into_iter().map(|m| m.name).chain(unreadable.into_iter().map(|(name, _)| name)).collect();
        names.sort();
        Ok(names)
    }

    pub fn get(&self, name: &str) -> Result<Mailbox, AppError> {
        Ok(self.store.get(name)?)
    }

    /// Saves a new mailbox, refusing a name that exists already. Why: the name is the key of the
    /// mailbox's keyring entries and history, so a new mailbox must never take over another's
    /// sign-in (the editor does not rename). Otherwise as [`App::save`].
    pub async fn create(&self, m: &Mailbox) -> Result<SaveOutcome, AppError> {
        if self.store.get(&m.name).is_ok() {
            return Err(AppError::Invalid(vec![FieldError::new(
                "name",
                format!("a mailbox named `{}` exists already", m.name),
            )]));
        }
        self.save(m).await
    }

    /// Validates and saves a mailbox. When it exists and one of the fields that decide where
    /// its secrets go changed ([`crate::mailbox::SECRET_ROUTING_FIELDS`]), its stored refresh
    /// token and client secret are deleted first: it must sign in again.
    pub async fn save(&self, m: &Mailbox) -> Result<SaveOutcome, AppError> {
        m.validate().map_err(AppError::Invalid)?;
        if let Some(ca) = &m.ca_file {
            crate::tls::check_ca_file(ca).map_err(|e| AppError::Invalid(vec![e]))?;
        }
        let routing_changes = match self.store.get(&m.name) {
            Ok(old) => old.secret_routing_changes(m),
            Err(StoreError::NotFound(_)) => vec![],
            // Unreadable stored settings: nothing to compare with, so sign out to be safe.
            Err(StoreError::Corrupt { .. }) => crate::mailbox::SECRET_ROUTING_FIELDS.to_vec(),
            Err(e) => return Err(e.into()),
        };
        let signed_out = !routing_changes.is_empty();
        if signed_out {
            self.sign_out_for_change(&m.name).await?;
        }
        self.store.save(m)?;
        Ok(SaveOutcome { routing_changes, signed_out })
    }

    /// Why: a refresh token or client secret must never follow a changed endpoint, mail server
    /// or account. Deleted before the new settings are stored, so a keyring failure leaves the
    /// old settings (and their secrets) in place and nothing is sent anywhere new.
    async fn sign_out_for_change(&self, name: &str) -> Result<(), AppError> {
        self.forget(name).await
    }

    /// What importing `text` would do, row by row, without saving anything: new, update (which
    /// fields change, and whether the mailbox is signed out) or unchanged, and each refused
    /// row's errors.
    pub fn import_preview(&self, text: &str, base: Option<&Path>) -> Result<ImportPreview, AppError> {
        let parsed = import::parse(text, base)?;
        let mut rows = Vec::with_capacity(parsed.rows.len());
        for row in parsed.rows {
            let name = row.name().to_string();
            let (action, changed_fields, routing_changes, mailbox, errors) = match row.outcome {
                Ok(m) => {
                    let (action, changed, routing) = match self.store.get(&m.name) {
                        Ok(old) => {
                            let changed = old.changed_fields(&m);
                            let action =
                                if changed.is_empty() { ImportAction::Unchanged } else { ImportAction::Update };
                            (action, changed, old.secret_routing_changes(&m))
                        }
                        Err(StoreError::NotFound(_)) => (ImportAction::New, vec![], vec![]),
                        Err(StoreError::Corrupt { .. }) => {
                            (ImportAction::Update, vec![], crate::mailbox::SECRET_ROUTING_FIELDS.to_vec())
                        }
                        Err(e) => return Err(e.into()),
                    };
                    (action, changed, routing, Some(m), vec![])
                }
                Err(errors) => (ImportAction::Refused, vec![], vec![], None, errors),
            };
            rows.push(ImportRow {
                line: row.line,
                name,
                cells: row.cells,
                action,
                signs_out: !routing_changes.is_empty(),
                changed_fields,
                routing_changes,
                errors,
                mailbox,
            });
        }
        let count = |f: &dyn Fn(&ImportRow) -> bool| rows.iter().filter(|r| f(r)).count();
        let summary = ImportSummary {
            ready: count(&|r| r.mailbox.is_some()),
            refused: count(&|r| r.mailbox.is_none()),
            updates: count(&|r| r.action == ImportAction::Update),
            sign_outs: count(&|r| r.signs_out),
        };
        let errors = rows.iter().flat_map(|r| r.errors.iter().cloned()).collect();
        Ok(ImportPreview { rows, errors, summary })
    }

    /// Imports a CSV: bad rows are reported, good rows saved together. A row that changes where
    /// an existing mailbox's secrets go signs that mailbox out first (see [`App::save`]).
    pub async fn import_csv(&self, text: &str, base: Option<&Path>) -> Result<ImportReport, AppError> {
        let preview = self.import_preview(text, base)?;
        let mut signed_out = Vec::new();
        for r in preview.rows.iter().filter(|r| r.signs_out) {
            self.sign_out_for_change(&r.name).await?;
            signed_out.push(r.name.clone());
        }
        let mailboxes: Vec<Mailbox> = preview.rows.iter().filter_map(|r| r.mailbox.clone()).collect();
        self.store.save_all(&mailboxes)?;
        Ok(ImportReport {
            imported: mailboxes.into_iter().map(|m| m.name).collect(),
            errors: preview.errors,
            rows: preview.rows,
            signed_out,
        })
    }

    /// Every mailbox as CSV in the import's columns (no secrets; formula cells neutralised,
    /// see [`crate::export`]).
    pub fn export_csv(&self) -> Result<String, AppError> {
        let mailboxes = self.store.list()?;
        crate::export::to_csv(&mailboxes)
            .map_err(|e| AppError::Invalid(vec![FieldError::new("export", format!("cannot write the CSV: {e}"))]))
    }

    /// Stores a client secret for a mailbox (keyring only) and, when given, its expiry date
    /// (in the store: a date is not a secret).
    pub async fn set_client_secret(
        &self,
        name: &str,
        value: SecretString,
        expires: Option<chrono::NaiveDate>,
    ) -> Result<(), AppError> {
        let mut m = self.store.get(name)?;
        secret::set(&self.secrets, name, SecretKind::ClientSecret, value).await?;
        if expires.is_some() {
            m.client_secret_expires = expires;
            self.store.save(&m)?;
        }
        self.tokens.clear(name).await;
        Ok(())
    }

    /// The Exchange Online PowerShell that grants the app of the named mailboxes app-only access
    /// to them (service principal, FullAccess, IMAP/POP enabled), ready to copy. All mailboxes
    /// must use one app (client id); the object id is the Enterprise application's, a GUID.
    pub fn exchange_script(&self, names: &[String], object_id: &str, display_name: &str) -> Result<String, AppError> {
        let mut errors = Vec::new();
        if names.is_empty() {
            errors.push(FieldError::new("mailboxes", "choose at least one mailbox"));
        }
        let object_id = uuid::Uuid::try_parse(object_id.trim()).map(|u| u.hyphenated().to_string());
        if object_id.is_err() {
            errors.push(FieldError::new(
                "object_id",
                "the Enterprise application's Object ID is a GUID like 8c1b7a3e-2f4d-4b9a-9e61-0d5f3c2a7b10 \
                 (Entra admin center → Enterprise applications → your app → Overview)",
            ));
        }
        let display_name = display_name.trim();
        if display_name.is_empty() {
            errors.push(FieldError::new("display_name", "give the service principal a name"));
        }
        let mailboxes = names.iter().map(|n| self.store.get(n)).collect::<Result<Vec<_>, _>>()?;
        let app_ids: std::collections::BTreeSet<&str> = mailboxes.iter().map(|m| m.client_id.as_str()).collect();
        if app_ids.len() > 1 {
            errors.push(FieldError::new(
                "client_id",
                format!(
                    "the mailboxes use different client ids ({}); make one script per app",
                    app_ids.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if !errors.is_empty() {
            return Err(AppError::Invalid(errors));
        }
        client_credentials::exchange_script(&client_credentials::ExchangeScriptInput {
            app_id: &mailboxes[0].client_id,
            service_principal_object_id: object_id.as_deref().unwrap_or_default(),
            display_name,
            mailboxes: mailboxes
                .iter()
                .map(|m| (m.email.as_str(), m.protocol == Protocol::Imap, m.protocol == Protocol::Pop3))
                .collect(),
        })
        .map_err(AppError::Invalid)
    }

    /// Signs in with the mailbox's flow (browser, device code, or app-only client credentials),
    /// stores the refresh token, then verifies the mailbox (incoming and outbound, as
    /// [`App::verify`]). Returns the record that decides the badge: the verification's (see
    /// [`Verification::deciding`]), or the sign-in failure's. `flow` overrides and updates the
    /// mailbox's flow.
    pub async fn authenticate(
        &self,
        name: &str,
        flow: Option<Flow>,
        timeout: Duration,
        open: &(dyn Fn(&Url) -> Result<(), String> + Send + Sync),
        progress: &(dyn Fn(AuthStep) + Send + Sync),
    ) -> Result<HealthRecord, AppError> {
        let mut m = self.store.get(name)?;
        if let Some(f) = flow.filter(|f| *f != m.flow) {
            m.flow = f;
            self.save(&m).await?;
        }
        let mut app_credential = "client secret";
        let outcome = async {
            let m = self.with_endpoints(m.clone()).await?;
            let tokens = match m.flow {
                Flow::AuthCode => {
                    let secret = oauth::client_secret(&self.secrets, name).await?;
                    auth_code::sign_in(&m, secret, &self.http, timeout, open, progress).await?
                }
                Flow::Device => {
                    let secret = oauth::client_secret(&self.secrets, name).await?;
                    device::sign_in(&m, secret, &self.http, timeout, progress).await?
                }
                Flow::ClientCredentials => {
                    // Read under the mailbox's lock, released before the token request (which
                    // `signed_in` below takes again).
                    let lock = self.tokens.locks().acquire(name).await?;
                    let credential = client_credentials::load(&self.secrets, name).await?;
                    drop(lock);
                    let credential = credential.ok_or_else(|| OAuthError::NoClientSecret(name.to_string()))?;
                    if matches!(credential, client_credentials::AppCredential::Certificate(_)) {
                        app_credential = "certificate";
                    }
                    client_credentials::token(&m, credential, &self.http).await?
                }
            };
            if m.flow != Flow::ClientCredentials && tokens.refresh_token.is_none() {
                return Err(OAuthError::NoRefreshToken);
            }
            // Stored under the mailbox's locks before anything uses the access token, so no
            // refresh in another program overwrites it (see oauth::refresh).
            self.tokens.signed_in(name, &tokens, &self.secrets).await?;
            if tokens.refresh_token.is_some() {
                // The sign-in's countdown starts now (the date only; the token is in the keyring).
                if let Err(e) = self.store.note_signin(name, Utc::now(), tokens.refresh_expires_in) {
                    tracing::warn!(mailbox = name, "cannot record the sign-in date: {e}");
                    // Without its date the board must ask the keyring again.
                    let _ = self.store.set_signin_known(name, false);
                }
            }
            Ok::<_, OAuthError>(tokens.id_token.as_ref().and_then(|t| signed_in_account(t.expose_secret())))
        }
        .await;
        match outcome {
            Ok(account) => {
                let mut message = match m.flow {
                    Flow::ClientCredentials => format!("App-only token obtained with the {app_credential}"),
                    _ => "Signed in; refresh token stored in the OS keyring".to_string(),
                };
                let other = account.filter(|a| !a.eq_ignore_ascii_case(m.sasl_user()));
                if let Some(a) = &other {
                    message =
                        format!("{message}; signed in as {a}, which is not the mailbox's login {}", m.sasl_user());
                }
                self.record(ok_record(name, Check::Authenticate, message, None))?;
                progress(AuthStep::Verifying);
                let mut rec = self.verify(name).await?.deciding().clone();
                if let (Some(a), false) = (&other, rec.ok) {
                    // The likely cause: the wrong account signed in. Say so first.
                    let d = diagnose("signed_in_as_other", None);
                    rec.message = format!("Signed in as {a}, not {}. {}", m.sasl_user(), rec.message);
                    rec.hint = Some(format!("{} {}", d.fix, rec.hint.unwrap_or_default()));
                }
                Ok(rec)
            }
            Err(e) => self.record(oauth_failure(name, Check::Authenticate, &e)),
        }
    }

    /// A valid access token (cached, or refreshed with the stored refresh token).
    pub async fn access_token(&self, name: &str) -> Result<AccessToken, AppError> {
        let m = self.store.get(name)?;
        Ok(self.fresh_token(&m).await?)
    }

    async fn fresh_token(&self, m: &Mailbox) -> Result<AccessToken, OAuthError> {
        self.fresh_token_noting(m, None).await
    }

    /// [`App::fresh_token`], saying on `going` when the token request goes out (see
    /// [`TokenCache::access_token_noting`]).
    async fn fresh_token_noting(
        &self,
        m: &Mailbox,
        going: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<AccessToken, OAuthError> {
        let m = self.with_endpoints(m.clone()).await?;
        let token = self.tokens.access_token_noting(&m, &self.secrets, &self.http, going).await;
        if let Some(used) = self.tokens.take_refresh(&m.name) {
            // A date that cannot be written only leaves the countdown behind; the token is fine.
            if let Err(e) = self.store.note_refresh(&m.name, used.at, used.rotated, used.idle_lifetime) {
                tracing::warn!(mailbox = %m.name, "cannot record the refresh date: {e}");
            }
        }
        token
    }

    /// The mailbox with the endpoints a generic provider left empty filled in from its issuer's
    /// OpenID configuration; unchanged when nothing is missing or no issuer is set.
    async fn with_endpoints(&self, mut m: Mailbox) -> Result<Mailbox, OAuthError> {
        let Some(issuer) = m.issuer.clone().filter(|_| m.provider == ProviderKind::Generic) else { return Ok(m) };
        if m.auth_url.is_some() && m.token_url.is_some() && (m.device_url.is_some() || m.flow != Flow::Device) {
            return Ok(m);
        }
        let cached = self.discovered.lock().expect("discovery cache").get(&issuer).cloned();
        let d = match cached {
            Some(d) => d,
            None => {
                let d = discovery::discover(&issuer, &self.http).await?;
                self.discovered.lock().expect("discovery cache").insert(issuer.clone(), d.clone());
                d
            }
        };
        if m.flow == Flow::Device && m.device_url.is_none() && d.device_authorization_endpoint.is_none() {
            return Err(OAuthError::Config {
                field: "device_url",
                message: format!(
                    "the issuer {issuer} publishes no device authorization endpoint; enter it, or use another flow"
                ),
            });
        }
        m.auth_url = m.auth_url.or(Some(d.authorization_endpoint));
        m.token_url = m.token_url.or(Some(d.token_endpoint));
        m.device_url = m.device_url.or(d.device_authorization_endpoint);
        Ok(m)
    }

    /// Really logs in to the mailbox's incoming server and, when it has one, signs in to its
    /// outbound SMTP server (`MAIL FROM`, nothing sent); records both outcomes. Every caller
    /// (CLI `verify`, `check`, the monitor, the window, the verification after a sign-in) goes
    /// through here, so none of them forgets the outbound server.
    pub async fn verify(&self, name: &str) -> Result<Verification, AppError> {
        let m = match self.store.get(name) {
            Ok(m) => m,
            // One unreadable mailbox ends red on its own; `verify --all` goes on with the rest.
            Err(StoreError::Corrupt { source, .. }) => {
                let incoming = unreadable_view(name.to_string(), source.to_string()).last_check.expect("a record");
                return Ok(Verification { incoming, smtp: None });
            }
            Err(e) => return Err(e.into()),
        };
        let target = self.probe_target(&m, m.protocol.into(), &m.host, m.port, m.security);
        // The refresh and the connection side by side: once the refresh has found a stored
        // sign-in and sends its token request, the probe connects, sets up TLS and reads the
        // greeting meanwhile, and waits for the token only to sign in (see
        // `probe::TokenLater`). A mailbox with no stored sign-in gets no connection at all. The
        // refresh always runs to its end, whatever the probe does: it is never cut off between
        // the identity provider's answer and the keyring's storing of a rotated refresh token.
        let (going_tx, going_rx) = tokio::sync::oneshot::channel();
        let (token_tx, token_rx) = tokio::sync::oneshot::channel();
        let later = probe::TokenLater::later(&target, token_rx);
        let refresh = self.fresh_token_noting(&m, Some(going_tx));
        // `None` when the refresh ended without going to the network (a cached token, or no
        // stored sign-in): then nothing was connected.
        let probe = async {
            going_rx.await.ok()?;
            Some(probe::probe_traced_later(&target, &later).await)
        };
        tokio::pin!(refresh, probe);
        let mut ended = None;
        let token = loop {
            tokio::select! {
                token = &mut refresh => break token,
                outcome = &mut probe, if ended.is_none() => ended = Some(outcome),
            }
        };
        let token = match token {
            Ok(t) => t,
            // A failed refresh fails the SMTP check the same way: one request to a failing token
            // endpoint per mailbox is enough, and one record says it. A probe that was
            // connecting meanwhile, which cannot have signed in, is dropped unrecorded.
            Err(e) => {
                return Ok(Verification { incoming: self.record(oauth_failure(name, Check::Refresh, &e))?, smtp: None })
            }
        };
        let _ = token_tx.send(token.clone());
        let outcome = match ended {
            Some(outcome) => outcome,
            None => probe.await,
        };
        let outcome = match outcome {
            Some(outcome) => outcome,
            None => probe::probe_traced(&target, &token).await,
        };
        let outcome = self.keep_transcript(name, &target, outcome);
        if outcome.as_ref().is_err_and(|e| e.code() == "auth_rejected") {
            // A refused token (revoked, or its grant ended) must not be served from the cache
            // again: the next call refreshes.
            self.tokens.clear(name).await;
        }
        let incoming = self.record(probe_record(&m, &target, outcome))?;
        let smtp = match &m.smtp {
            Some(smtp) => Some(self.smtp_check(&m, smtp, &token, None).await?),
            None => None,
        };
        Ok(Verification { incoming, smtp })
    }

    /// Signs in to the mailbox's outbound SMTP server and proves it accepts mail from the
    /// mailbox (`MAIL FROM`), or sends a real test message to `send_to`. Records the outcome.
    /// `None` when the mailbox has no SMTP server configured. A plain check is part of
    /// [`App::verify`]; this is for the test message.
    pub async fn verify_smtp(&self, name: &str, send_to: Option<&str>) -> Result<Option<HealthRecord>, AppError> {
        let m = self.store.get(name)?;
        let Some(smtp) = m.smtp.clone() else { return Ok(None) };
        let token = match self.fresh_token(&m).await {
            Ok(t) => t,
            Err(e) => return self.record(oauth_failure(name, Check::Refresh, &e)).map(Some),
        };
        self.smtp_check(&m, &smtp, &token, send_to).await.map(Some)
    }

    async fn smtp_check(
        &self,
        m: &Mailbox,
        smtp: &Smtp,
        token: &AccessToken,
        send_to: Option<&str>,
    ) -> Result<HealthRecord, AppError> {
        let target = self.probe_target(m, probe::Service::Smtp, &smtp.host, smtp.port, smtp.security);
        let message = send_to.map(|to| probe::smtp::TestMessage {
            to: to.to_string(),
            subject: format!("Mailbox Auth test from {}", m.name),
            body: format!(
                "This message was sent by Mailbox Auth to prove that {} can send mail through {}:{}.\n",
                m.sasl_user(),
                smtp.host,
                smtp.port
            ),
        });
        let outcome =
            self.keep_transcript(&m.name, &target, probe::smtp::probe_traced(&target, token, message.as_ref()).await);
        if outcome.as_ref().is_err_and(|e| e.code() == "auth_rejected") {
            // As in `verify`: a refused token is not served from the cache again.
            self.tokens.clear(&m.name).await;
        }
        self.record(probe_record(m, &target, outcome))
    }

    /// Sends `message` through mailbox `name`'s SMTP server, signed in as the mailbox (XOAUTH2 /
    /// OAUTHBEARER with its token): the monitor's alert emails. The outcome is returned, not
    /// recorded: an alert is not a check of the mailbox. Errs when the mailbox cannot be read or
    /// has no SMTP server.
    pub async fn send_message(&self, name: &str, message: &probe::smtp::TestMessage) -> Result<HealthRecord, AppError> {
        let m = self.store.get(name)?;
        let Some(smtp) = m.smtp.clone() else {
            return Err(AppError::Invalid(vec![FieldError::new(
                "smtp_host",
                format!("mailbox `{name}` has no outbound SMTP server to send through"),
            )]));
        };
        let token = match self.fresh_token(&m).await {
            Ok(t) => t,
            Err(e) => return Ok(oauth_failure(name, Check::Refresh, &e)),
        };
        let target = self.probe_target(&m, probe::Service::Smtp, &smtp.host, smtp.port, smtp.security);
        Ok(probe_record(&m, &target, probe::smtp::probe(&target, &token, Some(message)).await))
    }

    fn probe_target(
        &self,
        m: &Mailbox,
        service: probe::Service,
        host: &str,
        port: u16,
        security: Security,
    ) -> ProbeTarget {
        ProbeTarget {
            protocol: service,
            host: host.to_string(),
            port,
            security,
            // Only IMAP opens a folder; the other probes ignore it.
            folder: m.folder.clone(),
            sasl_user: m.sasl_user().to_string(),
            ca_file: m.ca_file.clone(),
            timeout: self.probe_timeout,
        }
    }

    /// Verifies many mailboxes, at most `concurrency` at once and at most
    /// [`VERIFY_PER_ACCOUNT`] of one account on one server; `done` is called as each ends.
    /// See [`App::verify_many_capped`].
    pub async fn verify_many(
        &self,
        names: &[String],
        concurrency: usize,
        done: &(dyn Fn(&HealthRecord) + Send + Sync),
    ) -> Result<Vec<HealthRecord>, AppError> {
        self.verify_many_capped(names, concurrency, VERIFY_PER_ACCOUNT, done).await
    }

    /// Verifies many mailboxes, at most `concurrency` at once, and at most `per_account` at
    /// once that sign in as the same account on the same server ([`monitor::account_key`]):
    /// many shared mailboxes behind one delegate account share that account's connection
    /// limit at the server (Dovecot's `mail_max_userip_connections`, Gmail's 15), and going
    /// past it turns healthy mailboxes red with `NO [LIMIT]`. A mailbox's permit is held for
    /// its whole check (incoming, then SMTP), never while it waits out a back-off.
    ///
    /// A throttled mailbox is verified again after the back-off its server asked for (at most
    /// [`THROTTLE_RETRIES`] times, and only for a back-off up to [`THROTTLE_BACKOFF_CAP`]); its
    /// throttled attempts are recorded as such, never as failures.
    pub async fn verify_many_capped(
        &self,
        names: &[String],
        concurrency: usize,
        per_account: usize,
        done: &(dyn Fn(&HealthRecord) + Send + Sync),
    ) -> Result<Vec<HealthRecord>, AppError> {
        let limits = monitor::Limits::new(concurrency.max(1), per_account.max(1));
        let limits = &limits;
        // Owned names and a plain loop keep this future `Send`, so a desktop command can await
        // it directly (closures over borrowed items in `buffer_unordered` are not, rust#102211).
        let verifications = names.iter().cloned().enumerate().map(|(i, n)| async move {
            let account = match self.store.get(&n) {
                Ok(m) => monitor::account_key(m.sasl_user(), &m.host),
                // `verify` records what is wrong with it; it opens no connection.
                Err(_) => n.clone(),
            };
            // Boxed once the permit is held: every mailbox's future waits here at once, and an
            // unboxed verification would make each of them as large as a whole check (see
            // `monitor::check_one`).
            let mut r = {
                let _permit = limits.connection(&account).await;
                Box::pin(self.verify(&n)).await
            };
            for _ in 0..THROTTLE_RETRIES {
                let wait = match &r {
                    Ok(v) => verification_wait(v),
                    _ => None,
                };
                let Some(wait) = wait else { break };
                tokio::time::sleep(wait).await;
                let _permit = limits.connection(&account).await;
                r = Box::pin(self.verify(&n)).await;
            }
            (i, r)
        });
        // Every mailbox waits for its permits at once: the limits, not the stream, decide what
        // runs, so mailboxes queued behind a busy account never keep others from starting.
        let mut pending = futures::stream::iter(verifications).buffer_unordered(names.len().max(1));
        let mut results: Vec<(usize, HealthRecord)> = Vec::with_capacity(names.len());
        while let Some((i, r)) = pending.next().await {
            // Incoming first, then SMTP; the sort below is stable and keeps that order.
            for rec in r?.into_records() {
                done(&rec);
                results.push((i, rec));
            }
        }
        results.sort_by_key(|(i, _)| *i);
        Ok(results.into_iter().map(|(_, r)| r).collect())
    }

    /// Deletes the mailbox's keyring entries (refresh token and client secret).
    /// Deleted under the mailbox's locks, so a refresh running in another program ends first
    /// and cannot write its rotated refresh token back afterwards.
    pub async fn forget(&self, name: &str) -> Result<(), AppError> {
        match self.store.get(name) {
            // Settings that cannot be read still name a mailbox whose secrets may be deleted.
            Ok(_) | Err(StoreError::Corrupt { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.tokens.forget(name, &self.secrets).await.map_err(|e| match e {
            OAuthError::Secret(e) => AppError::Secret(e),
            OAuthError::Lock(e) => AppError::Lock(e),
            other => {
                AppError::Secret(SecretError::Failed { op: "delete", key: name.into(), detail: other.to_string() })
            }
        })?;
        // The sign-in's dates go with it (not a secret, but they would describe the next one).
        Ok(self.store.forget_signin(name)?)
    }

    /// Removes the mailbox, its history and its keyring entries. Secrets go first, so a
    /// keyring failure leaves the mailbox in place to try again.
    pub async fn remove(&self, name: &str) -> Result<(), AppError> {
        self.forget(name).await?;
        Ok(self.store.remove(name)?)
    }

    pub fn history(&self, name: &str, limit: usize) -> Result<Vec<HealthRecord>, AppError> {
        self.store.get(name)?;
        Ok(self.store.history(name, limit)?)
    }

    fn record(&self, rec: HealthRecord) -> Result<HealthRecord, AppError> {
        let rec = crate::doctor::name_lost_signin(&self.store, rec);
        self.store.record(&rec)?;
        Ok(rec)
    }
}

impl App {
    /// Keeps the transcript of a failed probe as the mailbox's latest failing one for that
    /// check (for support bundles), and hands back the outcome. A transcript that cannot be
    /// stored is logged and dropped: the check's verdict does not depend on it.
    fn keep_transcript(
        &self,
        name: &str,
        target: &ProbeTarget,
        outcome: Result<probe::ProbeReport, probe::ProbeFailure>,
    ) -> Result<probe::ProbeReport, probe::ProbeError> {
        outcome.map_err(|f| {
            if let Err(e) =
                self.store.keep_failing_transcript(name, &target.protocol.to_string(), Utc::now(), &f.transcript)
            {
                tracing::warn!(mailbox = name, "cannot keep the failing check's transcript: {e}");
            }
            f.error
        })
    }
}

/// The list entry of a mailbox whose stored settings cannot be read: red, saying so.
fn unreadable_view(name: String, error: String) -> MailboxView {
    let mailbox = Mailbox::unreadable(&name);
    let record = HealthRecord {
        mailbox: name.clone(),
        at: Utc::now(),
        check: Check::Store,
        ok: false,
        code: Some("store".into()),
        message: format!("The stored settings of `{name}` cannot be read ({error})"),
        hint: Some(format!(
            "Import the mailbox again from a CSV with the same name `{name}` (its stored sign-in is \
             deleted, so authenticate it afterwards); the other mailboxes are not affected."
        )),
        fix: None,
        server_words: None,
        messages: None,
    };
    MailboxView {
        mailbox,
        status: Status::Failed,
        status_label: Status::Failed.label(),
        authenticated: false,
        last_check: Some(record),
        incoming_check: None,
        smtp_check: None,
        throttled: false,
        signin_expires_at: None,
    }
}

/// The newest record of one of `checks` in a history (newest first), not older than the newest
/// sign-in (older ones belong to an earlier authorisation, as in [`health::deciding`]).
fn newest_since_sign_in(history: &[HealthRecord], checks: &[Check]) -> Option<HealthRecord> {
    history.iter().take_while(|r| r.check != Check::Authenticate).find(|r| checks.contains(&r.check)).cloned()
}

/// The account named in an id_token (`preferred_username`, else `email`), for telling the
/// admin when someone else signed in. The token came straight from the token endpoint over
/// TLS, so its claims are read without checking the signature; they only feed a hint.
pub fn signed_in_account(id_token: &str) -> Option<String> {
    use base64::Engine;
    let payload = id_token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    ["preferred_username", "email", "upn"].iter().find_map(|k| claims[*k].as_str().map(str::to_string))
}

fn ok_record(name: &str, check: Check, message: String, messages: Option<u32>) -> HealthRecord {
    HealthRecord {
        mailbox: name.into(),
        at: Utc::now(),
        check,
        ok: true,
        code: None,
        message,
        hint: None,
        fix: None,
        server_words: None,
        messages,
    }
}

/// The diagnosis code of a probe failure: a refused token has its own fix for app-only access
/// (the service principal and its mailbox permission, in Exchange), not in who signed in.
fn probe_diagnosis_code<'a>(m: &Mailbox, code: &'a str) -> &'a str {
    if m.flow == Flow::ClientCredentials && code == "auth_rejected" {
        "auth_rejected_app_only"
    } else {
        code
    }
}

/// The action a failure of `check` offers for mailbox `m`: the diagnosis's, for the check's own
/// fields (see [`Fix::for_check`]); the Exchange script only for app-only mailboxes (it sets
/// up their service principal; a delegated mailbox's refusal is fixed by who signs in).
fn fix_for(m: &Mailbox, check: Check, code: &str, server_words: Option<&str>) -> Option<Fix> {
    let code =
        if matches!(check, Check::Imap | Check::Pop3 | Check::Smtp) { probe_diagnosis_code(m, code) } else { code };
    let fix = diagnose(code, server_words).action?.for_check(check);
    (fix != Fix::ExchangeScript || m.flow == Flow::ClientCredentials).then_some(fix)
}

/// A record as the window shows it: one stored before records carried their fix gets the one a
/// new record of the same failure would carry.
fn with_fix(m: &Mailbox, mut r: HealthRecord) -> HealthRecord {
    if !r.ok && r.fix.is_none() && !r.throttled() {
        if let Some(code) = r.code.as_deref() {
            r.fix = fix_for(m, r.check, code, r.server_words.as_deref());
        }
    }
    r
}

fn failure_record(name: &str, check: Check, code: &str, message: String, server_words: Option<String>) -> HealthRecord {
    let d = diagnose(code, server_words.as_deref());
    HealthRecord {
        mailbox: name.into(),
        at: Utc::now(),
        check,
        ok: false,
        code: Some(code.into()),
        message: format!("{message}. {}", d.cause),
        hint: Some(d.fix.into()),
        fix: d.action.map(|f| f.for_check(check)),
        server_words,
        messages: None,
    }
}

/// The health record of a probe; the check is named after the service (`imap`, `pop3`, `smtp`).
fn probe_record(
    m: &Mailbox,
    target: &ProbeTarget,
    outcome: Result<probe::ProbeReport, probe::ProbeError>,
) -> HealthRecord {
    let check = Check::from(target.protocol);
    match outcome {
        Ok(r) => {
            // SMTP opens no maildrop, so it has no message count.
            let messages = (target.protocol != probe::Service::Smtp).then_some(r.messages);
            ok_record(&m.name, check, format!("{} (signed in with {})", r.detail, r.mechanism), messages)
        }
        Err(e) => {
            // Same failure code for app-only access, but its fix is in Exchange (service
            // principal, mailbox permission), not in who signed in.
            let diagnosis = probe_diagnosis_code(m, e.code());
            let words = e.server_words().map(str::to_string);
            if words.as_deref().is_some_and(crate::diagnose::is_throttling) {
                return throttled_record(&m.name, check, e.to_string(), words);
            }
            let mut rec = failure_record(&m.name, check, diagnosis, e.to_string(), words);
            rec.code = Some(e.code().to_string());
            rec.fix = fix_for(m, check, e.code(), rec.server_words.as_deref());
            rec
        }
    }
}

fn oauth_failure(name: &str, check: Check, e: &OAuthError) -> HealthRecord {
    // HTTP 429 is the identity provider throttling; 5xx stays `token_endpoint_unavailable`.
    if matches!(e, OAuthError::Unavailable { status: 429, .. }) {
        return throttled_record(name, check, e.to_string(), e.server_words());
    }
    failure_record(name, check, &e.code(), e.to_string(), e.server_words())
}

/// The record of a check the other side throttled: code `throttled`, the server's words kept,
/// and the back-off it asked for in the message. Not a verdict (see [`health::deciding`]).
fn throttled_record(name: &str, check: Check, message: String, server_words: Option<String>) -> HealthRecord {
    let d = diagnose("throttled", None);
    let backoff =
        server_words.as_deref().and_then(crate::diagnose::backoff).or_else(|| crate::diagnose::backoff(&message));
    let wait = backoff.map(|b| format!(" (it asks to retry after {} seconds)", b.as_secs().max(1))).unwrap_or_default();
    HealthRecord {
        mailbox: name.into(),
        at: Utc::now(),
        check,
        ok: false,
        code: Some("throttled".into()),
        message: format!("{message}{wait}. {}", d.cause),
        hint: Some(d.fix.into()),
        fix: None,
        server_words,
        messages: None,
    }
}

impl App {
    /// Uptime over the last 7 and 30 days and the up/down transitions of one mailbox, from its
    /// whole stored history (see [`crate::uptime`]).
    pub fn uptime(&self, name: &str) -> Result<crate::uptime::Uptime, AppError> {
        self.store.get(name)?;
        // Routine greens are pruned after 30 days, so the history stays small; the cap only
        // bounds a damaged store.
        let history = self.store.history(name, 200_000)?;
        Ok(crate::uptime::summarise(&history, Utc::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn jwt(claims: &str) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b(r#"{"alg":"RS256"}"#), b(claims))
    }

    #[test]
    fn verify_many_is_send_so_a_desktop_command_can_await_it() {
        fn assert_send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(dir.path(), Arc::new(crate::secret::MemoryStore::default())).unwrap();
        let names = vec!["a".to_string()];
        let fut = app.verify_many(&names, 2, &|_| {});
        assert_send(&fut);
    }

    #[test]
    fn a_429_from_the_token_endpoint_is_throttled_and_a_503_is_not() {
        let e =
            |status| OAuthError::Unavailable { url: "https://idp.example/token".into(), status, retry_after: Some(7) };
        let r = oauth_failure("m", Check::Refresh, &e(429));
        assert!(r.throttled(), "{r:?}");
        assert_eq!(throttle_wait(&r), Some(Duration::from_secs(7)), "Retry-After is honoured");
        assert!(r.message.contains("HTTP 429"), "the provider's status is kept: {}", r.message);
        let r = oauth_failure("m", Check::Refresh, &e(503));
        assert!(!r.throttled() && r.code.as_deref() == Some("token_endpoint_unavailable"), "{r:?}");
        let long = OAuthError::Unavailable { url: "u".into(), status: 429, retry_after: Some(3600) };
        assert_eq!(throttle_wait(&oauth_failure("m", Check::Refresh, &long)), None, "an hour is not waited for");
    }

    #[test]
    fn signed_in_account_prefers_preferred_username() {
        assert_eq!(
            signed_in_account(&jwt(r#"{"preferred_username":"a@contoso.com","email":"b@contoso.com"}"#)).as_deref(),
            Some("a@contoso.com")
        );
        assert_eq!(signed_in_account(&jwt(r#"{"email":"b@x.test"}"#)).as_deref(), Some("b@x.test"));
        assert_eq!(signed_in_account(&jwt(r#"{"sub":"123"}"#)), None);
        assert_eq!(signed_in_account("not a jwt"), None);
    }

    #[tokio::test]
    async fn exchange_script_names_each_bad_field_and_normalises_the_object_id() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(dir.path(), Arc::new(crate::secret::MemoryStore::default())).unwrap();
        let mut a = crate::mailbox::sample();
        a.email = "support@contoso.com".into();
        a.client_id = "00000000-1111-2222-3333-444444444444".into();
        let mut b = a.clone();
        b.name = "billing".into();
        b.email = "billing@contoso.com".into();
        b.protocol = Protocol::Pop3;
        b.port = 995;
        let mut c = a.clone();
        c.name = "other-app".into();
        c.client_id = "another".into();
        for m in [&a, &b, &c] {
            app.save(m).await.unwrap();
        }
        let names = |ns: &[&str]| ns.iter().map(|n| n.to_string()).collect::<Vec<_>>();

        let fields = |r: Result<String, AppError>| match r {
            Err(AppError::Invalid(es)) => es.into_iter().map(|e| e.field).collect::<Vec<_>>(),
            other => panic!("expected field errors, got {other:?}"),
        };
        assert_eq!(fields(app.exchange_script(&[], "not-a-guid", " ")), ["mailboxes", "object_id", "display_name"]);
        assert_eq!(
            fields(app.exchange_script(&names(&["support", "other-app"]), "8C1B7A3E-2F4D-4B9A-9E61-0D5F3C2A7B10", "x")),
            ["client_id"]
        );
        assert!(matches!(
            app.exchange_script(&names(&["nope"]), "8c1b7a3e-2f4d-4b9a-9e61-0d5f3c2a7b10", "x"),
            Err(AppError::Store(_))
        ));

        let s = app
            .exchange_script(&names(&["support", "billing"]), " {8C1B7A3E-2F4D-4B9A-9E61-0D5F3C2A7B10} ", "Help desk")
            .unwrap();
        assert!(
            s.contains(
                "-AppId '00000000-1111-2222-3333-444444444444' -ObjectId '8c1b7a3e-2f4d-4b9a-9e61-0d5f3c2a7b10' -DisplayName 'Help desk'"
            ),
            "{s}"
        );
        assert!(s.contains("Set-CASMailbox -Identity 'support@contoso.com' -ImapEnabled $true\n"), "{s}");
        assert!(s.contains("Set-CASMailbox -Identity 'billing@contoso.com' -PopEnabled $true\n"), "{s}");

        // A client id that is not a GUID (stored before the check, or a generic provider's)
        // never reaches the script.
        let mut d = a.clone();
        d.name = "legacy".into();
        d.client_id = "x\u{2019}; Remove-Mailbox boss; \u{2019}".into();
        app.save(&d).await.unwrap();
        assert_eq!(
            fields(app.exchange_script(&names(&["legacy"]), "8c1b7a3e-2f4d-4b9a-9e61-0d5f3c2a7b10", "x")),
            ["client_id"]
        );
    }

    async fn app_with_secrets() -> (tempfile::TempDir, App, Arc<dyn SecretStore>) {
        let dir = tempfile::tempdir().unwrap();
        let secrets: Arc<dyn SecretStore> = Arc::new(crate::secret::MemoryStore::default());
        let app = App::open(dir.path(), secrets.clone()).unwrap();
        app.save(&crate::mailbox::sample()).await.unwrap();
        for kind in [SecretKind::RefreshToken, SecretKind::ClientSecret] {
            secret::set(&secrets, "support", kind, SecretString::from("s3cret".to_string())).await.unwrap();
        }
        (dir, app, secrets)
    }

    async fn stored(secrets: &Arc<dyn SecretStore>) -> (bool, bool) {
        (
            secret::get(secrets, "support", SecretKind::RefreshToken).await.unwrap().is_some(),
            secret::get(secrets, "support", SecretKind::ClientSecret).await.unwrap().is_some(),
        )
    }

    #[tokio::test]
    async fn saving_a_changed_endpoint_signs_the_mailbox_out() {
        let (_dir, app, secrets) = app_with_secrets().await;
        let mut m = crate::mailbox::sample();
        m.folder = "Archive".into();
        let out = app.save(&m).await.unwrap();
        assert!(!out.signed_out);
        assert_eq!(stored(&secrets).await, (true, true), "a folder change keeps the sign-in");

        m.token_url = Some("https://other.example/token".into());
        let out = app.save(&m).await.unwrap();
        assert_eq!((out.signed_out, out.routing_changes), (true, vec!["token_url"]));
        assert_eq!(stored(&secrets).await, (false, false), "refresh token and client secret deleted");
        assert_eq!(app.get("support").unwrap(), m);
    }

    #[tokio::test]
    async fn import_preview_and_import_say_what_changes_and_who_is_signed_out() {
        let (_dir, app, secrets) = app_with_secrets().await;
        let head = "name,email,host,client_id,auth_url,token_url,scopes,folder\n";
        let same = "support,support@example.com,imap.example.com,client,https://idp.example.com/auth,https://idp.example.com/token,openid,INBOX\n";
        let p = app.import_preview(&format!("{head}{same}"), None).unwrap();
        assert_eq!(p.rows[0].action, ImportAction::Unchanged);

        let text = format!(
            "{head}support,support@example.com,imap.example.com,client,https://idp.example.com/auth,https://evil.example/token,openid,Archive\n\
             fresh,fresh@example.com,imap.example.com,client,https://idp.example.com/auth,https://idp.example.com/token,openid,INBOX\n\
             bad,not-an-address,imap.example.com,client,https://i/a,https://i/t,openid,INBOX\n"
        );
        let p = app.import_preview(&text, None).unwrap();
        let r = &p.rows;
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].line, r[0].name.as_str(), r[0].action), (2, "support", ImportAction::Update));
        assert_eq!(r[0].changed_fields, ["folder", "token_url"]);
        assert_eq!(r[0].routing_changes, ["token_url"]);
        assert!(r[0].signs_out);
        assert_eq!((r[1].action, r[1].signs_out), (ImportAction::New, false));
        assert_eq!((r[2].line, r[2].name.as_str(), r[2].action), (4, "bad", ImportAction::Refused));
        assert_eq!(r[2].errors[0].field, "email");
        assert_eq!((r[2].cells["email"].as_str(), r[2].cells["folder"].as_str()), ("not-an-address", "INBOX"));
        assert!(r[2].mailbox.is_none() && r[0].errors.is_empty() && r[0].mailbox.is_some(), "a mailbox or errors");
        assert_eq!(p.summary, ImportSummary { ready: 2, refused: 1, updates: 1, sign_outs: 1 });
        assert_eq!(p.errors, r[2].errors, "every error is a row's");
        assert_eq!(stored(&secrets).await, (true, true), "a preview changes nothing");
        assert_eq!(app.get("support").unwrap().folder, "INBOX");

        let report = app.import_csv(&text, None).await.unwrap();
        assert_eq!(report.imported, ["support", "fresh"]);
        assert_eq!(report.signed_out, ["support"]);
        assert_eq!(report.rows.len(), 3);
        assert_eq!(stored(&secrets).await, (false, false));
        assert_eq!(app.get("support").unwrap().token_url.as_deref(), Some("https://evil.example/token"));
    }

    #[tokio::test]
    async fn one_unreadable_mailbox_does_not_hide_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(dir.path(), Arc::new(crate::secret::MemoryStore::default())).unwrap();
        let mut b = crate::mailbox::sample();
        app.save(&b).await.unwrap();
        b.name = "zeta".into();
        app.save(&b).await.unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("mailbox-auth.sqlite3")).unwrap();
        conn.execute("INSERT INTO mailboxes (name, data, updated_at) VALUES ('broken', '{not json', '')", []).unwrap();
        let views = app.list().await.unwrap();
        let names: Vec<&str> = views.iter().map(|v| v.mailbox.name.as_str()).collect();
        assert_eq!(names, ["broken", "support", "zeta"]);
        assert_eq!(views[0].status, Status::Failed);
        let rec = views[0].last_check.as_ref().unwrap();
        assert!(rec.message.contains("stored settings of `broken` cannot be read"), "{}", rec.message);
        // Importing it again repairs it.
        let text = "name,email,host,client_id,auth_url,token_url,scopes\nbroken,b@example.com,imap.example.com,c,https://i.example/a,https://i.example/t,openid\n";
        let report = app.import_csv(text, None).await.unwrap();
        assert_eq!(report.signed_out, ["broken"]);
        assert_eq!(app.get("broken").unwrap().email, "b@example.com");
    }

    #[tokio::test]
    async fn an_unreadable_mailbox_can_be_removed_with_its_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let mem = crate::secret::MemoryStore::default();
        let app = App::open(dir.path(), Arc::new(mem.clone())).unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("mailbox-auth.sqlite3")).unwrap();
        conn.execute("INSERT INTO mailboxes (name, data, updated_at) VALUES ('broken', '{not json', '')", []).unwrap();
        mem.set("broken", SecretKind::RefreshToken, &SecretString::from("rt")).unwrap();
        app.remove("broken").await.unwrap();
        assert!(mem.get("broken", SecretKind::RefreshToken).unwrap().is_none());
        assert!(app.list().await.unwrap().is_empty());
        assert!(matches!(app.remove("broken").await, Err(AppError::Store(StoreError::NotFound(_)))));
    }

    #[tokio::test]
    async fn create_refuses_an_existing_name_and_leaves_the_stored_mailbox_and_its_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let mem = crate::secret::MemoryStore::default();
        let app = App::open(dir.path(), Arc::new(mem.clone())).unwrap();
        let first = crate::mailbox::sample();
        app.create(&first).await.unwrap();
        mem.set(&first.name, SecretKind::RefreshToken, &SecretString::from("rt")).unwrap();
        let mut other = first.clone();
        other.host = "imap.elsewhere.example".into();
        match app.create(&other).await {
            Err(AppError::Invalid(es)) => {
                assert_eq!(es.iter().map(|e| e.field).collect::<Vec<_>>(), ["name"]);
                assert_eq!(es[0].message, "a mailbox named `support` exists already");
            }
            other => panic!("expected a name error, got {other:?}"),
        }
        assert_eq!(app.get(&first.name).unwrap(), first, "nothing stored changed");
        assert!(mem.get(&first.name, SecretKind::RefreshToken).unwrap().is_some(), "still signed in");
        // Saving (the editor's update) is what changes an existing mailbox.
        assert!(app.save(&other).await.unwrap().signed_out);
    }

    /// A secret store that counts its reads, per kind, and can refuse them all (a keyring
    /// that is locked or gone).
    #[derive(Debug, Default)]
    pub(crate) struct CountingStore {
        pub inner: crate::secret::MemoryStore,
        pub reads: std::sync::Mutex<Vec<(String, SecretKind)>>,
        pub writes: std::sync::atomic::AtomicU32,
        pub refuse: std::sync::atomic::AtomicBool,
    }

    impl SecretStore for CountingStore {
        fn get(&self, mailbox: &str, kind: SecretKind) -> Result<Option<SecretString>, SecretError> {
            self.reads.lock().unwrap().push((mailbox.to_string(), kind));
            if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(SecretError::Unavailable { detail: "no Secret Service".into() });
            }
            self.inner.get(mailbox, kind)
        }
        fn set(&self, mailbox: &str, kind: SecretKind, value: &SecretString) -> Result<(), SecretError> {
            self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.set(mailbox, kind, value)
        }
        fn delete(&self, mailbox: &str, kind: SecretKind) -> Result<(), SecretError> {
            self.inner.delete(mailbox, kind)
        }
    }

    #[tokio::test]
    async fn the_list_takes_signed_in_from_the_store_and_reads_no_keyring_entry() {
        let dir = tempfile::tempdir().unwrap();
        let counting = Arc::new(CountingStore::default());
        let app = App::open(dir.path(), counting.clone()).unwrap();
        for i in 0..20 {
            let mut m = crate::mailbox::sample();
            m.name = format!("signed-{i:02}");
            app.save(&m).await.unwrap();
            counting.inner.set(&m.name, SecretKind::RefreshToken, &SecretString::from("rt")).unwrap();
            app.store.note_signin(&m.name, Utc::now(), None).unwrap();
        }
        // The keyring refuses every read: a signed-in mailbox is listed as such all the same.
        counting.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
        let views = app.list().await.unwrap();
        assert_eq!(views.len(), 20);
        assert!(views.iter().all(|v| v.authenticated && v.status_label != "Not authenticated"), "{views:?}");
        assert!(counting.reads.lock().unwrap().is_empty(), "{:?}", counting.reads.lock().unwrap());

        // A mailbox created here is looked up once (the keyring may hold a sign-in of that
        // name from before); found without one, it is known to be signed out. Forgetting
        // deletes the sign-in date with the entry, and the sign-out is known too. Then neither
        // is read again.
        let mut fresh = crate::mailbox::sample();
        fresh.name = "never-signed-in".into();
        app.create(&fresh).await.unwrap();
        counting.refuse.store(false, std::sync::atomic::Ordering::SeqCst);
        app.forget("signed-00").await.unwrap();
        app.list().await.unwrap();
        assert_eq!(
            *counting.reads.lock().unwrap(),
            vec![("never-signed-in".to_string(), SecretKind::RefreshToken)],
            "the new mailbox is looked up, the forgotten one is not"
        );
        counting.reads.lock().unwrap().clear();
        counting.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
        let views = app.list().await.unwrap();
        for name in ["signed-00", "never-signed-in"] {
            let v = views.iter().find(|v| v.mailbox.name == name).unwrap();
            assert!(!v.authenticated, "{name}");
            assert_eq!(v.status_label, "Not authenticated", "{name}");
        }
        assert!(counting.reads.lock().unwrap().is_empty(), "{:?}", counting.reads.lock().unwrap());

        // A mailbox signed in before the dates were kept: its token is looked up. Once the
        // keyring says it holds none, that is remembered and the mailbox is not looked up again.
        counting.refuse.store(false, std::sync::atomic::Ordering::SeqCst);
        for name in ["signed-01", "signed-02"] {
            app.store.forget_signin(name).unwrap();
            app.store.set_signin_known(name, false).unwrap();
        }
        counting.inner.delete("signed-02", SecretKind::RefreshToken).unwrap();
        for round in 0..2 {
            let views = app.list().await.unwrap();
            let legacy = views.iter().find(|v| v.mailbox.name == "signed-01").unwrap();
            assert!(legacy.authenticated, "round {round}: its token is in the keyring");
            let gone = views.iter().find(|v| v.mailbox.name == "signed-02").unwrap();
            assert!(!gone.authenticated, "round {round}");
        }
        let reads = counting.reads.lock().unwrap().clone();
        let rt = |n: &str| (n.to_string(), SecretKind::RefreshToken);
        assert_eq!(reads, vec![rt("signed-01"), rt("signed-02"), rt("signed-01")], "signed-02 looked up once");
    }

    #[tokio::test]
    async fn a_mailbox_without_dates_is_looked_up_under_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let app = Arc::new(App::open(dir.path(), Arc::new(crate::secret::MemoryStore::default())).unwrap());
        app.create(&crate::mailbox::sample()).await.unwrap();
        let held = app.tokens.locks().acquire("support").await.unwrap();
        let listing = tokio::spawn({
            let app = Arc::clone(&app);
            async move { app.list().await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!listing.is_finished(), "the lookup waits for the mailbox's lock");
        assert!(!app.store.signin_known("support").unwrap());
        drop(held);
        let views = tokio::time::timeout(Duration::from_secs(10), listing).await.unwrap().unwrap();
        assert!(!views[0].authenticated);
        assert!(app.store.signin_known("support").unwrap());
    }

    #[tokio::test]
    async fn no_token_is_an_oauth_error_with_its_own_code_and_hint() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(dir.path(), Arc::new(crate::secret::MemoryStore::default())).unwrap();
        app.save(&crate::mailbox::sample()).await.unwrap();
        let e = app.access_token("support").await.unwrap_err();
        assert!(matches!(e, AppError::OAuth(OAuthError::NotAuthenticated(_))), "{e:?}");
        let f = e.failure();
        assert_eq!(f.code, "not_authenticated");
        assert_eq!(f.hint, diagnose("not_authenticated", None).fix);
        // An unknown mailbox stays a store error (the CLI's input error, not a red token).
        assert!(matches!(app.access_token("nobody").await, Err(AppError::Store(StoreError::NotFound(_)))));
        let c = AppError::OAuth(OAuthError::Cancelled).failure();
        assert_eq!((c.code.as_str(), c.hint.as_str()), ("cancelled", diagnose("cancelled", None).fix));
    }

    #[tokio::test]
    async fn verifying_every_mailbox_reports_an_unreadable_one_red_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(dir.path(), Arc::new(crate::secret::MemoryStore::default())).unwrap();
        app.save(&crate::mailbox::sample()).await.unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("mailbox-auth.sqlite3")).unwrap();
        conn.execute("INSERT INTO mailboxes (name, data, updated_at) VALUES ('broken', '{not json', '')", []).unwrap();
        let names = app.names().unwrap();
        assert_eq!(names, ["broken", "support"]);
        let recs = app.verify_many(&names, 2, &|_| {}).await.unwrap();
        assert_eq!(recs.len(), 2);
        assert!(!recs[0].ok && recs[0].message.contains("cannot be read"), "{:?}", recs[0]);
        // The readable one was really tried: not authenticated, so red for that reason.
        assert_eq!(recs[1].code.as_deref(), Some("not_authenticated"), "{:?}", recs[1]);
    }

    fn rec(check: &str, ok: bool, secs_ago: i64) -> HealthRecord {
        let mut r = if ok {
            ok_record("support", check.parse().unwrap(), format!("{check} fine"), None)
        } else {
            failure_record("support", check.parse().unwrap(), "connect_refused", format!("{check} refused"), None)
        };
        r.at = Utc::now() - chrono::Duration::seconds(secs_ago);
        r
    }

    /// A failure stored before records carried their fix shows the one a new record would
    /// carry (the window offered it from the code before): an upgrade loses no button.
    #[tokio::test]
    async fn records_stored_without_a_fix_get_it_in_the_view() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(dir.path(), Arc::new(crate::secret::MemoryStore::default())).unwrap();
        let delegated = crate::mailbox::sample();
        let app_only = Mailbox { name: "app".into(), flow: Flow::ClientCredentials, ..delegated.clone() };
        app.save(&delegated).await.unwrap();
        app.save(&app_only).await.unwrap();
        let old = |name: &str, code: &str, words: &str| {
            format!(
                r#"{{"mailbox":"{name}","at":"2026-01-01T00:00:00Z","check":"imap","ok":false,"code":"{code}","message":"m","hint":"h","server_words":"{words}","messages":null}}"#
            )
        };
        let conn = rusqlite::Connection::open(dir.path().join("mailbox-auth.sqlite3")).unwrap();
        for (name, code, words) in [
            ("app", "auth_rejected", "a1 NO [AUTHENTICATIONFAILED] Authentication failed."),
            ("support", "auth_rejected", "A1 NO AUTHENTICATE failed."),
        ] {
            conn.execute("INSERT INTO health (mailbox, data) VALUES (?1, ?2)", [name, &old(name, code, words)])
                .unwrap();
        }
        let fix = |v: MailboxView| v.last_check.and_then(|r| r.fix);
        assert_eq!(fix(app.view(app_only.clone()).await.unwrap()), Some(Fix::ExchangeScript));
        assert_eq!(fix(app.view(delegated.clone()).await.unwrap()), None, "delegated: the script is not its fix");
        conn.execute(
            "INSERT INTO health (mailbox, data) VALUES ('support', ?1)",
            [old("support", "folder_missing", "a2 NO Mailbox doesn't exist: Archive")],
        )
        .unwrap();
        let v = app.view(delegated).await.unwrap();
        assert_eq!(v.incoming_check.and_then(|r| r.fix), Some(Fix::EditField { field: "folder".into() }));
    }

    /// The action a record offers is decided here, from the diagnosis, the mailbox's flow and
    /// the check: the window only shows it.
    #[test]
    fn a_probe_failure_carries_its_typed_fix() {
        let target = |protocol: probe::Service| ProbeTarget {
            protocol,
            host: "mail.example.com".into(),
            port: 993,
            security: Security::Tls,
            folder: "INBOX".into(),
            sasl_user: "support@example.com".into(),
            ca_file: None,
            timeout: Duration::from_secs(5),
        };
        let refused = |words: &str| -> Result<probe::ProbeReport, probe::ProbeError> {
            Err(probe::ProbeError::AuthRejected {
                proto: "IMAP",
                command: "AUTHENTICATE",
                mechanism: "XOAUTH2",
                addr: "mail.example.com:993".into(),
                words: words.into(),
            })
        };
        let delegated = crate::mailbox::sample();
        let app_only = Mailbox { flow: Flow::ClientCredentials, ..delegated.clone() };
        let imap = target(probe::Service::Imap);
        for words in ["a1 NO [AUTHENTICATIONFAILED] Authentication failed.", "A1 NO AUTHENTICATE failed."] {
            let r = probe_record(&app_only, &imap, refused(words));
            assert_eq!(
                (r.code.as_deref(), r.fix.clone()),
                (Some("auth_rejected"), Some(Fix::ExchangeScript)),
                "{words}"
            );
            let r = probe_record(&delegated, &imap, refused(words));
            assert_eq!(r.fix, None, "the script is for app-only mailboxes: {words}");
        }
        let smtp_refused = || -> Result<probe::ProbeReport, probe::ProbeError> {
            Err(probe::ProbeError::ConnectRefused { proto: "SMTP", addr: "smtp.example.com:587".into() })
        };
        let r = probe_record(&delegated, &target(probe::Service::Smtp), smtp_refused());
        assert_eq!((r.check, r.fix), (Check::Smtp, Some(Fix::EditField { field: "smtp_port".into() })));
        let r = probe_record(&delegated, &imap, smtp_refused());
        assert_eq!((r.check, r.fix), (Check::Imap, Some(Fix::EditField { field: "port".into() })));
        let r = oauth_failure("support", Check::Refresh, &OAuthError::NotAuthenticated("support".into()));
        assert_eq!(r.fix, Some(Fix::SignInAgain));
    }

    #[test]
    fn a_verification_is_decided_by_its_smtp_failure_only_when_the_incoming_check_passed() {
        let v = |incoming: bool, smtp: Option<bool>| Verification {
            incoming: rec("imap", incoming, 1),
            smtp: smtp.map(|ok| rec("smtp", ok, 0)),
        };
        assert_eq!(v(true, Some(false)).deciding().check, Check::Smtp);
        assert_eq!(v(false, Some(false)).deciding().check, Check::Imap);
        assert_eq!(v(true, Some(true)).deciding().check, Check::Imap);
        assert_eq!(v(true, None).deciding().check, Check::Imap);
        let checks: Vec<Check> = v(true, Some(false)).into_records().into_iter().map(|r| r.check).collect();
        assert_eq!(checks, [Check::Imap, Check::Smtp], "incoming first");
        assert_eq!(v(true, None).into_records().len(), 1);
    }

    #[tokio::test]
    async fn the_view_carries_the_newest_incoming_and_smtp_checks_since_the_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(dir.path(), Arc::new(crate::secret::MemoryStore::default())).unwrap();
        let mut m = crate::mailbox::sample();
        m.smtp = Some(Smtp { host: "smtp.example.com".into(), port: 587, security: Security::Starttls });
        app.save(&m).await.unwrap();
        // Oldest first: an SMTP success of an earlier sign-in, the sign-in, then this one's checks.
        for r in [
            rec("smtp", true, 50),
            rec("authenticate", true, 40),
            rec("imap", true, 30),
            rec("smtp", false, 20),
            rec("imap", true, 10),
        ] {
            app.store.record(&r).unwrap();
        }
        let view = app.view(m.clone()).await.unwrap();
        assert_eq!(view.status, Status::Failed, "a failed SMTP check is not hidden by a later IMAP success");
        assert_eq!(view.last_check.as_ref().map(|r| r.check.as_str()), Some("smtp"));
        let incoming = view.incoming_check.expect("the incoming check");
        assert!(incoming.ok && incoming.at == rec_at(&app, "imap"), "the newest IMAP check: {incoming:?}");
        let smtp = view.smtp_check.expect("the SMTP check");
        assert!(!smtp.ok, "the SMTP check since the sign-in, not the older success: {smtp:?}");

        // Without an outgoing server the view has no SMTP result, whatever the history says.
        m.smtp = None;
        assert_eq!(app.view(m).await.unwrap().smtp_check, None);
    }

    fn rec_at(app: &App, check: &str) -> chrono::DateTime<Utc> {
        app.store.history("support", 20).unwrap().into_iter().find(|r| r.check.as_str() == check).unwrap().at
    }

    #[tokio::test]
    async fn a_mailbox_that_cannot_get_a_token_gets_one_record_not_an_smtp_one_too() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(dir.path(), Arc::new(crate::secret::MemoryStore::default())).unwrap();
        let mut m = crate::mailbox::sample();
        m.smtp = Some(Smtp { host: "smtp.example.com".into(), port: 587, security: Security::Starttls });
        app.save(&m).await.unwrap();
        let v = app.verify("support").await.unwrap();
        assert_eq!((v.incoming.check.as_str(), v.incoming.code.as_deref()), ("refresh", Some("not_authenticated")));
        assert_eq!(v.smtp, None, "one request to a failing token endpoint per mailbox is enough");
        assert_eq!(app.verify_many(&["support".to_string()], 1, &|_| {}).await.unwrap().len(), 1);
    }

    /// A signed-in mailbox whose refresh is answered by `token_endpoint` (after `delay`) and
    /// whose IMAP server (implicit TLS, the test CA) notes when it greeted.
    async fn refresh_and_imap(
        delay: Duration,
    ) -> (App, tempfile::TempDir, Arc<tokio::sync::Notify>, Arc<std::sync::Mutex<Option<std::time::Instant>>>) {
        use crate::probe::testing::{self, send, Reply, ServerTls};
        let dir = tempfile::tempdir().unwrap();
        let secrets = Arc::new(crate::secret::MemoryStore::default());
        let mut app = App::open(&dir.path().join("home"), secrets.clone()).unwrap();
        app.probe_timeout = Duration::from_secs(10);
        let answered = Arc::new(std::sync::Mutex::new(None));
        let noted = Arc::clone(&answered);
        let idp = crate::oauth::test_http::serve(move |_, _| {
            std::thread::sleep(delay);
            *noted.lock().unwrap() = Some(std::time::Instant::now());
            ("200 OK", r#"{"access_token":"at-side-by-side","token_type":"Bearer","expires_in":3600}"#.to_string())
        })
        .await;
        let pki = crate::tls::tests::test_pki(&["127.0.0.1"], false);
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let greeted = Arc::new(tokio::sync::Notify::new());
        let (port, _) = testing::serve_greeted(
            "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready\r\n",
            ServerTls::Implicit(pki.server.clone()),
            |l: &str| {
                let t = l.split(' ').next().unwrap_or("*").to_string();
                if l.contains(" AUTHENTICATE ") {
                    send(format!("{t} OK Logged in\r\n"))
                } else if l.contains(" EXAMINE ") {
                    send(format!("* 2 EXISTS\r\n{t} OK [READ-ONLY] done\r\n"))
                } else {
                    Reply::Nothing
                }
            },
            Arc::clone(&greeted),
        )
        .await;
        let mut m = crate::mailbox::sample();
        m.host = "127.0.0.1".into();
        m.port = port;
        m.ca_file = Some(ca);
        m.token_url = Some(format!("http://127.0.0.1:{idp}/token"));
        app.save(&m).await.unwrap();
        secrets.set(&m.name, SecretKind::RefreshToken, &SecretString::from("rt")).unwrap();
        (app, dir, greeted, answered)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_connects_to_the_mail_server_while_the_token_is_refreshed() {
        let (app, _dir, greeted, answered) = refresh_and_imap(Duration::from_millis(800)).await;
        let greeted_at = tokio::spawn(async move {
            greeted.notified().await;
            std::time::Instant::now()
        });
        let v = app.verify("support").await.unwrap();
        assert!(v.incoming.ok, "{:?}", v.incoming);
        assert_eq!(v.incoming.messages, Some(2));
        let greeted_at = greeted_at.await.unwrap();
        let answered_at = answered.lock().unwrap().expect("the token endpoint answered");
        assert!(
            greeted_at < answered_at,
            "the server greeted {:?} before the token endpoint answered",
            answered_at.saturating_duration_since(greeted_at)
        );
    }

    #[tokio::test]
    async fn no_stored_sign_in_means_no_connection_and_a_failed_refresh_does_not_wait_for_the_server() {
        // A server that accepts, counts and never greets: a probe would wait its step timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = Arc::clone(&accepted);
        let _held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                kept.push(s);
            }
        });
        let idp = crate::oauth::test_http::serve(|_, _| {
            ("400 Bad Request", r#"{"error":"invalid_grant","error_description":"revoked"}"#.to_string())
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let secrets = Arc::new(crate::secret::MemoryStore::default());
        let mut app = App::open(dir.path(), secrets.clone()).unwrap();
        app.probe_timeout = Duration::from_secs(10);
        let mut m = crate::mailbox::sample();
        m.host = "127.0.0.1".into();
        m.port = port;
        m.token_url = Some(format!("http://127.0.0.1:{idp}/token"));
        app.save(&m).await.unwrap();

        // Never signed in: the mail server hears nothing, not even a connection.
        let v = app.verify("support").await.unwrap();
        assert_eq!((v.incoming.check.as_str(), v.incoming.code.as_deref()), ("refresh", Some("not_authenticated")));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);

        // Signed in, the refresh refused: the probe connecting meanwhile is dropped at once.
        secrets.set(&m.name, SecretKind::RefreshToken, &SecretString::from("rt")).unwrap();
        let started = std::time::Instant::now();
        let v = app.verify("support").await.unwrap();
        assert_eq!((v.incoming.check.as_str(), v.incoming.code.as_deref()), ("refresh", Some("invalid_grant")));
        assert!(started.elapsed() < Duration::from_secs(5), "waited {:?} for the mail server", started.elapsed());
    }

    #[test]
    fn export_neutralises_formulas_and_imports_back() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(dir.path(), Arc::new(crate::secret::MemoryStore::default())).unwrap();
        let mut m = crate::mailbox::sample();
        m.name = "=cmd|' /C calc'!A0".into();
        app.store().save(&m).unwrap();
        let text = app.export_csv().unwrap();
        assert!(text.lines().nth(1).unwrap().starts_with("'=cmd"), "{text}");
        assert_eq!(import::parse(&text, None).unwrap().mailboxes(), vec![m]);
    }
}
