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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mailbox_auth_core::mailbox::Security;
use mailbox_auth_core::probe::{self, ProbeTarget, Service};
use mailbox_auth_tests::fault_proxy::{Fault, FaultProxy};
use oauth2::AccessToken;

fn usage() -> ! {
    eprintln!(
        "usage: bench-tool proxy ONE_WAY_MS HOST:PORT…\n       bench-tool ceiling HOST PORT CA_FILE USER COUNT CONCURRENCY"
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
