//! Probes: really sign in to a mailbox with an access token, over verified TLS, and read it.
//!
//! A green badge must mean the mailbox was reached, so a probe goes past authentication:
//! IMAP (RFC 9051) `AUTHENTICATE` then `EXAMINE` of the folder (read-only), POP3 (RFC 1939,
//! RFC 5034) `AUTH` then `STAT`. The SASL mechanisms are XOAUTH2 and OAUTHBEARER (RFC 7628),
//! see [`sasl`]. Every network step (name lookup and connect, TLS, each command) has its own
//! timeout. With STARTTLS (RFC 2595, RFC 9051 §6.2.1) a server that does not offer the upgrade
//! is refused before any credential is sent: the token never crosses the network in clear.
//!
//! Errors name the operation and the server, keep the server's own words, and never contain
//! the token or the SASL response built from it.

pub mod imap;
pub mod pop3;
pub mod sasl;
pub mod smtp;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use oauth2::AccessToken;
use rustls::pki_types::ServerName;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::mailbox::{Protocol, Security};
use crate::tls::{self, HandshakeError, TlsError};

/// The mail service a probe talks to: the mailbox's incoming protocol, or SMTP submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Imap,
    Pop3,
    Smtp,
}

impl From<Protocol> for Service {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Imap => Service::Imap,
            Protocol::Pop3 => Service::Pop3,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Imap => "imap",
            Service::Pop3 => "pop3",
            Service::Smtp => "smtp",
        })
    }
}

/// Where and as whom to sign in. Holds no secret.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub protocol: Service,
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// IMAP folder to examine, e.g. `INBOX`; unused for POP3.
    pub folder: String,
    /// The address that signs in (the SASL user).
    pub sasl_user: String,
    /// Extra trusted CA certificate(s), PEM, added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Applies to each network step (connect, TLS, each command).
    pub timeout: Duration,
}

impl ProbeTarget {
    /// `host:port`, with brackets around an IPv6 address.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn proto(&self) -> &'static str {
        match self.protocol {
            Service::Imap => "IMAP",
            Service::Pop3 => "POP3",
            Service::Smtp => "SMTP",
        }
    }
}

/// What a successful probe saw.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// `XOAUTH2` or `OAUTHBEARER`.
    pub mechanism: &'static str,
    /// IMAP: `EXISTS` of the examined folder; POP3: the `STAT` count.
    pub messages: u32,
    /// E.g. `INBOX opened read-only: 3 messages`, `STAT: 2 messages (1234 octets)`.
    pub detail: String,
}

