//! The support bundle: one zip an admin attaches to an escalation (to Microsoft, Google, a mail
//! server's vendor), holding what the other side always asks for and nobody saved.
//!
//! Per mailbox: its settings, its recent checks and the changes between green and red, the
//! transcript of its latest failing check per service (client lines with every token and its
//! base64 replaced by `<redacted, N bytes>`, server lines verbatim, timings — recorded by the
//! probe, `probe/transcript.rs`), the identity provider's words of its latest failed sign-in or
//! refresh, the diagnosis, and the server's certificate chain, TLS version and cipher. Once: the
//! app's version, the OS, the desktop and the keyring backend. A `README.txt` says what is inside
//! and what was redacted.
//!
//! Secrets: none is ever put in. Settings hold none (secrets live in the keyring only), records
//! and transcripts are redacted where they are made. As a last line of defence every file is
//! searched, byte for byte, for the mailboxes' stored secrets (read under each mailbox's lock,
//! as every read of a stored secret is) and their base64 forms, and any hit is replaced by
//! `<redacted, N bytes>`; the README says how many were found (none is expected).
//!
//! Entries are stored uncompressed (a few small text files), the file is written `0600` beside
//! its destination and renamed into place, so a failed export leaves no half-written bundle.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::app::App;
use crate::diagnose::diagnose;
use crate::doctor;
use crate::health::{self, HealthRecord};
use crate::lock::Locks;
use crate::mailbox::Mailbox;
use crate::probe::Transcript;
use crate::secret::{self, SecretKind};

/// Checks per mailbox put in the bundle (newest first).
pub const CHECKS: usize = 50;
/// Records read to find the changes between green and red.
const TRANSITION_WINDOW: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("no mailbox was named for the support bundle")]
    NoMailbox,
    #[error(transparent)]
    App(#[from] crate::AppError),
    #[error("cannot write the support bundle {path}: {detail}")]
    Write { path: PathBuf, detail: String },
}

impl BundleError {
    pub fn code(&self) -> std::borrow::Cow<'static, str> {
        match self {
            BundleError::NoMailbox => "invalid".into(),
            BundleError::App(e) => e.code(),
            BundleError::Write { .. } => "bundle_write".into(),
        }
    }
}

/// What a written bundle holds.
#[derive(Debug, Clone, Serialize)]
pub struct BundleSummary {
    pub path: PathBuf,
    pub mailboxes: Vec<String>,
    /// Every file in the zip, in order.
    pub files: Vec<String>,
    /// Stored secrets found (and replaced) by the final search; 0 is expected.
    pub scrubbed: usize,
}

/// A change of a check between green and red.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub at: DateTime<Utc>,
    pub check: crate::health::Check,
    /// `failed → ok`, `ok → failed`, or `→ failed`/`→ ok` for the first record of a check.
    pub change: String,
    pub code: Option<String>,
}

/// The changes between green and red in a history (newest first in, oldest first out), per
/// check; throttled records are no verdict and are skipped.
pub fn transitions(history: &[HealthRecord]) -> Vec<Transition> {
    let mut last: std::collections::HashMap<crate::health::Check, bool> = Default::default();
    let mut out = Vec::new();
    for r in history.iter().rev().filter(|r| !r.throttled()) {
        let word = |ok: bool| if ok { "ok" } else { "failed" };
        let change = match last.insert(r.check, r.ok) {
            Some(prev) if prev == r.ok => continue,
            Some(prev) => format!("{} → {}", word(prev), word(r.ok)),
            None => format!("→ {}", word(r.ok)),
        };
        out.push(Transition { at: r.at, check: r.check, change, code: r.code.clone() });
    }
    out
}

/// A zip entry's folder for a mailbox: its position and its name with anything but letters,
/// digits, `.`, `_`, `-`, `@` made `_` (names may hold slashes and any character).
fn folder(i: usize, name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-@".contains(c) { c } else { '_' }).collect();
    format!("mailboxes/{:02}-{}", i + 1, safe.trim_start_matches('.'))
}

