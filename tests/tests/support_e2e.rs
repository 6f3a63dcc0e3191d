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

// ---------------------------------------------------------------------------------------------
// Support bundle

const ALICE: (&str, &str) = ("alice@sandbox.test", "alice-password");

/// Every file of a zip, by name, as bytes.
fn zip_files(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).expect("open the bundle")).expect("a zip");
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            (f.name().expect("an entry name").to_string(), b)
        })
        .collect()
}

/// A secret and the forms it could leak in: itself, its base64 (padded, unpadded, URL-safe),
/// and for an access token the SASL responses built from it (XOAUTH2, OAUTHBEARER) in base64.
fn leak_forms(secret: &str, sasl_user: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    let mut raw = vec![secret.to_string()];
    raw.push(format!("user={sasl_user}\x01auth=Bearer {secret}\x01\x01"));
    let mut out = raw.clone();
    for r in &raw {
        for e in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            out.push(e.encode(r));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_bundle_holds_the_servers_words_and_transcripts_and_no_secret() {
    use mailbox_auth_core::secret::KeyringStore;
    use mailbox_auth_core::App;
    use mailbox_auth_tests::{contains, CSV_HEADER};
    use std::sync::Arc;

    let sb = Sandbox::get();
    let cli = Cli::new();
    let keyring = || Arc::new(KeyringStore::new(cli.keyring_service.clone()));
    let idp: Value =
        serde_json::from_slice(&std::fs::read(format!("{}/idp.json", sb.var("SANDBOX_STATE_DIR"))).unwrap()).unwrap();
    let (app_id, app_secret) = (
        idp["appClient"]["id"].as_str().unwrap().to_string(),
        idp["appClient"]["secret"].as_str().unwrap().to_string(),
    );
    let app_row = |name: &str, email: &str| {
        sb.csv_row(name, email, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")
            .replace(&format!(",{},", sb.var("SANDBOX_CLIENT_ID")), &format!(",{app_id},"))
    };
    let (user, granted_not, wrong) = ("bundle-user", "bundle-app", "bundle-wrong");
    let csv = format!(
        "{CSV_HEADER},flow\n{},auth_code\n{},client_credentials\n{},client_credentials\n",
        sb.csv_row(user, BOB.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX"),
        app_row(granted_not, ALICE.0),
        app_row(wrong, BOB.0),
    );
    let app = App::open(cli.home.path(), keyring()).unwrap();
    let report = app.import_csv(&csv, None).await.unwrap();
    assert_eq!(report.imported.len(), 3, "{report:?}");

    // A user sign-in as the wrong account (alice for bob's mailbox): the sign-in works, the
    // mail server refuses the token.
    let signed_in = cli.authenticate(&sb, user, ALICE.0, ALICE.1, &[]);
    assert_eq!(signed_in.code, 1, "the login is refused: {signed_in:?}");
    let first_refresh_token = cli.stored_refresh_token(user).expect("a refresh token is stored");
    // In this process, so the access token the failing login uses is known: refreshed once
    // (rotating the refresh token), then used from the cache by the check.
    let live = App::open(cli.home.path(), keyring()).unwrap();
    let user_access = live.access_token(user).await.expect("a fresh access token").secret().clone();
    let user_check = live.verify(user).await.unwrap().incoming;
    assert!(!user_check.ok && user_check.code.as_deref() == Some("auth_rejected"), "{user_check:?}");
    let user_words = user_check.server_words.clone().expect("the mail server's words");
    let second_refresh_token = cli.stored_refresh_token(user).expect("the rotated refresh token");
    assert_ne!(first_refresh_token, second_refresh_token);

    // App-only with the real client secret, for a mailbox the app holds no permission on: the
    // token is issued, the IMAP login refused.
    app.set_client_secret(granted_not, app_secret.clone().into(), None).await.unwrap();
    let app_access = live.access_token(granted_not).await.expect("an app-only token").secret().clone();
    let app_check = live.verify(granted_not).await.unwrap().incoming;
    assert!(!app_check.ok, "{app_check:?}");
    let app_words = app_check.server_words.clone().expect("the mail server's words");

    // A failing sign-in: the identity provider refuses a wrong client secret, in its words.
    let wrong_secret = format!("wrong-secret-{}-{}", std::process::id(), "x".repeat(24));
    app.set_client_secret(wrong, wrong_secret.clone().into(), None).await.unwrap();
    let refused = cli.run(&["authenticate", wrong, "--json"], &[]);
    assert_eq!(refused.code, 1, "{refused:?}");
    let refused_rec = refused.json()[0].clone();
    let idp_words = refused_rec["server_words"].as_str().expect("the IdP's words").to_string();
    assert!(idp_words.contains("invalid_client"), "{refused_rec:#}");

    let out = cli.home.path().join("support.zip");
    let r = cli.run(&["bundle", user, granted_not, wrong, "-o", out.to_str().unwrap(), "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let files = zip_files(&out);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let text = |n: &str| {
        String::from_utf8(files.iter().find(|(f, _)| f == n).unwrap_or_else(|| panic!("{n} in {names:?}")).1.clone())
            .unwrap()
    };
    let all: String = files.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect();

    // What is inside: the README, the system facts, and per mailbox the server's words, the
    // transcript of the failing login (client lines redacted, server lines verbatim), the TLS
    // facts and certificate chain, the identity provider's error.
    let readme = text("README.txt");
    assert!(readme.contains("What was redacted") && readme.contains("<redacted, N bytes>"), "{readme}");
    assert!(readme.contains("Found here: 0."), "nothing needed the final search: {readme}");
    let system = text("system.json");
    assert!(system.contains("\"version\"") && system.contains("\"keyring\"") && system.contains("\"os\""), "{system}");
    let t = text("mailboxes/01-bundle-user/transcript-imap.txt");
    assert!(t.contains(" C: ") && t.contains(" S: "), "{t}");
    assert!(t.contains("AUTHENTICATE") && t.contains("<redacted, "), "{t}");
    assert!(contains(t.as_bytes(), &user_words) || all.contains(&user_words), "the server's words: {user_words}");
    assert!(t.contains(" ms "), "timings: {t}");
    let tls = text("mailboxes/01-bundle-user/tls.txt");
    assert!(tls.contains("TLS: TLSv1.") && tls.contains("subject ") && tls.contains(" valid "), "{tls}");
    assert!(tls.contains(sb.var("SANDBOX_MAIL_HOST")) || tls.contains("DNS:"), "{tls}");
    assert!(all.contains(&app_words), "the app-only login's server words: {app_words}");
    assert!(text("mailboxes/02-bundle-app/transcript-imap.txt").contains("<redacted, "));
    let idp_file = text("mailboxes/03-bundle-wrong/identity-provider-error.txt");
    assert!(idp_file.contains(&idp_words), "{idp_file}");
    for n in ["settings.json", "checks.json", "transitions.json", "diagnosis.txt"] {
        assert!(names.contains(&format!("mailboxes/01-bundle-user/{n}").as_str()), "{n} in {names:?}");
    }
    assert!(text("mailboxes/01-bundle-user/diagnosis.txt").contains("auth_rejected"));

    // And no secret, in any form, in any file.
    let mut secrets = Vec::new();
    secrets.extend(leak_forms(&first_refresh_token, BOB.0));
    secrets.extend(leak_forms(&second_refresh_token, BOB.0));
    secrets.extend(leak_forms(&user_access, BOB.0));
    secrets.extend(leak_forms(&app_access, ALICE.0));
    secrets.extend(leak_forms(&app_secret, ALICE.0));
    secrets.extend(leak_forms(&wrong_secret, BOB.0));
    for (name, bytes) in &files {
        for (i, s) in secrets.iter().enumerate() {
            assert!(!contains(bytes, s), "secret form #{i} is in {name}");
        }
        assert!(!contains(bytes, "auth=Bearer"), "a SASL response is in {name}");
    }
    // Nor in the data store, which now keeps the failing transcripts (nor in any other file
    // the tool wrote there).
    for (path, bytes) in mailbox_auth_tests::files_under(cli.home.path()) {
        for (i, s) in secrets.iter().enumerate() {
            assert!(!contains(&bytes, s), "secret form #{i} is in {}", path.display());
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // An unknown mailbox is a usage error and writes nothing.
    let nothing = cli.home.path().join("nothing.zip");
    let r = cli.run(&["bundle", "no-such-mailbox", "-o", nothing.to_str().unwrap()], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(!nothing.exists());
}
