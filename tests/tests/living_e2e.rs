//! Living health end to end: the real `mailbox-auth` against the sandbox (oidc-provider,
//! Dovecot, gnome-keyring).
//!
//! Throttling: a TCP relay in front of Dovecot's IMAP + STARTTLS port answers the first
//! connections it is told to the way a server at its connection limit does (the greeting, then
//! `NO [LIMIT] Maximum number of connections from user+IP exceeded`, RFC 5530's response code
//! with Dovecot's words) and relays the rest to the real Dovecot. The mailboxes sign in with
//! app-only access (client credentials, no browser).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailbox_auth_tests::{Cli, Sandbox};
use serde_json::Value;

const BOB: &str = "bob@sandbox.test";

/// Greets as Dovecot does and answers the first command with `TAG <words>`, then closes: an
/// IMAP server throttling a connection.
fn answer_throttled(mut client: TcpStream, words: &str) {
    let _ = client.write_all(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n");
    let mut line = String::new();
    if BufReader::new(client.try_clone().unwrap()).read_line(&mut line).is_ok() {
        let tag = line.split(' ').next().unwrap_or("*");
        let _ = client.write_all(format!("{tag} {words}\r\n").as_bytes());
    }
}

/// A relay to `upstream` that throttles the next `throttle` connections and relays the others.
struct ThrottlingRelay {
    port: u16,
    throttle: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl ThrottlingRelay {
    fn new(upstream: String) -> ThrottlingRelay {
        Self::with_words(upstream, "NO [LIMIT] Maximum number of connections from user+IP exceeded")
    }

    /// Throttled connections get `TAG <words>` to their first command.
    fn with_words(upstream: String, words: &'static str) -> ThrottlingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let throttle = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (left, seen) = (throttle.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                seen.fetch_add(1, Ordering::SeqCst);
                let throttled = left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                if throttled {
                    std::thread::spawn(move || answer_throttled(client, words));
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                mailbox_auth_tests::relay(client, server);
            }
        });
        ThrottlingRelay { port, throttle, accepted }
    }

    fn throttle_next(&self, n: usize) {
        self.throttle.store(n, Ordering::SeqCst);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A relay to the IdP that answers the next `busy` HTTP requests itself with `429 Too Many
/// Requests` and `Retry-After: 1`, and relays the others.
struct BusyIdp {
    url_base: String,
    busy: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
}

impl BusyIdp {
    fn new(upstream: String) -> BusyIdp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url_base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let busy = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (left, count) = (busy.clone(), answered.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                if left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        // Read the request head before answering, as a server does.
                        let mut reader = BufReader::new(client.try_clone().unwrap());
                        let mut line = String::new();
                        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                            line.clear();
                        }
                        let body = r#"{"error":"slow_down","error_description":"rate limited"}"#;
                        let _ = client.write_all(
                            format!(
                                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
                                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        );
                    });
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                mailbox_auth_tests::relay(client, server);
            }
        });
        BusyIdp { url_base, busy, answered }
    }
}

/// An app-only IMAP + STARTTLS mailbox of bob's, through the relay on `port`, signed in (and
/// so verified green once, through the relay passing traffic).
fn app_mailbox(cli: &Cli, sb: &Sandbox, name: &str, port: u16) {
    let (app_id, secret) = sb.app_client();
    let row = sb
        .csv_row(name, BOB, "imap", "SANDBOX_IMAP_STARTTLS_PORT", "starttls", "INBOX")
        .replace(&format!(",{},", sb.var("SANDBOX_CLIENT_ID")), &format!(",{app_id},"))
        .replace(&format!(",{},starttls,", sb.port("SANDBOX_IMAP_STARTTLS_PORT")), &format!(",{port},starttls,"));
    cli.import_with(",flow", &[format!("{row},client_credentials")]);
    let r = cli.run_with_input(&["set-secret", name], &[], &format!("{secret}\n"));
    assert_eq!(r.code, 0, "{r:?}");
    let r = cli.run(&["authenticate", name, "--json"], &[]);
    assert_eq!((r.code, r.json()[0]["ok"].as_bool()), (0, Some(true)), "{r:?}");
}

