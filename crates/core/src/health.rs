//! Health records and the badge they add up to.
//!
//! Every authentication and every verification leaves one record: when, which check, whether
//! it passed, what the server said and what the admin should do. The badge of a mailbox is
//! derived from its newest records, never stored.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::diagnose::Fix;

/// Which check a record is of. Serialised as the strings stored since the first schema
/// (`authenticate`, `refresh`, `imap`, `pop3`, `smtp`), so rows written before the type existed
/// read unchanged (the store keeps each record as JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// A sign-in (browser, device code or app-only token): a new authorisation.
    Authenticate,
    /// Getting an access token from the stored sign-in before a login.
    Refresh,
    /// Logging in to the incoming server over IMAP (RFC 9051) and opening the folder.
    Imap,
    /// Logging in to the incoming server over POP3 (RFC 1939) and reading the maildrop.
    Pop3,
    /// Authenticating to the outgoing server (SMTP submission, RFC 6409), optionally sending.
    Smtp,
    /// The stored settings could not be read (never stored: only shown).
    Store,
}

impl Check {
    pub const ALL: [Check; 6] =
        [Check::Authenticate, Check::Refresh, Check::Imap, Check::Pop3, Check::Smtp, Check::Store];

    /// The check's name in the window's history and uptime transitions.
    pub fn label(self) -> &'static str {
        match self {
            Check::Authenticate => "Sign-in",
            Check::Refresh => "Token refresh",
            Check::Imap => "IMAP login",
            Check::Pop3 => "POP3 login",
            Check::Smtp => "SMTP login",
            Check::Store => "Stored settings",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Authenticate => "authenticate",
            Check::Refresh => "refresh",
            Check::Imap => "imap",
            Check::Pop3 => "pop3",
            Check::Smtp => "smtp",
            Check::Store => "store",
        }
    }

    /// A sign-in step (no mail server was reached).
    pub fn is_signin(self) -> bool {
        matches!(self, Check::Authenticate | Check::Refresh)
    }
}

impl std::str::FromStr for Check {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.into())).map_err(|_| format!("`{s}` is not a check"))
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<crate::probe::Service> for Check {
    fn from(s: crate::probe::Service) -> Self {
        match s {
            crate::probe::Service::Imap => Check::Imap,
            crate::probe::Service::Pop3 => Check::Pop3,
            crate::probe::Service::Smtp => Check::Smtp,
        }
    }
}

/// One check's outcome. Serialised with a derived `throttled` field (see
/// [`HealthRecord::throttled`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HealthRecord {
    pub mailbox: String,
    pub at: DateTime<Utc>,
    pub check: Check,
    pub ok: bool,
    /// Stable failure code (see [`crate::diagnose`]); `None` when ok.
    pub code: Option<String>,
    /// What happened, in words (on success e.g. "INBOX opened read-only: 3 messages").
    pub message: String,
    /// What the admin should change; `None` when ok.
    pub hint: Option<String>,
    /// The action that makes that change, for a front end to offer (see [`Fix`]); `None` when
    /// ok, when the fix is outside this program, and in records stored before it existed.
    #[serde(default)]
    pub fix: Option<Fix>,
    /// The server's or provider's own words, when it said something.
    pub server_words: Option<String>,
    /// Messages seen in the folder (IMAP) or maildrop (POP3).
    pub messages: Option<u32>,
}

impl HealthRecord {
    /// The server or identity provider asked to come back later (code `throttled`): not a
    /// verdict on the mailbox. Derived from the code, so records stored before it existed read
    /// the same.
    pub fn throttled(&self) -> bool {
        !self.ok && self.code.as_deref() == Some("throttled")
    }

    /// The back-off a throttled check asked for, if it named one.
    pub fn backoff(&self) -> Option<std::time::Duration> {
        self.server_words
            .as_deref()
            .and_then(crate::diagnose::backoff)
            .or_else(|| crate::diagnose::backoff(&self.message))
    }
}

