//! `mailbox-auth`: the Mailbox Auth core, headless — for automation, bulk work and as a token
//! helper for mail fetchers.
//!
//! Exit status: 0 when every checked mailbox is green, 1 when any is red, 2 on usage or input
//! errors (unknown mailbox, bad CSV, invalid field). `check` follows the Nagios plugin convention
//! instead: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mailbox_auth_core::health::HealthRecord;
use mailbox_auth_core::mailbox::Flow;
use mailbox_auth_core::oauth::auth_code::AuthStep;
use mailbox_auth_core::secret::KeyringStore;
use mailbox_auth_core::{App, AppError};
use secrecy::ExposeSecret;

mod handover_cmd;
mod monitor_cmd;
mod support_cmd;

#[derive(Parser, Debug)]
#[command(
    name = "mailbox-auth",
    version,
    about = "Authorise IMAP/POP3 mailboxes with OAuth2 and prove they can be read"
)]
struct Cli {
    /// Data directory (mailboxes and health history; never secrets).
    #[arg(long, env = "MAILBOX_AUTH_HOME", global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Import or update mailboxes from a CSV file (header row with field names), or take over
    /// an encrypted hand-over file made by `export --with-secrets` (asks its passphrase).
    Import {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List mailboxes with their health.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Sign in through the browser, store the refresh token in the OS keyring, then verify.
    Authenticate {
        name: String,
        /// Seconds to wait for the sign-in to finish in the browser.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// How to sign in: `browser` (authorization code + PKCE, the default), `device` (a code
        /// to type in on any device), `client-credentials` (app-only, with the stored certificate or client
        /// secret). Saved as the mailbox's flow.
        #[arg(long, value_parser = parse_flow)]
        flow: Option<Flow>,
        #[arg(long)]
        json: bool,
    },
    /// Store the app registration's client secret in the OS keyring, read from standard input
    /// (never from the command line, where other users could see it).
    SetSecret {
        name: String,
        /// The secret's expiry date (YYYY-MM-DD): amber 30 days before, red after.
        #[arg(long, value_parser = parse_expires)]
        expires: Option<chrono::NaiveDate>,
    },
    /// Print the Exchange Online PowerShell that grants an app-only registration access to
    /// the given mailboxes (New-ServicePrincipal, Add-MailboxPermission, Set-CASMailbox).
    ExchangeScript {
        #[arg(required = true)]
        names: Vec<String>,
        /// The Enterprise application's Object ID (Entra → Enterprise applications → your app).
        #[arg(long)]
        object_id: String,
        /// Display name for the service principal in Exchange.
        #[arg(long, default_value = "Mailbox Auth")]
        display_name: String,
    },
    /// Really log in to mailboxes (IMAP AUTHENTICATE + EXAMINE, POP3 AUTH + STAT).
    Verify {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        names: Vec<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
        /// Mailboxes checked at once.
        #[arg(long, default_value_t = mailbox_auth_core::app::VERIFY_CONCURRENCY, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        concurrency: usize,
        /// Connections open at once for one account (login) on one server: mailboxes that
        /// sign in as the same delegate account share its connection limit at the server.
        #[arg(long, default_value_t = mailbox_auth_core::app::VERIFY_PER_ACCOUNT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        per_account: usize,
        /// Seconds allowed for each network step; each check as a whole gets three times this.
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
    /// Send a test message through the mailbox's outbound SMTP server, signed in with its token.
    SendTest {
        name: String,
        /// The recipient of the test message.
        #[arg(long)]
        to: String,
        #[arg(long)]
        json: bool,
    },
    /// Print a fresh access token (for mail fetchers).
    Token { name: String },
    /// Delete the mailbox's secrets from the OS keyring.
    Forget { name: String },
    /// Remove the mailbox, its history and its secrets.
    Remove { name: String },
    /// Re-check every mailbox now and then every interval; log and alert each change of badge
    /// (green→red, red→green, →amber) once.
    Monitor(monitor_cmd::MonitorArgs),
    /// Nagios/Icinga plugin: check the named mailboxes and print one status line with
    /// performance data; exit 0 OK, 1 WARNING (amber), 2 CRITICAL (red), 3 UNKNOWN.
    Check {
        #[arg(required = true)]
        names: Vec<String>,
        /// Seconds allowed for each network step.
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
    /// Where the monitor's alerts go.
    Alerts {
        #[command(subcommand)]
        action: monitor_cmd::AlertsAction,
    },
    /// Write every mailbox as CSV (no secrets), or with --with-secrets an encrypted hand-over
    /// file (mailboxes, history, sign-ins and secrets; age, passphrase asked on the terminal or
    /// read from standard input) that `import` takes on another machine.
    Export {
        #[arg(long)]
        with_secrets: bool,
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Certificate credentials for app-only access (private_key_jwt).
    AppCert {
        #[command(subcommand)]
        action: handover_cmd::AppCertAction,
    },
    /// Write a support bundle (a zip) for the named mailboxes: settings, recent checks, the
    /// latest failing transcript, the identity provider's error, the diagnosis, TLS facts; no
    /// secret. README.txt inside says what is there and what was redacted.
    Bundle {
        #[arg(required = true)]
        names: Vec<String>,
        /// Where to write the zip.
        #[arg(short = 'o', long = "output", value_name = "FILE.zip")]
        output: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check the OS keyring: reachable, locked, which backend, and which mailboxes lost their
    /// stored sign-in; with the fix. Exit 0 all well, 1 sign-in missing, 3 no keyring, 4 locked.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Show the mailbox's check history, newest first.
    History {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

// One thread: the CLI's work is waiting on the network and the keyring (whose blocking calls go
// to tokio's blocking pool all the same). Measured side by side (release, 200 mailboxes, bulk
// verify): a multi-thread runtime spent about 10 % more CPU per mailbox on waking and stealing
// tasks across threads (2.73 against 3.04 ms on loopback, 2.53 against 2.80 ms behind 40 ms),
// and was no faster.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // The core's filter: no level of MAILBOX_AUTH_LOG prints the wire (and so a token).
    mailbox_auth_core::logging::init("MAILBOX_AUTH_LOG", "warn");
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<AppError>() {
                Some(app) => {
                    let f = app.failure();
                    eprintln!("error: {}\nhint: {}", shown(&f.message), shown(&f.hint));
                }
                None => eprintln!("error: {}", shown(&format!("{e:#}"))),
            }
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = cli.home.unwrap_or_else(mailbox_auth_core::store::default_home);
    if let Command::Check { names, timeout } = cli.command {
        // The plugin convention: whatever goes wrong is UNKNOWN (3), never a usage error.
        return Ok(monitor_cmd::check(&home, names, timeout).await);
    }
    let mut app = App::open(&home, Arc::new(KeyringStore::from_env()))?;
    match cli.command {
        Command::Import { file, json } if handover_cmd::is_handover(&file) => {
            handover_cmd::import(&app, &file, json).await
        }
        Command::Import { file, json } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let report = app.import_csv(&text, file.parent()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_import(&report);
                for e in &report.errors {
                    eprintln!("{}: {}", file.display(), shown(&e.to_string()));
                }
            }
            Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
        Command::List { json } => {
            let views = app.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                for v in &views {
                    let m = &v.mailbox;
                    let mut notes = String::new();
                    if v.throttled {
                        notes.push_str("  throttled, retried later");
                    }
                    if let Some(at) = v.signin_expires_at {
                        notes.push_str(&format!("  {}", signin_countdown(at, chrono::Utc::now())));
                    }
                    println!(
                        "{:<24} {:<32} {:<5} {:<9} {:<18} {}{notes}",
                        shown(&m.name),
                        shown(&m.email),
                        m.protocol,
                        m.provider,
                        v.status_label,
                        v.last_check
                            .as_ref()
                            .map(|r| r.at.format("%Y-%m-%d %H:%M").to_string())
                            .unwrap_or_else(|| "never".into())
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Authenticate { name, timeout, flow, json } => {
            let open = |url: &url::Url| webbrowser::open(url.as_str()).map_err(|e| e.to_string());
            let progress = |step: AuthStep| match step {
                AuthStep::BrowserOpened { url, opened, error } => {
                    if opened {
                        eprintln!("Your browser was opened to sign in. If it did not open, visit:\n  {url}");
                    } else {
                        eprintln!(
                            "Could not open a browser ({}). Open this address to sign in:\n  {url}",
                            error.unwrap_or_default()
                        );
                    }
                }
                AuthStep::WaitingForSignIn => eprintln!("Waiting for the sign-in to finish (up to {timeout} s)…"),
                AuthStep::DeviceCode { user_code, verification_uri, verification_uri_complete, expires_in } => {
                    eprintln!(
                        "On any device, open {verification_uri} and enter the code {user_code} (valid {expires_in} s)."
                    );
                    if let Some(u) = verification_uri_complete {
                        eprintln!("Or open this address, which carries the code:\n  {u}");
                    }
                }
                AuthStep::Exchanging => eprintln!("Signed in; exchanging the code for tokens…"),
                AuthStep::Verifying => eprintln!("Logging in to the mail server…"),
            };
            let rec = app.authenticate(&name, flow, Duration::from_secs(timeout), &open, &progress).await?;
            report(&[rec], json)
        }
        Command::Verify { names, all, json, concurrency, per_account, timeout } => {
            app.probe_timeout = Duration::from_secs(timeout);
            let names = if all { app.names()? } else { names };
            for n in &names {
                app.get(n)?;
            }
            let done = |r: &HealthRecord| {
                if !json {
                    let word = match (r.ok, r.throttled()) {
                        (true, _) => "checked  ",
                        (false, true) => "throttled",
                        (false, false) => "failed   ",
                    };
                    eprintln!("{word} {}", shown(&r.mailbox));
                }
            };
            // Each mailbox's incoming server, and its outbound server when it has one.
            let recs = app.verify_many_capped(&names, concurrency, per_account, &done).await?;
            if json {
                // Each record with its mailbox's sign-in countdown.
                let mut out = Vec::with_capacity(recs.len());
                for r in &recs {
                    let mut v = serde_json::to_value(r)?;
                    // From the data store only: a keyring that failed the check must not fail
                    // the report of it.
                    let expires = app.get(&r.mailbox).ok().and_then(|m| app.signin_expiry(&m).ok().flatten());
                    let expires = expires.map(|e| e.at);
                    v["signin_expires_at"] = serde_json::to_value(expires)?;
                    out.push(v);
                }
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(outcome(&recs));
            }
            report(&recs, json)
        }
        Command::SendTest { name, to, json } => {
            // Checked before anything is sent: a line break in the address would start an SMTP
            // command of its own. The value is not repeated (it may hold control characters).
            if let Err(problem) = mailbox_auth_core::probe::smtp::check_recipient(&to) {
                anyhow::bail!("--to: the recipient {problem}");
            }
            send_test(&app, &name, &to, json).await
        }
        Command::Token { name } => match app.access_token(&name).await {
            Ok(t) => {
                // The one place a token is printed, on purpose: this is the token-helper command.
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", t.secret())?;
                Ok(ExitCode::SUCCESS)
            }
            // No token (refused, unreachable, not signed in): exit 1, as a red check; other
            // errors (an unknown mailbox) are input errors, exit 2.
            Err(e @ AppError::OAuth(_)) => {
                let f = e.failure();
                eprintln!("error: {}\nhint: {}", shown(&f.message), f.hint);
                Ok(ExitCode::from(1))
            }
            Err(e) => Err(e.into()),
        },
        Command::SetSecret { name, expires } => {
            // Why `Zeroizing`: the line read holds the secret; it is wiped when dropped, and the
            // value goes on only as a `SecretString` (wiped too).
            let mut line = secrecy::zeroize::Zeroizing::new(String::new());
            std::io::stdin().read_line(&mut line).context("cannot read the client secret from standard input")?;
            let value = secrecy::SecretString::from(line.trim_end_matches(['\r', '\n']));
            anyhow::ensure!(!value.expose_secret().is_empty(), "client secret: nothing was read from standard input");
            app.set_client_secret(&name, value, expires).await?;
            println!("stored the client secret of {name} in the OS keyring");
            Ok(ExitCode::SUCCESS)
        }
        Command::ExchangeScript { names, object_id, display_name } => {
            let script = app.exchange_script(&names, &object_id, &display_name)?;
            print!("{script}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Forget { name } => {
            app.forget(&name).await?;
            println!("forgot the secrets of {name}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Remove { name } => {
            app.remove(&name).await?;
            println!("removed {name}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Monitor(args) => monitor_cmd::monitor(app, &home, args).await,
        Command::Check { .. } => unreachable!("handled before the store is opened"),
        Command::Alerts { action } => monitor_cmd::alerts(app, &home, action).await,
        Command::Export { with_secrets, output, json } => handover_cmd::export(&app, with_secrets, output, json).await,
        Command::AppCert { action } => handover_cmd::app_cert(&app, action).await,
        Command::Doctor { json } => support_cmd::doctor(&app, &home, json).await,
        Command::Bundle { names, output, json } => support_cmd::bundle(&app, &home, &names, &output, json).await,
        Command::History { name, limit, json } => {
            let recs = app.history(&name, limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&recs)?);
            } else {
                for r in &recs {
                    print_record(r);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn send_test(app: &App, name: &str, to: &str, json: bool) -> anyhow::Result<ExitCode> {
    match app.verify_smtp(name, Some(to)).await? {
        Some(rec) => report(&[rec], json),
        None => anyhow::bail!("mailbox `{name}` has no outbound SMTP server (set smtp_host)"),
    }
}

/// One line per imported row (new, updated with the changed fields, unchanged), then which
/// mailboxes were signed out because where their secrets go changed.
fn print_import(report: &mailbox_auth_core::app::ImportReport) {
    use mailbox_auth_core::app::ImportAction;
    println!("imported {} mailbox(es): {}", report.imported.len(), shown(&report.imported.join(", ")));
    for r in &report.rows {
        match r.action {
            ImportAction::New => println!("  line {}: {}: new", r.line, shown(&r.name)),
            ImportAction::Unchanged => println!("  line {}: {}: unchanged", r.line, shown(&r.name)),
            ImportAction::Update => {
                let mut line = format!("  line {}: {}: updates the existing mailbox", r.line, shown(&r.name));
                if !r.changed_fields.is_empty() {
                    line.push_str(&format!("; changed: {}", r.changed_fields.join(", ")));
                }
                if r.signs_out {
                    line.push_str(&format!(
                        "; signed out (where its secrets go changed: {})",
                        r.routing_changes.join(", ")
                    ));
                }
                println!("{line}");
            }
            ImportAction::Refused => {}
        }
    }
    if !report.signed_out.is_empty() {
        println!(
            "signed out {} mailbox(es), their stored refresh token and client secret deleted: {}\n\
             sign in again with `mailbox-auth authenticate NAME` (and `set-secret` for app-only access)",
            report.signed_out.len(),
            shown(&report.signed_out.join(", "))
        );
    }
}

/// `--expires`: the core's date form (the same as the CSV column and the window's field).
fn parse_expires(s: &str) -> Result<chrono::NaiveDate, String> {
    mailbox_auth_core::mailbox::parse_date("client_secret_expires", s).map_err(|e| e.message)
}

fn parse_flow(s: &str) -> Result<Flow, String> {
    match s {
        "browser" => Ok(Flow::AuthCode),
        other => other.parse::<Flow>().map_err(|_| "expected browser, device or client-credentials".to_string()),
    }
}

/// "sign-in expires in 5 days" (whole days, rounded down; hours under a day).
fn signin_countdown(at: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    let left = at - now;
    match (left.num_days(), left.num_hours()) {
        (_, h) if h < 0 || left.num_seconds() <= 0 => "sign-in expired: sign in again".into(),
        (0, 0) => "sign-in expires within the hour".into(),
        (0, 1) => "sign-in expires in 1 hour".into(),
        (0, h) => format!("sign-in expires in {h} hours"),
        (1, _) => "sign-in expires in 1 day".into(),
        (d, _) => format!("sign-in expires in {d} days"),
    }
}

fn print_record(r: &HealthRecord) {
    print!("{}", record_text(r));
}

/// A health record as the terminal shows it; every text in it passes through [`shown`].
fn record_text(r: &HealthRecord) -> String {
    let mut out = format!(
        "{} {:<24} {:<12} {} {}\n",
        match (r.ok, r.throttled()) {
            (true, _) => "OK  ",
            (false, true) => "WAIT",
            (false, false) => "FAIL",
        },
        shown(&r.mailbox),
        shown(r.check.as_str()),
        r.at.format("%Y-%m-%d %H:%M:%S"),
        shown(&r.message)
    );
    if let Some(w) = &r.server_words {
        out.push_str(&format!("     server said: {}\n", shown(w)));
    }
    if let Some(h) = &r.hint {
        out.push_str(&format!("     what to do: {}\n", shown(h)));
    }
    out
}

/// Text from outside (a server's words, a CSV cell, an identity provider's message) made safe
/// for a terminal: control characters (C0 but tab, DEL, C1) and the bidirectional-text
/// controls are written as escapes (`\x1b`, `\u{202e}`). Why: an escape sequence in a server's
/// reply could otherwise clear the screen, rewrite what was printed above, or set the
/// terminal's title; a CR could overwrite a line; bidi controls could reorder what is read.
fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c == '\t' || !(c.is_control() || bidi) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    out
}

fn report(recs: &[HealthRecord], json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(recs)?);
    } else {
        for r in recs {
            print_record(r);
        }
    }
    Ok(outcome(recs))
}

/// The exit code of a run that produced `recs`: 1 when any check failed, else 0.
fn outcome(recs: &[HealthRecord]) -> ExitCode {
    // Throttled is not broken: exit 1 only for a real failure, so cron mails about red
    // mailboxes only; a mailbox still throttled after the retries gets a warning line.
    let throttled: Vec<&str> = recs.iter().filter(|r| r.throttled()).map(|r| r.mailbox.as_str()).collect();
    if !throttled.is_empty() {
        eprintln!(
            "warning: throttled by the server, not checked this time: {}",
            throttled.iter().map(|n| shown(n)).collect::<Vec<_>>().join(", ")
        );
    }
    if recs.iter().all(|r| r.ok || r.throttled()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signin_countdown_words() {
        let now = chrono::Utc::now();
        let d = chrono::Duration::days;
        assert_eq!(signin_countdown(now + d(5) + chrono::Duration::hours(3), now), "sign-in expires in 5 days");
        assert_eq!(signin_countdown(now + d(1), now), "sign-in expires in 1 day");
        assert_eq!(signin_countdown(now + chrono::Duration::hours(5), now), "sign-in expires in 5 hours");
        assert_eq!(signin_countdown(now - d(1), now), "sign-in expired: sign in again");
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(shown("NO \x1b[2J\x1b]0;owned\x07 bye\r\nX"), "NO \\x1b[2J\\x1b]0;owned\\x07 bye\\x0d\\x0aX");
        assert_eq!(shown("a\u{9b}31m b\u{202e}c\td é"), "a\\u{9b}31m b\\u{202e}c\td é");
        assert_eq!(shown("-ERR [AUTH] Authentication failed."), "-ERR [AUTH] Authentication failed.");
    }

    #[test]
    fn a_record_prints_server_words_escaped() {
        let r = HealthRecord {
            mailbox: "box\x1b[1A".into(),
            at: chrono::Utc::now(),
            check: mailbox_auth_core::health::Check::Imap,
            ok: false,
            code: Some("auth_rejected".into()),
            message: "refused\r".into(),
            hint: Some("sign in".into()),
            fix: None,
            server_words: Some("NO \x1b[2J cleared".into()),
            messages: None,
        };
        let text = record_text(&r);
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        assert!(text.contains("server said: NO \\x1b[2J cleared"), "{text}");
        assert!(text.contains("box\\x1b[1A"), "{text}");
    }
}