/// Why a probe failed. Messages name the operation and the server, never the token.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve the {proto} server name `{host}`: {detail}")]
    Dns { proto: &'static str, host: String, detail: String },
    #[error("{proto} server {addr} refused the connection")]
    ConnectRefused { proto: &'static str, addr: String },
    #[error("cannot connect to {proto} server {addr}: {detail}")]
    Connect { proto: &'static str, addr: String, detail: String },
    /// The connection broke after it was made (reset, broken pipe).
    #[error("the connection to {proto} server {addr} failed during {}: {detail}", what(.proto, .step))]
    Connection { proto: &'static str, addr: String, step: &'static str, detail: String },
    #[error("{proto} server {addr} did not answer within {waited:?} during {}", what(.proto, .step))]
    Timeout { proto: &'static str, addr: String, step: &'static str, waited: Duration },
    #[error("TLS with {proto} server {addr} failed: {source}")]
    Tls { proto: &'static str, addr: String, step: &'static str, source: HandshakeError },
    #[error("cannot set up TLS for {proto} server {addr}: {source}")]
    TlsSetup { proto: &'static str, addr: String, source: TlsError },
    #[error("{proto} server {addr} does not offer {command}, so no credential was sent")]
    StarttlsNotOffered { proto: &'static str, addr: String, command: &'static str },
    #[error("{proto} server {addr} offers neither XOAUTH2 nor OAUTHBEARER (it offers: {offered})")]
    MechanismNotOffered { proto: &'static str, addr: String, offered: String },
    #[error("{proto} {command} {mechanism} at {addr} was refused: {words}")]
    AuthRejected { proto: &'static str, command: &'static str, mechanism: &'static str, addr: String, words: String },
    #[error("signed in to IMAP server {addr}, but the folder `{folder}` cannot be opened: {words}")]
    FolderMissing { addr: String, folder: String, words: String },
    #[error("{proto} server {addr} answered {} unexpectedly: {words}", what(.proto, .step))]
    Protocol { proto: &'static str, addr: String, step: &'static str, words: String },
}

/// A step, in the words of the protocol (for messages).
fn what(proto: &str, step: &str) -> &'static str {
    let imap = proto == "IMAP";
    let smtp = proto == "SMTP";
    match step {
        "connect" => "the connection attempt",
        "tls" => "the TLS handshake",
        "greeting" => "the greeting",
        "capability" if imap => "CAPABILITY",
        "capability" => "CAPA",
        "starttls" if imap || smtp => "STARTTLS",
        "starttls" => "STLS",
        "authenticate" if imap => "AUTHENTICATE",
        "authenticate" => "AUTH",
        "examine" => "EXAMINE",
        "stat" => "STAT",
        "logout" => "LOGOUT",
        "quit" => "QUIT",
        "ehlo" => "EHLO",
        "mail" => "MAIL FROM",
        "rcpt" => "RCPT TO",
        "data" => "DATA",
        _ => "the dialogue",
    }
}

impl ProbeError {
    /// Stable machine code (see [`crate::diagnose`]): `dns`, `connect_refused`, `connect`,
    /// `timeout`, `tls_untrusted`, `tls_hostname`, `tls_expired`, `tls`, `ca_file`,
    /// `starttls_not_offered`, `mechanism_not_offered`, `auth_rejected`, `folder_missing`,
    /// `protocol`.
    pub fn code(&self) -> &'static str {
        match self {
            ProbeError::Dns { .. } => "dns",
            ProbeError::ConnectRefused { .. } => "connect_refused",
            ProbeError::Connect { .. } | ProbeError::Connection { .. } => "connect",
            ProbeError::Timeout { .. } => "timeout",
            ProbeError::Tls { source, .. } => source.code(),
            ProbeError::TlsSetup { source, .. } => source.code(),
            ProbeError::StarttlsNotOffered { .. } => "starttls_not_offered",
            ProbeError::MechanismNotOffered { .. } => "mechanism_not_offered",
            ProbeError::AuthRejected { .. } => "auth_rejected",
            ProbeError::FolderMissing { .. } => "folder_missing",
            ProbeError::Protocol { .. } => "protocol",
        }
    }

    /// The server's own words, if it said something: its response line (with the decoded
    /// failure challenge of XOAUTH2/OAUTHBEARER in parentheses), or the TLS library's error.
    pub fn server_words(&self) -> Option<&str> {
        match self {
            ProbeError::AuthRejected { words, .. }
            | ProbeError::FolderMissing { words, .. }
            | ProbeError::Protocol { words, .. } => Some(words),
            ProbeError::Tls { source, .. } => Some(&source.detail),
            _ => None,
        }
    }

    /// Which step failed: `connect`, `tls`, `greeting`, `capability`, `starttls`,
    /// `authenticate`, `examine` (IMAP) or `stat` (POP3).
    pub fn step(&self) -> &'static str {
        match self {
            ProbeError::Dns { .. } | ProbeError::ConnectRefused { .. } | ProbeError::Connect { .. } => "connect",
            ProbeError::TlsSetup { .. } => "tls",
            ProbeError::Connection { step, .. }
            | ProbeError::Timeout { step, .. }
            | ProbeError::Tls { step, .. }
            | ProbeError::Protocol { step, .. } => step,
            ProbeError::StarttlsNotOffered { .. } => "starttls",
            ProbeError::MechanismNotOffered { .. } | ProbeError::AuthRejected { .. } => "authenticate",
            ProbeError::FolderMissing { .. } => "examine",
        }
    }
}

/// Signs in to the mailbox with `token` and opens it (IMAP `EXAMINE`, POP3 `STAT`; SMTP:
/// `AUTH` then `MAIL FROM`, reset without sending).
#[tracing::instrument(skip_all, fields(protocol = %target.protocol, addr = %target.addr()))]
pub async fn probe(target: &ProbeTarget, token: &AccessToken) -> Result<ProbeReport, ProbeError> {
    let result = match target.protocol {
        Service::Imap => imap::probe(target, token).await,
        Service::Pop3 => pop3::probe(target, token).await,
        Service::Smtp => smtp::probe(target, token, None).await,
    };
    match &result {
        Ok(r) => tracing::debug!(mechanism = r.mechanism, messages = r.messages, "probe succeeded"),
        Err(e) => tracing::debug!(code = e.code(), step = e.step(), "probe failed: {e}"),
    }
    result
}

/// `1 message`, `3 messages`.
pub(crate) fn count_messages(n: u32) -> String {
    if n == 1 {
        "1 message".into()
    } else {
        format!("{n} messages")
    }
}

/// Runs one network step under the target's timeout.
pub(crate) async fn step<T>(
    t: &ProbeTarget,
    name: &'static str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(t.timeout, fut).await.map_err(|_| timeout(t, name))
}

fn timeout(t: &ProbeTarget, step: &'static str) -> ProbeError {
    ProbeError::Timeout { proto: t.proto(), addr: t.addr(), step, waited: t.timeout }
}

/// An I/O failure on an established connection.
pub(crate) fn broken(t: &ProbeTarget, step: &'static str, e: &std::io::Error) -> ProbeError {
    ProbeError::Connection { proto: t.proto(), addr: t.addr(), step, detail: e.to_string() }
}

/// A reply that does not fit the protocol; `words` is what the server said.
pub(crate) fn unexpected(t: &ProbeTarget, step: &'static str, words: impl Into<String>) -> ProbeError {
    ProbeError::Protocol { proto: t.proto(), addr: t.addr(), step, words: words.into() }
}

/// Resolves the host and connects, trying each address in turn, each under the timeout.
pub(crate) async fn connect(t: &ProbeTarget) -> Result<TcpStream, ProbeError> {
    let (proto, addr) = (t.proto(), t.addr());
    let addrs: Vec<_> = step(t, "connect", tokio::net::lookup_host((t.host.as_str(), t.port)))
        .await?
        .map_err(|e| ProbeError::Dns { proto, host: t.host.clone(), detail: e.to_string() })?
        .collect();
    let mut last = None;
    for a in addrs {
        match tokio::time::timeout(t.timeout, TcpStream::connect(a)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Some(ProbeError::ConnectRefused { proto, addr: addr.clone() })
            }
            Ok(Err(e)) => last = Some(ProbeError::Connect { proto, addr: addr.clone(), detail: e.to_string() }),
            Err(_) => last = Some(timeout(t, "connect")),
        }
    }
    Err(last.unwrap_or(ProbeError::Dns { proto, host: t.host.clone(), detail: "no address found".into() }))
}

/// The TLS client for one target, set up before connecting so that an unusable CA file is
/// reported without touching the network.
pub(crate) struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Tls {
    pub(crate) fn new(t: &ProbeTarget) -> Result<Self, ProbeError> {
        let setup = |source| ProbeError::TlsSetup { proto: t.proto(), addr: t.addr(), source };
        let config = tls::client_config(t.ca_file.as_deref()).map_err(setup)?;
        let name = tls::server_name(&t.host).map_err(setup)?;
        Ok(Self { connector: TlsConnector::from(Arc::clone(&config)), name })
    }

    /// Wraps a connected stream in verified TLS.
    pub(crate) async fn wrap<S>(&self, t: &ProbeTarget, stream: S) -> Result<TlsStream<S>, ProbeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        step(t, "tls", self.connector.connect(self.name.clone(), stream)).await?.map_err(|e| ProbeError::Tls {
            proto: t.proto(),
            addr: t.addr(),
            step: "tls",
            source: HandshakeError::from_io(&e, &t.host),
        })
    }
}

