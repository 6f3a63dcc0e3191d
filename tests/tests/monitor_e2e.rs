//! The monitor end to end: the real `mailbox-auth monitor`, `check` and `alerts` against the
//! sandbox (oidc-provider, Dovecot, gnome-keyring), with a real webhook receiver (an HTTP server
//! on a socket in this test) and real TCP relays in front of the mail server and the token
//! endpoint that the test switches between passing traffic and closing every connection. The
//! shared sandbox itself is never stopped: other tests use it at the same time.
//!
//! The mailboxes sign in with app-only access (client credentials, no browser), so each
//! test sets up in a second or two.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailbox_auth_tests::{contains, files_under, Cli, Sandbox};
use serde_json::Value;

const BOB: &str = "bob@sandbox.test";
const ALICE: &str = "alice@sandbox.test";

/// A TCP relay to `upstream`: passes bytes both ways while on, closes each new connection at
/// once while off (what a server that went down looks like to a client).
struct Relay {
    port: u16,
    on: Arc<AtomicBool>,
}

impl Relay {
    fn new(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let on = Arc::new(AtomicBool::new(true));
        let flag = on.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                mailbox_auth_tests::relay(client, server);
            }
        });
        Relay { port, on }
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }
}

/// A webhook receiver: records each POSTed JSON body and answers `status`.
struct Receiver {
    url: String,
    posts: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    /// `path` stands for the credentials a real webhook URL carries.
    fn new(status: u16, path: &str) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}{path}", listener.local_addr().unwrap().port());
        let posts = Arc::new(Mutex::new(Vec::new()));
        let seen = posts.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    seen.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    let mut conn = conn;
                    let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                });
            }
        });
        Receiver { url, posts }
    }

    fn posts(&self) -> Vec<Value> {
        self.posts.lock().unwrap().clone()
    }
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "gave up waiting for {what} after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `mailbox-auth monitor`, killed when dropped; its output collected line by line.
struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(cli: &Cli, args: &[&str]) -> Running {
        let mut child = cli.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let collect = |r: Box<dyn Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let l = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Running { child, stdout, stderr }
    }

    fn passes(&self) -> usize {
        self.stderr.lock().unwrap().iter().filter(|l| l.starts_with("checked ")).count()
    }

    fn wait_passes(&self, n: usize) {
        let target = self.passes() + n;
        wait_until(&format!("{n} more pass(es)"), Duration::from_secs(90), || self.passes() >= target);
    }

    fn output(&self) -> String {
        format!("{}\n{}", self.stdout.lock().unwrap().join("\n"), self.stderr.lock().unwrap().join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An app-only (client credentials) POP3S row for `email`, optionally through relays for the
/// mail server (`mail_port`) and the token endpoint (`token_url`).
fn app_row(sb: &Sandbox, name: &str, email: &str, mail_port: Option<u16>, token_url: Option<&str>) -> String {
    let (app_id, _) = sb.app_client();
    let mut row = sb
        .csv_row(name, email, "pop3", "SANDBOX_POP3S_PORT", "tls", "INBOX")
        .replace(&format!(",{},", sb.var("SANDBOX_CLIENT_ID")), &format!(",{app_id},"));
    if let Some(p) = mail_port {
        row = row.replace(&format!(",{},tls,", sb.port("SANDBOX_POP3S_PORT")), &format!(",{p},tls,"));
    }
    if let Some(t) = token_url {
        row = row.replace(&format!(",{},", sb.var("SANDBOX_TOKEN_URL")), &format!(",{t},"));
    }
    format!("{row},client_credentials")
}

/// Imports app-only mailboxes, stores the app's secret for each and signs them in.
fn app_mailboxes(cli: &Cli, sb: &Sandbox, rows: &[(String, Option<&str>)]) {
    cli.import_with(",flow", &rows.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>());
    let (_, secret) = sb.app_client();
    for (row, expires) in rows {
        let name = row.split(',').next().unwrap();
        let mut args = vec!["set-secret", name];
        if let Some(e) = expires {
            args.extend(["--expires", e]);
        }
        let r = cli.run_with_input(&args, &[], &format!("{secret}\n"));
        assert_eq!(r.code, 0, "{r:?}");
        let r = cli.run(&["authenticate", name, "--json"], &[]);
        let ok = r.json()[0]["ok"].as_bool();
        assert_eq!((r.code == 0, ok), (!name.starts_with("red"), Some(!name.starts_with("red"))), "{name}: {r:?}");
    }
}

fn store_webhook(cli: &Cli, url: &str) {
    let r = cli.run_with_input(&["alerts", "webhook"], &[], &format!("{url}\n"));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!format!("{r:?}").contains(url), "the webhook URL is echoed: {r:?}");
}

/// Nothing the CLI printed and no file in its data directory holds `secret`.
fn assert_nowhere(cli: &Cli, extra_output: &str, secret: &str) {
    let transcript = cli.transcript.lock().unwrap().clone();
    assert!(!transcript.contains(secret) && !extra_output.contains(secret), "{secret} appears in the output");
    for (p, bytes) in files_under(cli.home.path()) {
        assert!(!contains(&bytes, secret), "{secret} appears in {}", p.display());
    }
}

#[test]
fn mail_server_down_then_up_alerts_red_once_and_recovered_once() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let relay = Relay::new(format!("{}:{}", sb.var("SANDBOX_MAIL_HOST"), sb.port("SANDBOX_POP3S_PORT")));
    app_mailboxes(
        &cli,
        &sb,
        &[
            (app_row(&sb, "relayed", BOB, Some(relay.port), None), None),
            (app_row(&sb, "direct", BOB, None, None), None),
        ],
    );
    // A mailbox whose stored settings cannot be read is named in each pass; the others go on.
    cli.import_with(",flow", &[app_row(&sb, "broken", BOB, None, None)]);
    let db = cli.home.path().join("mailbox-auth.sqlite3");
    let corrupt = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             c.execute(\"UPDATE mailboxes SET data='{' WHERE name='broken'\"); c.commit()",
            db.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(corrupt.success());
    let hook = Receiver::new(200, "/hooks/T0SECRET-mail");
    store_webhook(&cli, &hook.url);

    let mon = Running::start(&cli, &["monitor", "--interval", "2"]);
    mon.wait_passes(1);
    assert!(mon.output().contains("broken: not checked: "), "{}", mon.output());
    assert_eq!(hook.posts(), Vec::<Value>::new(), "all green, as before: nothing to alert");

    relay.set(false);
    wait_until("the red alert", Duration::from_secs(60), || !hook.posts().is_empty());
    mon.wait_passes(2);
    let posts = hook.posts();
    assert_eq!(posts.len(), 1, "exactly one alert while it stays red: {posts:#?}");
    let red = &posts[0];
    assert_eq!(
        (red["kind"].as_str(), red["mailbox"].as_str(), red["from"].as_str(), red["to"].as_str()),
        (Some("transition"), Some("relayed"), Some("verified"), Some("failed")),
        "{red}"
    );
    assert!(red["code"].as_str().is_some_and(|c| !c.is_empty()), "{red}");
    assert!(red["hint"].as_str().is_some_and(|h| !h.is_empty()), "{red}");
    assert!(red["text"].as_str().unwrap().starts_with("Mailbox Auth: relayed: Verified → Failed"), "{red}");
    assert!(red["cause"].as_str().unwrap().contains(&format!(":{}", relay.port)), "names the mail server: {red}");

    relay.set(true);
    wait_until("the recovery alert", Duration::from_secs(60), || hook.posts().len() >= 2);
    mon.wait_passes(2);
    let posts = hook.posts();
    assert_eq!(posts.len(), 2, "exactly one recovery alert: {posts:#?}");
    assert_eq!(
        (posts[1]["mailbox"].as_str(), posts[1]["change"].as_str(), posts[1]["to"].as_str()),
        (Some("relayed"), Some("recovered"), Some("verified")),
        "{}",
        posts[1]
    );
    let out = mon.output();
    assert_eq!(out.matches(" ALERT relayed: ").count(), 2, "each alert is logged once: {out}");
    drop(mon);
    assert_nowhere(&cli, &out, "T0SECRET");
}

#[test]
fn token_endpoint_outage_is_one_summary_and_a_second_once_run_alerts_nothing() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let token = url::Url::parse(sb.var("SANDBOX_TOKEN_URL")).unwrap();
    let relay = Relay::new(format!("{}:{}", token.host_str().unwrap(), token.port_or_known_default().unwrap()));
    let mut relayed = token.clone();
    relayed.set_port(Some(relay.port)).unwrap();
    let names = ["t01", "t02", "t03", "t04", "t05", "t06", "t07", "t08", "t09", "t10"];
    let rows: Vec<_> = names.iter().map(|n| (app_row(&sb, n, BOB, None, Some(relayed.as_str())), None)).collect();
    app_mailboxes(&cli, &sb, &rows);
    // Imported, never signed in: not watched, so neither red nor alerted.
    cli.import_with(",flow", &[app_row(&sb, "never", BOB, None, None)]);
    let hook = Receiver::new(200, "/hooks/T0SECRET-idp");
    store_webhook(&cli, &hook.url);

    let once = || cli.run(&["monitor", "--once"], &[]);
    let r = once();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(hook.posts().is_empty(), "nothing changed: {:?}", hook.posts());
    assert!(r.stderr.contains("1 not authenticated (not checked)"), "{r:?}");

    relay.set(false);
    // The webhook is down too at first: the alert is not lost, the next run sends it.
    let broken = Receiver::new(503, "/hooks/T0SECRET-down");
    store_webhook(&cli, &broken.url);
    let r = once();
    assert_eq!(r.code, 1, "red mailboxes: exit 1 {r:?}");
    assert_eq!(broken.posts().len(), 4, "tried 4 times: {:?}", broken.posts());
    assert!(r.stderr.contains("not delivered (tried again next pass)"), "{r:?}");
    store_webhook(&cli, &hook.url);

    let r = once();
    assert_eq!(r.code, 1, "red mailboxes: exit 1 {r:?}");
    let posts = hook.posts();
    assert_eq!(posts.len(), 1, "one summary, not one alert per mailbox: {posts:#?}");
    let s = &posts[0];
    assert_eq!(s["kind"], "summary", "{s}");
    assert_eq!(s["mailboxes"], serde_json::json!(names), "{s}");
    assert_eq!((s["from"].as_str(), s["to"].as_str()), (Some("verified"), Some("failed")), "{s}");
    assert_eq!(s["code"], "token_endpoint_unreachable", "{s}");
    let text = s["text"].as_str().unwrap();
    assert!(text.contains(&format!("the token endpoint {relayed}")), "names the shared cause: {text}");
    assert!(text.contains(&names.join(", ")), "{text}");
    assert_eq!(r.stdout.matches(" ALERT ").count(), 1, "{r:?}");

    // Cron runs it again: still red, nothing new to say.
    let r = once();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(hook.posts().len(), 1, "the second run alerts nothing: {:?}", hook.posts());
    assert!(!r.stdout.contains(" ALERT "), "{r:?}");

    relay.set(true);
    let r = once();
    assert_eq!(r.code, 0, "{}", cli.run(&["list"], &[]).stdout);
    let posts = hook.posts();
    assert_eq!(posts.len(), 2, "{posts:#?}");
    assert_eq!((posts[1]["kind"].as_str(), posts[1]["to"].as_str()), (Some("summary"), Some("verified")));

    // The same outage under a running monitor (2 s passes), started during it (a running
    // monitor holds access tokens until they expire, so an outage shows at their next
    // refresh): one summary, however many passes see it, and one when it is over.
    relay.set(false);
    let mon = Running::start(&cli, &["monitor", "--interval", "2"]);
    wait_until("the summary", Duration::from_secs(60), || hook.posts().len() >= 3);
    mon.wait_passes(2);
    let posts = hook.posts();
    assert_eq!(posts.len(), 3, "one summary for ten mailboxes over several passes: {posts:#?}");
    assert_eq!((posts[2]["kind"].as_str(), posts[2]["to"].as_str()), (Some("summary"), Some("failed")));
    assert_eq!(posts[2]["mailboxes"], serde_json::json!(names));
    assert!(posts[2]["text"].as_str().unwrap().contains(&format!("the token endpoint {relayed}")), "{}", posts[2]);
    relay.set(true);
    wait_until("the recovery summary", Duration::from_secs(60), || hook.posts().len() >= 4);
    mon.wait_passes(2);
    assert_eq!(hook.posts().len(), 4, "{:#?}", hook.posts());
    drop(mon);
    assert_nowhere(&cli, "", "T0SECRET");
}

