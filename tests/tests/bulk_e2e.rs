//! Bulk verify respects the server's per-account connection limit: 100 shared mailboxes opened
//! by one account (app-only access to bob's mailbox, as Exchange's delegate permission is used)
//! against a Dovecot that allows that account 10 connections at once
//! (`mail_max_userip_connections = 10`, the sandbox's `SANDBOX_MAX_USER_CONNECTIONS`).
//!
//! The test starts its own sandbox with that limit (the shared one allows 100, so no other test
//! changes) and counts connections where they are decided: at the server, from Dovecot's log of
//! logins and their ends.

use std::path::{Path, PathBuf};
use std::process::Command;

use mailbox_auth_tests::fault_proxy::{Fault, FaultProxy};
use mailbox_auth_tests::private_keyring::PrivateKeyring;
use mailbox_auth_tests::{Cli, Run, Sandbox};
use serde_json::Value;

const SERVER_LIMIT: usize = 10;
const MAILBOXES: usize = 100;
const BOB: &str = "bob@sandbox.test";

/// A sandbox of the test's own, stopped when dropped.
struct OwnSandbox {
    state: tempfile::TempDir,
}

impl OwnSandbox {
    fn start(max_user_connections: usize) -> OwnSandbox {
        let state = tempfile::tempdir().expect("tempdir");
        let out = Command::new(sandbox_dir().join("up"))
            .arg(state.path())
            .env("SANDBOX_MAX_USER_CONNECTIONS", max_user_connections.to_string())
            .output()
            .expect("run sandbox/up");
        assert!(out.status.success(), "sandbox/up failed: {}", String::from_utf8_lossy(&out.stderr));
        OwnSandbox { state }
    }

    fn sandbox(&self) -> Sandbox {
        Sandbox::from_file(self.state.path().join("env").to_str().unwrap())
    }

    fn dovecot_log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for OwnSandbox {
    fn drop(&mut self) {
        let _ = Command::new(sandbox_dir().join("down")).arg(self.state.path()).output();
    }
}

fn sandbox_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox")
}

/// The most IMAP sessions of `user` open at once, from the server's log: each `Login:` opens
/// one, each `Logged out` or `Disconnected` of that user's IMAP process ends one. Also how
/// many logins the server refused for the connection limit.
fn server_side_peak(log: &str, user: &str) -> (usize, usize) {
    let (mut open, mut peak, mut refused) = (0usize, 0usize, 0usize);
    let login = format!("imap-login: Info: Login: user=<{user}>");
    let session = format!("imap({user})");
    for line in log.lines() {
        if line.contains(&login) {
            open += 1;
            peak = peak.max(open);
        } else if line.contains(&session) && (line.contains("Logged out") || line.contains("Disconnected")) {
            open = open.saturating_sub(1);
        }
        if line.contains("Maximum number of connections from user+IP exceeded") {
            refused += 1;
        }
    }
    (peak, refused)
}

