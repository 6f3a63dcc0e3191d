//! A scripted mail server on loopback for the dialogue tests: it answers each line the client
//! sends with what the script says, and records the lines (`[tls]` marks a STARTTLS upgrade).
//!
//! Tests read as transcripts: the script answers `C:` lines with `S:` lines, and what the client sent
//! comes back in order for the assertions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::ProbeTarget;
use crate::mailbox::Security;

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the server does after a client line.
pub(crate) enum Reply {
    Send(String),
    /// Send, then take the TLS handshake (STARTTLS / STLS).
    SendThenTls(String),
    /// Say nothing and wait for the next line.
    Nothing,
    /// Hang up.
    Close,
    /// Send the first text, then the second again every interval, until the client leaves.
    Trickle(String, String, Duration),
    /// Send `head`, then `line` again and again up to `total` bytes or until the client
    /// leaves, adding what was written to `written`.
    Flood {
        head: String,
        line: String,
        total: u64,
        written: Arc<AtomicU64>,
    },
}

pub(crate) fn send(s: impl Into<String>) -> Reply {
    Reply::Send(s.into())
}

/// TLS on the server side: none, from the first byte, or on `Reply::SendThenTls`.
#[derive(Clone)]
pub(crate) enum ServerTls {
    None,
    Implicit(Arc<rustls::ServerConfig>),
    Upgrade(Arc<rustls::ServerConfig>),
}

pub(crate) async fn serve(
    greeting: &'static str,
    tls: ServerTls,
    respond: impl FnMut(&str) -> Reply + Send + 'static,
) -> (u16, JoinHandle<Vec<String>>) {
    serve_greeted(greeting, tls, respond, Arc::new(tokio::sync::Notify::new())).await
}

/// [`serve`], notifying `greeted` once the greeting was written (after the TLS handshake, with
/// implicit TLS).
pub(crate) async fn serve_greeted(
    greeting: &'static str,
    tls: ServerTls,
    mut respond: impl FnMut(&str) -> Reply + Send + 'static,
    greeted: Arc<tokio::sync::Notify>,
) -> (u16, JoinHandle<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        let mut seen = Vec::new();
        let (tcp, _) = l.accept().await.unwrap();
        let stream: Box<dyn Io> = match &tls {
            ServerTls::Implicit(config) => match tokio_rustls::TlsAcceptor::from(config.clone()).accept(tcp).await {
                Ok(s) => Box::new(s),
                Err(_) => return seen,
            },
            _ => Box::new(tcp),
        };
        let mut r = BufReader::new(stream);
        if r.get_mut().write_all(greeting.as_bytes()).await.is_err() {
            return seen;
        }
        greeted.notify_one();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                break;
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            let reply = respond(&line);
            seen.push(line);
            match reply {
                Reply::Send(out) => {
                    if r.get_mut().write_all(out.as_bytes()).await.is_err() {
                        break;
                    }
                }
                Reply::SendThenTls(out) => {
                    let ServerTls::Upgrade(config) = &tls else { panic!("no TLS configured for the upgrade") };
                    if r.get_mut().write_all(out.as_bytes()).await.is_err() {
                        break;
                    }
                    let plain = r.into_inner();
                    match tokio_rustls::TlsAcceptor::from(config.clone()).accept(plain).await {
                        Ok(s) => r = BufReader::new(Box::new(s) as Box<dyn Io>),
                        Err(_) => break,
                    }
                    seen.push("[tls]".into());
                }
                Reply::Nothing => {}
                Reply::Close => break,
                Reply::Trickle(first, again, every) => {
                    let w = r.get_mut();
                    if w.write_all(first.as_bytes()).await.is_err() {
                        break;
                    }
                    loop {
                        tokio::time::sleep(every).await;
                        if w.write_all(again.as_bytes()).await.is_err() || w.flush().await.is_err() {
                            break;
                        }
                    }
                    break;
                }
                Reply::Flood { head, line, total, written } => {
                    let w = r.get_mut();
                    if w.write_all(head.as_bytes()).await.is_err() {
                        break;
                    }
                    written.fetch_add(head.len() as u64, Ordering::SeqCst);
                    let mut left = total;
                    let mut gone = false;
                    while left > 0 {
                        let chunk = &line.as_bytes()[..line.len().min(left as usize)];
                        if w.write_all(chunk).await.is_err() {
                            gone = true;
                            break;
                        }
                        written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                        left -= chunk.len() as u64;
                    }
                    if gone {
                        break;
                    }
                }
            }
        }
        seen
    });
    (port, h)
}

