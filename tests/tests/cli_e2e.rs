//! End to end through the `mailbox-auth` CLI against the sandbox stack: a real OAuth2 server
//! (oidc-provider), real Dovecot IMAP/POP3 with TLS and STARTTLS, headless Chromium signing in
//! on the real login page, and gnome-keyring as the Secret Service.

use base64::Engine;
use mailbox_auth_tests::{contains, files_under, Cli, Sandbox};
use serde_json::Value;

const ALICE: (&str, &str) = ("alice@sandbox.test", "alice-password");
const BOB: (&str, &str) = ("bob@sandbox.test", "bob-password");

fn record(r: &mailbox_auth_tests::Run) -> Value {
    let v = r.json();
    let arr = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    assert_eq!(arr.len(), 1, "{v}");
    arr[0].clone()
}

fn assert_failed(r: &mailbox_auth_tests::Run, code: &str, hint_has: &str) -> Value {
    assert_eq!(r.code, 1, "expected exit 1 (red): {r:?}");
    let rec = record(r);
    assert_eq!(rec["ok"], false, "{rec}");
    assert_eq!(rec["code"], code, "{rec}");
    let hint = rec["hint"].as_str().unwrap_or_default();
    assert!(hint.contains(hint_has), "hint {hint:?} should mention {hint_has:?}: {rec}");
    rec
}