fn listed(cli: &Cli, name: &str) -> Value {
    let r = cli.run(&["list", "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    r.json().as_array().unwrap().iter().find(|v| v["name"] == name).cloned().unwrap()
}

#[test]
fn a_throttled_mailbox_is_retried_after_its_back_off_and_never_recorded_red() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let relay =
        ThrottlingRelay::new(format!("{}:{}", sb.var("SANDBOX_MAIL_HOST"), sb.port("SANDBOX_IMAP_STARTTLS_PORT")));
    app_mailbox(&cli, &sb, "limited", relay.port);

    relay.throttle_next(1);
    let before = relay.accepted();
    let r = cli.run(&["verify", "limited", "--json"], &[]);
    assert_eq!(r.code, 0, "green after the retry: {r:?}");
    let recs = r.json();
    assert_eq!(
        (recs[0]["ok"].as_bool(), recs[0]["throttled"].as_bool(), recs[0]["check"].as_str()),
        (Some(true), Some(false), Some("imap")),
        "{recs}"
    );
    assert_eq!(relay.accepted() - before, 2, "one throttled attempt, one retry");

    let h = cli.run(&["history", "limited", "--json"], &[]).json();
    let first = &h[1];
    assert_eq!(
        (first["ok"].as_bool(), first["code"].as_str(), first["throttled"].as_bool()),
        (Some(false), Some("throttled"), Some(true)),
        "the throttled attempt is recorded as throttled: {h}"
    );
    assert!(
        first["server_words"].as_str().unwrap().contains("NO [LIMIT] Maximum number of connections"),
        "the server's words are kept: {first}"
    );
    let v = listed(&cli, "limited");
    assert_eq!((v["status"].as_str(), v["throttled"].as_bool()), (Some("verified"), Some(false)), "{v}");
}

#[test]
fn a_mailbox_throttled_every_time_shows_throttled_keeps_its_badge_and_exits_0() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let relay =
        ThrottlingRelay::new(format!("{}:{}", sb.var("SANDBOX_MAIL_HOST"), sb.port("SANDBOX_IMAP_STARTTLS_PORT")));
    app_mailbox(&cli, &sb, "limited", relay.port);

    relay.throttle_next(usize::MAX);
    let before = relay.accepted();
    let r = cli.run(&["verify", "limited", "--json"], &[]);
    assert_eq!(r.code, 0, "throttled alone is not a failure for cron: {r:?}");
    assert!(r.stderr.contains("warning: throttled by the server, not checked this time: limited"), "{r:?}");
    let recs = r.json();
    assert_eq!(
        (recs[0]["ok"].as_bool(), recs[0]["throttled"].as_bool(), recs[0]["code"].as_str()),
        (Some(false), Some(true), Some("throttled")),
        "{recs}"
    );
    assert_eq!(relay.accepted() - before, 3, "the first attempt and two retries, then it stops");

    let v = listed(&cli, "limited");
    assert_eq!(
        (v["status"].as_str(), v["throttled"].as_bool()),
        (Some("verified"), Some(true)),
        "the badge stays what the last real check said: {v}"
    );
    let text = cli.run(&["list"], &[]);
    assert!(text.stdout.contains("Verified"), "{text:?}");

    // The Nagios plugin does not page anyone for a throttled mailbox either.
    let c = cli.run(&["check", "limited"], &[]);
    assert_ne!(c.code, 2, "not CRITICAL: {c:?}");
}

