//! End to end through the `mailbox-auth` CLI against the sandbox's real OpenID provider and
//! scripted Chromium: the browser sign-in as stricter identity providers need it — a fixed
//! loopback redirect port, and an OpenID `nonce` sent and checked.

use mailbox_auth_tests::{Cli, Sandbox};
use serde_json::Value;

const ALICE: (&str, &str) = ("alice@sandbox.test", "alice-password");

fn record(r: &mailbox_auth_tests::Run) -> Value {
    let v = r.json();
    let arr = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    assert_eq!(arr.len(), 1, "{v}");
    arr[0].clone()
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

/// The authorization URL the CLI printed for the admin.
fn printed_url(r: &mailbox_auth_tests::Run, sb: &Sandbox) -> url::Url {
    let auth = sb.var("SANDBOX_AUTH_URL");
    let at = r.stderr.find(auth).unwrap_or_else(|| panic!("no authorization URL printed: {}", r.stderr));
    let text: String = r.stderr[at..].chars().take_while(|c| !c.is_whitespace()).collect();
    url::Url::parse(&text).unwrap()
}

#[test]
fn a_mailbox_with_a_fixed_redirect_port_signs_in_through_exactly_that_port() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let port = free_port();
    let row = sb.csv_row("fixed", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX");
    cli.import_with(",redirect_port", &[format!("{row},{port}")]);

    let r = cli.authenticate(&sb, "fixed", ALICE.0, ALICE.1, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(record(&r)["ok"], true, "{r:?}");

    let url = printed_url(&r, &sb);
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["redirect_uri"], format!("http://127.0.0.1:{port}/"));
    // The scopes ask for openid, so a fresh nonce went out; the sign-in passing means the
    // id_token carried it back.
    assert!(q.get("nonce").is_some_and(|n| n.len() >= 22), "{url}");
    // The browser really came back to that port (its log keeps host:port and path only).
    let log = std::fs::read_to_string(cli.home.path().join("browser.log")).unwrap();
    assert!(log.contains(&format!("final=127.0.0.1:{port}/")), "{log}");

    // Every sign-in uses the same port, and a new nonce.
    let again = cli.authenticate(&sb, "fixed", ALICE.0, ALICE.1, &[]);
    assert_eq!(again.code, 0, "{again:?}");
    let url2 = printed_url(&again, &sb);
    let q2: std::collections::HashMap<String, String> = url2.query_pairs().into_owned().collect();
    assert_eq!(q2["redirect_uri"], q["redirect_uri"]);
    assert_ne!(q2["nonce"], q["nonce"]);
}

#[test]
fn a_taken_redirect_port_ends_red_at_once_naming_the_port() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = squatter.local_addr().unwrap().port();
    let row = sb.csv_row("taken", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX");
    cli.import_with(",redirect_port", &[format!("{row},{port}")]);

    let started = std::time::Instant::now();
    let r = cli.authenticate(&sb, "taken", ALICE.0, ALICE.1, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    let rec = record(&r);
    assert_eq!(rec["code"], "redirect_port_taken", "{rec}");
    assert!(rec["message"].as_str().unwrap().contains(&format!("127.0.0.1:{port}")), "{rec}");
    assert!(rec["hint"].as_str().unwrap().contains("redirect_port"), "{rec}");
    // No browser was needed to find out: nothing waited for the sign-in timeout.
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "{:?}", started.elapsed());
    assert!(!cli.home.path().join("browser.log").exists(), "the browser was not opened");
    assert_eq!(cli.stored_refresh_token("taken"), None);
    drop(squatter);
}
