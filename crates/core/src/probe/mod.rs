//! Probes: really log in to a mailbox with an access token, over verified TLS.
//!
//! A green badge must mean the mailbox was reached, so a probe goes past authentication: IMAP
//! `AUTHENTICATE` then `EXAMINE` of the folder (read-only), POP3 `AUTH` then `STAT`. Every
//! network step (connect, TLS, each command) has its own timeout. With STARTTLS, a server that
//! does not offer the upgrade is refused before any credential is sent.

pub mod imap;
pub mod pop3;
pub mod sasl;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use oauth2::AccessToken;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::mailbox::{Protocol, Security};
use crate::tls::{self, TlsFailure};

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// IMAP folder; unused for POP3.
    pub folder: String,
    /// The address that signs in (SASL authorization identity).
    pub sasl_user: String,
    /// Extra trusted CA (PEM), added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Applies to each network step.
    pub timeout: Duration,
}

impl ProbeTarget {
    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// What a successful probe saw.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub mechanism: &'static str,
    pub messages: u32,
    pub detail: String,
}

/// Why a probe failed. Messages name the operation and the server, never the token.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("the host name {host} cannot be resolved: {detail}")]
    Dns { host: String, detail: String },
    #[error("{addr} refused the connection")]
    ConnectRefused { addr: String },
    #[error("cannot connect to {addr}: {detail}")]
    Connect { addr: String, detail: String },
    #[error("{addr} did not answer in time during {step}")]
    Timeout { addr: String, step: &'static str },
    #[error("TLS with {addr} failed: {detail}")]
    Tls { addr: String, kind: TlsFailure, detail: String },
    #[error(transparent)]
    CaFile(tls::TlsError),
    #[error("{proto} server {addr} does not offer {command}, so no credential was sent")]
    StarttlsNotOffered { proto: &'static str, addr: String, command: &'static str },
    #[error("{proto} server {addr} offers neither XOAUTH2 nor OAUTHBEARER (it offers: {offered})")]
    MechanismNotOffered { proto: &'static str, addr: String, offered: String },
    #[error("{proto} {command} {mechanism} at {addr} was refused: {words}")]
    AuthRejected { proto: &'static str, command: &'static str, mechanism: &'static str, addr: String, words: String },
    #[error("signed in, but the folder `{folder}` cannot be opened: {words}")]
    FolderMissing { folder: String, words: String },
    #[error("{proto} server {addr} answered {step} unexpectedly: {words}")]
    Protocol { proto: &'static str, addr: String, step: &'static str, words: String },
}

impl ProbeError {
    /// Stable machine code (see [`crate::diagnose`]).
    pub fn code(&self) -> &'static str {
        match self {
            ProbeError::Dns { .. } => "dns",
            ProbeError::ConnectRefused { .. } => "connect_refused",
            ProbeError::Connect { .. } => "connect",
            ProbeError::Timeout { .. } => "timeout",
            ProbeError::Tls { kind: TlsFailure::Untrusted, .. } => "tls_untrusted",
            ProbeError::Tls { kind: TlsFailure::Hostname, .. } => "tls_hostname",
            ProbeError::Tls { kind: TlsFailure::Expired, .. } => "tls_expired",
            ProbeError::Tls { .. } => "tls",
            ProbeError::CaFile(_) => "ca_file",
            ProbeError::StarttlsNotOffered { .. } => "starttls_not_offered",
            ProbeError::MechanismNotOffered { .. } => "mechanism_not_offered",
            ProbeError::AuthRejected { .. } => "auth_rejected",
            ProbeError::FolderMissing { .. } => "folder_missing",
            ProbeError::Protocol { .. } => "protocol",
        }
    }

    /// The server's own words, if it said something.
    pub fn server_words(&self) -> Option<&str> {
        match self {
            ProbeError::AuthRejected { words, .. }
            | ProbeError::FolderMissing { words, .. }
            | ProbeError::Protocol { words, .. } => Some(words),
            ProbeError::Tls { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

/// Logs in to the mailbox and opens it.
pub async fn probe(target: &ProbeTarget, token: &AccessToken) -> Result<ProbeReport, ProbeError> {
    match target.protocol {
        Protocol::Imap => imap::probe(target, token).await,
        Protocol::Pop3 => pop3::probe(target, token).await,
    }
}

/// Runs one network step under the target's timeout.
pub(crate) async fn step<T>(
    target: &ProbeTarget,
    name: &'static str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(target.timeout, fut).await.map_err(|_| ProbeError::Timeout { addr: target.addr(), step: name })
}

/// Resolves and connects, trying each address in turn.
pub(crate) async fn connect(target: &ProbeTarget) -> Result<TcpStream, ProbeError> {
    let addr = target.addr();
    let addrs: Vec<SocketAddr> = step(target, "name lookup", tokio::net::lookup_host((target.host.as_str(), target.port)))
        .await?
        .map_err(|e| ProbeError::Dns { host: target.host.clone(), detail: e.to_string() })?
        .collect();
    let mut last = None;
    for a in addrs {
        match step(target, "connect", TcpStream::connect(a)).await? {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => ProbeError::ConnectRefused { addr },
        Some(e) => ProbeError::Connect { addr, detail: e.to_string() },
        None => ProbeError::Dns { host: target.host.clone(), detail: "no address found".into() },
    })
}

/// Wraps a connected stream in verified TLS.
pub(crate) async fn start_tls(target: &ProbeTarget, tcp: TcpStream) -> Result<TlsStream<TcpStream>, ProbeError> {
    let config = tls::client_config(target.ca_file.as_deref()).map_err(ProbeError::CaFile)?;
    let name = tls::server_name(&target.host).map_err(ProbeError::CaFile)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    step(target, "TLS handshake", connector.connect(name, tcp)).await?.map_err(|e| {
        let kind = tls::classify(&e);
        let detail = match kind {
            TlsFailure::Untrusted => format!("the server's certificate is not trusted ({e})"),
            TlsFailure::Hostname => format!("the server's certificate is not valid for {} ({e})", target.host),
            TlsFailure::Expired => format!("the server's certificate is expired or not yet valid ({e})"),
            TlsFailure::Other => e.to_string(),
        };
        ProbeError::Tls { addr: target.addr(), kind, detail }
    })
}
