//! End to end through the `mailbox-auth` CLI: hostile or mistaken input. A CSV that changes where
//! an authenticated mailbox's secrets go signs it out (nothing is sent to the new endpoint), and
//! a damaged database is named and left as it was.

use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mailbox_auth_tests::{Cli, Run, Sandbox, CSV_HEADER};
use serde_json::Value;

const ALICE: (&str, &str) = ("alice@sandbox.test", "alice-password");

/// A TCP listener on loopback that counts the connections it is offered (and drops them).
struct Trap {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Trap {
    fn start() -> Trap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the trap");
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        Trap { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn write_csv(cli: &Cli, file: &str, rows: &[String]) -> String {
    let path = cli.home.path().join(file);
    std::fs::write(&path, format!("{CSV_HEADER}\n{}\n", rows.join("\n"))).unwrap();
    path.display().to_string()
}

/// The client secret stored for a mailbox, read straight from the Secret Service.
fn stored_client_secret(cli: &Cli, name: &str) -> Option<String> {
    let out = Command::new("secret-tool")
        .args(["lookup", "service", &cli.keyring_service, "username", &format!("client_secret:{name}")])
        .output()
        .expect("run secret-tool");
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

fn set_client_secret(cli: &Cli, name: &str) {
    let mut child = cli
        .command(&["set-secret", name])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"an-app-secret-value\n").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
}

/// `verify` and `token` both end red, "not authenticated".
fn assert_signed_out(cli: &Cli, name: &str) {
    let r = cli.run(&["verify", name, "--json"], &[]);
    assert_eq!(r.code, 1, "verify must end red: {r:?}");
    let rec = r.json()[0].clone();
    assert_eq!(rec["code"], "not_authenticated", "{rec}");
    let r = cli.run(&["token", name], &[]);
    assert_eq!(r.code, 1, "token must end red: {r:?}");
    assert!(r.stdout.trim().is_empty(), "no token printed: {r:?}");
    assert!(r.stderr.contains("not authenticated"), "{r:?}");
}

/// An authenticated sandbox mailbox named `name`, with a client secret stored too; returns its
/// CSV row.
fn authenticated(sb: &Sandbox, cli: &Cli, name: &str) -> String {
    let row = sb.csv_row(name, ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX");
    cli.import(std::slice::from_ref(&row));
    let r = cli.authenticate(sb, name, ALICE.0, ALICE.1, &[]);
    assert_eq!(r.code, 0, "authenticate: {r:?}");
    set_client_secret(cli, name);
    assert!(cli.stored_refresh_token(name).is_some());
    assert!(stored_client_secret(cli, name).is_some());
    row
}

#[test]
fn reimport_with_a_new_token_url_signs_out_and_the_new_endpoint_receives_nothing() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let row = authenticated(&sb, &cli, "moved");

    // The same row again: unchanged, still signed in.
    let same = write_csv(&cli, "same.csv", std::slice::from_ref(&row));
    let r = cli.run(&["import", &same], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("moved: unchanged"), "{r:?}");
    assert!(cli.stored_refresh_token("moved").is_some(), "an unchanged row keeps the sign-in");

    let trap = Trap::start();
    let trap_url = format!("http://127.0.0.1:{}/token", trap.port);
    let token_url = sb.var("SANDBOX_TOKEN_URL");
    assert!(row.contains(&format!(",{token_url},")));
    let moved = row.replace(&format!(",{token_url},"), &format!(",{trap_url},"));
    let path = write_csv(&cli, "moved.csv", &[moved]);
    let r: Run = cli.run(&["import", &path, "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let report = r.json();
    assert_eq!(report["signed_out"], serde_json::json!(["moved"]), "{report}");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    assert_eq!(rows[0]["action"], "update", "{report}");
    assert_eq!(rows[0]["changed_fields"], serde_json::json!(["token_url"]), "{report}");
    assert_eq!(rows[0]["signs_out"], true, "{report}");

    // Both secrets are gone from the Secret Service (read with secret-tool, not our code).
    assert_eq!(cli.stored_refresh_token("moved"), None, "the refresh token must be deleted");
    assert_eq!(stored_client_secret(&cli, "moved"), None, "the client secret must be deleted");
    assert_signed_out(&cli, "moved");
    assert_eq!(trap.accepted(), 0, "the new token endpoint must receive nothing");
    let list = cli.run(&["list", "--json"], &[]).json();
    assert_eq!(list[0]["authenticated"], false, "{list}");
}

#[test]
fn reimport_with_a_new_mail_host_signs_out_and_the_new_server_receives_nothing() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let row = authenticated(&sb, &cli, "rehosted");

    let trap = Trap::start();
    let host = sb.var("SANDBOX_MAIL_HOST");
    let port = sb.port("SANDBOX_IMAPS_PORT");
    let old = format!(",{host},{port},");
    assert!(row.contains(&old), "{row}");
    // The sandbox serves on 127.0.0.1; the new host is another name for this machine, where
    // the trap listens.
    assert_ne!(host, "localhost");
    let rehosted = row.replace(&old, &format!(",localhost,{},", trap.port));
    let path = write_csv(&cli, "rehosted.csv", &[rehosted]);
    let r = cli.run(&["import", &path], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let line = r.stdout.lines().find(|l| l.contains("rehosted: updates")).unwrap_or_else(|| panic!("{r:?}"));
    assert!(line.contains("changed: host, port"), "{line}");
    assert!(line.contains("signed out"), "{line}");
    assert!(r.stdout.contains("signed out 1 mailbox(es)"), "{r:?}");

    assert_eq!(cli.stored_refresh_token("rehosted"), None);
    assert_eq!(stored_client_secret(&cli, "rehosted"), None);
    assert_signed_out(&cli, "rehosted");
    assert_eq!(trap.accepted(), 0, "the new mail server must receive nothing");
}

#[test]
fn a_damaged_database_ends_with_exit_2_naming_the_file_and_is_left_untouched() {
    let cli = Cli::new();
    let db = cli.home.path().join("mailbox-auth.sqlite3");
    let garbage: Vec<u8> = (0..16384u32).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(&db, &garbage).unwrap();
    for args in [&["list"][..], &["verify", "--all"][..]] {
        let r = cli.run(args, &[]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(!r.stderr.contains("panicked"), "{r:?}");
        assert!(r.stderr.contains(&db.display().to_string()), "names the file: {r:?}");
        assert!(r.stderr.contains("left untouched") && r.stderr.contains("move it aside"), "{r:?}");
    }
    assert_eq!(std::fs::read(&db).unwrap(), garbage, "the file must be kept as it was");
}

#[test]
fn import_refuses_a_ca_file_that_is_a_device_or_a_fifo_without_hanging() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let fifo = cli.home.path().join("ca.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let ca = sb.var("SANDBOX_CA_FILE");
    let rows: Vec<String> = [("zero", "/dev/zero"), ("fifo", fifo.to_str().unwrap())]
        .into_iter()
        .map(|(name, path)| {
            let row = sb.csv_row(name, ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX");
            assert!(row.ends_with(ca));
            format!("{}{path}", &row[..row.len() - ca.len()])
        })
        .collect();
    let path = write_csv(&cli, "ca.csv", &rows);
    let started = std::time::Instant::now();
    let r = cli.run(&["import", &path, "--json"], &[]);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "import hung");
    assert_eq!(r.code, 2, "{r:?}");
    let report: Value = r.json();
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{report}");
    assert!(errors.iter().all(|e| e["field"] == "ca_file"), "{report}");
    assert_eq!(report["imported"], serde_json::json!([]), "{report}");
    // Each refused row comes back with its line, its cells as typed and no mailbox.
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    for (row, e) in rows.iter().zip(errors) {
        assert_eq!((&row["line"], &row["action"]), (&e["line"], &Value::from("refused")), "{report}");
        assert!(row["mailbox"].is_null() && row["cells"]["name"] == row["name"], "{report}");
        assert!(row["cells"]["ca_file"].as_str().is_some_and(|p| p.starts_with('/')), "{report}");
    }
}