/// Facts about this installation, written once.
#[derive(Debug, Clone, Serialize)]
struct System {
    app: &'static str,
    version: &'static str,
    made_at: DateTime<Utc>,
    os: String,
    arch: &'static str,
    desktop: Option<String>,
    keyring: doctor::ServiceState,
}

fn os_name() -> String {
    let pretty = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string()));
    match pretty {
        Some(p) => format!("{} ({p})", std::env::consts::OS),
        None => std::env::consts::OS.to_string(),
    }
}

/// The files of one mailbox, as `(path in the zip, text)`.
fn mailbox_files(
    app: &App,
    dir: &str,
    m: &Mailbox,
    transcripts: &[(String, DateTime<Utc>, Transcript)],
) -> Result<Vec<(String, String)>, BundleError> {
    let json = |v: &dyn erased::Json| v.pretty();
    let mut files = Vec::new();
    let recent = app.store().history(&m.name, TRANSITION_WINDOW).map_err(crate::AppError::from)?;
    files.push((format!("{dir}/settings.json"), json(m)));
    let checks: Vec<&HealthRecord> = recent.iter().take(CHECKS).collect();
    files.push((format!("{dir}/checks.json"), json(&checks)));
    files.push((format!("{dir}/transitions.json"), json(&transitions(&recent))));

    // The diagnosis: the record that decides the badge, with the catalogue's cause and fix.
    let mut d = String::new();
    match health::deciding(&recent) {
        None => d.push_str("No check has been recorded for this mailbox yet.\n"),
        Some(r) => {
            d.push_str(&format!(
                "Deciding check: {} at {} — {}\n",
                r.check,
                r.at.to_rfc3339(),
                if r.ok { "ok" } else { "failed" }
            ));
            d.push_str(&format!("Message: {}\n", r.message));
            if let Some(code) = &r.code {
                let dg = diagnose(code, r.server_words.as_deref());
                d.push_str(&format!("Code: {code}\nCause: {}\nFix: {}\n", dg.cause, dg.fix));
            }
            if let Some(w) = &r.server_words {
                d.push_str(&format!("The server said: {w}\n"));
            }
        }
    }
    if doctor::signin_recorded(app.store(), m) {
        if let Some(s) = app.store().signin(&m.name).map_err(crate::AppError::from)? {
            d.push_str(&format!("Signed in on: {}\n", s.issued_at.to_rfc3339()));
        }
    }
    files.push((format!("{dir}/diagnosis.txt"), d));

    // The identity provider's words: the newest failed sign-in or refresh.
    let idp = recent.iter().find(|r| !r.ok && r.check.is_signin());
    let idp_text = match idp {
        None => "No sign-in or refresh of this mailbox failed in the recorded history.\n".to_string(),
        Some(r) => format!(
            "{} failed at {}\nCode: {}\nThe identity provider said: {}\nMessage: {}\n",
            r.check,
            r.at.to_rfc3339(),
            r.code.as_deref().unwrap_or("-"),
            r.server_words.as_deref().unwrap_or("(nothing: no OAuth error in its answer)"),
            r.message
        ),
    };
    files.push((format!("{dir}/identity-provider-error.txt"), idp_text));

    // Transcripts of the latest failing check per service, and the TLS facts from them.
    let mut tls = String::new();
    for (check, at, t) in transcripts {
        files.push((
            format!("{dir}/transcript-{check}.txt"),
            format!("Latest failing {check} check, at {}\n\n{}", at.to_rfc3339(), t.render()),
        ));
        files.push((format!("{dir}/transcript-{check}.json"), json(t)));
        if let Some(f) = &t.tls {
            // The TLS part of the transcript alone (its lines are in the file above).
            let facts = Transcript { tls: Some(f.clone()), ..Default::default() };
            tls.push_str(&format!("{check} (latest failing check, {}):\n{}", at.to_rfc3339(), facts.render()));
        }
    }
    if transcripts.is_empty() {
        tls.push_str("No failing check with a transcript is recorded, so no TLS session is described.\n");
    }
    files.push((format!("{dir}/tls.txt"), tls));
    Ok(files)
}