/// Longest server line accepted (RFC 2449 and RFC 5321 allow 512 octets): generous, but bounded,
/// so a hostile server cannot make a probe buffer without end.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Line-oriented I/O for the hand-written dialogues (POP3, SMTP): bounded line reads, writes,
/// each under the step timeout. Each protocol adds its own replies in its module.
#[derive(Debug)]
pub(crate) struct LineConn<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LineConn<S> {
    pub(crate) fn new(stream: S) -> Self {
        Self { io: BufReader::new(stream) }
    }

    /// The stream, without what was buffered from it. For a STARTTLS/STLS upgrade: the server
    /// sends nothing after its go-ahead until the handshake, so nothing buffered is lost.
    pub(crate) fn into_inner(self) -> S {
        self.io.into_inner()
    }

    pub(crate) async fn send(&mut self, t: &ProbeTarget, name: &'static str, line: &str) -> Result<(), ProbeError> {
        self.write(t, name, format!("{line}\r\n").as_bytes()).await
    }

    /// Sends a line that carries a credential; exposed here and nowhere else, and the wire
    /// copy is wiped once written.
    pub(crate) async fn send_secret(
        &mut self,
        t: &ProbeTarget,
        name: &'static str,
        line: &SecretString,
    ) -> Result<(), ProbeError> {
        let wire = SecretString::from(format!("{}\r\n", line.expose_secret()));
        self.write(t, name, wire.expose_secret().as_bytes()).await
    }