impl Serialize for HealthRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("HealthRecord", 12)?;
        st.serialize_field("mailbox", &self.mailbox)?;
        st.serialize_field("at", &self.at)?;
        st.serialize_field("check", &self.check)?;
        st.serialize_field("ok", &self.ok)?;
        st.serialize_field("code", &self.code)?;
        st.serialize_field("message", &self.message)?;
        st.serialize_field("hint", &self.hint)?;
        st.serialize_field("fix", &self.fix)?;
        st.serialize_field("server_words", &self.server_words)?;
        st.serialize_field("messages", &self.messages)?;
        st.serialize_field("throttled", &self.throttled())?;
        st.end()
    }
}

// The IPC shape of a record is what `Serialize` above writes (with `throttled`), not the struct's
// fields: keep the two in step (the desktop shell's bindings test compares them).
#[cfg(feature = "specta")]
const _: () = {
    #[derive(specta::Type)]
    #[specta(remote = crate::health::HealthRecord)]
    #[allow(dead_code)]
    struct HealthRecord {
        mailbox: String,
        at: DateTime<Utc>,
        check: Check,
        ok: bool,
        code: Option<String>,
        message: String,
        hint: Option<String>,
        fix: Option<Fix>,
        server_words: Option<String>,
        messages: Option<u32>,
        throttled: bool,
    }
};

/// The badge of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The newest verification reached the mailbox, recently.
    Verified,
    /// Verified once, but not recently enough to be sure.
    NeedsAttention,
    /// The newest check failed.
    Failed,
    /// Never authenticated (no refresh token) and never checked.
    NotAuthenticated,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Verified => "Verified",
            Status::NeedsAttention => "Needs attention",
            Status::Failed => "Failed",
            Status::NotAuthenticated => "Not authenticated",
        }
    }
}

/// The badge's words when it is amber only because a throttled check has no earlier verdict
/// (the server asked to come back later: not a failure, never red).
pub const THROTTLED_LABEL: &str = "Throttled";

/// A verification older than this turns the badge amber.
pub const STALE_AFTER: Duration = Duration::hours(24);

/// The record that decides the badge, from a history newest first: the newest failure among
/// the newest record of each check (a failed SMTP check is not hidden by a later IMAP success),
/// else the newest record. A throttled record decides nothing while an earlier verdict exists:
/// the server asked to come back later, which says nothing about the mailbox; only when
/// nothing else is known is it the deciding record (an amber "Throttled").
pub fn deciding(history: &[HealthRecord]) -> Option<&HealthRecord> {
    let newest = history.first()?;
    // Records older than the newest sign-in belong to an earlier authorisation.
    let since = history.iter().position(|r| r.check == Check::Authenticate).map_or(history.len(), |i| i + 1);
    let mut seen = std::collections::HashSet::new();
    let verdicts = &history[..since];
    verdicts
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.throttled())
        .filter(|(_, r)| seen.insert(r.check))
        // A failed token refresh is over once any newer check passed: that check got a token.
        // (A successful refresh leaves no record of its own, so nothing else would clear it.)
        .filter(|(i, r)| !(r.check == Check::Refresh && history[..*i].iter().any(|n| n.ok)))
        .map(|(_, r)| r)
        .find(|r| !r.ok)
        .or_else(|| verdicts.iter().find(|r| !r.throttled()))
        .or(Some(newest))
}

/// Whether the newest record of some check (since the newest sign-in) is throttled: that
/// check is waiting for its back-off.
pub fn throttled(history: &[HealthRecord]) -> bool {
    let since = history.iter().position(|r| r.check == Check::Authenticate).map_or(history.len(), |i| i + 1);
    let mut seen = std::collections::HashSet::new();
    history[..since].iter().filter(|r| seen.insert(r.check)).any(HealthRecord::throttled)
}

