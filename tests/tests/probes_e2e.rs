//! End to end: what the probes promise about secrets and hostile input, through the real CLI
//! against the sandbox stack (oidc-provider, Dovecot IMAP/POP3/submission, gnome-keyring).

use base64::Engine;
use mailbox_auth_tests::{files_under, Cli, Sandbox};

const ALICE: (&str, &str) = ("alice@sandbox.test", "alice-password");
const BOB: (&str, &str) = ("bob@sandbox.test", "bob-password");
const SMTP_COLUMNS: &str = ",smtp_host,smtp_port,smtp_security";

/// An IMAP, a POP3 and an IMAP+SMTP mailbox, signed in with `env` added; the sign-ins' stderr.
fn three_signed_in_mailboxes(sb: &Sandbox, cli: &Cli, env: &[(&str, &str)]) -> String {
    cli.import(&[
        sb.csv_row("alice-imaps", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX"),
        sb.csv_row("bob-pop3-stls", BOB.0, "pop3", "SANDBOX_POP3_STLS_PORT", "starttls", "INBOX"),
    ]);
    cli.import_with(
        SMTP_COLUMNS,
        &[format!(
            "{},{},{},starttls",
            sb.csv_row("alice-out", ALICE.0, "imap", "SANDBOX_IMAP_STARTTLS_PORT", "starttls", "INBOX"),
            sb.var("SANDBOX_MAIL_HOST"),
            sb.port("SANDBOX_SUBMISSION_PORT"),
        )],
    );
    let mut stderr = String::new();
    for (name, (user, pw)) in [("alice-imaps", ALICE), ("bob-pop3-stls", BOB), ("alice-out", ALICE)] {
        let r = cli.authenticate(sb, name, user, pw, env);
        assert_eq!(r.code, 0, "authenticate {name}: {r:?}");
        stderr.push_str(&r.stderr);
    }
    stderr
}

/// Every run of at least 16 base64 characters in `text` (standard or URL-safe alphabet) that
/// decodes, with or without its padding, to bytes.
fn base64_runs(text: &str) -> Vec<(String, Vec<u8>)> {
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || "+/-_=".contains(c);
    let mut out = Vec::new();
    for run in text.split(|c: char| !is_b64(c)).filter(|r| r.len() >= 16) {
        let bare = run.trim_end_matches('=');
        // A run may start mid-quantum (glued to a word); try each alignment.
        for skip in 0..4 {
            let Some(part) = bare.get(skip..) else { continue };
            let part = &part[..part.len() - part.len() % 4];
            for engine in
                [base64::engine::general_purpose::STANDARD_NO_PAD, base64::engine::general_purpose::URL_SAFE_NO_PAD]
            {
                if let Ok(bytes) = engine.decode(part) {
                    out.push((run.to_string(), bytes));
                }
            }
        }
    }
    out
}

#[test]
fn trace_logging_of_real_probes_prints_no_token() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    // The most a user can ask for: every target at trace, the wire-logging ones named too.
    let trace =
        [("MAILBOX_AUTH_LOG", "trace,async_imap=trace,async_imap::imap_stream=trace,reqwest=trace,hyper=trace")];
    let mut log = three_signed_in_mailboxes(&sb, &cli, &trace);
    let names = ["alice-imaps", "bob-pop3-stls", "alice-out"];
    let before: Vec<String> = names
        .iter()
        .map(|n| cli.stored_refresh_token(n).unwrap_or_else(|| panic!("no refresh token for {n}")))
        .collect();

    let r = cli.run(&["verify", "alice-imaps", "bob-pop3-stls", "alice-out", "--json"], &trace);
    assert_eq!(r.code, 0, "{r:?}");
    let recs = r.json();
    let checks: Vec<&str> = recs.as_array().unwrap().iter().map(|r| r["check"].as_str().unwrap()).collect();
    for check in ["imap", "pop3", "smtp"] {
        assert!(checks.contains(&check), "a real {check} probe ran: {recs}");
    }
    assert!(r.stderr.contains("DEBUG") || r.stderr.contains("TRACE"), "the log is on: {}", r.stderr);
    log.push_str(&r.stderr);

    // The token helper prints the access token on stdout, and only there.
    let t = cli.run(&["token", "alice-imaps"], &trace);
    assert_eq!(t.code, 0, "{t:?}");
    let access_token = t.stdout.trim().to_string();
    assert!(access_token.len() >= 16, "implausible access token");
    log.push_str(&t.stderr);

    let mut secrets = before;
    secrets.extend(names.iter().filter_map(|n| cli.stored_refresh_token(n)));
    secrets.push(access_token);
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a token is in the trace log");
        for engine in [base64::engine::general_purpose::STANDARD, base64::engine::general_purpose::URL_SAFE_NO_PAD] {
            let encoded = engine.encode(s);
            assert!(!log.contains(encoded.trim_end_matches('=')), "a token's base64 is in the trace log");
        }
    }
    for marker in ["auth=Bearer", "\"access_token\":\"", "\"refresh_token\":\"", "access_token="] {
        assert!(!log.contains(marker), "{marker} is in the trace log");
    }
    for (run, bytes) in base64_runs(&log) {
        let decoded = String::from_utf8_lossy(&bytes);
        assert!(
            !decoded.contains("auth=Bearer") && !decoded.contains("\x01auth="),
            "a SASL response is in the trace log (base64 run of {} characters)",
            run.len()
        );
    }
}

