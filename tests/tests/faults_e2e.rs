//! Fault injection, end to end: the real `mailbox-auth` CLI against the sandbox's real Dovecot,
//! IdP and gnome-keyring, with a fault put between them — a [`FaultProxy`] in front of the mail
//! server or the token endpoint, a private keyring daemon that is killed or locked, a data
//! directory that is read-only, full or corrupt.
//!
//! Every mailbox signs in with its final settings (host or token URL pointing at a proxy that
//! passes everything through), so a fault is switched on without changing the mailbox. Then, for
//! each fault, the CLI must end within a bound (no hang), with the exit status the README
//! documents (1 red, 2 error), the right red `code` and a hint, without a panic, without printing
//! a secret, and without losing the grant: the stored refresh token is unchanged or correctly
//! rotated, which a later check through the healthy path proves by turning green.
//!
//! The closing table (faults tried, ended correctly, hangs, panics, grants lost, secrets printed)
//! is written to `<target dir>/fault-table.txt`, which `scripts/test` prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use mailbox_auth_tests::fault_proxy::{Fault, FaultProxy, TlsTerminate};
use mailbox_auth_tests::private_keyring::PrivateKeyring;
use mailbox_auth_tests::{contains, files_under, Cli, Run, Sandbox};
use serde_json::Value;

const ALICE: (&str, &str) = ("alice@sandbox.test", "alice-password");
const BOB: (&str, &str) = ("bob@sandbox.test", "bob-password");

/// Per-step timeout given to `verify`; every probe fault must end well within [`PROBE_BOUND`].
const STEP_TIMEOUT: &str = "5";
/// Generous "no hang" bound for a verify under a mail-server fault (a handful of 5 s steps).
const PROBE_BOUND: Duration = Duration::from_secs(30);
/// Bound for a refresh that the token endpoint never answers in time: the token client's own
/// timeout (30 s) plus margin.
const TOKEN_BOUND: Duration = Duration::from_secs(45);
/// Bound for faults that are answered at once (an error status, a refused connection, a
/// keyring or store failure).
const QUICK_BOUND: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The closing table

#[derive(Debug, Clone)]
struct Row {
    fault: String,
    command: &'static str,
    want: String,
    got: String,
    secs: f64,
    /// Peak memory of the CLI, MiB.
    mib: u64,
    ended_right: bool,
    hang: bool,
    panic: bool,
    grant_lost: bool,
    secret: bool,
    why: String,
}

impl Row {
    fn ok(&self) -> bool {
        self.ended_right && !self.hang && !self.panic && !self.grant_lost && !self.secret
    }
}

static TABLE: Mutex<Vec<Row>> = Mutex::new(Vec::new());

