//! `monitor`, `check` (the Nagios/Icinga plugin) and `alerts`: the commands over
//! [`mailbox_auth_core::monitor`].

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mailbox_auth_core::health::Status;
use mailbox_auth_core::monitor::{self, Alert, Limits, Metrics, Monitor, MonitorConfig, PassReport, Shard};
use mailbox_auth_core::secret::{self, KeyringStore, SecretKind, ALERT_WEBHOOK};
use mailbox_auth_core::{App, AppError};

#[derive(clap::Subcommand, Debug)]
pub enum AlertsAction {
    /// Store the alert webhook URL (Slack, Teams or any JSON receiver) in the OS keyring, read
    /// from standard input (it carries the channel's credentials).
    Webhook,
    /// Send alerts by email to ADDRESS through mailbox NAME's SMTP server, signed in as that
    /// mailbox (XOAUTH2); replaces an earlier address.
    Email {
        /// Where alert emails go, e.g. helpdesk-admins@example.com.
        address: String,
        /// The mailbox whose SMTP server sends them (it needs an smtp_host and a sign-in).
        #[arg(long, value_name = "NAME")]
        via: String,
    },
    /// Send a test alert to every configured channel (webhook, email).
    Test,
    /// Remove the stored webhook and the alert email: alerts are only logged.
    Off,
}

/// Options of `monitor`.
#[derive(clap::Args, Debug)]
pub struct MonitorArgs {
    /// Seconds between passes (each ±10 %).
    #[arg(long, default_value_t = monitor::DEFAULT_INTERVAL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
    /// Check every mailbox once, alert on changes since the previous run, and exit (0 when none
    /// is red, 1 when any is): for cron.
    #[arg(long)]
    pub once: bool,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (a bare PORT binds 127.0.0.1).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// Allow --metrics on an address other than loopback (the metrics name every mailbox).
    #[arg(long)]
    pub metrics_allow_remote: bool,
    /// Connections open at once, over all mailboxes.
    #[arg(long, default_value_t = monitor::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Connections open at once for one account (login) on one server.
    #[arg(long, default_value_t = monitor::DEFAULT_PER_ACCOUNT)]
    pub per_account: usize,
    /// Seconds allowed for each network step of a check.
    #[arg(long, default_value_t = 20)]
    pub timeout: u64,
    /// Check only share I of N (e.g. 2/3), chosen by a hash of the mailbox name: N monitors
    /// with 1/N … N/N check every mailbox exactly once between them.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse().map_err(|e: mailbox_auth_core::mailbox::FieldError| e.to_string())
}

/// The address `--metrics` binds: loopback unless another one is allowed explicitly.
pub fn metrics_addr(spec: &str, allow_remote: bool) -> anyhow::Result<SocketAddr> {
    let spec = spec.trim();
    let addr: SocketAddr = match spec.parse::<u16>() {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        Err(_) => spec.parse().with_context(|| format!("--metrics: `{spec}` is not ADDR:PORT or PORT"))?,
    };
    anyhow::ensure!(
        addr.ip().is_loopback() || allow_remote,
        "--metrics: {addr} is not a loopback address; the metrics name every mailbox, so serving them \
         to the network needs --metrics-allow-remote (and a firewall)"
    );
    Ok(addr)
}

fn print_pass(r: &PassReport) {
    eprintln!(
        "checked {} mailbox(es): {} verified, {} need attention, {} failed, {} not authenticated (not checked)",
        r.checks.len(),
        r.count(Status::Verified),
        r.count(Status::NeedsAttention),
        r.count(Status::Failed),
        r.count(Status::NotAuthenticated)
    );
    for a in &r.alerts {
        let at = match a {
            Alert::One(t) => t.at,
            Alert::Summary(s) => s.at,
        };
        println!("{} ALERT {}", at.format("%Y-%m-%dT%H:%M:%SZ"), a.text());
    }
    for (name, why) in &r.problems {
        eprintln!("{name}: not checked: {why}");
    }
    for (a, e) in &r.undelivered {
        eprintln!("alert for {} not delivered (tried again next pass): {e}", a.mailboxes().join(", "));
    }
    for (a, e) in &r.partly_delivered {
        eprintln!("alert for {} delivered, but not by every channel: {e}", a.mailboxes().join(", "));
    }
}