#[test]
fn a_line_break_in_the_test_recipient_is_refused_before_connecting() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    three_signed_in_mailboxes(&sb, &cli, &[]);
    let evil = format!("evil-{}@sandbox.test", std::process::id());
    let to = format!("desk@sandbox.test>\r\nRCPT TO:<{evil}");
    // Signing in checked the SMTP server already; the refused send-test must add no check.
    let smtp_checks = |cli: &Cli| {
        let history = cli.run(&["history", "alice-out", "--json"], &[]).json();
        history.as_array().unwrap().iter().filter(|h| h["check"] == "smtp").count()
    };
    let before = smtp_checks(&cli);
    let r = cli.run(&["send-test", "alice-out", "--to", &to, "--json"], &[]);
    assert_eq!(r.code, 2, "a usage error, not a red check: {r:?}");
    assert!(r.stderr.contains("--to: the recipient contains a control character"), "{}", r.stderr);
    assert!(!r.stderr.contains(&evil), "the value is not echoed: {}", r.stderr);
    assert_eq!(smtp_checks(&cli), before, "no SMTP check ran for the refused recipient");
    let sink = std::path::Path::new(sb.var("SANDBOX_SINK_DIR"));
    assert!(
        files_under(sink).iter().all(|(_, b)| !String::from_utf8_lossy(b).contains(&evil)),
        "nothing reached {evil}"
    );
}