/// A server that accepts and never says a word.
pub(crate) async fn silent() -> (u16, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        let (_s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    (port, h)
}

/// A port nothing listens on: bound, then released.
pub(crate) fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub(crate) fn target(protocol: impl Into<super::Service>, port: u16, security: Security) -> ProbeTarget {
    ProbeTarget {
        protocol: protocol.into(),
        host: "127.0.0.1".into(),
        port,
        security,
        folder: "INBOX".into(),
        sasl_user: "alice@example.com".into(),
        ca_file: None,
        timeout: Duration::from_secs(5),
    }
}

/// Plays a `C: … / S: …` transcript against the real dialogue of `service` over an in-memory
/// stream (`tokio::io::duplex`), as the server: `S:` lines are sent, `C:` lines are where the
/// client speaks (one line read each). Returns the outcome and the transcript the probe
/// recorded, rendered the same way (`C:`/`S:`, notes and times left out), for comparing with
/// the script: a test then reads as the conversation it expects. The access token is
/// [`CONVERSE_TOKEN`]; its SASL responses show as `<redacted, N bytes>`.
pub(crate) async fn converse(
    service: super::Service,
    script: &str,
) -> (Result<super::ProbeReport, super::ProbeFailure>, String) {
    use super::Service;
    let (client, server) = tokio::io::duplex(64 * 1024);
    let lines: Vec<(bool, String)> = script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(": ") {
            Some(("S", text)) => (true, text.to_string()),
            Some(("C", text)) => (false, text.to_string()),
            _ => match l {
                "S:" => (true, String::new()),
                "C:" => (false, String::new()),
                _ => panic!("a script line starts with `C: ` or `S: `: {l:?}"),
            },
        })
        .collect();
    let played = tokio::spawn(async move {
        let mut r = BufReader::new(server);
        for (from_server, text) in lines {
            if from_server {
                if r.get_mut().write_all(format!("{text}\r\n").as_bytes()).await.is_err() {
                    return;
                }
            } else {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
            }
        }
        // Hold the connection until the client leaves.
        let mut rest = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut r, &mut rest).await;
    });
    let mut t = target(service, 993, Security::Tls);
    t.host = "mail.example.com".into();
    t.timeout = Duration::from_secs(2);
    let access = oauth2::AccessToken::new(CONVERSE_TOKEN.into());
    let token = super::TokenLater::ready(&t, access.clone());
    let outcome = super::guarded(&t, &token, async {
        match service {
            Service::Imap => super::imap::over(&t, client, &token).await,
            Service::Pop3 => super::pop3::over(&t, client, &token).await,
            Service::Smtp => super::smtp::over(&t, client, &access, None).await,
        }
    })
    .await;
    let _ = played.await;
    let transcript = match &outcome {
        Ok(r) => &r.transcript,
        Err(f) => &f.transcript,
    };
    let rendered = transcript
        .lines
        .iter()
        .filter_map(|l| match l.from {
            super::transcript::Side::Client => Some(format!("C: {}", l.text).trim_end().to_string()),
            super::transcript::Side::Server => Some(format!("S: {}", l.text).trim_end().to_string()),
            super::transcript::Side::Note => None,
        })
        .collect::<Vec<_>>()
        .join("\n");
    (outcome, rendered)
}

/// The access token of [`converse`].
pub(crate) const CONVERSE_TOKEN: &str = "ya29.conversation-token";

/// `script` as [`converse`] renders it: trimmed lines.
pub(crate) fn script(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n")
}