/// Sign-in expiry: a mailbox whose sign-in has an absolute lifetime of 10 days
/// (`signin_max_age_days`, as for a Google app in Testing), signed in through the sandbox's
/// real browser flow, shows its countdown and is amber (inside the 14-day window), though its
/// mailbox was verified green; the same mailbox without the column shows no countdown (the
/// generic IdP names no idle lifetime) and is green.
#[test]
fn an_absolute_sign_in_lifetime_shows_its_countdown_and_turns_amber() {
    const ALICE: (&str, &str) = ("alice@sandbox.test", "alice-password");
    let sb = Sandbox::get();
    let cli = Cli::new();
    let row = |name: &str| sb.csv_row(name, ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX");
    cli.import_with(",signin_max_age_days", &[format!("{},10", row("testing")), format!("{},", row("published"))]);
    for name in ["testing", "published"] {
        let r = cli.authenticate(&sb, name, ALICE.0, ALICE.1, &[]);
        assert_eq!((r.code, r.json()[0]["ok"].as_bool()), (0, Some(true)), "{name}: {r:?}");
    }
    let signed_in = chrono::Utc::now();

    let v = listed(&cli, "testing");
    let at = v["signin_expires_at"].as_str().unwrap_or_else(|| panic!("no countdown: {v}"));
    let at = chrono::DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&chrono::Utc);
    let off = (at - (signed_in + chrono::Duration::days(10))).num_seconds().abs();
    assert!(off < 300, "ten days after the sign-in, not {at}");
    assert_eq!(
        (v["status"].as_str(), v["last_check"]["ok"].as_bool(), v["signin_max_age_days"].as_u64()),
        (Some("needs_attention"), Some(true), Some(10)),
        "amber 14 days before, though the mailbox is fine: {v}"
    );
    let p = listed(&cli, "published");
    assert_eq!((p["status"].as_str(), p["signin_expires_at"].is_null()), (Some("verified"), true), "{p}");

    let text = cli.run(&["list"], &[]);
    let line = text.stdout.lines().find(|l| l.starts_with("testing ")).unwrap();
    assert!(line.contains("sign-in expires in 9 days") || line.contains("sign-in expires in 10 days"), "{line}");
    assert!(!text.stdout.lines().find(|l| l.starts_with("published ")).unwrap().contains("sign-in"), "{text:?}");

    // verify --json carries it too.
    let r = cli.run(&["verify", "testing", "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.json()[0]["signin_expires_at"].is_string(), "{r:?}");
}

/// The identity provider's HTTP 429 with `Retry-After` on a refresh is throttling too: the
/// refresh is retried after the second it asked for, the mailbox ends green, and the 429 is in
/// the history as throttled, not as a failure.
#[test]
fn a_429_from_the_token_endpoint_is_waited_out_not_recorded_red() {
    const ALICE: (&str, &str) = ("alice@sandbox.test", "alice-password");
    let sb = Sandbox::get();
    let cli = Cli::new();
    let token_url = url::Url::parse(sb.var("SANDBOX_TOKEN_URL")).unwrap();
    let idp = BusyIdp::new(format!("{}:{}", token_url.host_str().unwrap(), token_url.port().unwrap()));
    let relayed = format!("{}{}", idp.url_base, token_url.path());
    let row = sb
        .csv_row("busy", ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")
        .replace(&format!(",{},", sb.var("SANDBOX_TOKEN_URL")), &format!(",{relayed},"));
    assert!(row.contains(&relayed), "{row}");
    cli.import(&[row]);
    let r = cli.authenticate(&sb, "busy", ALICE.0, ALICE.1, &[]);
    assert_eq!((r.code, r.json()[0]["ok"].as_bool()), (0, Some(true)), "{r:?}");

    // A new process has no cached access token: verify refreshes, and meets the 429 first.
    idp.busy.store(1, Ordering::SeqCst);
    let r = cli.run(&["verify", "busy", "--json"], &[]);
    assert_eq!(r.code, 0, "green after waiting out the 429: {r:?}");
    assert_eq!((r.json()[0]["ok"].as_bool(), r.json()[0]["throttled"].as_bool()), (Some(true), Some(false)), "{r:?}");
    assert_eq!(idp.answered.load(Ordering::SeqCst), 1, "the 429 was met");
    let h = cli.run(&["history", "busy", "--json"], &[]).json();
    let throttled = &h[1];
    assert_eq!(
        (throttled["check"].as_str(), throttled["code"].as_str(), throttled["throttled"].as_bool()),
        (Some("refresh"), Some("throttled"), Some(true)),
        "{h}"
    );
    assert!(throttled["message"].as_str().unwrap().contains("HTTP 429"), "{throttled}");
    assert_eq!(listed(&cli, "busy")["status"].as_str(), Some("verified"));
}

/// The monitor honours a named back-off across passes: a mailbox Exchange throttled with
/// "Suggested Backoff Time: 60000 milliseconds" is not connected to again by the next pass
/// (its badge stays green, nothing alerts), and the throttled check is counted as such.
#[test]
fn the_monitor_leaves_a_throttled_mailbox_alone_until_its_back_off_has_passed() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let relay = ThrottlingRelay::with_words(
        format!("{}:{}", sb.var("SANDBOX_MAIL_HOST"), sb.port("SANDBOX_IMAP_STARTTLS_PORT")),
        "BAD Request is throttled. Suggested Backoff Time: 60000 milliseconds",
    );
    app_mailbox(&cli, &sb, "exchange", relay.port);
    relay.throttle_next(usize::MAX);

    let before = relay.accepted();
    let r = cli.run(&["monitor", "--once"], &[]);
    assert_eq!(r.code, 0, "throttled is not red: {r:?}");
    assert!(!r.stdout.contains("ALERT"), "no alert for a throttled check: {r:?}");
    assert_eq!(relay.accepted() - before, 1, "one attempt in the pass");
    let h = cli.run(&["history", "exchange", "--json"], &[]).json();
    assert_eq!((h[0]["code"].as_str(), h[0]["throttled"].as_bool()), (Some("throttled"), Some(true)), "{h}");
    assert!(h[0]["message"].as_str().unwrap().contains("retry after 60 seconds"), "{}", h[0]);

    let r = cli.run(&["monitor", "--once"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains("ALERT"), "{r:?}");
    assert_eq!(relay.accepted() - before, 1, "the next pass waits for the 60 s back-off: {r:?}");
    let v = listed(&cli, "exchange");
    assert_eq!((v["status"].as_str(), v["throttled"].as_bool()), (Some("verified"), Some(true)), "{v}");
}

/// A running `mailbox-auth monitor`, killed when dropped; its standard output and error kept.
struct Running {
    child: std::process::Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(cli: &Cli, args: &[&str]) -> Running {
        let mut child = cli.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let streams: [Box<dyn Read + Send>; 2] =
            [Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
        for r in streams {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    out.lock().unwrap().push(line);
                }
            });
        }
        Running { child, output }
    }

    fn text(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keep-alive: the sandbox IdP's `mailbox-auth-idle` client's refresh tokens expire 20 s after
/// they were issued unless used (each refresh rotates to a fresh one). A mailbox watched by
/// `monitor --interval 2` stays signed in and green for more than two of those lifetimes; the
/// same sign-in left alone for as long has aged out and ends red with "sign in again".
#[test]
fn a_monitored_sign_in_outlives_its_idle_lifetime_and_an_unmonitored_one_ages_out() {
    const ALICE: (&str, &str) = ("alice@sandbox.test", "alice-password");
    const IDLE_TTL: Duration = Duration::from_secs(20);
    let sb = Sandbox::get();
    let (watched, left) = (Cli::new(), Cli::new());
    for (cli, name) in [(&watched, "kept"), (&left, "idle")] {
        let row = sb
            .csv_row(name, ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")
            .replace(&format!(",{},", sb.var("SANDBOX_CLIENT_ID")), ",mailbox-auth-idle,");
        assert!(row.contains(",mailbox-auth-idle,"), "{row}");
        cli.import(&[row]);
        let r = cli.authenticate(&sb, name, ALICE.0, ALICE.1, &[]);
        assert_eq!((r.code, r.json()[0]["ok"].as_bool()), (0, Some(true)), "{name}: {r:?}");
    }
    let signed_in = Instant::now();
    let mon = Running::start(&watched, &["monitor", "--interval", "2"]);
    while signed_in.elapsed() < IDLE_TTL * 2 + Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = mon.text();
    drop(mon);
    assert!(!out.contains("ALERT"), "the monitored mailbox never left green: {out}");
    let passes = out.lines().filter(|l| l.starts_with("checked 1 mailbox(es): 1 verified")).count();
    assert!(passes >= 8, "the monitor kept checking, green: {passes} passes\n{out}");

    let r = watched.run(&["verify", "kept", "--json"], &[]);
    assert_eq!((r.code, r.json()[0]["ok"].as_bool()), (0, Some(true)), "still signed in: {r:?}\n{out}");

    let r = left.run(&["verify", "idle", "--json"], &[]);
    assert_eq!(r.code, 1, "aged out: {r:?}");
    let rec = &r.json()[0];
    assert_eq!((rec["check"].as_str(), rec["ok"].as_bool()), (Some("refresh"), Some(false)), "{rec}");
    assert!(rec["hint"].as_str().unwrap().contains("sign in again"), "{rec}");
    assert_eq!(listed(&left, "idle")["status"].as_str(), Some("failed"));
}

/// A mail server with a per-user connection limit, as Dovecot's `mail_max_userip_connections`
/// or Gmail's 15 make one, counted where the server counts: a relay in front of Dovecot that
/// keeps the number of connections open at once (and the most there ever were), greets each
/// after a moment (so connections of one pass overlap), and answers a connection beyond
/// `limit` as a server at its limit does.
struct LimitedServer {
    port: u16,
    peak: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl LimitedServer {
    fn new(upstream: String, limit: usize) -> LimitedServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (p, r) = (peak.clone(), refused.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let n = open.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(n, Ordering::SeqCst);
                let (open, upstream) = (open.clone(), upstream.clone());
                if n > limit {
                    r.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        answer_throttled(client, "NO [LIMIT] Maximum number of connections from user+IP exceeded");
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                    continue;
                }
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    if let Ok(server) = TcpStream::connect(&upstream) {
                        let pairs = [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)];
                        let copies: Vec<_> = pairs
                            .into_iter()
                            .map(|(mut from, mut to)| {
                                std::thread::spawn(move || {
                                    let _ = std::io::copy(&mut from, &mut to);
                                    let _ = to.shutdown(std::net::Shutdown::Both);
                                })
                            })
                            .collect();
                        for c in copies {
                            let _ = c.join();
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        LimitedServer { port, peak, refused }
    }

    /// The most connections open at once since the last call.
    fn take_peak(&self) -> usize {
        self.peak.swap(0, Ordering::SeqCst)
    }
}

/// Many shared mailboxes opened by one account share that account's connection limit. With
/// `--per-account 2` against a server that allows 2 connections per user, a pass over six of
/// bob's mailboxes never has more than 2 open at the server (and does have 2: the mailboxes are
/// checked side by side) and nothing is refused; with a cap above the server's limit the server
/// refuses some, and those are throttled, retried and never red.
#[test]
fn the_per_account_cap_bounds_connections_at_the_server_and_throttling_is_never_red() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let server =
        LimitedServer::new(format!("{}:{}", sb.var("SANDBOX_MAIL_HOST"), sb.port("SANDBOX_IMAP_STARTTLS_PORT")), 2);
    let names: Vec<String> = (1..=6).map(|i| format!("shared{i}")).collect();
    for n in &names {
        app_mailbox(&cli, &sb, n, server.port);
    }
    server.take_peak();
    let refused_before = server.refused.load(Ordering::SeqCst);

    let r = cli.run(&["monitor", "--once", "--per-account", "2"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("checked 6 mailbox(es): 6 verified"), "{r:?}");
    assert_eq!(server.take_peak(), 2, "at most 2 of bob's connections at once, and the checks do overlap");
    assert_eq!(server.refused.load(Ordering::SeqCst), refused_before, "the server refused none");

    let r = cli.run(&["monitor", "--once", "--per-account", "6"], &[]);
    assert!(server.take_peak() > 2, "without the cap more connections open at once");
    assert!(server.refused.load(Ordering::SeqCst) > refused_before, "and the server refuses some: {r:?}");
    assert_eq!(r.code, 0, "throttled is not red: {r:?}");
    assert!(!r.stdout.contains("ALERT"), "no alert for throttling: {r:?}");
    for n in &names {
        let v = listed(&cli, n);
        assert_eq!(v["status"].as_str(), Some("verified"), "{n} is not red for being throttled: {v}");
    }
    let throttled: usize = names
        .iter()
        .map(|n| {
            let h = cli.run(&["history", n, "--json"], &[]).json();
            h.as_array().unwrap().iter().filter(|r| r["throttled"] == true).count()
        })
        .sum();
    assert!(throttled > 0, "the refused attempts are recorded as throttled");
}