/// Pretty JSON of anything serialisable, without a generic parameter at each call.
mod erased {
    pub trait Json {
        fn pretty(&self) -> String;
    }
    impl<T: serde::Serialize + ?Sized> Json for T {
        fn pretty(&self) -> String {
            serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("(cannot be written as JSON: {e})"))
        }
    }
}

const README: &str = "Mailbox Auth support bundle
===========================

Made by `mailbox-auth bundle` or \"Export support bundle…\" in the window, to attach to an
escalation. Everything here is text.

system.json                       once: the app's version, the OS, the desktop, and the keyring
                                  (Secret Service backend, reachable, locked).
mailboxes/NN-NAME/settings.json   the mailbox's settings as stored (servers, ports, provider,
                                  client id, scopes, endpoints). No secret is part of them.
  checks.json                     the last checks, newest first: time, check (authenticate,
                                  refresh, imap, pop3, smtp), ok, code, message, the server's or
                                  identity provider's words, what to do.
  transitions.json                every change between green and red, per check, oldest first.
  diagnosis.txt                   the check that decides the badge, its cause and fix.
  identity-provider-error.txt     the identity provider's words of the latest failed sign-in or
                                  refresh (its OAuth error and error_description).
  transcript-CHECK.txt / .json    the protocol transcript of the latest failing imap / pop3 /
                                  smtp check: C: lines the client sent, S: lines the server sent
                                  (verbatim), * notes (connected, TLS), with milliseconds since
                                  the start; then the TLS version, cipher and certificate chain.
  tls.txt                         the server's certificate chain (subject, issuer, validity,
                                  names, SHA-256), TLS version and cipher, from those transcripts.

What was redacted
-----------------
- Refresh tokens, access tokens and client secrets are not in this bundle: they live in the OS
  keyring (refresh tokens, client secrets) or in memory only (access tokens).
- In transcripts, the client's SASL lines (AUTHENTICATE / AUTH with XOAUTH2 or OAUTHBEARER) keep
  their command and mechanism; the token, its base64 and the SASL response are replaced by
  `<redacted, N bytes>` (N is the length of what was removed).
- A server that echoes the token has it replaced by `[token redacted]` in its words.
- Finally every file was searched for the mailboxes' stored secrets and their base64; what
  was found is replaced by `<redacted, N bytes>`. Found here: ";

/// Writes the support bundle of `names` to `out` (a zip). Every mailbox is looked up first, so
/// an unknown name writes nothing.
pub async fn write(app: &App, locks: &Locks, names: &[String], out: &Path) -> Result<BundleSummary, BundleError> {
    let mut seen = std::collections::HashSet::new();
    let names: Vec<&String> = names.iter().filter(|n| seen.insert(n.as_str())).collect();
    if names.is_empty() {
        return Err(BundleError::NoMailbox);
    }
    let mailboxes: Vec<Mailbox> = names.iter().map(|n| app.get(n)).collect::<Result<_, _>>()?;

    let service = doctor::service_state().await;
    let system = System {
        app: "Mailbox Auth",
        version: env!("CARGO_PKG_VERSION"),
        made_at: Utc::now(),
        os: os_name(),
        arch: std::env::consts::ARCH,
        desktop: doctor::desktop(),
        keyring: service.clone(),
    };
    let mut files: Vec<(String, String)> = vec![("system.json".into(), erased::Json::pretty(&system))];
    for (i, m) in mailboxes.iter().enumerate() {
        let transcripts = app.store().failing_transcripts(&m.name).map_err(crate::AppError::from)?;
        files.extend(mailbox_files(app, &folder(i, &m.name), m, &transcripts)?);
    }

    // The last line of defence (see the module docs).
    let (secrets, all_read) = stored_secrets(app, locks, &mailboxes).await;
    let mut scrubbed = 0;
    for (_, text) in &mut files {
        scrubbed += scrub(text, &secrets);
    }
    let mut readme = format!("{README}{scrubbed}.\n");
    if !all_read {
        readme.push_str("  (Some stored secrets could not be read from the keyring, so they were not searched for.)\n");
    }
    files.insert(0, ("README.txt".into(), readme));

    write_zip(out, &files)?;
    Ok(BundleSummary {
        path: out.to_path_buf(),
        mailboxes: mailboxes.into_iter().map(|m| m.name).collect(),
        files: files.into_iter().map(|(p, _)| p).collect(),
        scrubbed,
    })
}

