//! Many programs using one mailbox at once, against the sandbox's rotating IdP (oidc-provider
//! with `rotateRefreshToken: true`: a refresh token presented a second time revokes the whole
//! grant) and the real Dovecot: one refresh per mailbox across processes, each refresh token
//! presented exactly once, the grant survives, every printed token logs in.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mailbox_auth_core::secret::KeyringStore;
use mailbox_auth_core::App;
use mailbox_auth_tests::{Cli, Run, Sandbox};

const ALICE: (&str, &str) = ("alice@sandbox.test", "alice-password");

/// The first 16 hex digits of the SHA-256 of a token, as the sandbox IdP logs it.
fn fingerprint(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// One refresh_token line of the IdP's log.
#[derive(Debug, Clone)]
struct Refresh {
    ok: bool,
    grant: String,
    presented: String,
    issued: String,
    line: String,
}

fn idp_log(sb: &Sandbox) -> String {
    std::fs::read_to_string(format!("{}/idp.log", sb.var("SANDBOX_STATE_DIR"))).expect("read the IdP log")
}

fn refreshes(log: &str) -> Vec<Refresh> {
    log.lines()
        .filter(|l| l.contains(" refresh_token ") && l.contains(" grant="))
        .map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or_else(|| panic!("no {k} in {l}"))
                    .to_string()
            };
            Refresh {
                ok: l.contains(" grant.success "),
                grant: field("grant="),
                presented: field("presented="),
                issued: field("issued="),
                line: l.to_string(),
            }
        })
        .collect()
}