    pub(crate) async fn write(&mut self, t: &ProbeTarget, name: &'static str, bytes: &[u8]) -> Result<(), ProbeError> {
        let io = self.io.get_mut();
        step(t, name, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await?
        .map_err(|e| broken(t, name, &e))
    }

    /// One server line, without its line break.
    pub(crate) async fn line(&mut self, t: &ProbeTarget, name: &'static str) -> Result<String, ProbeError> {
        let mut buf = Vec::new();
        step(t, name, (&mut self.io).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf))
            .await?
            .map_err(|e| broken(t, name, &e))?;
        if !buf.ends_with(b"\n") {
            return Err(unexpected(
                t,
                name,
                if buf.len() > MAX_LINE {
                    "the server sent a line longer than 64 KiB"
                } else {
                    "the server closed the connection"
                },
            ));
        }
        Ok(String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string())
    }
}

/// A scripted mail server on loopback for the dialogue tests: it answers each line the client
/// sends with what the script says, and records the lines (`[tls]` marks a STARTTLS upgrade).
#[cfg(test)]
pub(crate) mod scripted {
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
        mut respond: impl FnMut(&str) -> Reply + Send + 'static,
    ) -> (u16, JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let h = tokio::spawn(async move {
            let mut seen = Vec::new();
            let (tcp, _) = l.accept().await.unwrap();
            let stream: Box<dyn Io> = match &tls {
                ServerTls::Implicit(config) => {
                    match tokio_rustls::TlsAcceptor::from(config.clone()).accept(tcp).await {
                        Ok(s) => Box::new(s),
                        Err(_) => return seen,
                    }
                }
                _ => Box::new(tcp),
            };
            let mut r = BufReader::new(stream);
            if r.get_mut().write_all(greeting.as_bytes()).await.is_err() {
                return seen;
            }
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
}

#[cfg(test)]
mod tests {
    use super::scripted::*;
    use super::*;

    #[tokio::test]
    async fn an_unusable_ca_file_is_reported_before_connecting() {
        let mut t = target(Protocol::Imap, closed_port(), Security::Tls);
        t.ca_file = Some("/nonexistent/private-ca.pem".into());
        let e = probe(&t, &AccessToken::new("tok".into())).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("ca_file", "tls"), "{e}");
        assert!(e.to_string().contains("/nonexistent/private-ca.pem"), "{e}");
    }

    #[tokio::test]
    async fn unresolvable_host_is_dns() {
        let mut t = target(Protocol::Pop3, 995, Security::Tls);
        t.host = "no-such-host.invalid".into();
        let e = probe(&t, &AccessToken::new("tok".into())).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("dns", "connect"), "{e}");
        assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
    }

    #[test]
    fn message_counts_read_well() {
        assert_eq!(
            (count_messages(0), count_messages(1), count_messages(3)),
            ("0 messages".into(), "1 message".into(), "3 messages".into())
        );
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let mut t = target(Protocol::Imap, 993, Security::Tls);
        t.host = "::1".into();
        assert_eq!(t.addr(), "[::1]:993");
    }

    #[test]
    fn messages_name_the_step_in_protocol_words() {
        let t = target(Protocol::Pop3, 110, Security::Starttls);
        let e = unexpected(&t, "starttls", "-ERR not now");
        assert_eq!(e.to_string(), "POP3 server 127.0.0.1:110 answered STLS unexpectedly: -ERR not now");
        assert_eq!((e.code(), e.step(), e.server_words()), ("protocol", "starttls", Some("-ERR not now")));
        let e = timeout(&target(Protocol::Imap, 143, Security::Starttls), "greeting");
        assert_eq!(e.to_string(), "IMAP server 127.0.0.1:143 did not answer within 5s during the greeting");
    }
}
