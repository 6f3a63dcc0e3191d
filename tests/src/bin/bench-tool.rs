//! Helpers of `scripts/bench` (not a test):
//!
//! - `bench-tool proxy ONE_WAY_MS UPSTREAM…` puts a wide-area link in front of each upstream
//!   (`host:port`): one-way latency each way and the TCP handshake's round trip charged
//!   ([`Fault::Wan`]). It prints one local port per upstream, a line each, and relays until its
//!   standard input closes; a `stats` line on its standard input prints the connections each
//!   relay accepted so far.
//! - `bench-tool ceiling HOST PORT CA_FILE USER COUNT CONCURRENCY` measures what the mail
//!   stack can serve: COUNT IMAPS logins (`AUTHENTICATE XOAUTH2`, `EXAMINE INBOX`, `LOGOUT`)
//!   with one access token, no refresh, CONCURRENCY at once. The token comes from the
//!   environment (`BENCH_ACCESS_TOKEN`), never from the command line, where other users could
//!   read it. Prints `{"ok":N,"failed":N,"seconds":S}`.
//! - `bench-tool keyring-cost PID REPS` measures what the Secret Service daemon (process PID)
//!   spends, in its own CPU time, on each keyring call the app makes, with the items the keyring
//!   holds now: a lookup of an entry that exists (search + `GetSecret`), of one that does not
//!   (search), and a store into an existing entry (search + `SetSecret`, which gnome-keyring
//!   follows by writing its whole collection file). One scratch entry of the service in
//!   `$MAILBOX_AUTH_KEYRING_SERVICE`, deleted after. Prints
//!   `{"lookup_ms":X,"miss_ms":X,"store_ms":X}`, milliseconds of daemon CPU per call.
//! - `bench-tool keyring-layout PID ITEMS BYTES REPS` asks what another layout of the same
//!   secrets would cost the daemon: it stores ITEMS scratch entries of BYTES each (in the service
//!   in `$MAILBOX_AUTH_KEYRING_SERVICE`), then measures a store into one of them and a lookup,
//!   REPS times each, and deletes them all. 1,000 entries of 1,500 bytes are a thousand
//!   mailboxes' Microsoft-sized refresh tokens, one per entry; 32 entries of 47,000 bytes are the
//!   same tokens in 32 shards. Prints `{"items":N,"bytes":N,"store_ms":X,"lookup_ms":X}`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mailbox_auth_core::mailbox::Security;
use mailbox_auth_core::probe::{self, ProbeTarget, Service};
use mailbox_auth_tests::fault_proxy::{Fault, FaultProxy};
use oauth2::AccessToken;

fn usage() -> ! {
    eprintln!(
        "usage: bench-tool proxy ONE_WAY_MS HOST:PORT…\n       bench-tool ceiling HOST PORT CA_FILE USER COUNT CONCURRENCY\n       bench-tool keyring-cost PID REPS\n       bench-tool keyring-layout PID ITEMS BYTES REPS"
    );
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("bench-tool: {what} is missing or invalid");
        usage()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("proxy") => proxy(&args),
        Some("ceiling") => ceiling(&args),
        Some("keyring-cost") => keyring_cost(&args),
        Some("keyring-layout") => keyring_layout(&args),
        _ => usage(),
    }
}

fn proxy(args: &[String]) {
    let one_way = Duration::from_millis(arg(args, 1, "ONE_WAY_MS"));
    if args.len() < 3 {
        usage();
    }
    let proxies: Vec<FaultProxy> = args[2..]
        .iter()
        .map(|u| {
            let upstream: SocketAddr = u.parse().unwrap_or_else(|_| {
                eprintln!("bench-tool: {u} is not HOST:PORT");
                usage()
            });
            let p = FaultProxy::start(upstream);
            p.set_fault(if one_way.is_zero() { Fault::Pass } else { Fault::Wan { one_way } });
            println!("{}", p.port());
            p
        })
        .collect();
    // Relay until whoever started us closes our standard input (or ends); each `stats` line
    // asks for the connections accepted so far, one count per upstream on one line.
    for line in std::io::stdin().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "stats" {
            let counts: Vec<String> = proxies.iter().map(|p| p.stats().accepted.to_string()).collect();
            println!("{}", counts.join(" "));
        }
    }
    drop(proxies);
}