/// `MAILBOXES` app-only IMAPS mailboxes, all opening bob's mailbox as the app, through
/// `mail_port` (a relay in front of the server).
fn shared_mailboxes(cli: &Cli, sb: &Sandbox, prefix: &str, mail_port: u16) -> Vec<String> {
    let (app_id, secret) = sb.app_client();
    let names: Vec<String> = (0..MAILBOXES).map(|i| format!("{prefix}-{i:03}")).collect();
    let rows: Vec<String> = names
        .iter()
        .map(|name| {
            let row = sb
                .csv_row(name, BOB, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")
                .replace(&format!(",{},", sb.var("SANDBOX_CLIENT_ID")), &format!(",{app_id},"))
                .replace(&format!(",{},tls,", sb.port("SANDBOX_IMAPS_PORT")), &format!(",{mail_port},tls,"));
            format!("{row},client_credentials")
        })
        .collect();
    cli.import_with(",flow", &rows);
    for name in &names {
        let r = cli.run_with_input(&["set-secret", name], &[], &format!("{secret}\n"));
        assert_eq!(r.code, 0, "{r:?}");
    }
    names
}

fn verify_all(cli: &Cli, names: &[String], extra: &[&str]) -> (Run, Vec<Value>) {
    let mut args = vec!["verify", "--json", "--timeout", "30"];
    args.extend_from_slice(extra);
    args.extend(names.iter().map(String::as_str));
    let r = cli.run(&args, &[]);
    let records = r.json().as_array().cloned().unwrap_or_default();
    (r, records)
}

#[test]
fn bulk_verify_keeps_one_account_under_its_connection_cap_and_all_green() {
    let own = OwnSandbox::start(SERVER_LIMIT);
    let sb = own.sandbox();
    let cli = Cli::new();
    // For the control: the mail server 100 ms away, as Exchange Online or Gmail are, so each
    // session lasts several round trips and checks started together are open together.
    let addr = format!("{}:{}", sb.var("SANDBOX_MAIL_HOST"), sb.port("SANDBOX_IMAPS_PORT"));
    let wan = FaultProxy::start(addr.parse().unwrap());
    wan.set_fault(Fault::Wan { one_way: std::time::Duration::from_millis(50) });
    let far = shared_mailboxes(&cli, &sb, "far", wan.port());
    // The capped runs go straight to the server: there a session ends at the server as the
    // client closes it, so the server's log counts what the client holds open.
    let near = shared_mailboxes(&cli, &sb, "near", sb.port("SANDBOX_IMAPS_PORT"));

    // Without a cap that binds (as before: only the overall concurrency), more connections of
    // the one account are open at once than the cap allows: the cap below is what keeps them.
    let before = own.dovecot_log().len();
    let (_, records) = verify_all(&cli, &far, &["--concurrency", "64", "--per-account", "64"]);
    assert_eq!(records.len(), MAILBOXES);
    let (peak, refused) = server_side_peak(&own.dovecot_log()[before..], BOB);
    eprintln!("no binding cap: peak {peak} at the server, {refused} refused for the limit");
    assert!(
        peak > 8 || refused > 0,
        "64 at once never went past 8 connections of one account (peak {peak}, {refused} refused): the test proves nothing"
    );

    // The default cap (8 per account), with room for 64 overall: every mailbox green, never more
    // than the cap open at once at the server, and nothing refused for the limit.
    let before = own.dovecot_log().len();
    let (r, records) = verify_all(&cli, &near, &["--concurrency", "64"]);
    let log = own.dovecot_log()[before..].to_string();
    let (peak, refused) = server_side_peak(&log, BOB);
    eprintln!("default cap: peak {peak} at the server, {refused} refused for the limit");
    assert_eq!(records.len(), MAILBOXES, "{r:?}");
    let red: Vec<&Value> = records.iter().filter(|x| x["ok"] != Value::Bool(true)).collect();
    assert!(red.is_empty(), "not all green: {red:?}");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(peak <= mailbox_auth_core::app::VERIFY_PER_ACCOUNT, "peak of {peak} connections at the server");
    assert!(peak >= 2, "the checks did not run in parallel at all (peak {peak})");
    assert_eq!(refused, 0, "the server refused logins for its connection limit");
    let logins = log.matches(&format!("imap-login: Info: Login: user=<{BOB}>")).count();
    assert_eq!(logins, MAILBOXES, "one login per mailbox, no retries needed");

    // A cap of its own: --per-account 3 → at most 3 at once.
    let before = own.dovecot_log().len();
    let (r, records) = verify_all(&cli, &near, &["--concurrency", "64", "--per-account", "3"]);
    assert_eq!((r.code, records.len()), (0, MAILBOXES), "{r:?}");
    let (peak, _) = server_side_peak(&own.dovecot_log()[before..], BOB);
    assert!((1..=3).contains(&peak), "peak of {peak} connections with --per-account 3");
}

#[test]
fn per_account_must_be_at_least_one() {
    let cli = Cli::new();
    let r = cli.run(&["verify", "--all", "--per-account", "0"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--per-account"), "{r:?}");
}

/// Mailboxes without a sign-in date in the data store (here: tokens put in the keyring
/// directly, as sign-ins from before the dates were kept, or of a data directory that was
/// replaced) are looked up in the keyring: per kind of secret, per keyring service, and after an
/// entry was removed behind the app's back. One found without a token is remembered as signed
/// out, and not looked up again.
#[test]
fn list_shows_exactly_the_mailboxes_with_a_stored_credential() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let (app_id, _) = sb.app_client();
    let app_row = sb
        .csv_row("app-only", BOB, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")
        .replace(&format!(",{},", sb.var("SANDBOX_CLIENT_ID")), &format!(",{app_id},"));
    let rows: Vec<String> = ["signed-in", "other-kind", "never", "removed"]
        .iter()
        .map(|n| format!("{},", sb.csv_row(n, BOB, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")))
        .chain([format!("{app_row},client_credentials")])
        .collect();
    cli.import_with(",flow", &rows);
    cli.store_refresh_token("signed-in", "rt-one");
    cli.store_refresh_token("removed", "rt-two");
    // A client secret is not a sign-in for a refresh-token mailbox; app-only needs one.
    let r = cli.run_with_input(&["set-secret", "other-kind"], &[], "cs-one\n");
    assert_eq!(r.code, 0, "{r:?}");
    let r = cli.run_with_input(&["set-secret", "app-only"], &[], "cs-two\n");
    assert_eq!(r.code, 0, "{r:?}");
    // Another keyring service (another user of the app) with a token for "never".
    let other = Cli::new();
    other.store_refresh_token("never", "rt-elsewhere");
    // Removed behind the app's back.
    let out = Command::new("secret-tool")
        .args(["clear", "service", &cli.keyring_service, "username", "refresh_token:removed"])
        .output()
        .unwrap();
    assert!(out.status.success());

    let expected = vec![
        ("app-only".to_string(), true),
        ("never".to_string(), false),
        ("other-kind".to_string(), false),
        ("removed".to_string(), false),
        ("signed-in".to_string(), true),
    ];
    for round in ["first", "second"] {
        let r = cli.run(&["list", "--json"], &[]);
        assert_eq!(r.code, 0, "{round}: {r:?}");
        let listed: Vec<(String, bool)> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_string(), v["authenticated"].as_bool().unwrap()))
            .collect();
        assert_eq!(listed, expected, "{round} list");
    }
    let store = mailbox_auth_core::store::Store::open(cli.home.path()).unwrap();
    let known: Vec<bool> =
        ["never", "other-kind", "removed", "signed-in"].iter().map(|n| store.signin_known(n).unwrap()).collect();
    assert_eq!(known, [true, true, true, false], "found without a token: remembered; with one: the keyring decides");
}

/// `list` takes "signed in" from the data store's sign-in dates and reads no keyring entry per
/// mailbox (each lookup costs a Secret Service search that grows with the keyring's items):
/// with the keyring daemon gone, signed-in mailboxes are still listed as signed in. A sign-in
/// lost behind the app's back is what the doctor notices, and records, so the list says it.
#[test]
fn list_reads_no_keyring_entry_for_signed_in_mailboxes() {
    let sb = Sandbox::get();
    let mut k = PrivateKeyring::start().unwrap_or_else(|e| panic!("private keyring: {e}"));
    let cli = Cli::new();
    let names = ["list-a", "list-b", "list-c"];
    let rows: Vec<String> =
        names.iter().map(|n| sb.csv_row(n, BOB, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")).collect();
    cli.import(&rows);
    for n in names {
        let r = cli.authenticate(&sb, n, BOB, "bob-password", &k.env());
        assert_eq!(r.code, 0, "sign-in of {n}: {r:?}");
    }
    let authenticated = |r: &Run| -> Vec<(String, bool, String)> {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_string(),
                    v["authenticated"].as_bool().unwrap(),
                    v["status_label"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };

    k.kill_daemon();
    let r = cli.run(&["list", "--json"], &k.env());
    assert_eq!(r.code, 0, "listed without a keyring: {r:?}");
    let listed = authenticated(&r);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|(_, signed_in, label)| *signed_in && label == "Verified"), "{listed:?}");

    // One entry deleted behind the app's back: the doctor finds it, and the list says so.
    k.start_daemon(true).unwrap_or_else(|e| panic!("{e}"));
    assert!(k.clear(&cli, "list-b"), "secret-tool clear");
    let doctor = cli.run(&["doctor", "--json"], &k.env());
    assert_eq!(doctor.json()["code"], "signin_missing", "{doctor:?}");
    let listed = authenticated(&cli.run(&["list", "--json"], &k.env()));
    let b = listed.iter().find(|(n, _, _)| n == "list-b").unwrap();
    assert!(!b.1 && b.2 == "Sign-in missing — Authenticate again", "{listed:?}");
    assert!(listed.iter().filter(|(n, _, _)| n != "list-b").all(|(_, s, _)| *s), "{listed:?}");
}
