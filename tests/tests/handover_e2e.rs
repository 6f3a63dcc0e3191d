//! Certificate credentials for app-only access and the encrypted hand-over, end to end through
//! the `mailbox-auth` CLI against the sandbox stack: the real oidc-provider (a private_key_jwt
//! client), real Dovecot logins, gnome-keyring — and for the hand-over a second, fresh
//! gnome-keyring on a D-Bus of its own, as on a new machine.

use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use mailbox_auth_tests::{contains, files_under, Cli, Run, Sandbox};
use serde_json::Value;

const ALICE: (&str, &str) = ("alice@sandbox.test", "alice-password");
const BOB: (&str, &str) = ("bob@sandbox.test", "bob-password");
const PASSPHRASE: &str = "correct horse battery staple 42";

fn record(r: &Run) -> Value {
    let v = r.json();
    let arr = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    assert_eq!(arr.len(), 1, "{v}");
    arr[0].clone()
}

/// A mailbox row for one of the sandbox's app-only clients.
fn app_row(sb: &Sandbox, client_id: &str, name: &str, email: &str, protocol: &str, port_key: &str) -> String {
    let row = sb
        .csv_row(name, email, protocol, port_key, "tls", "INBOX")
        .replace(&format!(",{},", sb.var("SANDBOX_CLIENT_ID")), &format!(",{client_id},"));
    format!("{row},client_credentials")
}

/// Uploads a certificate to the sandbox IdP's certificate client, as an admin uploads one in
/// Entra; returns the thumbprint the IdP computed.
fn upload_certificate(sb: &Sandbox, der: &[u8]) -> String {
    let url = url::Url::parse(sb.var("SANDBOX_ISSUER")).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /sandbox/app-cert HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/pkix-cert\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        der.len()
    )
    .unwrap();
    s.write_all(der).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "upload refused: {resp}");
    let body: Value = serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    body["thumbprint"].as_str().unwrap().to_string()
}

/// A stored keyring value, read with `secret-tool` (not through our own code).
fn lookup(cli: &Cli, key: &str, env: &[(&str, &str)]) -> Option<String> {
    let mut c = Command::new("secret-tool");
    c.args(["lookup", "service", &cli.keyring_service, "username", key]).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run secret-tool");
    let v = String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

fn sha1_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02X}"))
        .collect()
}

/// Each way a secret could show in a file: as it is, and base64 (standard and URL-safe).
fn forms(secret: &str) -> Vec<Vec<u8>> {
    let b = secret.as_bytes();
    let e = &base64::engine::general_purpose::STANDARD;
    let u = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![b.to_vec(), e.encode(b).into_bytes(), u.encode(b).into_bytes()]
}

fn has_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The private key of a stored certificate credential: its PEM body lines and its DER bytes.
fn private_key_parts(stored: &str) -> (Vec<String>, Vec<u8>) {
    let body: Vec<String> = stored
        .split("-----END PRIVATE KEY-----")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    assert!(body.len() > 10, "a 2048-bit RSA key in PEM: {} lines", body.len());
    let der = base64::engine::general_purpose::STANDARD.decode(body.concat()).unwrap();
    (body, der)
}