/// The mailboxes' stored secrets and their base64 forms, each read under its mailbox's lock,
/// and whether every one could be read. A secret that cannot be read is skipped (the bundle is
/// still written; the README says so).
async fn stored_secrets(app: &App, locks: &Locks, mailboxes: &[Mailbox]) -> (Vec<SecretString>, bool) {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let locks = locks.clone().with_wait(doctor::LOCK_WAIT);
    let mut out = Vec::new();
    let mut all_read = true;
    for m in mailboxes {
        let Ok(_held) = locks.acquire(&m.name).await else {
            all_read = false;
            continue;
        };
        for kind in [SecretKind::RefreshToken, SecretKind::ClientSecret] {
            match secret::get(app.secret_store(), &m.name, kind).await {
                Ok(Some(v)) => {
                    let raw = v.expose_secret();
                    for e in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                        out.push(SecretString::from(e.encode(raw)));
                    }
                    out.push(v);
                }
                Ok(None) => {}
                Err(_) => all_read = false,
            }
        }
    }
    // Longest first, so a base64 form is replaced whole before any shorter value inside it.
    out.sort_by_key(|s| std::cmp::Reverse(s.expose_secret().len()));
    (out, all_read)
}

/// Replaces every occurrence of each secret (at least 8 bytes: shorter values would match
/// ordinary text) by `<redacted, N bytes>`; returns how many were replaced.
fn scrub(text: &mut String, secrets: &[SecretString]) -> usize {
    let mut n = 0;
    for s in secrets {
        let v = s.expose_secret();
        if v.len() < 8 {
            continue;
        }
        let hits = text.matches(v).count();
        if hits > 0 {
            n += hits;
            *text = text.replace(v, &crate::probe::transcript::redacted(v.len()));
        }
    }
    n
}