pub async fn monitor(mut app: App, home: &Path, args: MonitorArgs) -> anyhow::Result<ExitCode> {
    app.probe_timeout = Duration::from_secs(args.timeout);
    let config = MonitorConfig {
        interval: Duration::from_secs(args.interval),
        concurrency: args.concurrency,
        per_account: args.per_account,
        shard: args.shard.unwrap_or(Shard::ALL),
        ..MonitorConfig::default()
    };
    let mut mon = Monitor::new(&app, home, config)?;
    if let Some(spec) = &args.metrics {
        let addr = metrics_addr(spec, args.metrics_allow_remote)?;
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--metrics: cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        let metrics = Arc::new(Metrics::new());
        mon.metrics = Some(metrics.clone());
        mon.prime_metrics().await?;
        tokio::spawn(async move {
            if let Err(e) = monitor::serve_metrics(listener, metrics).await {
                tracing::error!("metrics server stopped: {e}");
            }
        });
        eprintln!("serving metrics at http://{bound}/metrics");
    }
    if args.once {
        let r = mon.pass(false).await?;
        print_pass(&r);
        let red = r.count(Status::Failed) + r.problems.len();
        return Ok(if red == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    match args.shard {
        Some(s) => eprintln!("monitoring share {s} every {} s", args.interval),
        None => eprintln!("monitoring every {} s", args.interval),
    }
    let mut first = true;
    loop {
        // The first pass checks everything at once; later ones check the mailboxes that are due
        // (their own interval, or the monitor's), spread over the first quarter of the pass.
        let pass = if first { mon.pass(false).await } else { mon.pass_due(true).await };
        match pass {
            Ok(r) => print_pass(&r),
            Err(e) => {
                let f = e.failure();
                eprintln!("pass failed: {}\nhint: {}", f.message, f.hint);
            }
        }
        first = false;
        tokio::time::sleep(mon.next_wait()).await;
    }
}

/// `check NAME…`: the plugin line on standard output, exit 0/1/2, or 3 when it cannot check.
pub async fn check(home: &Path, names: Vec<String>, timeout: u64) -> ExitCode {
    let unknown = |why: String| {
        println!("{}", monitor::plugin_unknown(&why));
        ExitCode::from(3)
    };
    let mut app = match App::open(home, Arc::new(KeyringStore::from_env())) {
        Ok(a) => a,
        Err(e) => return unknown(e.to_string()),
    };
    app.probe_timeout = Duration::from_secs(timeout);
    let mut mailboxes = Vec::new();
    for n in &names {
        match app.get(n) {
            Ok(m) => mailboxes.push(m),
            Err(e) => return unknown(e.to_string()),
        }
    }
    let limits = Limits::new(monitor::DEFAULT_CONCURRENCY, monitor::DEFAULT_PER_ACCOUNT);
    let checks = check_named(&app, &limits, &mailboxes).await;
    match checks {
        Ok(checks) => {
            let items: Vec<_> = checks.iter().map(monitor::plugin_item).collect();
            let (code, line) = monitor::plugin_line(&items);
            println!("{line}");
            ExitCode::from(code)
        }
        Err(e) => unknown(e.to_string()),
    }
}

async fn check_named(
    app: &App,
    limits: &Limits,
    mailboxes: &[mailbox_auth_core::mailbox::Mailbox],
) -> Result<Vec<monitor::MailboxCheck>, AppError> {
    let mut out = Vec::with_capacity(mailboxes.len());
    // Named mailboxes are few: one after the other keeps the plugin's load small.
    for m in mailboxes {
        out.push(monitor::check_one(app, limits, m).await?);
    }
    Ok(out)
}

pub async fn alerts(app: App, home: &Path, action: AlertsAction) -> anyhow::Result<ExitCode> {
    match action {
        AlertsAction::Webhook => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("cannot read the webhook URL from standard input")?;
            anyhow::ensure!(!line.trim().is_empty(), "webhook URL: nothing was read from standard input");
            let url = monitor::parse_webhook_url(&line).map_err(|e| AppError::Invalid(vec![e]))?;
            secret::set(app.secret_store(), ALERT_WEBHOOK, SecretKind::AlertWebhook, url.to_string().into()).await?;
            println!("stored the alert webhook in the OS keyring");
            Ok(ExitCode::SUCCESS)
        }
        AlertsAction::Email { address, via } => {
            let ch = monitor::set_email_channel(&app, &address, &via)?;
            println!("alerts will be emailed to {} through mailbox `{}`'s SMTP server", ch.to, ch.via);
            Ok(ExitCode::SUCCESS)
        }
        AlertsAction::Off => {
            secret::delete(app.secret_store(), ALERT_WEBHOOK, SecretKind::AlertWebhook).await?;
            monitor::clear_email_channel(&app)?;
            println!("removed the alert webhook and the alert email; changes are only logged now");
            Ok(ExitCode::SUCCESS)
        }
        AlertsAction::Test => {
            let mon = Monitor::new(&app, home, MonitorConfig::default())?;
            let email = monitor::email_channel(&app)?;
            let mut failed = false;
            let webhook = match mon.send(&monitor::test_body(chrono::Utc::now())).await {
                Ok(sent) => {
                    if sent {
                        println!("test alert delivered to the webhook");
                    }
                    sent
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    failed = true;
                    true
                }
            };
            if let Some(ch) = &email {
                let body = "This is a test alert from Mailbox Auth; mailbox alerts will arrive here.\n";
                match monitor::send_email(&app, ch, "Mailbox Auth: test alert", body).await {
                    Ok(()) => println!("test alert emailed to {} through `{}`", ch.to, ch.via),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            anyhow::ensure!(
                webhook || email.is_some(),
                "no alert channel is set; store a webhook with `mailbox-auth alerts webhook` or an address with \
                 `mailbox-auth alerts email ADDRESS --via NAME`"
            );
            Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_bind_loopback_unless_allowed() {
        assert_eq!(metrics_addr("9464", false).unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(metrics_addr("[::1]:9464", false).unwrap().to_string(), "[::1]:9464");
        let e = metrics_addr("0.0.0.0:9464", false).unwrap_err().to_string();
        assert!(e.contains("--metrics-allow-remote"), "{e}");
        assert!(metrics_addr("0.0.0.0:9464", true).is_ok());
        assert!(metrics_addr("localhost:x", false).is_err());
    }
}
