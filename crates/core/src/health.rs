//! Health records and the badge they add up to.
//!
//! Every authentication and every verification leaves one record: when, which check, whether
//! it passed, what the server said and what the admin should do. The badge of a mailbox is
//! derived from its newest records, never stored.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub mailbox: String,
    pub at: DateTime<Utc>,
    /// `authenticate`, `refresh`, `imap`, `pop3`.
    pub check: String,
    pub ok: bool,
    /// Stable failure code (see [`crate::diagnose`]); `None` when ok.
    pub code: Option<String>,
    /// What happened, in words (on success e.g. "INBOX opened read-only: 3 messages").
    pub message: String,
    /// What the admin should change; `None` when ok.
    pub hint: Option<String>,
    /// The server's or provider's own words, when it said something.
    pub server_words: Option<String>,
    /// Messages seen in the folder (IMAP) or maildrop (POP3).
    pub messages: Option<u32>,
}

/// The badge of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// A verification older than this turns the badge amber.
pub const STALE_AFTER: Duration = Duration::hours(24);

/// The record that decides the badge, from a history newest first: the newest failure among
/// the newest record of each check (a failed SMTP check is not hidden by a later IMAP success),
/// else the newest record.
pub fn deciding(history: &[HealthRecord]) -> Option<&HealthRecord> {
    let newest = history.first()?;
    // Records older than the newest sign-in belong to an earlier authorisation.
    let since = history.iter().position(|r| r.check == "authenticate").map_or(history.len(), |i| i + 1);
    let mut seen = std::collections::HashSet::new();
    history[..since]
        .iter()
        .enumerate()
        .filter(|(_, r)| seen.insert(r.check.as_str()))
        // A failed token refresh is over once any newer check passed: that check got a token.
        // (A successful refresh leaves no record of its own, so nothing else would clear it.)
        .filter(|(i, r)| !(r.check == "refresh" && history[..*i].iter().any(|n| n.ok)))
        .map(|(_, r)| r)
        .find(|r| !r.ok)
        .or(Some(newest))
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
    let base = base_status(latest, has_refresh_token, now);
    match (base, secret_expiry(secret_expires, now)) {
        (_, SecretExpiry::Expired) => Status::Failed,
        (Status::Verified, SecretExpiry::Soon) => Status::NeedsAttention,
        (s, _) => s,
    }
}

fn base_status(latest: Option<&HealthRecord>, has_refresh_token: bool, now: DateTime<Utc>) -> Status {
    match latest {
        Some(r) if !r.ok => Status::Failed,
        Some(r) if r.check == "authenticate" || r.check == "refresh" => {
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
            check: check.into(),
            ok,
            code: None,
            message: String::new(),
            hint: None,
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
