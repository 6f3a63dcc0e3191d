//! Uptime over a window of time and the list of up/down transitions, computed from a mailbox's
//! health history.
//!
//! The history keeps every change of state forever but prunes routine green checks after
//! [`crate::store::ROUTINE_RETENTION_DAYS`], so uptime is computed from *state*, not from
//! counting records: each record sets the state of its check (`imap`/`pop3`, `smtp`, `refresh`,
//! `authenticate`) from its time until that check's next record, and the mailbox is up while
//! every check it has is passing. A throttled record ([`HealthRecord::throttled`]) changes
//! nothing (the server asked to come back later; that says nothing about the mailbox), a sign-in
//! starts afresh (older records belong to the earlier authorisation, as [`crate::health::deciding`]
//! reads them), and a failed token refresh is over once any later check passed (that check got
//! a token). Time before the first record is unknown and counts neither way.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::health::{Check, HealthRecord};

/// Up or down at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum State {
    Up,
    Down,
}

/// One change of state: when, to what, and the record that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct StateChange {
    pub at: DateTime<Utc>,
    /// `None` for the first known state.
    pub from: Option<State>,
    pub to: State,
    pub check: Check,
    pub code: Option<String>,
    pub message: String,
}

/// Uptime over the last 7 and 30 days and the transitions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Uptime {
    /// Fraction of the known time in the window that the mailbox was up, 0.0–1.0; `None` when
    /// nothing is known about the window.
    pub days_7: Option<f64>,
    pub days_30: Option<f64>,
    pub transitions: Vec<StateChange>,
}

/// The state changes a history (in any order) adds up to, oldest first.
pub fn state_changes(history: &[HealthRecord]) -> Vec<StateChange> {
    let mut records: Vec<&HealthRecord> = history.iter().filter(|r| !r.throttled()).collect();
    records.sort_by_key(|r| r.at);
    let mut checks: BTreeMap<Check, bool> = BTreeMap::new();
    let mut state: Option<State> = None;
    let mut out = Vec::new();
    for r in records {
        if r.check == Check::Authenticate {
            checks.clear();
        }
        if r.ok {
            checks.remove(&Check::Refresh);
        }
        checks.insert(r.check, r.ok);
        let now = if checks.values().all(|ok| *ok) { State::Up } else { State::Down };
        if state != Some(now) {
            out.push(StateChange {
                at: r.at,
                from: state,
                to: now,
                check: r.check,
                code: r.code.clone(),
                message: r.message.clone(),
            });
            state = Some(now);
        }
    }
    out
}

/// The fraction of the known time in `[now - window, now]` during which the state was up.
pub fn uptime(changes: &[StateChange], window: Duration, now: DateTime<Utc>) -> Option<f64> {
    let start = now - window;
    let (mut up, mut known) = (Duration::zero(), Duration::zero());
    for (i, c) in changes.iter().enumerate() {
        let end = changes.get(i + 1).map_or(now, |n| n.at).min(now);
        let begin = c.at.max(start);
        if end <= begin {
            continue;
        }
        known += end - begin;
        if c.to == State::Up {
            up += end - begin;
        }
    }
    (known > Duration::zero()).then(|| up.num_milliseconds() as f64 / known.num_milliseconds() as f64)
}

/// [`Uptime`] for a history at `now`.
pub fn summarise(history: &[HealthRecord], now: DateTime<Utc>) -> Uptime {
    let changes = state_changes(history);
    Uptime {
        days_7: uptime(&changes, Duration::days(7), now),
        days_30: uptime(&changes, Duration::days(30), now),
        transitions: changes.into_iter().rev().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(check: &str, ok: bool, at: DateTime<Utc>) -> HealthRecord {
        HealthRecord {
            mailbox: "support".into(),
            at,
            check: check.parse().unwrap(),
            ok,
            code: (!ok).then(|| "connect".to_string()),
            message: if ok { "INBOX opened".into() } else { "connection refused".into() },
            hint: None,
            fix: None,
            server_words: None,
            messages: None,
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-06-30T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn nothing_known_is_no_uptime() {
        let u = summarise(&[], now());
        assert_eq!((u.days_7, u.days_30), (None, None));
        assert!(u.transitions.is_empty());
    }

    #[test]
    fn one_day_down_in_a_week_is_six_sevenths() {
        let n = now();
        let h = vec![
            rec("authenticate", true, n - Duration::days(40)),
            rec("imap", true, n - Duration::days(40)),
            rec("imap", false, n - Duration::days(3)),
            rec("imap", true, n - Duration::days(2)),
        ];
        let u = summarise(&h, n);
        assert!((u.days_7.unwrap() - 6.0 / 7.0).abs() < 1e-9, "{:?}", u.days_7);
        assert!((u.days_30.unwrap() - 29.0 / 30.0).abs() < 1e-9, "{:?}", u.days_30);
        let to: Vec<State> = u.transitions.iter().map(|t| t.to).collect();
        assert_eq!(to, vec![State::Up, State::Down, State::Up], "newest first");
        assert_eq!(u.transitions[1].message, "connection refused");
        assert_eq!(u.transitions[2].from, None);
    }

    #[test]
    fn pruned_routine_greens_do_not_change_uptime() {
        // Only the transitions survive pruning: the state between them is the same.
        let n = now();
        let full: Vec<HealthRecord> = (0..60)
            .map(|h| rec("imap", h != 30, n - Duration::hours(60 - h)))
            .chain([rec("imap", true, n - Duration::days(10))])
            .collect();
        let pruned: Vec<HealthRecord> =
            state_changes(&full).iter().map(|c| rec(c.check.as_str(), c.to == State::Up, c.at)).collect();
        assert_eq!(summarise(&full, n).days_7, summarise(&pruned, n).days_7);
        assert!(summarise(&full, n).days_7.unwrap() < 1.0);
    }

    #[test]
    fn unknown_time_before_the_first_record_does_not_count() {
        let n = now();
        let u = summarise(&[rec("imap", true, n - Duration::days(1))], n);
        assert_eq!((u.days_7, u.days_30), (Some(1.0), Some(1.0)));
    }

    #[test]
    fn throttled_records_change_nothing_and_a_failed_smtp_is_down() {
        let n = now();
        let mut throttled = rec("imap", false, n - Duration::days(2));
        throttled.code = Some("throttled".into());
        let h = vec![
            rec("imap", true, n - Duration::days(4)),
            throttled,
            rec("smtp", false, n - Duration::days(1)),
            rec("imap", true, n - Duration::hours(12)),
        ];
        let u = summarise(&h, n);
        // Up for 3 of the 4 known days: the IMAP success does not hide the SMTP failure.
        assert!((u.days_7.unwrap() - 0.75).abs() < 1e-9, "{:?}", u.days_7);
        assert_eq!(u.transitions.len(), 2);
        assert_eq!(u.transitions[0].check, Check::Smtp);
    }

    #[test]
    fn a_sign_in_starts_afresh_and_a_later_pass_ends_a_failed_refresh() {
        let n = now();
        let h = vec![
            rec("imap", false, n - Duration::days(6)),
            rec("authenticate", true, n - Duration::days(5)),
            rec("refresh", false, n - Duration::days(4)),
            rec("imap", true, n - Duration::days(3)),
        ];
        let c = state_changes(&h);
        let seq: Vec<State> = c.iter().map(|t| t.to).collect();
        assert_eq!(seq, vec![State::Down, State::Up, State::Down, State::Up]);
        let u = summarise(&h, n);
        assert!((u.days_7.unwrap() - 4.0 / 6.0).abs() < 1e-9, "{:?}", u.days_7);
    }
}