fn ceiling(args: &[String]) {
    let host: String = arg(args, 1, "HOST");
    let port: u16 = arg(args, 2, "PORT");
    let ca: String = arg(args, 3, "CA_FILE");
    let user: String = arg(args, 4, "USER");
    let count: usize = arg(args, 5, "COUNT");
    let concurrency: usize = arg(args, 6, "CONCURRENCY");
    let token = AccessToken::new(std::env::var("BENCH_ACCESS_TOKEN").unwrap_or_else(|_| {
        eprintln!("bench-tool: BENCH_ACCESS_TOKEN is not set");
        usage()
    }));
    let target = ProbeTarget {
        protocol: Service::Imap,
        host,
        port,
        security: Security::Tls,
        folder: "INBOX".into(),
        sasl_user: user,
        ca_file: Some(ca.into()),
        timeout: Duration::from_secs(20),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let start = Instant::now();
    let (ok, failed) = rt.block_on(async {
        let results: Vec<bool> = futures::stream::iter(0..count)
            .map(|_| async { probe::probe(&target, &token).await.is_ok() })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let ok = results.iter().filter(|r| **r).count();
        (ok, results.len() - ok)
    });
    println!("{{\"ok\":{ok},\"failed\":{failed},\"seconds\":{:.3}}}", start.elapsed().as_secs_f64());
}

/// A process's CPU time so far (user + system), in milliseconds, from `/proc/PID/stat`.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| {
        eprintln!("bench-tool: /proc/{pid}/stat: {e}");
        std::process::exit(1)
    });
    // The fields after the command name (which may hold spaces), closed by the last `)`.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map(|t| t.iter().filter_map(|v| v.parse::<f64>().ok()).sum()).unwrap_or(0.0);
    // USER_HZ is 100 on every Linux the sandbox runs on.
    ticks * 10.0
}

fn keyring_cost(args: &[String]) {
    use mailbox_auth_core::secret::{KeyringStore, SecretKind, SecretStore};
    use secrecy::SecretString;
    let pid: u32 = arg(args, 1, "PID");
    let reps: usize = arg(args, 2, "REPS");
    let store = KeyringStore::from_env();
    let name = "bench-keyring-cost";
    let fail = |e: mailbox_auth_core::secret::SecretError| -> ! {
        eprintln!("bench-tool: {e}");
        std::process::exit(1)
    };
    store.set(name, SecretKind::RefreshToken, &SecretString::from("scratch-0")).unwrap_or_else(|e| fail(e));
    let per_call = |f: &dyn Fn(usize)| {
        let before = cpu_ms(pid);
        for i in 0..reps {
            f(i)
        }
        (cpu_ms(pid) - before) / reps.max(1) as f64
    };
    let lookup = per_call(&|_| {
        store.get(name, SecretKind::RefreshToken).unwrap_or_else(|e| fail(e)).expect("the scratch entry");
    });
    let miss = per_call(&|_| {
        assert!(store.get(name, SecretKind::ClientSecret).unwrap_or_else(|e| fail(e)).is_none());
    });
    let stored = per_call(&|i| {
        let value = SecretString::from(format!("scratch-{}", i + 1));
        store.set(name, SecretKind::RefreshToken, &value).unwrap_or_else(|e| fail(e));
    });
    store.delete(name, SecretKind::RefreshToken).unwrap_or_else(|e| fail(e));
    println!("{{\"lookup_ms\":{lookup:.3},\"miss_ms\":{miss:.3},\"store_ms\":{stored:.3}}}");
}

fn keyring_layout(args: &[String]) {
    use mailbox_auth_core::secret::{KeyringStore, SecretKind, SecretStore};
    use secrecy::SecretString;
    let pid: u32 = arg(args, 1, "PID");
    let items: usize = arg(args, 2, "ITEMS");
    let bytes: usize = arg(args, 3, "BYTES");
    let reps: usize = arg(args, 4, "REPS");
    if items == 0 || bytes < 8 {
        eprintln!("bench-tool: ITEMS must be at least 1 and BYTES at least 8");
        usage()
    }
    let store = KeyringStore::from_env();
    let fail = |e: mailbox_auth_core::secret::SecretError| -> ! {
        eprintln!("bench-tool: {e}");
        std::process::exit(1)
    };
    let name = |i: usize| format!("bench-layout-{i:05}");
    let value = |tag: usize| SecretString::from(format!("{tag:08}{}", "x".repeat(bytes - 8)));
    for i in 0..items {
        store.set(&name(i), SecretKind::RefreshToken, &value(0)).unwrap_or_else(|e| fail(e));
    }
    let before = cpu_ms(pid);
    for r in 0..reps {
        store.set(&name(0), SecretKind::RefreshToken, &value(r + 1)).unwrap_or_else(|e| fail(e));
    }
    let stored = (cpu_ms(pid) - before) / reps.max(1) as f64;
    let before = cpu_ms(pid);
    for _ in 0..reps {
        store.get(&name(0), SecretKind::RefreshToken).unwrap_or_else(|e| fail(e)).expect("the scratch entry");
    }
    let lookup = (cpu_ms(pid) - before) / reps.max(1) as f64;
    for i in 0..items {
        store.delete(&name(i), SecretKind::RefreshToken).unwrap_or_else(|e| fail(e));
    }
    println!("{{\"items\":{items},\"bytes\":{bytes},\"store_ms\":{stored:.3},\"lookup_ms\":{lookup:.3}}}");
}