/// When a throttled check may be tried again: the latest of "when it was throttled plus the
/// back-off it asked for" over the checks whose newest record is throttled. `None` when no
/// check waits (or none named a back-off: then the next scheduled check retries).
pub fn retry_at(history: &[HealthRecord]) -> Option<DateTime<Utc>> {
    let since = history.iter().position(|r| r.check == Check::Authenticate).map_or(history.len(), |i| i + 1);
    let mut seen = std::collections::HashSet::new();
    history[..since]
        .iter()
        .filter(|r| seen.insert(r.check))
        .filter(|r| r.throttled())
        .filter_map(|r| Some(r.at + Duration::from_std(r.backoff()?).ok()?))
        .max()
}

/// A client secret this close to its expiry turns the badge amber.
pub const SECRET_WARNING: Duration = Duration::days(30);

/// What the client secret's expiry date says, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretExpiry {
    Fine,
    Soon,
    Expired,
}

pub fn secret_expiry(expires: Option<chrono::NaiveDate>, now: DateTime<Utc>) -> SecretExpiry {
    match expires {
        Some(d) if d < now.date_naive() => SecretExpiry::Expired,
        Some(d) if d - now.date_naive() <= SECRET_WARNING => SecretExpiry::Soon,
        _ => SecretExpiry::Fine,
    }
}

/// Derives the badge from the newest record (`latest`), whether credentials are stored (a
/// refresh token, or for app-only access a client secret) and the client secret's expiry.
pub fn status(
    latest: Option<&HealthRecord>,
    has_refresh_token: bool,
    secret_expires: Option<chrono::NaiveDate>,
    now: DateTime<Utc>,
) -> Status {
    status_with_signin(latest, has_refresh_token, secret_expires, None, now)
}

/// [`status`], and amber once the sign-in is inside its warning window ([`SignInExpiry`]).
pub fn status_with_signin(
    latest: Option<&HealthRecord>,
    has_refresh_token: bool,
    secret_expires: Option<chrono::NaiveDate>,
    signin: Option<&SignInExpiry>,
    now: DateTime<Utc>,
) -> Status {
    let base = base_status(latest, has_refresh_token, now);
    let signin_soon = signin.is_some_and(|s| now >= s.warn_from);
    match (base, secret_expiry(secret_expires, now)) {
        (_, SecretExpiry::Expired) => Status::Failed,
        (Status::Verified, SecretExpiry::Soon) => Status::NeedsAttention,
        (Status::Verified, _) if signin_soon => Status::NeedsAttention,
        (s, _) => s,
    }
}

/// When a mailbox's sign-in (its refresh token's grant) was issued, last used for a refresh
/// and last rotated, and the idle lifetime its token response named (`refresh_expires_in`).
/// Dates only: the tokens themselves live in the keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInDates {
    pub issued_at: DateTime<Utc>,
    pub refreshed_at: Option<DateTime<Utc>>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub idle_lifetime: Option<std::time::Duration>,
}

/// An absolute sign-in lifetime turns the badge amber this long before it ends.
pub const SIGNIN_WARNING: Duration = Duration::days(14);
/// Microsoft's refresh tokens expire after 90 days unused (identity platform, "Refresh token
/// lifetime"); Google's after 6 months unused ("Refresh token expiration").
pub const MICROSOFT_IDLE: Duration = Duration::days(90);
pub const GOOGLE_IDLE: Duration = Duration::days(183);

/// When a sign-in ends and when the badge turns amber for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInExpiry {
    pub at: DateTime<Utc>,
    pub warn_from: DateTime<Utc>,
    /// An absolute lifetime decides (`signin_max_age_days`): no refresh moves it.
    pub absolute: bool,
}

