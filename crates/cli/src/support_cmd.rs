//! `doctor` (is the keyring usable, which mailboxes lost their sign-in) and `bundle` (a support
//! bundle for escalations).
//!
//! `doctor` exit status: 0 all well, 1 some mailbox lost its stored sign-in (the keyring
//! works), 3 no Secret Service is reachable, 4 the keyring is locked; 2 as everywhere for usage
//! errors.

use std::path::Path;
use std::process::ExitCode;

use mailbox_auth_core::doctor;
use mailbox_auth_core::lock::Locks;
use mailbox_auth_core::App;

use super::shown;

/// The exit status of a doctor's report (see the module docs).
pub fn doctor_exit(r: &doctor::Report) -> u8 {
    match r.code.as_deref() {
        None => 0,
        Some("keyring_unavailable") => 3,
        Some("keyring_locked") => 4,
        Some(_) => 1,
    }
}

pub async fn doctor(app: &App, home: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let report = doctor::examine(app, &Locks::new(home.join("locks"))).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", doctor_text(&report));
    }
    Ok(ExitCode::from(doctor_exit(&report)))
}

/// The report as the terminal shows it; outside words pass through [`shown`].
fn doctor_text(r: &doctor::Report) -> String {
    let s = &r.service;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut out = String::new();
    out.push_str(&format!("Secret Service reachable: {}\n", yes_no(s.reachable)));
    if let Some(b) = &s.backend {
        out.push_str(&format!("Backend: {}\n", shown(b)));
    }
    if let Some(c) = &s.collection {
        out.push_str(&format!("Default keyring: {}\n", shown(c)));
    }
    if let Some(l) = s.locked {
        out.push_str(&format!("Locked: {}\n", yes_no(l)));
    }
    if let Some(d) = &s.detail {
        out.push_str(&format!("Detail: {}\n", shown(d)));
    }
    if let Some(d) = &r.desktop {
        out.push_str(&format!("Desktop: {}\n", shown(d)));
    }
    if !r.mailboxes.is_empty() {
        out.push_str("\nMailboxes:\n");
        for m in &r.mailboxes {
            out.push_str(&format!("  {:<24} {}\n", shown(&m.name), shown(&m.label)));
        }
    }
    if r.ok {
        out.push_str(
            "\nAll well: the keyring is reachable and unlocked, and every signed-in mailbox has its sign-in.\n",
        );
        return out;
    }
    out.push_str("\nProblems:\n");
    for p in &r.problems {
        out.push_str(&format!("  {}\n    what to do: {}\n", shown(&p.message), p.fix));
    }
    out.push_str("\nHow to get a working keyring:\n");
    for f in &r.fixes {
        out.push_str(&format!("  {}:\n", f.setting));
        for step in f.steps {
            out.push_str(&format!("    - {step}\n"));
        }
    }
    out
}

pub async fn bundle(app: &App, home: &Path, names: &[String], output: &Path, json: bool) -> anyhow::Result<ExitCode> {
    use mailbox_auth_core::bundle::{self, BundleError};
    let summary = match bundle::write(app, &Locks::new(home.join("locks")), names, output).await {
        Ok(s) => s,
        // Through the caller's error path, so an unknown mailbox gets its hint and exit 2.
        Err(BundleError::App(e)) => return Err(e.into()),
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "wrote the support bundle {} ({} mailbox(es), {} files; README.txt says what is inside and what was redacted)",
            shown(&summary.path.display().to_string()),
            summary.mailboxes.len(),
            summary.files.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