#[test]
fn four_sandbox_mailboxes_authenticate_and_verify_green_with_secrets_only_in_the_keyring() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    cli.import(&[
        sb.csv_row("alice-imaps", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX"),
        sb.csv_row("alice-imap-starttls", ALICE.0, "imap", "SANDBOX_IMAP_STARTTLS_PORT", "starttls", "INBOX"),
        sb.csv_row("bob-pop3s", BOB.0, "pop3", "SANDBOX_POP3S_PORT", "tls", "INBOX"),
        sb.csv_row("bob-pop3-stls", BOB.0, "pop3", "SANDBOX_POP3_STLS_PORT", "starttls", "INBOX"),
    ]);
    let list = cli.run(&["list", "--json"], &[]).json();
    assert_eq!(list.as_array().unwrap().len(), 4);
    assert!(list.as_array().unwrap().iter().all(|m| m["status"] == "not_authenticated"), "{list}");

    for (name, (user, pw)) in
        [("alice-imaps", ALICE), ("alice-imap-starttls", ALICE), ("bob-pop3s", BOB), ("bob-pop3-stls", BOB)]
    {
        let r = cli.authenticate(&sb, name, user, pw, &[]);
        assert_eq!(r.code, 0, "authenticate {name}: {r:?}");
        assert!(r.stderr.contains("http://127.0.0.1:"), "the sign-in URL is shown: {}", r.stderr);
        assert_eq!(record(&r)["ok"], true);
    }

    let r = cli.run(&["verify", "--all", "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let recs = r.json();
    let by_name = |n: &str| recs.as_array().unwrap().iter().find(|r| r["mailbox"] == n).unwrap().clone();
    assert_eq!(recs.as_array().unwrap().len(), 4);
    for n in ["alice-imaps", "alice-imap-starttls"] {
        let rec = by_name(n);
        assert_eq!(
            (rec["ok"].as_bool(), rec["check"].as_str(), rec["messages"].as_u64()),
            (Some(true), Some("imap"), Some(3)),
            "{rec}"
        );
    }
    for n in ["bob-pop3s", "bob-pop3-stls"] {
        let rec = by_name(n);
        assert_eq!(
            (rec["ok"].as_bool(), rec["check"].as_str(), rec["messages"].as_u64()),
            (Some(true), Some("pop3"), Some(2)),
            "{rec}"
        );
    }
    let list = cli.run(&["list", "--json"], &[]).json();
    assert!(list.as_array().unwrap().iter().all(|m| m["status"] == "verified"), "{list}");

    // The refresh tokens are in the Secret Service, and nowhere else.
    let mut secrets = Vec::new();
    for n in ["alice-imaps", "alice-imap-starttls", "bob-pop3s", "bob-pop3-stls"] {
        let rt = cli.stored_refresh_token(n).unwrap_or_else(|| panic!("no refresh token for {n} in the keyring"));
        assert!(rt.len() >= 16, "implausible refresh token for {n}");
        secrets.push(rt.clone());
        secrets.push(base64::engine::general_purpose::STANDARD.encode(&rt));
    }
    let transcript = cli.transcript.lock().unwrap().clone();
    let mut places = files_under(cli.home.path());
    places.extend(
        files_under(std::path::Path::new(sb.var("SANDBOX_STATE_DIR")))
            .into_iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "log")),
    );
    assert!(places.iter().any(|(p, _)| p.extension().is_some_and(|e| e == "sqlite3")), "store not found");
    for s in &secrets {
        assert!(!transcript.contains(s.as_str()), "a refresh token appears in the CLI output");
        for (p, bytes) in &places {
            assert!(!contains(bytes, s), "a refresh token appears in {}", p.display());
        }
    }

    // forget deletes the keyring entries; the mailbox stays, now not authenticated.
    let r = cli.run(&["forget", "bob-pop3s"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(cli.stored_refresh_token("bob-pop3s"), None);
    let r = cli.run(&["verify", "bob-pop3s", "--json"], &[]);
    assert_failed(&r, "not_authenticated", "Authenticate");
}

#[test]
fn token_command_prints_a_token_the_mail_server_accepts() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    cli.import(&[sb.csv_row("t", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);
    assert_eq!(cli.authenticate(&sb, "t", ALICE.0, ALICE.1, &[]).code, 0);
    let before = cli.stored_refresh_token("t").unwrap();
    let r = cli.run(&["token", "t"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let token = r.stdout.trim();
    assert!(token.len() > 10 && !token.contains(char::is_whitespace), "{token:?}");
    // A refresh ran (new process, empty cache), so the rotated refresh token was stored.
    let after = cli.stored_refresh_token("t").unwrap();
    assert_ne!(before, after, "the rotated refresh token must replace the old one");
    // The token works at the IdP: introspection via the mail server is what verify does.
    assert_eq!(cli.run(&["verify", "t", "--json"], &[]).code, 0);
}

#[test]
fn wrong_password_at_sign_in_ends_red_after_the_timeout() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    cli.import(&[sb.csv_row("w", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);
    let log = cli.home.path().join("browser.log");
    let r = cli.run(
        &["authenticate", "w", "--timeout", "20", "--json"],
        &[
            ("BROWSER", sb.var("SANDBOX_BROWSER")),
            ("SANDBOX_LOGIN_USER", ALICE.0),
            ("SANDBOX_LOGIN_PASSWORD", "not-the-password"),
            ("SANDBOX_BROWSER_LOG", log.to_str().unwrap()),
        ],
    );
    let rec = assert_failed(&r, "signin_timeout", "check the account and password");
    assert!(rec["message"].as_str().unwrap().contains("not completed in the browser within 20 seconds"), "{rec}");
    assert_eq!(cli.stored_refresh_token("w"), None);
}

#[test]
fn consent_denied_ends_red_with_the_providers_words() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    cli.import(&[sb.csv_row("d", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);
    let r = cli.authenticate(&sb, "d", ALICE.0, ALICE.1, &[("SANDBOX_CONSENT", "deny")]);
    let rec = assert_failed(&r, "access_denied", "accept the requested permissions");
    assert!(rec["server_words"].as_str().unwrap().starts_with("access_denied"), "{rec}");
    assert_eq!(cli.stored_refresh_token("d"), None);
}

#[test]
fn callback_with_a_wrong_state_is_ignored_and_the_real_sign_in_still_works() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    cli.import(&[sb.csv_row("s", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);
    // A "browser" that first fires a forged callback at the loopback listener, then signs in.
    let forged = cli.home.path().join("forged-status");
    let script = cli.home.path().join("forging-browser");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nredirect=$(printf '%s' \"$1\" | sed -n 's/.*redirect_uri=\\([^&]*\\).*/\\1/p' | sed 's/%3A/:/g; s/%2F/\\//g')\n\
             curl -s -o /dev/null -w '%{{http_code}}' \"${{redirect}}?code=forged-code&state=forged-state\" > {f}\n\
             exec {b} \"$1\"\n",
            f = forged.display(),
            b = sb.var("SANDBOX_BROWSER")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let r = cli.authenticate(&sb, "s", ALICE.0, ALICE.1, &[("BROWSER", script.to_str().unwrap())]);
    assert_eq!(std::fs::read_to_string(&forged).unwrap(), "400", "the forged callback is refused");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(record(&r)["ok"], true);
}

#[test]
fn no_browser_callback_times_out_red() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    cli.import(&[sb.csv_row("n", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);
    let r = cli.run(&["authenticate", "n", "--timeout", "2", "--json"], &[("BROWSER", "true")]);
    assert_failed(&r, "signin_timeout", "Authenticate again");
}

#[test]
fn token_of_user_a_for_mailbox_b_is_refused_by_the_mail_server() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    cli.import(&[sb.csv_row("b-as-a", BOB.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);
    let r = cli.authenticate(&sb, "b-as-a", ALICE.0, ALICE.1, &[]);
    let rec = assert_failed(&r, "auth_rejected", "signed-in account");
    assert!(rec["server_words"].as_str().is_some_and(|w| !w.is_empty()), "{rec}");
    // The id_token names who signed in, so the admin is told it was the wrong account.
    let msg = rec["message"].as_str().unwrap();
    assert!(msg.starts_with("Signed in as alice@sandbox.test, not bob@sandbox.test."), "{msg}");
    assert!(rec["hint"].as_str().unwrap().starts_with("Sign in again with the mailbox's own account"), "{rec}");
}

#[test]
fn rotated_away_refresh_token_ends_red_sign_in_again() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    cli.import(&[sb.csv_row("r", BOB.0, "pop3", "SANDBOX_POP3S_PORT", "tls", "INBOX")]);
    assert_eq!(cli.authenticate(&sb, "r", BOB.0, BOB.1, &[]).code, 0);
    let old = cli.stored_refresh_token("r").unwrap();
    assert_eq!(cli.run(&["verify", "r", "--json"], &[]).code, 0, "first refresh rotates the token");
    assert_ne!(cli.stored_refresh_token("r").unwrap(), old);
    // Put the rotated-away token back, as a stale copy would: the IdP must refuse it.
    cli.store_refresh_token("r", &old);
    let r = cli.run(&["verify", "r", "--json"], &[]);
    let rec = assert_failed(&r, "invalid_grant", "sign in again");
    assert_eq!(rec["check"], "refresh");
}

#[test]
fn mail_server_failures_are_red_with_a_hint() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let untrusted = sb.csv_row("untrusted", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX");
    let untrusted = untrusted.rsplit_once(',').unwrap().0.to_string() + ",";
    let no_starttls = sb
        .csv_row("no-starttls", ALICE.0, "imap", "SANDBOX_IMAP_NOTLS_PORT", "starttls", "INBOX")
        .replace(&format!(",{},", sb.var("SANDBOX_MAIL_HOST")), &format!(",{},", sb.var("SANDBOX_PLAIN_HOST")));
    let no_stls = sb
        .csv_row("no-stls", BOB.0, "pop3", "SANDBOX_POP3_NOTLS_PORT", "starttls", "INBOX")
        .replace(&format!(",{},", sb.var("SANDBOX_MAIL_HOST")), &format!(",{},", sb.var("SANDBOX_PLAIN_HOST")));
    let refused = sb
        .csv_row("refused", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")
        .replace(&format!(",{},tls,", sb.port("SANDBOX_IMAPS_PORT")), &format!(",{closed},tls,"));
    let missing = sb.csv_row("missing-folder", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "Nope");
    cli.import(&[untrusted, no_starttls, no_stls, refused, missing]);
    let cases: [(&str, (&str, &str), &str, &str); 5] = [
        ("untrusted", ALICE, "tls_untrusted", "CA certificate"),
        ("no-starttls", ALICE, "starttls_not_offered", "TLS port"),
        ("no-stls", BOB, "starttls_not_offered", "TLS port"),
        ("refused", ALICE, "connect_refused", "Check the port"),
        ("missing-folder", ALICE, "folder_missing", "folder name"),
    ];
    for (name, (user, pw), code, hint) in cases {
        let r = cli.authenticate(&sb, name, user, pw, &[]);
        let rec = assert_failed(&r, code, hint);
        assert!(!rec["message"].as_str().unwrap().is_empty(), "{rec}");
        if name == "missing-folder" {
            assert!(rec["server_words"].as_str().is_some_and(|w| w.contains("NO")), "{rec}");
        }
    }
}

#[test]
fn bad_csv_rows_are_named_and_good_rows_imported() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let path = cli.home.path().join("bad.csv");
    let good = sb.csv_row("good", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX");
    let bad = sb.csv_row("bad", "nobody", "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX");
    std::fs::write(&path, format!("{}\n{good}\n{bad}\n", mailbox_auth_tests::CSV_HEADER)).unwrap();
    let r = cli.run(&["import", path.to_str().unwrap()], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("line 3: email: must be an address"), "{}", r.stderr);
    let names: Vec<String> = cli
        .run(&["list", "--json"], &[])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["good"]);

    std::fs::write(&path, "name,email,client_id,colour\nx,x@e.com,c,red\n").unwrap();
    let r = cli.run(&["import", path.to_str().unwrap()], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("line 1: colour: unknown column"), "{}", r.stderr);

    let r = cli.run(&["verify", "no-such-mailbox"], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no mailbox named `no-such-mailbox`"), "{}", r.stderr);
}

#[test]
fn missing_secret_service_is_a_clear_error() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    cli.import(&[sb.csv_row("k", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);
    let r = cli.run(&["forget", "k"], &[("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("gnome-keyring"), "{}", r.stderr);
    // Nothing else changed: the mailbox is still there.
    assert_eq!(cli.run(&["list", "--json"], &[]).json().as_array().unwrap().len(), 1);
}

/// Starts `authenticate NAME` for a device-flow mailbox and reads the address and code the CLI
/// shows, as an admin would before typing them in on another device.
fn start_device_sign_in(cli: &Cli, name: &str) -> (std::process::Child, String, String) {
    use std::io::{BufRead, BufReader};
    let mut child = cli
        .command(&["authenticate", name, "--timeout", "90", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.trim().strip_prefix("On any device, open ") {
            let (uri, tail) = rest.split_once(" and enter the code ").unwrap();
            let code = tail.split_whitespace().next().unwrap().to_string();
            // Keep draining stderr so the CLI never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return (child, uri.to_string(), code);
        }
        line.clear();
    }
    let _ = child.kill();
    let out = child.wait_with_output();
    panic!("no device code shown for {name}: {out:?}");
}

/// Waits for a CLI started with `start_device_sign_in` (its stderr is already drained).
fn finish(child: std::process::Child) -> mailbox_auth_tests::Run {
    child.wait_with_output().unwrap().into()
}

/// A device-flow mailbox given only the IdP's issuer: the device endpoint, like the token
/// endpoint, comes from its OpenID configuration.
fn import_device_mailbox(sb: &Sandbox, cli: &Cli, name: &str, client_id: &str) {
    let row = sb
        .without_endpoints(&sb.csv_row(name, BOB.0, "pop3", "SANDBOX_POP3S_PORT", "tls", "INBOX"))
        .replace(&format!(",{},", sb.var("SANDBOX_CLIENT_ID")), &format!(",{client_id},"));
    cli.import_with(",flow,issuer", &[format!("{row},device,{}", sb.var("SANDBOX_ISSUER"))]);
}

fn second_device(sb: &Sandbox, uri: &str, code: &str, consent: &str) {
    let browser = std::process::Command::new(sb.var("SANDBOX_BROWSER"))
        .arg(uri)
        .env("SANDBOX_LOGIN_USER", BOB.0)
        .env("SANDBOX_LOGIN_PASSWORD", BOB.1)
        .env("SANDBOX_DEVICE_CODE", code)
        .env("SANDBOX_CONSENT", consent)
        .status()
        .unwrap();
    assert!(browser.success());
}

#[test]
fn device_code_flow_signs_in_from_another_browser_and_verifies() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    import_device_mailbox(&sb, &cli, "dev", sb.var("SANDBOX_CLIENT_ID"));
    let (child, uri, code) = start_device_sign_in(&cli, "dev");
    assert!(uri.starts_with(sb.var("SANDBOX_ISSUER")) && !code.is_empty(), "{uri} {code}");
    second_device(&sb, &uri, &code, "allow");
    let r = finish(child);
    assert_eq!(r.code, 0, "{r:?}");
    let recs = r.json();
    assert_eq!((recs[0]["ok"].as_bool(), recs[0]["messages"].as_u64()), (Some(true), Some(2)), "{recs}");
    assert!(cli.stored_refresh_token("dev").is_some(), "device flow stores a refresh token");
    // Later checks refresh like any other mailbox.
    assert_eq!(cli.run(&["verify", "dev", "--json"], &[]).code, 0);
}

#[test]
fn device_code_denied_on_the_other_device_ends_red_with_access_denied() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    import_device_mailbox(&sb, &cli, "dev-denied", sb.var("SANDBOX_CLIENT_ID"));
    let (child, uri, code) = start_device_sign_in(&cli, "dev-denied");
    second_device(&sb, &uri, &code, "deny");
    let r = finish(child);
    let rec = assert_failed(&r, "access_denied", "accept the requested permissions");
    assert!(rec["message"].as_str().unwrap_or_default().contains("access_denied"), "{rec}");
    assert_eq!(cli.stored_refresh_token("dev-denied"), None);
}

#[test]
fn device_code_poller_backs_off_on_slow_down_and_an_expired_code_ends_red() {
    // The sandbox's strict client: its device codes expire after 8 s and the first poll of each
    // gets `slow_down`. Nobody enters the code.
    let sb = Sandbox::get();
    let cli = Cli::new();
    let strict = sb.var("SANDBOX_STRICT_CLIENT_ID");
    import_device_mailbox(&sb, &cli, "dev-strict", strict);
    let (child, _uri, _code) = start_device_sign_in(&cli, "dev-strict");
    let r = finish(child);
    assert_failed(&r, "expired_token", "Authenticate again");

    // The IdP's log of this client's polls: after `slow_down` the next poll waited the interval
    // plus five seconds (RFC 8628 §3.5), so no `authorization_pending` poll came in between.
    let log = std::fs::read_to_string(format!("{}/idp.log", sb.var("SANDBOX_STATE_DIR"))).unwrap();
    let polls: Vec<(chrono::DateTime<chrono::FixedOffset>, &str)> = log
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (at, what, client, outcome) = (w.next()?, w.next()?, w.next()?, w.next()?);
            (what == "device.poll" && client == strict)
                .then(|| (chrono::DateTime::parse_from_rfc3339(at).unwrap(), outcome))
        })
        .collect();
    let outcomes: Vec<&str> = polls.iter().map(|p| p.1).collect();
    assert_eq!(outcomes, ["slow_down", "expired_token"], "{polls:?}");
    let gap = (polls[1].0 - polls[0].0).num_milliseconds();
    assert!(gap >= 9_000, "the poll after slow_down came {gap} ms later, not interval + 5 s");
}

#[test]
fn smtp_submission_signs_in_and_a_test_message_really_arrives() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let host = sb.var("SANDBOX_MAIL_HOST");
    let (p1, p2) = (sb.port("SANDBOX_SUBMISSION_PORT"), sb.port("SANDBOX_SUBMISSIONS_PORT"));
    const SMTP_COLUMNS: &str = ",smtp_host,smtp_port,smtp_security";
    cli.import_with(
        SMTP_COLUMNS,
        &[
            format!(
                "{},{host},{p1},starttls",
                sb.csv_row("out-starttls", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")
            ),
            format!("{},{host},{p2},tls", sb.csv_row("out-tls", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")),
        ],
    );
    for name in ["out-starttls", "out-tls"] {
        assert_eq!(cli.authenticate(&sb, name, ALICE.0, ALICE.1, &[]).code, 0, "{name}");
    }

    // verify checks the incoming server and the outbound one.
    let r = cli.run(&["verify", "out-starttls", "out-tls", "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let recs = r.json();
    let smtp: Vec<&Value> = recs.as_array().unwrap().iter().filter(|r| r["check"] == "smtp").collect();
    assert_eq!(smtp.len(), 2, "{recs}");
    assert!(smtp.iter().all(|r| r["ok"] == true && r["message"].as_str().unwrap().contains("XOAUTH2")), "{recs}");

    // A real test message goes through Dovecot's submission service to the sink.
    let to = format!("desk-{}@sandbox.test", std::process::id());
    let r = cli.run(&["send-test", "out-starttls", "--to", &to, "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let sink = std::path::Path::new(sb.var("SANDBOX_SINK_DIR"));
    let arrived: Vec<String> = files_under(sink)
        .into_iter()
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        .filter(|m| m.contains(&to))
        .collect();
    assert_eq!(arrived.len(), 1, "one test message for {to} in {}", sink.display());
    assert!(arrived[0].contains("Subject: Mailbox Auth test from out-starttls"), "{}", arrived[0]);
    assert!(arrived[0].contains(&format!("X-Sink-From: <{}>", ALICE.0)), "{}", arrived[0]);

    // A token of another user is refused by the submission server, with its words.
    cli.import_with(
        SMTP_COLUMNS,
        &[format!(
            "{},{host},{p1},starttls",
            sb.csv_row("out-wrong-user", BOB.0, "pop3", "SANDBOX_POP3S_PORT", "tls", "INBOX")
        )],
    );
    cli.authenticate(&sb, "out-wrong-user", ALICE.0, ALICE.1, &[]);
    let r = cli.run(&["send-test", "out-wrong-user", "--to", &to, "--json"], &[]);
    let rec = assert_failed(&r, "auth_rejected", "signed-in account");
    assert_eq!(rec["check"], "smtp");
    assert!(rec["server_words"].as_str().is_some_and(|w| w.starts_with("535")), "{rec}");
}

#[test]
fn the_readme_run_tour_turns_a_sandbox_mailbox_green() {
    // scripts/run = setup + build + this tour inside a private D-Bus session and sandbox; the
    // tour itself runs here against the sandbox the tests already have.
    let sb = Sandbox::get();
    let cli = Cli::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = std::process::Command::new(root.join("scripts/sandbox-demo"))
        .env("MAILBOX_AUTH_BIN", Cli::bin())
        .env("MAILBOX_AUTH_HOME", cli.home.path())
        .env("MAILBOX_AUTH_KEYRING_SERVICE", &cli.keyring_service)
        .env_remove("BROWSER")
        .env_remove("DISPLAY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let _ = sb;
    let name =
        stdout.split("Signing in to '").nth(1).and_then(|r| r.split('\'').next()).expect("the tour names its mailbox");
    let last = stdout.lines().rfind(|l| l.starts_with(&format!("{name} "))).unwrap_or_default();
    assert!(last.contains("Verified"), "the tour ends with the mailbox Verified:\n{stdout}");
    assert!(stdout.contains("INBOX opened read-only: 3 messages"), "{stdout}");
}

#[test]
fn app_only_sign_in_opens_the_granted_mailbox_and_names_the_missing_permission_for_another() {
    use std::io::Write;
    let sb = Sandbox::get();
    let cli = Cli::new();
    // The sandbox grants the app mailbox access to bob only, as Exchange's Add-MailboxPermission
    // would (sandbox/app-access).
    assert_eq!(sb.var("SANDBOX_APP_GRANTS"), BOB.0);
    let idp: Value =
        serde_json::from_slice(&std::fs::read(format!("{}/idp.json", sb.var("SANDBOX_STATE_DIR"))).unwrap()).unwrap();
    let (app_id, app_secret) = (idp["appClient"]["id"].as_str().unwrap(), idp["appClient"]["secret"].as_str().unwrap());
    let app_row = |name: &str, email: &str, protocol: &str, port_key: &str| {
        sb.csv_row(name, email, protocol, port_key, "tls", "INBOX")
            .replace(&format!(",{},", sb.var("SANDBOX_CLIENT_ID")), &format!(",{app_id},"))
    };
    let (host, submission) = (sb.var("SANDBOX_MAIL_HOST"), sb.port("SANDBOX_SUBMISSION_PORT"));
    cli.import_with(
        ",flow,smtp_host,smtp_port,smtp_security",
        &[
            format!("{},client_credentials,,,", app_row("app-alice", ALICE.0, "imap", "SANDBOX_IMAPS_PORT")),
            format!(
                "{},client_credentials,{host},{submission},starttls",
                app_row("app-bob", BOB.0, "pop3", "SANDBOX_POP3S_PORT")
            ),
        ],
    );

    // Without a stored secret: red, and the hint says what to store.
    let r = cli.run(&["authenticate", "app-bob", "--json"], &[]);
    assert_failed(&r, "no_client_secret", "Certificates & secrets");

    // The secret goes in through standard input, never the command line, and only to the keyring.
    for name in ["app-alice", "app-bob"] {
        let mut child = cli
            .command(&["set-secret", name, "--expires", "2099-12-31"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{app_secret}\n").as_bytes()).unwrap();
        assert!(child.wait_with_output().unwrap().status.success());
    }

    // Granted: the client credentials grant at the real IdP, then a real POP3 login with bob's
    // address as the SASL user, and SMTP AUTH on the submission server, both green.
    let r = cli.run(&["authenticate", "app-bob", "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let rec = record(&r);
    assert_eq!(
        (rec["ok"].as_bool(), rec["check"].as_str(), rec["messages"].as_u64()),
        (Some(true), Some("pop3"), Some(2)),
        "{rec}"
    );
    let r = cli.run(&["verify", "app-bob", "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let recs = r.json();
    assert!(
        recs.as_array().unwrap().iter().any(|r| r["check"] == "smtp" && r["ok"] == true),
        "app-only SMTP AUTH is green: {recs}"
    );
    let hist = cli.run(&["history", "app-bob", "--json"], &[]).json();
    assert!(
        hist.as_array().unwrap().iter().any(|h| h["check"] == "authenticate"
            && h["ok"] == true
            && h["message"].as_str().unwrap().starts_with("App-only token obtained")),
        "{hist}"
    );
    assert_eq!(cli.stored_refresh_token("app-bob"), None, "app-only access keeps no refresh token");

    // Not granted: the same app's token is refused for alice's mailbox with the server's words,
    // and the fix is Exchange's service principal and mailbox permission.
    let r = cli.run(&["authenticate", "app-alice", "--json"], &[]);
    let rec = assert_failed(&r, "auth_rejected", "Add-MailboxPermission");
    assert_eq!(rec["check"], "imap");
    assert!(rec["server_words"].as_str().is_some_and(|w| w.contains("AUTHENTICATIONFAILED")), "{rec}");

    let mut files = files_under(cli.home.path()).into_iter();
    assert!(files.all(|(_, b)| !contains(&b, app_secret)), "the client secret is only in the keyring");
    assert!(!cli.transcript.lock().unwrap().contains(app_secret));
}

#[test]
fn a_generic_provider_given_only_its_issuer_discovers_its_endpoints() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let row =
        |name: &str| sb.without_endpoints(&sb.csv_row(name, ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX"));
    let issuer = sb.var("SANDBOX_ISSUER");
    cli.import_with(
        ",issuer",
        &[format!("{},{issuer}", row("by-issuer")), format!("{},{issuer}/no-such-realm", row("wrong-issuer"))],
    );
    let list = cli.run(&["list", "--json"], &[]).json();
    assert!(
        list.as_array().unwrap().iter().all(|m| m["auth_url"].is_null() && m["issuer"].as_str().is_some()),
        "only the issuer is stored: {list}"
    );

    // Sign-in through the discovered authorization endpoint, tokens from the discovered token
    // endpoint; a later verify refreshes there too.
    let r = cli.authenticate(&sb, "by-issuer", ALICE.0, ALICE.1, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(sb.var("SANDBOX_AUTH_URL")), "the discovered sign-in page is opened: {}", r.stderr);
    assert_eq!(record(&r)["messages"], 3);
    assert_eq!(cli.run(&["verify", "by-issuer", "--json"], &[]).code, 0);

    // An issuer without an OpenID configuration: red, with the address tried and the fix.
    let r = cli.run(&["authenticate", "wrong-issuer", "--json"], &[]);
    let rec = assert_failed(&r, "discovery_failed", "issuer URL");
    assert!(rec["message"].as_str().unwrap().contains("/no-such-realm/.well-known/openid-configuration"), "{rec}");
}

#[test]
fn authenticate_checks_the_smtp_server_too_and_a_refused_one_is_red_while_imap_is_fine() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let host = sb.var("SANDBOX_MAIL_HOST");
    // A port nothing listens on: the connection is refused, as a mistyped SMTP port would be.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    cli.import_with(
        ",smtp_host,smtp_port,smtp_security",
        &[format!(
            "{},{host},{closed},starttls",
            sb.csv_row("out-refused", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")
        )],
    );
    // The check after the sign-in covers the outbound server: its failure decides.
    let r = cli.authenticate(&sb, "out-refused", ALICE.0, ALICE.1, &[]);
    let rec = assert_failed(&r, "connect_refused", "Check the port");
    assert_eq!(rec["check"], "smtp", "{rec}");
    assert!(rec["message"].as_str().unwrap().contains(&closed.to_string()), "{rec}");
    let hist = cli.run(&["history", "out-refused", "--json"], &[]).json();
    let imap = hist.as_array().unwrap().iter().find(|h| h["check"] == "imap").expect("an IMAP check");
    assert_eq!((imap["ok"].as_bool(), imap["messages"].as_u64()), (Some(true), Some(3)), "IMAP stays fine: {hist}");
    let list = cli.run(&["list", "--json"], &[]).json();
    assert_eq!(list[0]["status"], "failed", "{list}");
    assert_eq!(list[0]["smtp_check"]["code"], "connect_refused", "{list}");
    assert_eq!(list[0]["incoming_check"]["ok"], true, "{list}");
}