/// When the sign-in expires, if that is known:
/// - an idle lifetime (the token response's `refresh_expires_in`, else Microsoft's 90 days or
///   Google's 6 months) counts from the last use of the sign-in (a refresh, else the sign-in),
///   so every check that refreshes moves it forward: a monitored mailbox keeps it far away;
/// - an absolute lifetime (`signin_max_age_days`) counts from the sign-in, whatever happens.
///
/// The earlier of the two. Amber [`SIGNIN_WARNING`] before an absolute end; before an idle end,
/// the lesser of that and half the idle lifetime, so a provider with a 30-minute idle window
/// (Keycloak's default) is not amber all the time while a monitor keeps it in use.
pub fn signin_expiry(
    dates: Option<&SignInDates>,
    provider: crate::mailbox::ProviderKind,
    max_age_days: Option<u32>,
) -> Option<SignInExpiry> {
    use crate::mailbox::ProviderKind;
    let d = dates?;
    let idle = d.idle_lifetime.and_then(|l| Duration::from_std(l).ok()).or(match provider {
        ProviderKind::Microsoft => Some(MICROSOFT_IDLE),
        ProviderKind::Google => Some(GOOGLE_IDLE),
        _ => None,
    });
    let last_use = [Some(d.issued_at), d.refreshed_at, d.rotated_at].into_iter().flatten().max()?;
    let idle_end = idle.map(|l| {
        let at = last_use + l;
        SignInExpiry { at, warn_from: at - SIGNIN_WARNING.min(l / 2), absolute: false }
    });
    let absolute_end = max_age_days.map(|n| {
        let at = d.issued_at + Duration::days(i64::from(n));
        SignInExpiry { at, warn_from: at - SIGNIN_WARNING, absolute: true }
    });
    match (idle_end, absolute_end) {
        (Some(i), Some(a)) => Some(if a.at <= i.at { a } else { i }),
        (i, a) => i.or(a),
    }
}