fn scrape(url_base: &str) -> String {
    let addr = url_base.trim_start_matches("http://").trim_end_matches("/metrics");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
        .parse()
        .unwrap()
}

#[test]
fn prometheus_metrics_pass_promtool_and_match_the_badges() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    app_mailboxes(
        &cli,
        &sb,
        &[
            (app_row(&sb, "green", BOB, None, None), Some("2099-12-31")),
            // The app is not granted alice's mailbox: the server refuses it, red.
            (app_row(&sb, "red-alice", ALICE, None, None), None),
        ],
    );
    let r = cli.run(&["monitor", "--once", "--metrics", "0.0.0.0:0"], &[]);
    assert_eq!(r.code, 2, "a non-loopback address needs --metrics-allow-remote: {r:?}");
    assert!(r.stderr.contains("--metrics-allow-remote"), "{r:?}");

    let started = chrono::Utc::now().timestamp() as f64;
    let mon = Running::start(&cli, &["monitor", "--interval", "2", "--metrics", "127.0.0.1:0"]);
    wait_until("the metrics address", Duration::from_secs(30), || mon.output().contains("serving metrics at "));
    let base = mon.output().lines().find_map(|l| l.strip_prefix("serving metrics at ").map(str::to_string)).unwrap();
    mon.wait_passes(1);
    let metrics = scrape(&base);

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed by scripts/setup");
    promtool.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool check metrics: {out:?}\n{metrics}");

    assert_eq!(sample(&metrics, "mailbox_auth_up{mailbox=\"green\"}"), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, "mailbox_auth_up{mailbox=\"red-alice\"}"), 0.0, "{metrics}");
    let checked = sample(&metrics, "mailbox_auth_last_check_timestamp_seconds{mailbox=\"green\"}");
    assert!(checked >= started - 1.0, "checked by this monitor: {checked} vs {started}");
    let end_2099 = chrono::NaiveDate::from_ymd_opt(2100, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
    assert_eq!(
        sample(&metrics, "mailbox_auth_client_secret_expiry_timestamp_seconds{mailbox=\"green\"}"),
        end_2099.and_utc().timestamp() as f64
    );
    assert_eq!(sample(&metrics, "mailbox_auth_throttled_total{mailbox=\"green\"}"), 0.0);
    assert!(sample(&metrics, "mailbox_auth_check_duration_seconds_count") >= 2.0, "{metrics}");
}