fn write_zip(out: &Path, files: &[(String, String)]) -> Result<(), BundleError> {
    let err = |detail: String| BundleError::Write { path: out.to_path_buf(), detail };
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Mailbox addresses and server replies are nobody else's (as the data directory).
        opts.mode(0o600);
    }
    let file = opts.open(&partial).map_err(|e| err(e.to_string()))?;
    let result = (|| -> Result<(), String> {
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(0o600);
        for (name, text) in files {
            zip.start_file(name.as_str(), options).map_err(|e| e.to_string())?;
            zip.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        }
        let mut f = zip.finish().map_err(|e| e.to_string())?;
        f.flush().map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())
    })();
    match result.and_then(|()| std::fs::rename(&partial, out).map_err(|e| e.to_string())) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(err(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{MemoryStore, SecretStore};
    use std::io::Read;
    use std::sync::Arc;

    fn rec(check: &str, ok: bool, secs: i64, code: Option<&str>) -> HealthRecord {
        HealthRecord {
            mailbox: "m".into(),
            at: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
            check: check.parse().unwrap(),
            ok,
            code: code.map(str::to_string),
            message: String::new(),
            hint: None,
            fix: None,
            server_words: None,
            messages: None,
        }
    }

    #[test]
    fn transitions_are_changes_per_check_oldest_first() {
        // Newest first, as the store returns them.
        let h = vec![
            rec("imap", true, 50, None),
            rec("imap", false, 40, Some("throttled")),
            rec("smtp", false, 30, Some("auth_rejected")),
            rec("imap", false, 20, Some("auth_rejected")),
            rec("imap", false, 15, Some("auth_rejected")),
            rec("imap", true, 10, None),
        ];
        let t: Vec<(String, String)> = transitions(&h).into_iter().map(|t| (t.check.to_string(), t.change)).collect();
        let want = [("imap", "→ ok"), ("imap", "ok → failed"), ("smtp", "→ failed"), ("imap", "failed → ok")];
        assert_eq!(t, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }

    #[test]
    fn folder_names_are_safe_and_distinct() {
        assert_eq!(folder(0, "support"), "mailboxes/01-support");
        assert_eq!(folder(1, "../a/b c"), "mailboxes/02-_a_b_c");
        assert_eq!(folder(2, "../a/b c"), "mailboxes/03-_a_b_c");
        assert_eq!(folder(3, "..").matches('/').count(), 1);
    }

    #[test]
    fn scrub_replaces_long_values_whole_and_counts_them() {
        let mut t = "a rt-SECRET-value and its b64 cnQtU0VDUkVULXZhbHVl".to_string();
        let s = vec![
            SecretString::from("cnQtU0VDUkVULXZhbHVl"),
            SecretString::from("rt-SECRET-value"),
            SecretString::from("short"),
        ];
        assert_eq!(scrub(&mut t, &s), 2);
        assert!(!t.contains("SECRET") && !t.contains("cnQtU0VD"), "{t}");
        assert!(t.contains("<redacted, 15 bytes>"), "{t}");
    }

    #[tokio::test]
    async fn a_bundle_has_its_readme_and_files_and_no_stored_secret() {
        let dir = tempfile::tempdir().unwrap();
        let mem = MemoryStore::default();
        let app = App::open(dir.path(), Arc::new(mem.clone())).unwrap();
        let m = crate::mailbox::sample();
        app.store().save(&m).unwrap();
        mem.set(&m.name, SecretKind::RefreshToken, &SecretString::from("rt-STORED-SECRET-123")).unwrap();
        // A record that (wrongly) carries the stored secret: the final search must catch it.
        let mut r = rec("refresh", false, 0, Some("invalid_grant"));
        r.mailbox = m.name.clone();
        r.server_words = Some("invalid_grant: grant request is invalid rt-STORED-SECRET-123".into());
        app.store().record(&r).unwrap();
        let out = dir.path().join("bundle.zip");
        let locks = Locks::new(dir.path().join("locks"));
        let s = write(&app, &locks, &[m.name.clone(), m.name.clone()], &out).await.unwrap();
        assert_eq!(s.mailboxes, vec![m.name.clone()]);
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
        let mut all = String::new();
        for i in 0..zip.len() {
            let mut f = zip.by_index(i).unwrap();
            let mut text = String::new();
            f.read_to_string(&mut text).unwrap();
            all.push_str(&text);
        }
        for f in [
            "README.txt",
            "system.json",
            "mailboxes/01-support/settings.json",
            "mailboxes/01-support/identity-provider-error.txt",
        ] {
            assert!(s.files.iter().any(|x| x == f), "{f} in {:?}", s.files);
        }
        assert!(all.contains("grant request is invalid"), "the IdP's words are kept");
        assert!(!all.contains("rt-STORED-SECRET-123"), "the final search replaced the stored secret");
        assert!(s.scrubbed >= 1, "{s:?}");
        assert!(all.contains(&format!("Found here: {}.", s.scrubbed)), "the README counts it");
        assert!(!out.with_extension("zip.partial").exists());
        assert!(matches!(
            write(&app, &locks, &["nope".into()], &dir.path().join("x.zip")).await,
            Err(BundleError::App(_))
        ));
        assert!(!dir.path().join("x.zip").exists(), "an unknown mailbox writes nothing");
    }
}