fn base_status(latest: Option<&HealthRecord>, has_refresh_token: bool, now: DateTime<Utc>) -> Status {
    match latest {
        // Only when nothing earlier is known (see `deciding`): amber, never red.
        Some(r) if r.throttled() => Status::NeedsAttention,
        Some(r) if !r.ok => Status::Failed,
        Some(r) if r.check.is_signin() => {
            // Signed in, but the mailbox itself was not reached yet.
            if has_refresh_token {
                Status::NeedsAttention
            } else {
                Status::NotAuthenticated
            }
        }
        Some(r) if now - r.at > STALE_AFTER => Status::NeedsAttention,
        Some(_) => Status::Verified,
        None if has_refresh_token => Status::NeedsAttention,
        None => Status::NotAuthenticated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(check: &str, ok: bool, at: DateTime<Utc>) -> HealthRecord {
        HealthRecord {
            mailbox: "m".into(),
            at,
            check: check.parse().unwrap(),
            ok,
            code: None,
            message: String::new(),
            hint: None,
            fix: None,
            server_words: None,
            messages: None,
        }
    }

    #[test]
    fn badge_follows_newest_record() {
        let now = Utc::now();
        assert_eq!(status(None, false, None, now), Status::NotAuthenticated);
        assert_eq!(status(None, true, None, now), Status::NeedsAttention);
        assert_eq!(status(Some(&rec("imap", true, now)), true, None, now), Status::Verified);
        assert_eq!(status(Some(&rec("imap", false, now)), true, None, now), Status::Failed);
        assert_eq!(status(Some(&rec("authenticate", true, now)), true, None, now), Status::NeedsAttention);
        let old = now - Duration::hours(25);
        assert_eq!(status(Some(&rec("pop3", true, old)), true, None, now), Status::NeedsAttention);
    }

    #[test]
    fn a_failed_smtp_check_is_not_hidden_by_a_later_imap_success() {
        let now = Utc::now();
        let h = vec![rec("imap", true, now), rec("smtp", false, now), rec("imap", true, now)];
        assert_eq!(deciding(&h).map(|r| r.check.as_str()), Some("smtp"));
        let h = vec![rec("smtp", true, now), rec("imap", true, now), rec("smtp", false, now)];
        assert_eq!(deciding(&h).map(|r| (r.check.as_str(), r.ok)), Some(("smtp", true)), "fixed since");
        let h = vec![rec("imap", true, now), rec("authenticate", true, now), rec("smtp", false, now)];
        assert!(deciding(&h).unwrap().ok, "failures before a new sign-in do not count");
        assert_eq!(deciding(&[]), None);
    }

    #[test]
    fn a_failed_refresh_is_over_once_a_newer_check_passed() {
        let now = Utc::now();
        let h = vec![rec("pop3", true, now), rec("refresh", false, now), rec("pop3", true, now)];
        assert_eq!(deciding(&h).map(|r| (r.check.as_str(), r.ok)), Some(("pop3", true)), "the IdP is back");
        let h = vec![rec("refresh", false, now), rec("pop3", true, now)];
        assert_eq!(deciding(&h).map(|r| (r.check.as_str(), r.ok)), Some(("refresh", false)));
        let h = vec![rec("smtp", false, now), rec("imap", true, now), rec("refresh", false, now)];
        assert_eq!(deciding(&h).map(|r| r.check.as_str()), Some("smtp"), "other failures still count");
    }

    fn throttled_rec(check: &str, at: DateTime<Utc>) -> HealthRecord {
        HealthRecord {
            code: Some("throttled".into()),
            server_words: Some("NO [LIMIT] Maximum number of connections from user+IP exceeded".into()),
            ..rec(check, false, at)
        }
    }

    #[test]
    fn a_throttled_check_keeps_the_previous_badge() {
        let now = Utc::now();
        let t = throttled_rec("imap", now);
        assert!(t.throttled() && !rec("imap", false, now).throttled());
        let badge = |h: &[HealthRecord]| status(deciding(h), true, None, now);
        assert_eq!(badge(&[t.clone(), rec("imap", true, now)]), Status::Verified, "green stays green");
        assert_eq!(badge(&[t.clone(), rec("imap", false, now)]), Status::Failed, "red stays red");
        assert_eq!(badge(&[t.clone(), t.clone(), rec("smtp", true, now)]), Status::Verified);
        assert_eq!(badge(std::slice::from_ref(&t)), Status::NeedsAttention, "nothing earlier: amber, not red");
        assert_eq!(
            badge(&[t.clone(), rec("authenticate", true, now), rec("imap", false, now)]),
            Status::NeedsAttention
        );
        assert!(throttled(&[t.clone(), rec("imap", true, now)]));
        assert!(!throttled(&[rec("imap", true, now), t.clone()]), "retried since");
        assert_eq!(retry_at(&[t.clone(), rec("imap", true, now)]), None, "no back-off named");
        let exchange = HealthRecord {
            server_words: Some("BAD Request is throttled. Suggested Backoff Time: 90000 milliseconds".into()),
            ..t.clone()
        };
        assert_eq!(retry_at(&[exchange.clone(), rec("imap", true, now)]), Some(now + Duration::seconds(90)));
        assert_eq!(retry_at(&[rec("imap", true, now), exchange]), None, "retried since");
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["throttled"], true);
        let back: HealthRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, t, "the derived field reads back");
        let old: HealthRecord = serde_json::from_str(
            r#"{"mailbox":"m","at":"2026-01-01T00:00:00Z","check":"imap","ok":true,"code":null,"message":"","hint":null,"server_words":null,"messages":3}"#,
        )
        .unwrap();
        assert!(!old.throttled(), "rows stored before the field read");
    }

    #[test]
    fn checks_serialise_to_the_strings_stored_before_the_type() {
        for (check, word) in [
            (Check::Authenticate, "authenticate"),
            (Check::Refresh, "refresh"),
            (Check::Imap, "imap"),
            (Check::Pop3, "pop3"),
            (Check::Smtp, "smtp"),
            (Check::Store, "store"),
        ] {
            assert_eq!(serde_json::to_value(check).unwrap(), word);
            assert_eq!(word.parse::<Check>(), Ok(check));
            assert_eq!(check.to_string(), word);
        }
        assert!("IMAP4".parse::<Check>().is_err());
        let json =
            serde_json::to_value(HealthRecord { fix: Some(Fix::ExchangeScript), ..rec("pop3", false, Utc::now()) })
                .unwrap();
        assert_eq!((json["check"].as_str(), json["fix"]["kind"].as_str()), (Some("pop3"), Some("exchange_script")));
        let back: HealthRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back.fix, Some(Fix::ExchangeScript));
    }

    #[test]
    fn signin_expiry_counts_idle_from_the_last_use_and_absolute_from_the_sign_in() {
        use crate::mailbox::ProviderKind::*;
        let t0 = "2026-11-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let dates = |refreshed: Option<i64>, idle: Option<u64>| SignInDates {
            issued_at: t0,
            refreshed_at: refreshed.map(|d| t0 + Duration::days(d)),
            rotated_at: None,
            idle_lifetime: idle.map(std::time::Duration::from_secs),
        };
        assert_eq!(signin_expiry(None, Microsoft, Some(7)), None, "never signed in: unknown");
        assert_eq!(signin_expiry(Some(&dates(None, None)), Generic, None), None, "nothing known");
        let ms = signin_expiry(Some(&dates(Some(30), None)), Microsoft, None).unwrap();
        assert_eq!((ms.at, ms.absolute), (t0 + Duration::days(120), false), "90 days after the last refresh");
        assert_eq!(ms.warn_from, t0 + Duration::days(106));
        let g = signin_expiry(Some(&dates(None, None)), Google, None).unwrap();
        assert_eq!(g.at, t0 + Duration::days(183));
        let testing = signin_expiry(Some(&dates(Some(5), None)), Google, Some(7)).unwrap();
        assert_eq!((testing.at, testing.absolute), (t0 + Duration::days(7), true), "refreshing does not move it");
        assert_eq!(testing.warn_from, t0 - Duration::days(7), "amber from the start: 14 days before");
        let kc = signin_expiry(Some(&dates(None, Some(1800))), Generic, None).unwrap();
        assert_eq!((kc.at, kc.warn_from), (t0 + Duration::minutes(30), t0 + Duration::minutes(15)));
        let named = signin_expiry(Some(&dates(None, Some(86_400))), Microsoft, None).unwrap();
        assert_eq!(named.at, t0 + Duration::days(1), "the token response's refresh_expires_in wins");
    }

    #[test]
    fn signin_expiry_turns_a_green_badge_amber_only_inside_its_window() {
        let now = "2026-11-22T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let ok = rec("imap", true, now);
        let exp = |days: i64| SignInExpiry {
            at: now + Duration::days(days),
            warn_from: now + Duration::days(days) - SIGNIN_WARNING,
            absolute: true,
        };
        let badge = |e: &SignInExpiry| status_with_signin(Some(&ok), true, None, Some(e), now);
        assert_eq!(badge(&exp(15)), Status::Verified, "15 days left");
        assert_eq!(badge(&exp(14)), Status::NeedsAttention, "14 days left");
        assert_eq!(badge(&exp(10)), Status::NeedsAttention);
        assert_eq!(
            status_with_signin(Some(&rec("imap", false, now)), true, None, Some(&exp(3)), now),
            Status::Failed,
            "red stays red"
        );
        assert_eq!(status_with_signin(Some(&ok), true, None, None, now), Status::Verified);
    }

    #[test]
    fn client_secret_expiry_turns_amber_30_days_before_and_red_after() {
        let now = "2026-11-22T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let day = |s: &str| Some(s.parse::<chrono::NaiveDate>().unwrap());
        let ok = rec("imap", true, now);
        assert_eq!(status(Some(&ok), true, day("2026-12-23"), now), Status::Verified, "31 days left");
        assert_eq!(status(Some(&ok), true, day("2026-12-22"), now), Status::NeedsAttention, "30 days left");
        assert_eq!(status(Some(&ok), true, day("2026-11-22"), now), Status::NeedsAttention, "expires today");
        assert_eq!(status(Some(&ok), true, day("2026-11-21"), now), Status::Failed, "expired yesterday");
        assert_eq!(status(None, false, day("2026-11-21"), now), Status::Failed);
    }
}