fn target_dir() -> PathBuf {
    // target/<profile>/deps/<test binary> → target
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// Adds rows to the table and rewrites the table file with every row so far.
fn publish(rows: &[Row]) {
    let mut t = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    t.extend(rows.iter().cloned());
    let mut sorted = t.clone();
    sorted.sort_by(|a, b| (&a.fault, a.command).cmp(&(&b.fault, b.command)));
    let yn = |b: bool| if b { "yes" } else { "-" };
    let mut out = String::from("== Fault injection (tests/tests/faults_e2e.rs)\n");
    out.push_str(&format!(
        "{:<38} {:<7} {:<38} {:<38} {:>6} {:>5}  {:<5} {:<4} {:<5} {:<5} {:<6}\n",
        "fault", "command", "expected", "got", "secs", "MiB", "right", "hang", "panic", "grant", "secret"
    ));
    for r in &sorted {
        out.push_str(&format!(
            "{:<38} {:<7} {:<38} {:<38} {:>6.1} {:>5}  {:<5} {:<4} {:<5} {:<5} {:<6}\n",
            r.fault,
            r.command,
            r.want,
            r.got,
            r.secs,
            r.mib,
            if r.ended_right { "yes" } else { "NO" },
            yn(r.hang),
            yn(r.panic),
            if r.grant_lost { "LOST" } else { "kept" },
            yn(r.secret)
        ));
        if !r.ok() {
            out.push_str(&format!("    ^ {}\n", r.why));
        }
    }
    let count = |f: &dyn Fn(&Row) -> bool| sorted.iter().filter(|r| f(r)).count();
    let faults: std::collections::BTreeSet<&str> = sorted.iter().map(|r| r.fault.as_str()).collect();
    out.push_str(&format!(
        "faults tried: {}, runs: {}, ended as documented: {}, hangs: {}, panics: {}, grants lost: {}, secrets printed: {}\n",
        faults.len(),
        sorted.len(),
        count(&|r| r.ended_right),
        count(&|r| r.hang),
        count(&|r| r.panic),
        count(&|r| r.grant_lost),
        count(&|r| r.secret),
    ));
    let path = target_dir().join("fault-table.txt");
    let tmp = path.with_extension("txt.tmp");
    if std::fs::write(&tmp, out).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}

/// Publishes the rows, then fails the test naming every row that went wrong.
fn conclude(rows: Vec<Row>) {
    publish(&rows);
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok())
        .map(|r| {
            format!(
                "{} ({}): expected {}, got {} in {:.1} s{}{}{}{} — {}",
                r.fault,
                r.command,
                r.want,
                r.got,
                r.secs,
                if r.hang { ", HANG" } else { "" },
                if r.panic { ", PANIC" } else { "" },
                if r.grant_lost { ", GRANT LOST" } else { "" },
                if r.secret { ", SECRET PRINTED" } else { "" },
                r.why
            )
        })
        .collect();
    assert!(bad.is_empty(), "{} of {} fault runs went wrong:\n{}", bad.len(), rows.len(), bad.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Running the CLI with a bound

#[derive(Debug)]
struct Timed {
    run: Run,
    took: Duration,
    /// Did not end within its bound.
    hung: bool,
    /// Still running far beyond its bound, so it was killed.
    killed: bool,
    /// The most memory the CLI held (VmHWM, KiB), as last seen while it ran.
    peak_kib: u64,
}

/// The peak resident memory of a running process (`VmHWM` in /proc), in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Runs the CLI, killing it (our own child, by its handle) if it runs far beyond `bound`.
fn timed(cli: &Cli, args: &[&str], env: &[(&str, &str)], bound: Duration) -> Timed {
    use std::io::Read;
    let mut c = cli.command(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = c.spawn().expect("run mailbox-auth");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let hard = bound + Duration::from_secs(10);
    let mut peak = 0;
    let status = loop {
        // Read before reaping: the peak stays readable until the child is waited for.
        peak = peak_kib(child.id()).unwrap_or(0).max(peak);
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if start.elapsed() > hard {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    let run = Run {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out_t.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap()).into_owned(),
    };
    cli.transcript.lock().unwrap().push_str(&format!(
        "$ mailbox-auth {}\n{}\n{}\n",
        args.join(" "),
        run.stdout,
        run.stderr
    ));
    Timed { run, took, hung: status.is_none() || took > bound, killed: status.is_none(), peak_kib: peak }
}

/// What a run must end with.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Exit 0.
    Green,
    /// Exit 1 with a red record of this code whose hint has these words (`token`: the hint on
    /// standard error).
    Red(&'static str, &'static str),
    /// Either green, or red with this code (a fault the tool may ride out).
    GreenOrRed(&'static str),
    /// Exit 2: `error:` on standard error naming a path under the data directory, and a `hint:`
    /// with these words.
    Error(&'static str),
}

impl std::fmt::Display for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Want::Green => write!(f, "exit 0"),
            Want::Red(code, _) => write!(f, "exit 1 {code}"),
            Want::GreenOrRed(code) => write!(f, "exit 0, or exit 1 {code}"),
            Want::Error(hint) => write!(f, "exit 2 error+hint '{hint}'"),
        }
    }
}

/// The first red record of a `--json` run.
fn red_record(run: &Run) -> Option<Value> {
    let v: Value = serde_json::from_str(&run.stdout).ok()?;
    v.as_array()?.iter().find(|r| r["ok"] == false).cloned()
}

/// `exit N code` as seen.
fn got(run: &Run) -> String {
    match red_record(run) {
        Some(r) => format!("exit {} {}", run.code, r["code"].as_str().unwrap_or("?")),
        None => {
            let first_err = run.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or("");
            format!("exit {} {}", run.code, first_err).chars().take(38).collect()
        }
    }
}

/// The CLI's own last words on standard error (its `error:` line, else its last line), without
/// the debug log around them.
fn last_words(r: &Run) -> String {
    let lines: Vec<&str> = r.stderr.lines().collect();
    lines
        .iter()
        .position(|l| l.starts_with("error:"))
        .map(|i| lines[i..].join(" "))
        .unwrap_or_else(|| lines.last().copied().unwrap_or_default().to_string())
}

/// Whether the run ended as wanted; the reason when not. `names` is the path an `error:` must
/// name.
fn judge(t: &Timed, command: &str, want: Want, names: &Path) -> Result<(), String> {
    let r = &t.run;
    if t.killed {
        return Err(format!(
            "still running after {:.0} s, killed; last words: {}",
            t.took.as_secs_f64(),
            last_words(r)
        ));
    }
    let stderr_hint = || r.stderr.lines().find_map(|l| l.strip_prefix("hint:")).unwrap_or_default().trim().to_string();
    let (code, words, green_ok) = match want {
        Want::Green => {
            return (r.code == 0).then_some(()).ok_or_else(|| format!("not green: {} {}", r.stdout, last_words(r)))
        }
        Want::Error(words) => {
            if r.code != 2 {
                return Err(format!("exit {}, not 2: {}", r.code, last_words(r)));
            }
            let err = r.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
            if !err.contains(names.to_str().unwrap()) {
                return Err(format!("the error does not name {}: {err:?}", names.display()));
            }
            let h = stderr_hint();
            return (!h.is_empty() && h.contains(words))
                .then_some(())
                .ok_or_else(|| format!("hint {h:?} lacks {words:?}"));
        }
        Want::Red(code, words) => (code, words, false),
        Want::GreenOrRed(code) => (code, "", true),
    };
    if green_ok && r.code == 0 {
        return Ok(());
    }
    if r.code != 1 {
        return Err(format!("exit {}, not 1: {}", r.code, last_words(r)));
    }
    if command == "token" {
        // `token` prints no record: its error and hint go to standard error.
        let h = stderr_hint();
        return (!h.is_empty() && h.contains(words)).then_some(()).ok_or_else(|| format!("hint {h:?} lacks {words:?}"));
    }
    let Some(rec) = red_record(r) else { return Err(format!("no red record in {}", r.stdout)) };
    if rec["code"] != code {
        return Err(format!("code {}, not {code}: {}", rec["code"], rec["message"]));
    }
    let h = rec["hint"].as_str().unwrap_or_default();
    (!h.is_empty() && h.contains(words)).then_some(()).ok_or_else(|| format!("hint {h:?} lacks {words:?}"))
}

/// Every value a secret may be printed as: itself and its base64.
fn secret_forms(tokens: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    for t in tokens.iter().filter(|t| !t.is_empty()) {
        v.push(t.clone());
        v.push(base64::engine::general_purpose::STANDARD.encode(t));
    }
    v
}

fn leaks(run: &Run, secrets: &[String]) -> bool {
    secret_forms(secrets).iter().any(|s| run.stdout.contains(s.as_str()) || run.stderr.contains(s.as_str()))
}

/// One fault run turned into a table row (the grant is judged by the caller).
fn row(fault: &str, command: &'static str, want: Want, t: &Timed, data_dir: &Path) -> Row {
    let verdict = judge(t, command, want, data_dir);
    Row {
        fault: fault.to_string(),
        command,
        want: want.to_string(),
        got: if t.killed { "killed (still running)".into() } else { got(&t.run) },
        secs: t.took.as_secs_f64(),
        mib: t.peak_kib / 1024,
        ended_right: verdict.is_ok(),
        hang: t.hung,
        panic: t.run.stderr.contains("panicked"),
        grant_lost: false,
        secret: false,
        why: tidy(&verdict.err().unwrap_or_default()),
    }
}

/// Printable and short: escape sequences out, at most 300 characters.
fn tidy(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ … final byte
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else if c == '\n' {
            out.push_str(" | ");
        } else if !c.is_control() {
            out.push(c);
        }
    }
    if out.chars().count() > 300 {
        out = out.chars().take(300).collect::<String>() + "…";
    }
    out
}

fn add_why(r: &mut Row, why: impl Into<String>) {
    let why = tidy(&why.into());
    r.why = if r.why.is_empty() { why } else { format!("{}; {why}", r.why) };
}

// ---------------------------------------------------------------------------------------------
// Sandbox coordinates

fn idp_addr(sb: &Sandbox) -> std::net::SocketAddr {
    let u = url::Url::parse(sb.var("SANDBOX_TOKEN_URL")).unwrap();
    format!("{}:{}", u.host_str().unwrap(), u.port_or_known_default().unwrap()).parse().unwrap()
}

fn mail_addr(sb: &Sandbox, port_key: &str) -> std::net::SocketAddr {
    format!("{}:{}", sb.var("SANDBOX_MAIL_HOST"), sb.port(port_key)).parse().unwrap()
}

/// The sandbox's server certificate and key sit next to its CA.
fn terminate_tls(sb: &Sandbox) -> TlsTerminate {
    let dir = Path::new(sb.var("SANDBOX_CA_FILE")).parent().unwrap();
    TlsTerminate::from_pem_files(
        &dir.join("server.pem"),
        &dir.join("server.key"),
        Path::new(sb.var("SANDBOX_CA_FILE")),
        sb.var("SANDBOX_MAIL_HOST"),
    )
    .expect("the sandbox's TLS files")
}

/// A sandbox row whose mail server is `port` on the mail host.
fn row_via_mail_port(sb: &Sandbox, name: &str, email: &str, protocol: &str, port_key: &str, port: u16) -> String {
    let host = sb.var("SANDBOX_MAIL_HOST");
    sb.csv_row(name, email, protocol, port_key, "tls", "INBOX")
        .replace(&format!(",{host},{},", sb.port(port_key)), &format!(",{host},{port},"))
}

/// A sandbox row whose token endpoint is behind `proxy`.
fn row_via_token_proxy(sb: &Sandbox, name: &str, proxy: &FaultProxy) -> String {
    let token = sb.var("SANDBOX_TOKEN_URL");
    let mut via = url::Url::parse(token).unwrap();
    via.set_port(Some(proxy.port())).unwrap();
    let row = sb.csv_row(name, BOB.0, "pop3", "SANDBOX_POP3S_PORT", "tls", "INBOX");
    assert!(row.contains(&format!(",{token},")));
    row.replace(&format!(",{token},"), &format!(",{via},"))
}

fn verify_args(name: &str) -> Vec<&str> {
    vec!["verify", name, "--json", "--timeout", STEP_TIMEOUT]
}

/// Reads the stored refresh token (through whichever Secret Service `env` names).
type Lookup<'a> = &'a dyn Fn() -> Option<String>;

/// After a fault: the stored refresh token must be there, and a check through the healthy path
/// must be green (the grant survived). Updates `known` with every token seen.
fn check_grant(
    r: &mut Row,
    cli: &Cli,
    name: &str,
    env: &[(&str, &str)],
    lookup: Lookup<'_>,
    known: &mut Vec<String>,
    heal: &dyn Fn(),
) {
    let after_fault = lookup();
    heal();
    let green = timed(cli, &verify_args(name), env, PROBE_BOUND);
    let after_green = lookup();
    for t in [after_fault.clone(), after_green].into_iter().flatten() {
        if !known.contains(&t) {
            known.push(t);
        }
    }
    if after_fault.is_none() {
        r.grant_lost = true;
        add_why(r, "no refresh token stored after the fault");
    } else if green.run.code != 0 {
        r.grant_lost = true;
        add_why(r, format!("the healthy path is no longer green: {}", got(&green.run)));
    }
    if leaks(&green.run, known) {
        r.secret = true;
        add_why(r, "a refresh token was printed by the healthy check");
    }
}

// ---------------------------------------------------------------------------------------------
// Mail server faults

/// The mail-server faults against one protocol's server behind a TLS-terminating proxy:
/// `imap`, `pop3` (the mailbox's incoming server) or `smtp` (its outbound submission server,
/// checked by `verify` after the incoming one, which stays direct).
fn mail_faults(protocol: &str, port_key: &str, user: (&str, &str), sasl_command: &str, greeting_ok: &str) {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let proxy = FaultProxy::start_tls(mail_addr(&sb, port_key), terminate_tls(&sb));
    let name = format!("{protocol}-via-proxy");
    if protocol == "smtp" {
        let row = sb.csv_row(&name, user.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX");
        let host = sb.var("SANDBOX_MAIL_HOST");
        cli.import_with(",smtp_host,smtp_port,smtp_security", &[format!("{row},{host},{},tls", proxy.port())]);
    } else {
        cli.import(&[row_via_mail_port(&sb, &name, user.0, protocol, port_key, proxy.port())]);
    }
    let signed_in = cli.authenticate(&sb, &name, user.0, user.1, &[]);
    assert_eq!(signed_in.code, 0, "sign-in through the passing proxy: {signed_in:?}");
    let mut known: Vec<String> = cli.stored_refresh_token(&name).into_iter().collect();
    assert!(!known.is_empty(), "no refresh token after sign-in");

    let faults: Vec<(&str, Fault, Want)> = vec![
        ("mail: connection refused", Fault::Refuse, Want::Red("connect_refused", "Check the port")),
        ("mail: reset after the greeting", Fault::reset_after_greeting(), Want::Red("connect", "firewall")),
        ("mail: reset mid-SASL", Fault::reset_mid_command(sasl_command), Want::Red("connect", "firewall")),
        ("mail: 1 byte/s trickle", Fault::Trickle { every: Duration::from_secs(1) }, Want::Red("timeout", "firewall")),
        (
            // Every line in time for a per-line timeout; only an overall deadline ends it
            // (`probe_deadline`). IMAP's step timeout covers a whole command, so it ends first.
            "mail: 1 line per 4 s",
            Fault::SlowLines { every: Duration::from_secs(4) },
            Want::Red(if protocol == "imap" { "timeout" } else { "probe_deadline" }, "firewall"),
        ),
        ("mail: TLS handshake stall", Fault::Stall, Want::Red("timeout", "firewall")),
        (
            "mail: oversize line (64 MiB)",
            Fault::Oversize { prefix: greeting_ok.as_bytes().to_vec(), len: 64 << 20 },
            Want::Red("protocol", "port"),
        ),
        (
            "mail: 300 ms latency each way",
            Fault::Delay { up: Duration::from_millis(300), down: Duration::from_millis(300) },
            Want::Green,
        ),
    ];
    let mut rows = Vec::new();
    for (label, fault, want) in faults {
        let fault_name = format!("{label} ({protocol})");
        let before = proxy.stats();
        proxy.set_fault(fault.clone());
        let t = timed(&cli, &verify_args(&name), &[], PROBE_BOUND);
        let mut r = row(&fault_name, "verify", want, &t, cli.home.path());
        // The fault was really met: a connection reached the proxy (or, refused, none did).
        let s = proxy.stats();
        match fault {
            Fault::Refuse if s.accepted != before.accepted => add_why(&mut r, "the proxy accepted a connection"),
            Fault::Refuse => {}
            _ if s.accepted == before.accepted => add_why(&mut r, "the CLI never reached the proxy"),
            Fault::ResetAfterServerLines(_) | Fault::ResetOnClient { .. } if s.resets == before.resets => {
                r.ended_right = false;
                add_why(&mut r, "the proxy never reset the connection")
            }
            _ => {}
        }
        if let Fault::Oversize { len, .. } = fault {
            // A byte budget per reply: the client never holds the whole line.
            if t.peak_kib * 1024 >= len as u64 {
                r.ended_right = false;
                add_why(&mut r, format!("the CLI grew to {} MiB on a {} MiB line", t.peak_kib / 1024, len >> 20));
            }
        }
        if let (Fault::ResetOnClient { .. }, Some(rec)) = (&fault, red_record(&t.run)) {
            // The connection died in the middle of the SASL exchange, and the record says so.
            if !rec["message"].as_str().unwrap_or_default().contains(if protocol == "imap" {
                "AUTHENTICATE"
            } else {
                "AUTH"
            }) {
                r.ended_right = false;
                add_why(&mut r, format!("the message does not name the SASL step: {}", rec["message"]));
            }
        }
        let lookup = || cli.stored_refresh_token(&name);
        check_grant(&mut r, &cli, &name, &[], &lookup, &mut known, &|| proxy.set_fault(Fault::Pass));
        r.secret |= leaks(&t.run, &known);
        rows.push(r);
    }
    every_secret_only_in_the_keyring(&cli, &known, &mut rows);
    conclude(rows);
}

/// No refresh token in anything the CLI printed or wrote under its data directory.
fn every_secret_only_in_the_keyring(cli: &Cli, known: &[String], rows: &mut [Row]) {
    let transcript = cli.transcript.lock().unwrap().clone();
    let files = files_under(cli.home.path());
    for s in secret_forms(known) {
        let printed = transcript.contains(&s);
        let written = files.iter().find(|(_, b)| contains(b, &s)).map(|(p, _)| p.display().to_string());
        if printed || written.is_some() {
            for r in rows.iter_mut() {
                r.secret = true;
            }
            if let Some(r) = rows.first_mut() {
                add_why(
                    r,
                    format!(
                        "a refresh token was {}",
                        written.map(|p| format!("written to {p}")).unwrap_or("printed".into())
                    ),
                );
            }
        }
    }
}

#[test]
fn imap_server_faults_end_red_in_time_and_keep_the_grant() {
    mail_faults("imap", "SANDBOX_IMAPS_PORT", ALICE, "AUTHENTICATE", "* OK ");
}

#[test]
fn pop3_server_faults_end_red_in_time_and_keep_the_grant() {
    mail_faults("pop3", "SANDBOX_POP3S_PORT", BOB, "AUTH ", "+OK ");
}

#[test]
fn smtp_submission_faults_end_red_in_time_and_keep_the_grant() {
    mail_faults("smtp", "SANDBOX_SUBMISSIONS_PORT", ALICE, "AUTH ", "220 ");
}

// ---------------------------------------------------------------------------------------------
// Identity provider faults

/// The token endpoint's faults, each tried with `verify` and `token` at once.
fn idp_faults(faults: Vec<(&'static str, Fault, Want, Duration)>) {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let proxy = FaultProxy::start(idp_addr(&sb));
    let name = "idp-via-proxy";
    cli.import(&[row_via_token_proxy(&sb, name, &proxy)]);
    let signed_in = cli.authenticate(&sb, name, BOB.0, BOB.1, &[]);
    assert_eq!(signed_in.code, 0, "sign-in with the token endpoint behind the passing proxy: {signed_in:?}");
    let mut known: Vec<String> = cli.stored_refresh_token(name).into_iter().collect();
    assert!(!known.is_empty(), "no refresh token after sign-in");
    let mut rows = Vec::new();
    for (label, fault, want, bound) in faults {
        let before = cli.stored_refresh_token(name);
        let stats = proxy.stats();
        proxy.set_fault(fault.clone());
        let (v, t) = std::thread::scope(|s| {
            let v = s.spawn(|| timed(&cli, &verify_args(name), &[], bound));
            let t = s.spawn(|| timed(&cli, &["token", name], &[], bound));
            (v.join().unwrap(), t.join().unwrap())
        });
        let reached = proxy.stats().accepted - stats.accepted;
        let after = cli.stored_refresh_token(name);
        for (command, timed_run) in [("verify", &v), ("token", &t)] {
            let mut r = row(label, command, want, timed_run, cli.home.path());
            if fault != Fault::Refuse && reached == 0 {
                add_why(&mut r, "the token endpoint was never asked");
                r.ended_right = false;
            }
            // The IdP never saw these requests, so the stored refresh token must not change.
            if after != before {
                r.grant_lost = true;
                add_why(&mut r, "the stored refresh token changed though the IdP never answered");
            }
            if command == "token" && t.run.code == 0 {
                r.ended_right = false;
                add_why(&mut r, "printed a token though the refresh failed");
            }
            r.secret |= leaks(&timed_run.run, &known);
            rows.push(r);
        }
        // Without hammering the endpoint: at most a couple of tries per command.
        if reached > 6 {
            add_why(rows.last_mut().unwrap(), format!("{reached} requests to a failing token endpoint"));
            rows.last_mut().unwrap().ended_right = false;
        }
        if let (Fault::Respond { bytes, .. }, Some(rec)) = (&fault, red_record(&v.run)) {
            if String::from_utf8_lossy(bytes).contains("Retry-After: 120") {
                let said = format!("{} {}", rec["message"], rec["hint"]);
                if !said.contains("120") {
                    let r = rows.iter_mut().rev().nth(1).unwrap();
                    r.ended_right = false;
                    add_why(r, format!("the record does not pass on Retry-After (120 s): {said}"));
                }
            }
        }
        let lookup = || cli.stored_refresh_token(name);
        let n = rows.len();
        check_grant(&mut rows[n - 1], &cli, name, &[], &lookup, &mut known, &|| proxy.set_fault(Fault::Pass));
        rows[n - 2].grant_lost |= rows[n - 1].grant_lost;
    }
    every_secret_only_in_the_keyring(&cli, &known, &mut rows);
    conclude(rows);
}

#[test]
fn token_endpoint_errors_end_red_at_once_and_keep_the_grant() {
    idp_faults(vec![
        ("idp: connection refused", Fault::Refuse, Want::Red("token_endpoint_unreachable", "token URL"), QUICK_BOUND),
        (
            "idp: HTTP 500",
            Fault::http(500, "Internal Server Error", &[("Content-Type", "text/html")], "<h1>Internal error</h1>"),
            Want::Red("token_endpoint_unavailable", "again"),
            QUICK_BOUND,
        ),
        (
            "idp: HTTP 429 Retry-After 120",
            Fault::http(
                429,
                "Too Many Requests",
                &[("Retry-After", "120"), ("Content-Type", "text/plain")],
                "Too many requests",
            ),
            // Throttling, not a broken mailbox: `verify` shows it throttled (exit 0, see
            // living_e2e); `token` has no token to print and fails with the provider's wait.
            Want::GreenOrRed("token_endpoint_unavailable"),
            QUICK_BOUND,
        ),
        (
            // A one-time refresh token presented twice, as strict providers answer it.
            "idp: HTTP 400 with an empty body",
            Fault::http(400, "Bad Request", &[], ""),
            Want::Red("refresh_rejected", "sign in again"),
            QUICK_BOUND,
        ),
        (
            "idp: malformed JSON",
            Fault::http(
                200,
                "OK",
                &[("Content-Type", "application/json")],
                r#"{"access_token": "x", "token_type": "Bearer", "expires_in": "#,
            ),
            Want::Red("token_response_invalid", "token URL"),
            QUICK_BOUND,
        ),
    ]);
}

#[test]
fn a_token_endpoint_slower_than_the_timeout_ends_red_in_time() {
    idp_faults(vec![(
        "idp: answer after 90 s",
        Fault::http(
            200,
            "OK",
            &[("Content-Type", "application/json")],
            r#"{"access_token":"late","token_type":"Bearer","expires_in":600}"#,
        )
        .delayed(Duration::from_secs(90)),
        Want::Red("token_endpoint_unreachable", "token URL"),
        TOKEN_BOUND,
    )]);
}

// ---------------------------------------------------------------------------------------------
// Keyring faults, on a private Secret Service (the test session's own keyring is shared by the
// other tests and is left alone)

/// A mailbox signed in on a private keyring, its token endpoint behind a proxy.
fn keyring_mailbox(sb: &Sandbox, cli: &Cli, k: &PrivateKeyring, proxy: &FaultProxy, name: &str) {
    cli.import(&[row_via_token_proxy(sb, name, proxy)]);
    let signed_in = cli.authenticate(sb, name, BOB.0, BOB.1, &k.env());
    assert_eq!(signed_in.code, 0, "sign-in on the private keyring: {signed_in:?}");
    assert!(k.lookup(cli, name).is_some(), "the refresh token is in the private keyring");
}

#[test]
fn keyring_daemon_killed_while_a_refresh_is_in_flight_keeps_the_grant() {
    let sb = Sandbox::get();
    let mut k = PrivateKeyring::start().unwrap_or_else(|e| panic!("private keyring: {e}"));
    let cli = Cli::new();
    let proxy = FaultProxy::start(idp_addr(&sb));
    let name = "keyring-killed";
    keyring_mailbox(&sb, &cli, &k, &proxy, name);
    let before = k.lookup(&cli, name).unwrap();
    let mut known = vec![before.clone()];

    // The refresh request is held for two seconds on its way to the IdP; the daemon is killed
    // meanwhile, so the IdP rotates the refresh token while the keyring is gone. The daemon
    // comes back shortly after the answer reached the CLI (as a session restarts it), which a
    // tool that keeps the rotated token and retries the write must use.
    proxy.set_fault(Fault::Delay { up: Duration::from_secs(2), down: Duration::ZERO });
    let stats = proxy.stats();
    let address = k.address.clone();
    let env = [("DBUS_SESSION_BUS_ADDRESS", address.as_str())];
    let (t, restarted) = std::thread::scope(|s| {
        let run = s.spawn(|| timed(&cli, &verify_args(name), &env, QUICK_BOUND));
        let asked = proxy.wait_for(Duration::from_secs(15), |st| st.accepted > stats.accepted);
        k.kill_daemon();
        let answered = asked && proxy.wait_for(Duration::from_secs(15), |st| st.bytes_down > stats.bytes_down);
        std::thread::sleep(Duration::from_millis(300));
        let restarted = k.start_daemon(true);
        (run.join().unwrap(), restarted.map(|_| answered))
    });
    let fault = "keyring: daemon killed during refresh";
    let mut r = row(fault, "verify", Want::GreenOrRed("keyring_unavailable"), &t, cli.home.path());
    match restarted {
        Ok(true) => {}
        Ok(false) => add_why(&mut r, "the refresh never went through the proxy"),
        Err(e) => panic!("restarting the keyring daemon: {e}"),
    }
    proxy.set_fault(Fault::Pass);
    let after = k.lookup(&cli, name);
    if after.as_deref() == Some(before.as_str()) && t.run.code != 2 {
        // The IdP rotated the token (the request went through), so the old one is dead.
        add_why(&mut r, "the rotated refresh token was not stored: the keyring still holds the used one");
    }
    let lookup = || k.lookup(&cli, name);
    check_grant(&mut r, &cli, name, &env, &lookup, &mut known, &|| {});
    r.secret |= leaks(&t.run, &known);
    let mut rows = vec![r];
    every_secret_only_in_the_keyring(&cli, &known, &mut rows);
    conclude(rows);
}

#[test]
fn a_locked_or_missing_keyring_ends_red_at_once_and_keeps_the_grant() {
    let sb = Sandbox::get();
    let mut k = PrivateKeyring::start().unwrap_or_else(|e| panic!("private keyring: {e}"));
    let cli = Cli::new();
    let proxy = FaultProxy::start(idp_addr(&sb));
    let name = "keyring-locked";
    keyring_mailbox(&sb, &cli, &k, &proxy, name);
    let before = k.lookup(&cli, name).unwrap();
    let mut known = vec![before.clone()];

    // The daemon starts again without the password: the login keyring is there, locked, and
    // no prompt can be shown (no prompter on this bus).
    k.kill_daemon();
    k.start_daemon(false).unwrap_or_else(|e| panic!("{e}"));
    let address = k.address.clone();
    let env = [("DBUS_SESSION_BUS_ADDRESS", address.as_str())];
    let fault = "keyring: locked";
    let mut rows = Vec::new();
    let stats = proxy.stats();
    let v = timed(&cli, &verify_args(name), &env, QUICK_BOUND);
    rows.push(row(fault, "verify", Want::Red("keyring_locked", "Unlock"), &v, cli.home.path()));
    let t = timed(&cli, &["token", name], &env, QUICK_BOUND);
    rows.push(row(fault, "token", Want::Red("keyring_locked", "Unlock"), &t, cli.home.path()));
    if proxy.stats().accepted != stats.accepted {
        // Refreshing without being able to store the rotated token would lose the grant.
        for r in &mut rows {
            r.grant_lost = true;
            add_why(r, "a refresh was sent while the keyring was locked");
        }
    }
    // No Secret Service at all: the daemon is gone.
    k.kill_daemon();
    let fault = "keyring: daemon not running";
    let v2 = timed(&cli, &verify_args(name), &env, QUICK_BOUND);
    rows.push(row(fault, "verify", Want::Red("keyring_unavailable", "gnome-keyring"), &v2, cli.home.path()));
    let t2 = timed(&cli, &["token", name], &env, QUICK_BOUND);
    rows.push(row(fault, "token", Want::Red("keyring_unavailable", "gnome-keyring"), &t2, cli.home.path()));
    if proxy.stats().accepted != stats.accepted {
        for r in &mut rows[2..] {
            r.grant_lost = true;
            add_why(r, "a refresh was sent while no keyring was running");
        }
    }
    k.start_daemon(true).unwrap_or_else(|e| panic!("{e}"));
    let lookup = || k.lookup(&cli, name);
    if lookup().as_deref() != Some(before.as_str()) {
        add_why(&mut rows[0], "the stored refresh token changed while the keyring was locked");
        rows[0].grant_lost = true;
    }
    check_grant(&mut rows[3], &cli, name, &env, &lookup, &mut known, &|| {});
    let lost = rows[3].grant_lost || rows[0].grant_lost;
    let leaked = [&v, &t, &v2, &t2].iter().any(|x| leaks(&x.run, &known));
    for r in &mut rows {
        r.grant_lost |= lost;
        r.secret |= leaked;
    }
    every_secret_only_in_the_keyring(&cli, &known, &mut rows);
    conclude(rows);
}

// ---------------------------------------------------------------------------------------------
// Data directory faults

/// A tmpfs mounted on `dir` (tests run as root); unmounted on drop.
#[derive(Debug)]
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs refused: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    fn remount(&self, mode: &str) {
        let out = Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(&self.0).output().unwrap();
        assert!(out.status.success(), "remount {mode}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A CLI whose data directory is a small tmpfs, with a sandbox mailbox signed in; `None` (with
/// the reason printed) where mounting is not permitted.
fn cli_on_tmpfs(sb: &Sandbox, name: &str, size: &str) -> Option<(Cli, Tmpfs)> {
    let cli = Cli::new();
    let fs = match Tmpfs::mount(cli.home.path(), size) {
        Ok(fs) => fs,
        Err(e) => {
            println!("SKIPPED: {e} (needs root and mount permission)");
            publish(&[Row {
                fault: format!("data dir: {name} (skipped: cannot mount)"),
                command: "verify",
                want: "-".into(),
                got: "-".into(),
                secs: 0.0,
                mib: 0,
                ended_right: true,
                hang: false,
                panic: false,
                grant_lost: false,
                secret: false,
                why: String::new(),
            }]);
            return None;
        }
    };
    cli.import(&[sb.csv_row(name, ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);
    let signed_in = cli.authenticate(sb, name, ALICE.0, ALICE.1, &[]);
    assert_eq!(signed_in.code, 0, "sign-in: {signed_in:?}");
    Some((cli, fs))
}

/// The data-directory fault's row: the run, then the grant through the healed directory.
fn data_dir_row(cli: &Cli, name: &str, fault: &str, t: &Timed, want: Want, names: &Path, heal: &dyn Fn()) -> Row {
    let mut known: Vec<String> = cli.stored_refresh_token(name).into_iter().collect();
    let mut r = row(fault, "verify", want, t, names);
    let lookup = || cli.stored_refresh_token(name);
    check_grant(&mut r, cli, name, &[], &lookup, &mut known, heal);
    r.secret |= leaks(&t.run, &known);
    let mut rows = [r];
    every_secret_only_in_the_keyring(cli, &known, &mut rows);
    let [r] = rows;
    r
}

#[test]
fn a_read_only_data_dir_is_a_clear_error_and_keeps_the_grant() {
    let sb = Sandbox::get();
    let name = "ro-home";
    let Some((cli, fs)) = cli_on_tmpfs(&sb, name, "16m") else { return };
    fs.remount("ro");
    let t = timed(&cli, &verify_args(name), &[], QUICK_BOUND);
    let r = data_dir_row(&cli, name, "data dir: read-only", &t, Want::Error("writable"), cli.home.path(), &|| {
        fs.remount("rw")
    });
    conclude(vec![r]);
}

#[test]
fn a_full_disk_is_a_clear_error_and_keeps_the_grant() {
    let sb = Sandbox::get();
    let name = "full-home";
    let Some((cli, fs)) = cli_on_tmpfs(&sb, name, "8m") else { return };
    // Fill the file system to the last byte.
    let filler = cli.home.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&[0u8]).is_ok() {}
        let _ = f.sync_all();
    }
    let t = timed(&cli, &verify_args(name), &[], QUICK_BOUND);
    let r = data_dir_row(&cli, name, "data dir: disk full", &t, Want::Error("free space"), cli.home.path(), &|| {
        let _ = std::fs::remove_file(&filler);
    });
    drop(fs);
    conclude(vec![r]);
}

#[test]
fn a_corrupt_database_is_a_clear_error_the_file_is_kept_and_the_grant_too() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let name = "corrupt-db";
    cli.import(&[sb.csv_row(name, ALICE.0, "imap", "SANDBOX_IMAPS_PORT", "tls", "INBOX")]);
    let signed_in = cli.authenticate(&sb, name, ALICE.0, ALICE.1, &[]);
    assert_eq!(signed_in.code, 0, "sign-in: {signed_in:?}");
    let db = cli.home.path().join("mailbox-auth.sqlite3");
    let good = std::fs::read(&db).expect("the database file");
    // Garbage over the whole file, header included: "file is not a database".
    let bad: Vec<u8> = (0..good.len()).map(|i| (i as u8).wrapping_mul(31).wrapping_add(7)).collect();
    std::fs::write(&db, &bad).unwrap();
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(cli.home.path().join(format!("mailbox-auth.sqlite3{side}")));
    }
    let before = cli.stored_refresh_token(name);
    let t = timed(&cli, &verify_args(name), &[], QUICK_BOUND);
    // The corrupt file is kept for the admin (in place, or moved aside), never overwritten.
    let kept = files_under(cli.home.path()).iter().any(|(_, b)| *b == bad);
    let mut r = data_dir_row(&cli, name, "data dir: database corrupted", &t, Want::Error(""), &db, &|| {
        // The admin restores the file (a backup): the mailbox and its grant are still there.
        std::fs::write(&db, &good).unwrap();
    });
    if !kept && r.ended_right {
        r.ended_right = false;
        add_why(&mut r, "the corrupt database file was not kept");
    }
    if before.is_none() {
        r.grant_lost = true;
    }
    conclude(vec![r]);
}
