//! End-to-end tests of the keyring doctor and the support bundle, with the real CLI against the
//! sandbox stack (oidc-provider, Dovecot) and a real gnome-keyring on a private D-Bus bus of the
//! test's own (so locking or killing it disturbs no other test).

use mailbox_auth_tests::private_keyring::PrivateKeyring;
use mailbox_auth_tests::{Cli, Run, Sandbox};
use serde_json::Value;

const BOB: (&str, &str) = ("bob@sandbox.test", "bob-password");
const MISSING_LABEL: &str = "Sign-in missing — Authenticate again";

fn doctor(cli: &Cli, env: &[(&str, &str)]) -> (Run, Value) {
    let mut env = env.to_vec();
    // No desktop: the headless server's fix comes first.
    env.push(("XDG_CURRENT_DESKTOP", ""));
    let r = cli.run(&["doctor", "--json"], &env);
    let v = r.json();
    (r, v)
}

fn state_of<'a>(report: &'a Value, name: &str) -> &'a str {
    report["mailboxes"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .and_then(|m| m["state"].as_str())
        .unwrap_or_else(|| panic!("no mailbox {name} in {report:#}"))
}

#[test]
fn doctor_without_a_keyring_says_so_and_how_to_run_one() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    cli.import(&[sb.csv_row("doc-absent", BOB.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);

    // No session bus at all (a server reached over SSH).
    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!("unix:path={}", dir.path().join("no-bus").display());
    let (r, v) = doctor(&cli, &[("DBUS_SESSION_BUS_ADDRESS", nowhere.as_str())]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(v["code"], "keyring_unavailable", "{v:#}");
    assert_eq!(v["service"]["reachable"], false);
    assert!(v["service"]["detail"].as_str().unwrap().contains("D-Bus"), "{v:#}");
    assert_eq!(state_of(&v, "doc-absent"), "unchecked");
    let first = &v["fixes"][0];
    assert!(first["setting"].as_str().unwrap().starts_with("Headless"), "{v:#}");
    assert!(first["steps"].to_string().contains("gnome-keyring-daemon --unlock"), "{v:#}");
    let fixes: Vec<&str> = v["fixes"].as_array().unwrap().iter().map(|f| f["setting"].as_str().unwrap()).collect();
    for w in ["GNOME", "KDE", "KeePassXC"] {
        assert!(fixes.iter().any(|f| f.contains(w)), "{w} in {fixes:?}");
    }
    // The same in words.
    let text = cli.run(&["doctor"], &[("DBUS_SESSION_BUS_ADDRESS", nowhere.as_str())]);
    assert_eq!(text.code, 3, "{text:?}");
    assert!(text.stdout.contains("Secret Service reachable: no"), "{}", text.stdout);
    assert!(text.stdout.contains("gnome-keyring-daemon --unlock"), "{}", text.stdout);

    // A session bus, but no keyring daemon on it (and none that the bus could start).
    let mut k = PrivateKeyring::start().unwrap_or_else(|e| panic!("private keyring: {e}"));
    k.kill_daemon();
    let (r, v) = doctor(&cli, &k.env());
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(v["code"], "keyring_unavailable", "{v:#}");
    assert!(v["service"]["detail"].as_str().unwrap().contains("org.freedesktop.secrets"), "{v:#}");
}

#[test]
fn doctor_tells_a_locked_keyring_and_lost_sign_ins_apart() {
    let sb = Sandbox::get();
    let mut k = PrivateKeyring::start().unwrap_or_else(|e| panic!("private keyring: {e}"));
    let cli = Cli::new();
    let (kept, lost, never) = ("doc-kept", "doc-lost", "doc-never");
    cli.import(&[
        sb.csv_row(kept, BOB.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX"),
        sb.csv_row(lost, BOB.0, "pop3", "SANDBOX_POP3S_PORT", "tls", "INBOX"),
        sb.csv_row(never, BOB.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX"),
    ]);
    for n in [kept, lost] {
        let r = cli.authenticate(&sb, n, BOB.0, BOB.1, &k.env());
        assert_eq!(r.code, 0, "sign-in of {n} on the private keyring: {r:?}");
    }

    // All well.
    let (r, v) = doctor(&cli, &k.env());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["service"]["reachable"], true);
    assert_eq!(v["service"]["locked"], false);
    assert!(v["service"]["backend"].as_str().unwrap_or("").starts_with("gnome-keyring"), "{v:#}");
    assert_eq!(state_of(&v, kept), "ok");
    assert_eq!(state_of(&v, never), "not_signed_in");

    // Locked through the Secret Service API.
    k.lock_login().unwrap_or_else(|e| panic!("locking the login keyring: {e}"));
    let (r, v) = doctor(&cli, &k.env());
    assert_eq!(r.code, 4, "{r:?}");
    assert_eq!(v["code"], "keyring_locked", "{v:#}");
    assert_eq!(v["service"]["locked"], true);
    assert!(v["problems"][0]["fix"].as_str().unwrap().contains("Unlock"), "{v:#}");
    assert_eq!(state_of(&v, kept), "unchecked", "a locked keyring is not taken for lost sign-ins");

    // Unlocked again (the daemon restarted with the password), then one entry deleted, as a
    // keyring reset or a move to another machine leaves it.
    k.kill_daemon();
    k.start_daemon(true).unwrap_or_else(|e| panic!("{e}"));
    assert!(k.lookup(&cli, lost).is_some(), "the sign-in survived the restart");
    assert!(k.clear(&cli, lost), "secret-tool clear");
    assert!(k.lookup(&cli, lost).is_none());
    let (r, v) = doctor(&cli, &k.env());
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(v["code"], "signin_missing", "{v:#}");
    assert_eq!(state_of(&v, lost), "signin_missing");
    assert_eq!(state_of(&v, kept), "ok");
    assert_eq!(state_of(&v, never), "not_signed_in", "never signed in is not a lost sign-in");
    assert!(v["problems"][0]["message"].as_str().unwrap().contains(lost), "{v:#}");

    // The board and a check say the same, not a generic failure.
    let list = cli.run(&["list"], &k.env());
    let line = list.stdout.lines().find(|l| l.starts_with(lost)).unwrap_or_else(|| panic!("{list:?}"));
    assert!(line.contains(MISSING_LABEL), "{line}");
    let never_line = list.stdout.lines().find(|l| l.starts_with(never)).unwrap();
    assert!(!never_line.contains(MISSING_LABEL), "{never_line}");
    let listed = cli.run(&["list", "--json"], &k.env()).json();
    let entry = listed.as_array().unwrap().iter().find(|m| m["name"] == lost).unwrap().clone();
    assert_eq!(entry["status_label"], MISSING_LABEL);
    assert_eq!(entry["status"], "failed", "{entry:#}");
    let verify = cli.run(&["verify", lost, "--json"], &k.env());
    assert_eq!(verify.code, 1, "{verify:?}");
    let rec = &verify.json()[0];
    assert_eq!(rec["code"], "signin_missing", "{rec:#}");
    assert!(rec["message"].as_str().unwrap().contains(MISSING_LABEL), "{rec:#}");
    assert!(rec["hint"].as_str().unwrap().contains("Authenticate"), "{rec:#}");
    let verify = cli.run(&["verify", never, "--json"], &k.env());
    assert_eq!(verify.json()[0]["code"], "not_authenticated");

    // Authenticating again cures it.
    let r = cli.authenticate(&sb, lost, BOB.0, BOB.1, &k.env());
    assert_eq!(r.code, 0, "{r:?}");
    let (r, v) = doctor(&cli, &k.env());
    assert_eq!(r.code, 0, "a mailbox never signed in is no problem: {v:#}");
    assert_eq!(state_of(&v, lost), "ok");
}