/// The probe's client turns (client lines followed by a wait for the server) against the real
/// Dovecot, for each protocol and TLS mode, with the transcript of each.
/// Also returns the access token the probes used.
fn real_probe_turns() -> (Vec<(String, usize, mailbox_auth_core::probe::Transcript)>, String) {
    use mailbox_auth_core::mailbox::Security;
    use mailbox_auth_core::probe::{probe_traced, ProbeTarget, Service};
    let sb = Sandbox::get();
    let cli = Cli::new();
    three_signed_in_mailboxes(&sb, &cli, &[]);
    let t = cli.run(&["token", "alice-imaps"], &[]);
    assert_eq!(t.code, 0, "{t:?}");
    let plain = t.stdout.trim().to_string();
    let token = oauth2::AccessToken::new(plain.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut out = Vec::new();
    for (label, service, port_key, security) in [
        ("imaps", Service::Imap, "SANDBOX_IMAPS_PORT", Security::Tls),
        ("imap+starttls", Service::Imap, "SANDBOX_IMAP_STARTTLS_PORT", Security::Starttls),
        ("pop3s", Service::Pop3, "SANDBOX_POP3S_PORT", Security::Tls),
        ("pop3+stls", Service::Pop3, "SANDBOX_POP3_STLS_PORT", Security::Starttls),
        ("submission+starttls", Service::Smtp, "SANDBOX_SUBMISSION_PORT", Security::Starttls),
    ] {
        let target = ProbeTarget {
            protocol: service,
            host: sb.var("SANDBOX_MAIL_HOST").to_string(),
            port: sb.port(port_key),
            security,
            folder: "INBOX".into(),
            sasl_user: ALICE.0.into(),
            ca_file: Some(sb.var("SANDBOX_CA_FILE").into()),
            timeout: std::time::Duration::from_secs(10),
        };
        let report = rt.block_on(probe_traced(&target, &token)).unwrap_or_else(|e| panic!("{label}: {e}"));
        let turns = report.transcript.turns();
        eprintln!("{label}: {turns} turns\n{}", report.transcript.render());
        out.push((label.to_string(), turns, report.transcript));
    }
    (out, plain)
}

/// Issue 10's round trips: the greeting's capabilities instead of a second CAPABILITY, SASL-IR
/// (RFC 4959) and the POP3 initial response (RFC 5034), no wait for the LOGOUT/QUIT reply.
/// Each count is the protocol minimum: IMAPS `AUTHENTICATE`+IR, `EXAMINE`; with STARTTLS one
/// more for `STARTTLS` and the `CAPABILITY` that must be asked again over TLS; POP3 `CAPA`,
/// `AUTH`+IR, `STAT` (+ `STLS` and the second `CAPA`); SMTP `EHLO`, `AUTH`, response,
/// `MAIL FROM` (+ `STARTTLS`, `EHLO`). Before: 5, 7, 5, 7, 8.
#[test]
fn real_probes_take_the_protocol_minimum_of_round_trips() {
    let got: Vec<(String, usize)> = real_probe_turns().0.into_iter().map(|(l, n, _)| (l, n)).collect();
    let want: Vec<(String, usize)> =
        [("imaps", 2), ("imap+starttls", 4), ("pop3s", 3), ("pop3+stls", 5), ("submission+starttls", 6)]
            .into_iter()
            .map(|(l, n)| (l.to_string(), n))
            .collect();
    assert_eq!(got, want);
}

/// The transcript of a real probe holds the server's words, the TLS facts of the sandbox's
/// certificate, and no form of the access token.
#[test]
fn real_transcripts_hold_the_dialogue_and_no_token() {
    let sb = Sandbox::get();
    let (probes, token) = real_probe_turns();
    for (label, _, tr) in probes {
        let tls = tr.tls.as_ref().unwrap_or_else(|| panic!("{label}: no TLS facts"));
        assert!(tls.version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")), "{label}: {tls:?}");
        assert!(tls.cipher.is_some(), "{label}: {tls:?}");
        let host = sb.var("SANDBOX_MAIL_HOST");
        assert!(
            tls.chain[0].sans.iter().any(|s| s.ends_with(host)),
            "{label}: the sandbox certificate names {host}: {tls:?}"
        );
        let server = tr.lines.iter().filter(|l| l.from == mailbox_auth_core::probe::transcript::Side::Server).count();
        assert!(server >= 3, "{label}: the server's lines: {}", tr.render());
        let json = serde_json::to_string(&tr).unwrap();
        for engine in [base64::engine::general_purpose::STANDARD, base64::engine::general_purpose::URL_SAFE_NO_PAD] {
            assert!(!json.contains(engine.encode(&token).trim_end_matches('=')), "{label}: the token's base64");
        }
        assert!(!json.contains(&token), "{label}: the token");
        for (run, bytes) in base64_runs(&json) {
            assert!(!String::from_utf8_lossy(&bytes).contains("auth=Bearer"), "{label}: a SASL response ({run})");
        }
        assert!(json.contains("<redacted, "), "{label}: the SASL response is shown by its size");
    }
}