/// Logs in to the sandbox's IMAPS port with each token (SASL XOAUTH2 over TLS, the sandbox CA
/// trusted) using Python's imaplib, a client that shares no code with ours. Returns, for each
/// token, whether Dovecot accepted it and opened INBOX.
fn imap_logins(sb: &Sandbox, user: &str, tokens: &[String]) -> Vec<bool> {
    const SCRIPT: &str = r#"
import imaplib, ssl, sys
host, port, ca, user = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
for token in sys.stdin.read().split():
    try:
        m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=30)
        m.authenticate("XOAUTH2", lambda _: ("user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode())
        typ, _ = m.select("INBOX", readonly=True)
        m.logout()
        print("ok" if typ == "OK" else "select-failed", flush=True)
    except Exception as e:
        print("refused:" + type(e).__name__, flush=True)
"#;
    let mut child = Command::new("python3")
        .args([
            "-c",
            SCRIPT,
            sb.var("SANDBOX_MAIL_HOST"),
            &sb.port("SANDBOX_IMAPS_PORT").to_string(),
            sb.var("SANDBOX_CA_FILE"),
            user,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    // Tokens go through stdin, never the command line.
    child.stdin.take().unwrap().write_all(tokens.join("\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let results: Vec<bool> = text.lines().map(|l| l == "ok").collect();
    assert_eq!(results.len(), tokens.len(), "python3 imaplib: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    results
}

#[test]
fn twenty_token_processes_and_a_verify_all_refresh_one_at_a_time_and_every_token_logs_in() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    cli.import(&[sb.csv_row("c", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);
    let r = cli.authenticate(&sb, "c", ALICE.0, ALICE.1, &[]);
    assert_eq!(r.code, 0, "authenticate: {r:?}");
    let first = fingerprint(&cli.stored_refresh_token("c").expect("a refresh token is stored"));

    // 20 mail fetchers asking for a token and one scheduled `verify --all`, all at once; each
    // is a new process with an empty cache, so each must refresh once.
    const FETCHERS: usize = 20;
    let mut children = Vec::new();
    for _ in 0..FETCHERS {
        children.push(cli.command(&["token", "c"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    }
    children.push(
        cli.command(&["verify", "--all", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
    );
    let runs: Vec<Run> = children.into_iter().map(|c| Run::from(c.wait_with_output().unwrap())).collect();
    let failed: Vec<usize> = runs.iter().enumerate().filter(|(_, r)| r.code != 0).map(|(i, _)| i).collect();
    assert!(
        failed.is_empty(),
        "{} of {} processes failed ({failed:?}); the first: {:?}",
        failed.len(),
        runs.len(),
        runs[failed[0]]
    );
    let verify = runs.last().unwrap().json();
    assert_eq!(verify[0]["ok"], true, "{verify}");
    let tokens: Vec<String> = runs[..FETCHERS].iter().map(|r| r.stdout.trim().to_string()).collect();
    assert!(tokens.iter().all(|t| t.len() > 10 && !t.contains(char::is_whitespace)), "{tokens:?}");

    // The IdP's view of this grant: found by the fingerprint of the token the sign-in stored,
    // then every refresh line of the same grant.
    let log = idp_log(&sb);
    let all = refreshes(&log);
    let grant =
        all.iter().find(|r| r.presented == first).expect("the first refresh presents the stored token").grant.clone();
    let ours: Vec<&Refresh> = all.iter().filter(|r| r.grant == grant).collect();
    let failed: Vec<&str> = ours.iter().filter(|r| !r.ok).map(|r| r.line.as_str()).collect();
    assert!(failed.is_empty(), "refreshes refused by the IdP: {failed:#?}");
    assert!(
        !log.lines().any(|l| l.contains("grant.revoked") && l.contains(&grant)),
        "the grant was revoked (a refresh token was presented twice)"
    );
    assert_eq!(ours.len(), FETCHERS + 1, "one refresh per process: {ours:#?}");
    // Each refresh token was presented exactly once, and the refreshes form one chain from the
    // signed-in token to the one now in the keyring.
    let presented: HashSet<&str> = ours.iter().map(|r| r.presented.as_str()).collect();
    assert_eq!(presented.len(), ours.len(), "a refresh token was presented twice: {ours:#?}");
    let next: HashMap<&str, &str> = ours.iter().map(|r| (r.presented.as_str(), r.issued.as_str())).collect();
    let mut at = first.as_str();
    for _ in 0..ours.len() {
        at = next.get(at).unwrap_or_else(|| panic!("the chain breaks at {at}: {ours:#?}"));
    }
    assert_eq!(at, fingerprint(&cli.stored_refresh_token("c").unwrap()), "the keyring holds the newest token");

    // Every printed token really logs in to the mail server.
    let accepted = imap_logins(&sb, ALICE.0, &tokens);
    let refused: Vec<usize> = accepted.iter().enumerate().filter(|(_, ok)| !**ok).map(|(i, _)| i).collect();
    assert!(refused.is_empty(), "Dovecot refused the tokens printed by processes {refused:?}");

    // The grant survives: a later verify, in a new process, refreshes and is green.
    let r = cli.run(&["verify", "c", "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    // No token in anything the processes printed (the tokens themselves on `token`'s stdout aside).
    for (i, r) in runs.iter().enumerate() {
        for t in &tokens {
            assert!(!r.stderr.contains(t.as_str()), "process {i} printed a token on stderr");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_mail_server_refuses_is_dropped_and_the_next_verify_refreshes() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    cli.import(&[sb.csv_row("r", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);
    let r = cli.authenticate(&sb, "r", ALICE.0, ALICE.1, &[]);
    assert_eq!(r.code, 0, "authenticate: {r:?}");

    // A long-running program (the window) holding a cached access token the mail server will
    // refuse. (Revoking a real one at the sandbox IdP would end the whole grant: oidc-provider
    // revokes every token of the grant with it. So the cache is handed a dead token directly,
    // as a sign-in would hand it a token; the keyring's refresh token stays as it is.)
    let app = App::open(cli.home.path(), Arc::new(KeyringStore::new(cli.keyring_service.clone()))).unwrap();
    let dead = mailbox_auth_core::oauth::Tokens {
        access_token: oauth2::AccessToken::new("revoked-or-expired-token".into()),
        refresh_token: None,
        expires_in: Some(Duration::from_secs(3600)),
        id_token: None,
        refresh_expires_in: None,
    };
    let secrets: Arc<dyn mailbox_auth_core::secret::SecretStore> =
        Arc::new(KeyringStore::new(cli.keyring_service.clone()));
    app.tokens().signed_in("r", &dead, &secrets).await.unwrap();
    let stored = cli.stored_refresh_token("r");
    assert!(stored.is_some());

    // The mail server refuses the cached token once …
    let rec = app.verify("r").await.unwrap().incoming;
    assert!(!rec.ok, "{rec:?}");
    assert_eq!(rec.code.as_deref(), Some("auth_rejected"), "{rec:?}");
    // … and the next verify refreshes instead of presenting it again.
    let rec = tokio::time::timeout(Duration::from_secs(120), app.verify("r")).await.expect("no hang").unwrap().incoming;
    assert!(rec.ok, "the refused token was served from the cache again: {rec:?}");
    assert_eq!(app.tokens().refresh_count(), 1);
    assert_ne!(cli.stored_refresh_token("r"), stored, "the refresh rotated the stored token");
}