#[test]
fn nagios_check_exit_codes_and_lines_for_green_amber_red_and_unknown() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let soon = (chrono::Utc::now().date_naive() + chrono::Days::new(10)).to_string();
    app_mailboxes(
        &cli,
        &sb,
        &[
            (app_row(&sb, "green", BOB, None, None), Some("2099-12-31")),
            (app_row(&sb, "amber", BOB, None, None), Some(soon.as_str())),
            (app_row(&sb, "red-alice", ALICE, None, None), None),
        ],
    );
    let check = |names: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["check"];
        args.extend_from_slice(names);
        let r = cli.run(&args, env);
        assert_eq!(r.stdout.lines().count(), 1, "one status line: {r:?}");
        r
    };
    let r = check(&["green"], &[]);
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, "MAILBOX-AUTH OK - 1 mailbox verified | verified=1;;;0;1 needs_attention=0;;;0;1 failed=0;;;0;1"),
        "{r:?}"
    );
    let r = check(&["green", "amber"], &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.starts_with(&format!(
            "MAILBOX-AUTH WARNING - 1 of 2 mailboxes need attention: amber (client secret expires {soon}) | "
        )),
        "{r:?}"
    );
    let r = check(&["green", "amber", "red-alice"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout.starts_with(
            "MAILBOX-AUTH CRITICAL - 1 of 3 mailboxes failed: red-alice (auth_rejected); 1 need attention: amber"
        ),
        "{r:?}"
    );
    assert!(r.stdout.trim_end().ends_with("| verified=1;;;0;3 needs_attention=1;;;0;3 failed=1;;;0;3"), "{r:?}");
    // It really checks: a new history record per run.
    let hist = cli.run(&["history", "green", "--json"], &[]).json();
    assert!(hist.as_array().unwrap().iter().filter(|h| h["check"] == "pop3").count() >= 4, "{hist}");

    cli.import_with(",flow", &[app_row(&sb, "never", BOB, None, None)]);
    let r = check(&["never"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout.starts_with("MAILBOX-AUTH CRITICAL - 1 of 1 mailbox failed: never (not_authenticated) | "),
        "{r:?}"
    );

    let r = check(&["green", "nope"], &[]);
    assert_eq!((r.code, r.stdout.trim()), (3, "MAILBOX-AUTH UNKNOWN - no mailbox named `nope`"), "{r:?}");
    let r = check(&["green"], &[("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")]);
    assert_eq!(r.code, 3, "keyring unavailable: {r:?}");
    assert!(r.stdout.starts_with("MAILBOX-AUTH UNKNOWN - the OS keyring is not available"), "{r:?}");
}

#[test]
fn alert_webhook_lives_in_the_keyring_test_alerts_retry_boundedly_and_off_removes_it() {
    let cli = Cli::new();
    let r = cli.run_with_input(&["alerts", "webhook"], &[], "ftp://hooks.example/T0SECRET-bad\n");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("webhook URL") && !r.stderr.contains("T0SECRET"),
        "names the field, not the value: {r:?}"
    );

    let hook = Receiver::new(200, "/hooks/T0SECRET-test");
    store_webhook(&cli, &hook.url);
    let stored = std::process::Command::new("secret-tool")
        .args(["lookup", "service", &cli.keyring_service, "username", "alert_webhook:webhook"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stored.stdout).trim(), hook.url, "kept in the Secret Service");
    let r = cli.run(&["alerts", "test"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let posts = hook.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0]["kind"], "test");
    assert!(posts[0]["text"].as_str().unwrap().contains("test alert"), "{}", posts[0]);

    // A failing receiver: tried a bounded number of times, then an error without the URL.
    let broken = Receiver::new(503, "/hooks/T0SECRET-broken");
    store_webhook(&cli, &broken.url);
    let r = cli.run(&["alerts", "test"], &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(broken.posts().len(), 4, "retried with back-off, bounded");
    assert!(r.stderr.contains("after 4 attempt(s): HTTP 503"), "{r:?}");

    // Unreachable: the network error is reported without the URL either.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    store_webhook(&cli, &format!("http://127.0.0.1:{closed}/hooks/T0SECRET-closed"));
    let r = cli.run(&["alerts", "test"], &[]);
    assert_eq!(r.code, 1, "{r:?}");

    let r = cli.run(&["alerts", "off"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = cli.run(&["alerts", "test"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no alert channel is set"), "{r:?}");
    assert_nowhere(&cli, "", "T0SECRET");
}

/// The shard (1-based, of `count`) of each name, computed apart from the program (Python's
/// hashlib): the first 8 bytes of the name's SHA-256, big-endian, modulo `count`.
fn shards_by_python(names: &[&str], count: u32) -> Vec<u32> {
    let script = format!(
        "import hashlib,sys\nfor n in sys.argv[1:]: print(int.from_bytes(hashlib.sha256(n.encode()).digest()[:8],'big')%{count}+1)"
    );
    let out = std::process::Command::new("python3").arg("-c").arg(script).args(names).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect()
}

/// POP3 checks recorded for each mailbox so far.
fn pop3_checks(cli: &Cli, names: &[&str]) -> Vec<usize> {
    names
        .iter()
        .map(|n| {
            let h = cli.run(&["history", n, "--json", "--limit", "1000"], &[]).json();
            h.as_array().unwrap().iter().filter(|r| r["check"] == "pop3").count()
        })
        .collect()
}

/// `monitor --shard I/N`: two `--once` runs with 1/2 and 2/2 check disjoint sets whose union is
/// every mailbox, the same sets every time and the ones the name's hash picks; two running
/// monitors serve metrics of their own share only.
#[test]
fn two_shards_check_disjoint_halves_covering_every_mailbox_with_their_own_metrics() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let names = ["s1", "s2", "s3", "s4", "s5", "s6"];
    let rows: Vec<_> = names.iter().map(|n| (app_row(&sb, n, BOB, None, None), None)).collect();
    app_mailboxes(&cli, &sb, &rows);
    let expected = shards_by_python(&names, 2);
    assert!(expected.contains(&1) && expected.contains(&2), "both shards get mailboxes: {expected:?}");

    let mut checked_by = vec![Vec::new(); names.len()];
    for round in 0..2 {
        for shard in [1u32, 2] {
            let before = pop3_checks(&cli, &names);
            let r = cli.run(&["monitor", "--once", "--shard", &format!("{shard}/2")], &[]);
            assert_eq!(r.code, 0, "{r:?}");
            let after = pop3_checks(&cli, &names);
            let mine: Vec<usize> = (0..names.len()).filter(|&i| after[i] > before[i]).collect();
            assert!(r.stderr.contains(&format!("checked {} mailbox(es)", mine.len())), "{r:?}");
            for i in mine {
                checked_by[i].push((round, shard));
            }
        }
    }
    for (i, n) in names.iter().enumerate() {
        let e = expected[i];
        assert_eq!(checked_by[i], [(0, e), (1, e)], "{n}: checked once per round, always by shard {e} only");
    }

    let r = cli.run(&["monitor", "--once", "--shard", "3/2"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--shard") && r.stderr.contains("`3/2` is not I/N"), "{r:?}");

    // Two monitors, as two machines run them, each scraped on its own.
    let mons: Vec<Running> = [1, 2]
        .iter()
        .map(|s| {
            Running::start(
                &cli,
                &["monitor", "--interval", "2", "--shard", &format!("{s}/2"), "--metrics", "127.0.0.1:0"],
            )
        })
        .collect();
    let mut seen = Vec::new();
    for (k, mon) in mons.iter().enumerate() {
        wait_until("the metrics address", Duration::from_secs(30), || mon.output().contains("serving metrics at "));
        mon.wait_passes(1);
        let base =
            mon.output().lines().find_map(|l| l.strip_prefix("serving metrics at ").map(str::to_string)).unwrap();
        let metrics = scrape(&base);
        let mut up: Vec<&str> = metrics
            .lines()
            .filter_map(|l| l.strip_prefix("mailbox_auth_up{mailbox=\"")?.split_once('"').map(|(n, _)| n))
            .collect();
        up.sort();
        let want: Vec<&str> =
            names.iter().zip(&expected).filter(|(_, &e)| e == k as u32 + 1).map(|(n, _)| *n).collect();
        assert_eq!(up, want, "shard {}/2 serves its own mailboxes: {metrics}", k + 1);
        for n in &want {
            assert_eq!(sample(&metrics, &format!("mailbox_auth_up{{mailbox=\"{n}\"}}")), 1.0);
        }
        assert!(
            sample(&metrics, "mailbox_auth_check_duration_seconds_count") as usize >= want.len(),
            "the pass observed this shard's mailboxes: {metrics}"
        );
        seen.extend(up.into_iter().map(str::to_string));
    }
    seen.sort();
    assert_eq!(seen, names, "between them, every mailbox once");
}

/// A message as its headers (`Name: value` lines) and its decoded text.
fn decoded(raw: &[u8]) -> String {
    let script = "import email,email.policy,sys\n\
                  m=email.message_from_bytes(sys.stdin.buffer.read(),policy=email.policy.default)\n\
                  print(''.join(f'{k}: {v}\\n' for k,v in m.items()))\n\
                  print(m.get_body(('plain',)).get_content())";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(raw).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Alert emails: `alerts email ADDRESS --via NAME` sends each alert through mailbox NAME's SMTP
/// submission server (Dovecot's, signed in with XOAUTH2) to the sandbox's SMTP sink. A red
/// transition is exactly one message, a second `--once` run adds none, the recovery one more;
/// bad input names its field and stores nothing.
#[test]
fn alert_emails_go_through_a_mailboxs_smtp_once_per_transition() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let relay = Relay::new(format!("{}:{}", sb.var("SANDBOX_MAIL_HOST"), sb.port("SANDBOX_POP3S_PORT")));
    let smtp = format!(",{},{},starttls", sb.var("SANDBOX_MAIL_HOST"), sb.port("SANDBOX_SUBMISSION_PORT"));
    // The sending mailbox signs in with the browser flow, as bob, whose address it sends from.
    cli.import_with(
        ",smtp_host,smtp_port,smtp_security",
        &[format!("{}{smtp}", sb.csv_row("sender", BOB, "pop3", "SANDBOX_POP3S_PORT", "tls", "INBOX"))],
    );
    assert_eq!(cli.authenticate(&sb, "sender", BOB, "bob-password", &[]).code, 0);
    app_mailboxes(&cli, &sb, &[(app_row(&sb, "watched", BOB, Some(relay.port), None), None)]);

    let to = format!("admins-{}-{}@sandbox.test", std::process::id(), chrono::Utc::now().timestamp_millis());
    // Bad input: the field is named and nothing is stored.
    let r = cli.run(&["alerts", "email", "not an address", "--via", "sender"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("alert email address"), "{r:?}");
    let r = cli.run(&["alerts", "email", &to, "--via", "watched"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--via") && r.stderr.contains("no outbound SMTP server"), "{r:?}");
    let r = cli.run(&["alerts", "email", &to, "--via", "nope"], &[]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("no mailbox named `nope`"), "{r:?}");
    let r = cli.run(&["alerts", "test"], &[]);
    assert_eq!(r.code, 2, "nothing was stored: {r:?}");

    let r = cli.run(&["alerts", "email", &to, "--via", "sender"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let sink = std::path::Path::new(sb.var("SANDBOX_SINK_DIR"));
    // Each message as its headers and decoded text (Python's email package undoes the
    // transfer and header encodings).
    let arrived = || -> Vec<String> {
        let mut v: Vec<(std::path::PathBuf, Vec<u8>)> =
            files_under(sink).into_iter().filter(|(_, m)| contains(m, &to)).collect();
        v.sort();
        v.into_iter().map(|(_, m)| decoded(&m)).collect()
    };

    let once = || cli.run(&["monitor", "--once"], &[]);
    let r = once();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(arrived().len(), 0, "all green: nothing to say");

    relay.set(false);
    let r = once();
    assert_eq!(r.code, 1, "{r:?}");
    let mails = arrived();
    assert_eq!(mails.len(), 1, "exactly one message for the red transition: {mails:#?}");
    let m = &mails[0];
    assert!(m.contains("Subject: Mailbox Auth: watched is Failed (was Verified)\n"), "{m}");
    assert!(m.contains(&format!("X-Sink-From: <{BOB}>")), "sent as the --via mailbox: {m}");
    assert!(m.contains("watched: Verified → Failed"), "{m}");
    assert!(
        m.contains(&format!("cause: the mail server {}:{}", sb.var("SANDBOX_MAIL_HOST"), relay.port)),
        "names the mail server: {m}"
    );

    let r = once();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(arrived().len(), 1, "still red: no second message");

    relay.set(true);
    let r = once();
    assert_eq!(r.code, 0, "{r:?}");
    let mails = arrived();
    assert_eq!(mails.len(), 2, "one recovery message: {mails:#?}");
    assert!(
        mails.iter().any(|m| m.contains("Subject: Mailbox Auth: watched is Verified (was Failed)\n")),
        "{mails:#?}"
    );

    let r = cli.run(&["alerts", "test"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&format!("test alert emailed to {to} through `sender`")), "{r:?}");
    assert_eq!(arrived().len(), 3);
    let r = cli.run(&["alerts", "off"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    relay.set(false);
    let r = once();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(arrived().len(), 3, "alerts off: no more mail");
}

/// The shipped alerting rules: `promtool check rules` accepts them and `promtool test rules`
/// runs their unit tests (each alert fires on the series a monitor serves and not on healthy
/// ones). promtool comes with Debian's `prometheus` package, installed by scripts/setup; its
/// absence is a failure, not a skip.
#[test]
fn prometheus_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus");
    for args in [["check", "rules", "mailbox-auth.rules.yml"], ["test", "rules", "mailbox-auth.rules.test.yml"]] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian package prometheus) is installed by scripts/setup");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {}: {text}", args.join(" "));
        assert!(text.contains("SUCCESS"), "{text}");
    }
}

/// A mailbox's own check interval: the CSV column is validated (the line and field named,
/// nothing imported from that line), shown in `list --json`, and honoured by a running monitor:
/// with 2 s passes, a mailbox asking for every minute is checked once (in the first pass) while
/// its neighbour without an interval is checked every pass.
#[test]
fn a_mailbox_check_interval_is_validated_listed_and_honoured_by_the_monitor() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let bad = format!("{},0", app_row(&sb, "zero", BOB, None, None));
    let csv_path = cli.home.path().join("bad.csv");
    let header = format!("{},flow,check_interval_minutes", mailbox_auth_tests::CSV_HEADER);
    std::fs::write(&csv_path, format!("{header}\n{bad}\n")).unwrap();
    let r = cli.run(&["import", csv_path.to_str().unwrap()], &[]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("line 2: check_interval_minutes: `0` is not a number of minutes"), "{r:?}");

    app_mailboxes(&cli, &sb, &[(app_row(&sb, "often", BOB, None, None), None)]);
    cli.import_with(",flow,check_interval_minutes", &[format!("{},1", app_row(&sb, "minutely", BOB, None, None))]);
    let (_, secret) = sb.app_client();
    let r = cli.run_with_input(&["set-secret", "minutely"], &[], &format!("{secret}\n"));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(cli.run(&["authenticate", "minutely", "--json"], &[]).code, 0);
    let listed = cli.run(&["list", "--json"], &[]).json();
    let interval =
        |n: &str| listed.as_array().unwrap().iter().find(|v| v["name"] == n).unwrap()["check_interval_minutes"].clone();
    assert_eq!((interval("minutely"), interval("often")), (serde_json::json!(1), Value::Null), "{listed}");

    let before = pop3_checks(&cli, &["often", "minutely"]);
    let mon = Running::start(&cli, &["monitor", "--interval", "2"]);
    mon.wait_passes(4);
    drop(mon);
    let after = pop3_checks(&cli, &["often", "minutely"]);
    assert!(after[0] - before[0] >= 4, "checked every pass: {before:?} → {after:?}");
    assert_eq!(after[1] - before[1], 1, "checked in the first pass only, then due a minute later");
}