#[test]
fn app_only_with_a_certificate_opens_the_granted_mailbox_and_a_key_never_uploaded_is_diagnosed() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let cert_app = sb.var("SANDBOX_CERT_APP_CLIENT_ID");
    assert_eq!(sb.var("SANDBOX_APP_GRANTS"), BOB.0);
    cli.import_with(",flow", &[app_row(&sb, cert_app, "cert-bob", BOB.0, "imap", "SANDBOX_IMAPS_PORT")]);

    // A user mailbox cannot take a certificate.
    cli.import(&[sb.csv_row("user-alice", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);
    let r = cli.run(&["app-cert", "create", "user-alice"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("client_credentials"), "{r:?}");

    // Valid 20 days: inside the 30-day warning window, so a green check shows amber.
    let cer = cli.home.path().join("cert-bob.cer");
    let r = cli.run(&["app-cert", "create", "cert-bob", "--days", "20", "-o", cer.to_str().unwrap(), "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let created = r.json();
    let thumbprint = created["certificate"]["thumbprint"].as_str().unwrap().to_string();
    let der = std::fs::read(&cer).unwrap();
    assert_eq!(thumbprint, sha1_hex(&der), "the thumbprint is Entra's: SHA-1 of the .cer, upper-case hex");
    let not_after = created["certificate"]["not_after"].as_str().unwrap().to_string();
    let expected_end = (chrono::Utc::now().date_naive() + chrono::Duration::days(19)).to_string();
    assert_eq!(not_after, expected_end);
    let stored = lookup(&cli, "client_certificate:cert-bob", &[]).expect("the key pair is in the keyring");
    let (key_lines, key_der) = private_key_parts(&stored);

    // Not uploaded yet: the IdP does not know the key, refused in Entra's words, and the
    // diagnosis says where to upload the certificate.
    let r = cli.run(&["authenticate", "cert-bob", "--json"], &[]);
    assert_eq!(r.code, 1, "{r:?}");
    let rec = record(&r);
    assert_eq!((rec["ok"].as_bool(), rec["code"].as_str()), (Some(false), Some("invalid_client")), "{rec}");
    assert!(rec["server_words"].as_str().unwrap().contains("AADSTS700027"), "{rec}");
    assert!(rec["server_words"].as_str().unwrap().contains(&thumbprint), "the IdP saw our x5t: {rec}");
    assert!(rec["hint"].as_str().unwrap().contains("Certificates & secrets → Certificates"), "{rec}");

    // Uploaded: the assertion signed with the key opens bob's mailbox (a real IMAP login).
    assert_eq!(upload_certificate(&sb, &der), thumbprint);
    let r = cli.run(&["authenticate", "cert-bob", "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let rec = record(&r);
    assert_eq!((rec["ok"].as_bool(), rec["check"].as_str()), (Some(true), Some("imap")), "{rec}");
    let hist = cli.run(&["history", "cert-bob", "--json"], &[]).json();
    assert!(
        hist.as_array().unwrap().iter().any(|h| h["check"] == "authenticate"
            && h["ok"] == true
            && h["message"] == "App-only token obtained with the certificate"),
        "{hist}"
    );
    let r = cli.run(&["verify", "cert-bob", "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");

    // Its expiry is tracked like a client secret's: green check, amber badge.
    let list = cli.run(&["list", "--json"], &[]).json();
    let view = list.as_array().unwrap().iter().find(|v| v["name"] == "cert-bob").unwrap().clone();
    assert_eq!(view["client_secret_expires"], not_after.as_str(), "{view}");
    assert_eq!((view["status"].as_str(), view["authenticated"].as_bool()), (Some("needs_attention"), Some(true)));

    // A new certificate replaces the old one in the keyring; until it is uploaded, the
    // assertions its key signs are refused with the same diagnosis.
    let cer2 = cli.home.path().join("cert-bob-2.cer");
    let r = cli.run(&["app-cert", "create", "cert-bob", "-o", cer2.to_str().unwrap()], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&format!("replaced the certificate with thumbprint {thumbprint}")), "{r:?}");
    let second = sha1_hex(&std::fs::read(&cer2).unwrap());
    assert!(r.stdout.contains(&second), "{r:?}");
    let r = cli.run(&["verify", "cert-bob", "--json"], &[]);
    assert_eq!(r.code, 1, "{r:?}");
    let rec = &r.json()[0];
    assert!(rec["server_words"].as_str().unwrap().contains(&second), "{rec}");
    assert!(rec["hint"].as_str().unwrap().contains("app-cert show"), "{rec}");
    let shown = cli.run(&["app-cert", "show", "cert-bob"], &[]);
    assert!(shown.stdout.contains(&second), "{shown:?}");

    // The private keys never left the keyring: no file the program wrote, nothing it printed.
    let new_stored = lookup(&cli, "client_certificate:cert-bob", &[]).unwrap();
    let (new_lines, new_der) = private_key_parts(&new_stored);
    let transcript = cli.transcript.lock().unwrap().clone();
    for (path, bytes) in files_under(cli.home.path()) {
        for line in key_lines.iter().chain(&new_lines) {
            assert!(!contains(&bytes, line), "a private key line in {}", path.display());
            assert!(!transcript.contains(line.as_str()));
        }
        for der in [&key_der, &new_der] {
            assert!(!has_bytes(&bytes, &der[der.len() - 64..]), "private key bytes in {}", path.display());
        }
    }
}

/// A D-Bus session bus with a fresh gnome-keyring of its own, as on another machine; both are
/// our children and end with the test.
struct FreshKeyring {
    _dir: tempfile::TempDir,
    bus: Child,
    daemon: Child,
    address: String,
}

impl FreshKeyring {
    fn start() -> FreshKeyring {
        let dir = tempfile::tempdir().unwrap();
        for d in ["data", "run"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::set_permissions(dir.path().join("run"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon");
        let mut address = String::new();
        std::io::BufReader::new(bus.stdout.take().unwrap()).read_line(&mut address).unwrap();
        let address = address.trim().to_string();
        assert!(address.starts_with("unix:"), "bus address: {address:?}");
        let mut daemon = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--components=secrets", "--unlock"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_RUNTIME_DIR", dir.path().join("run"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon");
        daemon.stdin.take().unwrap().write_all(b"fresh-keyring").unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("dbus-send")
                .args([
                    &format!("--bus={address}"),
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("boolean true") {
                break;
            }
            assert!(Instant::now() < end, "the fresh gnome-keyring did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        FreshKeyring { _dir: dir, bus, daemon, address }
    }

    fn env(&self) -> [(&str, &str); 1] {
        [("DBUS_SESSION_BUS_ADDRESS", self.address.as_str())]
    }
}

impl Drop for FreshKeyring {
    fn drop(&mut self) {
        for c in [&mut self.daemon, &mut self.bus] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn the_encrypted_hand_over_moves_every_mailbox_and_its_sign_in_to_a_fresh_keyring() {
    let sb = Sandbox::get();
    let idp: Value =
        serde_json::from_slice(&std::fs::read(format!("{}/idp.json", sb.var("SANDBOX_STATE_DIR"))).unwrap()).unwrap();
    let (app_id, app_secret) = (idp["appClient"]["id"].as_str().unwrap(), idp["appClient"]["secret"].as_str().unwrap());

    // The old machine: a user mailbox signed in through the browser, an app-only one with a
    // client secret, an app-only one with a certificate.
    let old = Cli::new();
    old.import(&[sb.csv_row("alice", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);
    old.import_with(
        ",flow",
        &[
            app_row(&sb, app_id, "bob-secret", BOB.0, "pop3", "SANDBOX_POP3S_PORT"),
            app_row(&sb, sb.var("SANDBOX_CERT_APP_CLIENT_ID"), "bob-cert", BOB.0, "imap", "SANDBOX_IMAPS_PORT"),
        ],
    );
    assert_eq!(old.authenticate(&sb, "alice", ALICE.0, ALICE.1, &[]).code, 0);
    assert_eq!(old.run_with_input(&["set-secret", "bob-secret"], &[], &format!("{app_secret}\n")).code, 0);
    let cer = old.home.path().join("bob-cert.cer");
    assert_eq!(old.run(&["app-cert", "create", "bob-cert", "-o", cer.to_str().unwrap()], &[]).code, 0);
    upload_certificate(&sb, &std::fs::read(&cer).unwrap());
    let r = old.run(&["verify", "--all", "--json"], &[]);
    assert_eq!(r.code, 0, "green on the old machine: {r:?}");
    let old_history = old.run(&["history", "alice", "--json"], &[]).json();

    // Export, the passphrase on standard input (not a terminal). A short one is refused.
    let file = old.home.path().join("handover.age");
    let short = old.run_with_input(&["export", "--with-secrets", "-o", file.to_str().unwrap()], &[], "short\n");
    assert_eq!(short.code, 2, "{short:?}");
    assert!(short.stderr.contains("at least 12 characters") && !file.exists(), "{short:?}");
    let r = old.run_with_input(
        &["export", "--with-secrets", "-o", file.to_str().unwrap(), "--json"],
        &[],
        &format!("{PASSPHRASE}\n"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["with_secrets"].as_array().unwrap().len(), 3, "{r:?}");
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n-> scrypt "), "an age file with a passphrase stanza");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions()) & 0o777,
        0o600
    );

    // No secret in clear, nor its base64, anywhere in the file (nor in any file written).
    let refresh_token = lookup(&old, "refresh_token:alice", &[]).expect("alice's refresh token");
    let cert = lookup(&old, "client_certificate:bob-cert", &[]).expect("bob-cert's key pair");
    let (key_lines, key_der) = private_key_parts(&cert);
    let mut needles: Vec<Vec<u8>> = forms(&refresh_token);
    needles.extend(forms(app_secret));
    needles.extend(key_lines.iter().map(|l| l.as_bytes().to_vec()));
    needles.push(key_der[key_der.len() - 64..].to_vec());
    for (path, b) in files_under(old.home.path()) {
        for n in &needles {
            assert!(!has_bytes(&b, n), "a secret in clear in {}", path.display());
        }
    }
    assert!(!old.transcript.lock().unwrap().contains(&refresh_token));

    // The new machine: another data directory and a fresh keyring on a bus of its own.
    let k = FreshKeyring::start();
    let new = Cli::new();
    let file_arg = file.to_str().unwrap();

    // A wrong passphrase and a truncated file are clear errors that change nothing.
    let r = new.run_with_input(&["import", file_arg], &k.env(), "not the passphrase at all\n");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("passphrase does not open") && r.stderr.contains("nothing was imported"), "{r:?}");
    let cut = new.home.path().join("cut.age");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let r = new.run_with_input(&["import", cut.to_str().unwrap()], &k.env(), &format!("{PASSPHRASE}\n"));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("is damaged or incomplete") && r.stderr.contains("nothing was imported"), "{r:?}");
    assert_eq!(new.run(&["list", "--json"], &k.env()).json(), serde_json::json!([]), "nothing imported");
    assert_eq!(lookup(&new, "refresh_token:alice", &k.env()), None, "nothing in the new keyring");

    // The right passphrase: every mailbox, new, with its secrets in the new keyring.
    let r = new.run_with_input(&["import", file_arg, "--json"], &k.env(), &format!("{PASSPHRASE}\n"));
    assert_eq!(r.code, 0, "{r:?}");
    let done = r.json();
    assert_eq!(done.as_array().unwrap().len(), 3, "{done}");
    assert!(done.as_array().unwrap().iter().all(|d| d["replaced"] == false), "{done}");
    assert_eq!(lookup(&new, "refresh_token:alice", &k.env()).as_deref(), Some(refresh_token.as_str()));
    assert_eq!(lookup(&new, "client_secret:bob-secret", &k.env()).as_deref(), Some(app_secret));
    assert_eq!(lookup(&new, "client_certificate:bob-cert", &k.env()).as_deref(), Some(cert.as_str()));
    let new_history = new.run(&["history", "alice", "--json"], &k.env()).json();
    assert_eq!(new_history, old_history, "the history came along");

    // Green there, without signing anything in again.
    let r = new.run(&["verify", "--all", "--json"], &k.env());
    assert_eq!(r.code, 0, "green on the new machine: {r:?}");
    let recs = r.json();
    for name in ["alice", "bob-secret", "bob-cert"] {
        assert!(recs.as_array().unwrap().iter().any(|x| x["mailbox"] == name && x["ok"] == true), "{name}: {recs}");
    }

    // Importing over existing mailboxes says what it replaces, and replaces their secrets.
    assert_eq!(new.run_with_input(&["set-secret", "bob-secret"], &k.env(), "a-wrong-secret\n").code, 0);
    assert_eq!(new.run(&["verify", "bob-secret"], &k.env()).code, 1, "the wrong secret is refused");
    let r = new.run_with_input(&["import", file_arg], &k.env(), &format!("{PASSPHRASE}\n"));
    assert_eq!(r.code, 0, "{r:?}");
    for name in ["alice", "bob-secret", "bob-cert"] {
        assert!(r.stdout.contains(&format!("{name}: replaced the existing mailbox")), "{r:?}");
    }
    assert_eq!(lookup(&new, "client_secret:bob-secret", &k.env()).as_deref(), Some(app_secret));
    let r = new.run(&["verify", "bob-secret", "bob-cert", "--json"], &k.env());
    assert_eq!(r.code, 0, "{r:?}");
}

/// Waits until `out` holds `needle` (the child's terminal output so far); panics after 20 s.
fn wait_for_output(out: &std::sync::Mutex<Vec<u8>>, needle: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    while !contains(&out.lock().unwrap(), needle) {
        assert!(
            Instant::now() < end,
            "no {needle:?} on the terminal: {}",
            String::from_utf8_lossy(&out.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_passphrase_is_asked_on_the_terminal_without_echo() {
    let sb = Sandbox::get();
    let old = Cli::new();
    old.import_with(",flow", &[app_row(&sb, "tty-app", "tty-app", BOB.0, "imap", "SANDBOX_IMAPS_PORT")]);
    let secret = "tty-client-secret-value-123";
    assert_eq!(old.run_with_input(&["set-secret", "tty-app"], &[], &format!("{secret}\n")).code, 0);
    let file = old.home.path().join("tty.age");
    // `script` gives the program a terminal (a pseudo-terminal) as its standard input; what we
    // type goes in only once the prompt is shown, as a person would.
    let cmd = format!("{} export --with-secrets -o {}", Cli::bin().display(), file.display());
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("MAILBOX_AUTH_HOME", old.home.path())
        .env("MAILBOX_AUTH_KEYRING_SERVICE", &old.keyring_service)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run script");
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    wait_for_output(&out, "Passphrase: ");
    stdin.write_all(format!("{PASSPHRASE}\r").as_bytes()).unwrap();
    wait_for_output(&out, "The same passphrase again: ");
    stdin.write_all(format!("{PASSPHRASE}\r").as_bytes()).unwrap();
    wait_for_output(&out, "wrote 1 mailbox(es)");
    drop(stdin);
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    let shown = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    assert!(!shown.contains(PASSPHRASE), "the passphrase was echoed: {shown}");

    // The passphrase typed on the terminal opens the file (given on a pipe this time).
    let new = Cli::new();
    let r = new.run_with_input(&["import", file.to_str().unwrap()], &[], &format!("{PASSPHRASE}\n"));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(lookup(&new, "client_secret:tty-app", &[]).as_deref(), Some(secret));
}
