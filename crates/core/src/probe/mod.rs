//! Probes: really sign in to a mailbox with an access token, over verified TLS, and read it.
//!
//! A green badge must mean the mailbox was reached, so a probe goes past authentication:
//! IMAP (RFC 9051) `AUTHENTICATE` then `EXAMINE` of the folder (read-only), POP3 (RFC 1939,
//! RFC 5034) `AUTH` then `STAT`. The SASL mechanisms are XOAUTH2 and OAUTHBEARER (RFC 7628),
//! see [`sasl`]. Every network step (name lookup and connect, TLS, each command) has its own
//! timeout, and the whole probe has one deadline ([`ProbeTarget::deadline`]): a server that
//! trickles one line at a time, each well within the step timeout, still cannot keep a probe
//! for long. Everything a server sends in one probe counts against a byte budget
//! ([`BYTE_BUDGET`], counted below TLS), so no reply — an IMAP literal announcing 300 MB, an
//! endless capability list — is buffered past it. With STARTTLS (RFC 2595, RFC 9051 §6.2.1) a server that does not offer the upgrade
//! is refused before any credential is sent: the token never crosses the network in clear.
//!
//! Errors name the operation and the server, keep the server's own words, and never contain
//! the token or the SASL response built from it: a server may echo what the client sent, so
//! the server's words are redacted of the token, its base64 and the SASL responses (raw and
//! base64) by exact value before they leave the probe (`Redactor`).
//!
//! Every probe records a [`Transcript`] ([`transcript`]): each line said and heard with its
//! time, the TLS version, cipher suite and the server's certificate chain, the client's secrets
//! replaced by `<redacted, N bytes>`. It comes with the report ([`ProbeReport::transcript`]) and
//! with a failure ([`probe_traced`] → [`ProbeFailure::transcript`]).

pub mod imap;
mod mutf7;
pub mod pop3;
mod pop3_wire;
mod recorder;
pub mod sasl;
pub mod smtp;
pub mod transcript;

pub use transcript::Transcript;

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use oauth2::AccessToken;
use rustls::pki_types::ServerName;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::mailbox::{Protocol, Security};
use crate::tls::{self, HandshakeError, TlsError};
use transcript::{Scribe, Transcribed};

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
    /// Applies to each network step (connect, TLS, each command); the whole probe gets
    /// [`DEADLINE_STEPS`] times this (see [`ProbeTarget::deadline`]).
    pub timeout: Duration,
}

/// The whole probe — connect, TLS, sign-in, `EXAMINE`/`STAT`/`MAIL FROM`, logout — may take
/// this many step timeouts. A healthy server needs a fraction of one; the rest is room for a
/// slow network, not for a server that answers a line at a time.
pub const DEADLINE_STEPS: u32 = 3;

/// Bytes a server may send during one probe (counted below TLS, so the handshake counts too).
/// A probe reads a greeting, a capability list, a few status lines and, for IMAP, the handful
/// of untagged responses of `EXAMINE`: a few KiB. Past this the probe stops reading.
pub const BYTE_BUDGET: u64 = 1024 * 1024;

impl ProbeTarget {
    /// `host:port`, with brackets around an IPv6 address.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The deadline of the whole probe: [`DEADLINE_STEPS`] step timeouts.
    pub fn deadline(&self) -> Duration {
        self.timeout.saturating_mul(DEADLINE_STEPS)
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
    /// What was said, secrets redacted, and the TLS facts.
    pub transcript: Transcript,
}

/// A failed probe with its transcript: the [`ProbeError`] (which it dereferences to, so
/// `failure.code()` works) and what was said up to the failure, secrets redacted.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ProbeFailure {
    pub error: ProbeError,
    pub transcript: Transcript,
}

impl std::ops::Deref for ProbeFailure {
    type Target = ProbeError;
    fn deref(&self) -> &ProbeError {
        &self.error
    }
}

impl From<ProbeFailure> for ProbeError {
    fn from(f: ProbeFailure) -> Self {
        f.error
    }
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
    Connection { proto: &'static str, addr: String, step: Step, detail: String },
    #[error("{proto} server {addr} did not answer within {waited:?} during {}", what(.proto, .step))]
    Timeout { proto: &'static str, addr: String, step: Step, waited: Duration },
    #[error("TLS with {proto} server {addr} failed: {source}")]
    Tls { proto: &'static str, addr: String, step: Step, source: HandshakeError },
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
    Protocol { proto: &'static str, addr: String, step: Step, words: String },
    /// The whole probe took longer than [`ProbeTarget::deadline`], though no single step
    /// timed out: a server answering slowly, a line at a time.
    #[error("{proto} server {addr} did not finish the check within {waited:?} (it was still in {})", what(.proto, .step))]
    Deadline { proto: &'static str, addr: String, step: Step, waited: Duration },
    /// The server sent more than [`BYTE_BUDGET`] bytes in one probe.
    #[error("{proto} server {addr} sent more than {} KiB during {}, so the check was stopped", BYTE_BUDGET / 1024, what(.proto, .step))]
    ReplyTooLarge { proto: &'static str, addr: String, step: Step },
    /// A value that would go on the wire cannot be sent as it is (a control character in the
    /// SASL user, an invalid recipient). Checked before connecting; names the field, never
    /// the value.
    #[error("cannot check {proto} server {addr}: {field} {problem}")]
    InvalidInput { proto: &'static str, addr: String, field: &'static str, problem: String },
}

/// A step of a probe's dialogue. [`Step::as_str`] is the word stored in health records and
/// read by the window and scripts (`connect`, `authenticate`, …): those words do not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Connect,
    Tls,
    Greeting,
    Capability,
    Starttls,
    Authenticate,
    Examine,
    Stat,
    Logout,
    Quit,
    Ehlo,
    Mail,
    Rcpt,
    Data,
}

impl Step {
    /// The stored word: `connect`, `tls`, `greeting`, `capability`, `starttls`, `authenticate`,
    /// `examine`, `stat`, `logout`, `quit`, `ehlo`, `mail`, `rcpt`, `data`.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Tls => "tls",
            Step::Greeting => "greeting",
            Step::Capability => "capability",
            Step::Starttls => "starttls",
            Step::Authenticate => "authenticate",
            Step::Examine => "examine",
            Step::Stat => "stat",
            Step::Logout => "logout",
            Step::Quit => "quit",
            Step::Ehlo => "ehlo",
            Step::Mail => "mail",
            Step::Rcpt => "rcpt",
            Step::Data => "data",
        }
    }

    /// The step in the words of `proto` (for messages): `CAPA` in POP3, `CAPABILITY` in IMAP.
    pub fn words(self, proto: &str) -> &'static str {
        let imap = proto == "IMAP";
        let smtp = proto == "SMTP";
        match self {
            Step::Connect => "the connection attempt",
            Step::Tls => "the TLS handshake",
            Step::Greeting => "the greeting",
            Step::Capability if imap => "CAPABILITY",
            Step::Capability => "CAPA",
            Step::Starttls if imap || smtp => "STARTTLS",
            Step::Starttls => "STLS",
            Step::Authenticate if imap => "AUTHENTICATE",
            Step::Authenticate => "AUTH",
            Step::Examine => "EXAMINE",
            Step::Stat => "STAT",
            Step::Logout => "LOGOUT",
            Step::Quit => "QUIT",
            Step::Ehlo => "EHLO",
            Step::Mail => "MAIL FROM",
            Step::Rcpt => "RCPT TO",
            Step::Data => "DATA",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step, in the words of the protocol (for messages).
fn what(proto: &str, step: &Step) -> &'static str {
    step.words(proto)
}

impl ProbeError {
    /// Stable machine code (see [`crate::diagnose`]): `dns`, `connect_refused`, `connect`,
    /// `timeout`, `tls_untrusted`, `tls_hostname`, `tls_expired`, `tls`, `ca_file`,
    /// `starttls_not_offered`, `mechanism_not_offered`, `auth_rejected`, `folder_missing`,
    /// `protocol`, `probe_deadline`, `reply_too_large`, `invalid_input`.
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
            ProbeError::Deadline { .. } => "probe_deadline",
            ProbeError::ReplyTooLarge { .. } => "reply_too_large",
            ProbeError::InvalidInput { .. } => "invalid_input",
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
        self.step_kind().as_str()
    }

    /// Which step failed, typed.
    pub fn step_kind(&self) -> Step {
        match self {
            ProbeError::Dns { .. } | ProbeError::ConnectRefused { .. } | ProbeError::Connect { .. } => Step::Connect,
            ProbeError::TlsSetup { .. } => Step::Tls,
            ProbeError::Connection { step, .. }
            | ProbeError::Timeout { step, .. }
            | ProbeError::Tls { step, .. }
            | ProbeError::Protocol { step, .. }
            | ProbeError::Deadline { step, .. }
            | ProbeError::ReplyTooLarge { step, .. } => *step,
            ProbeError::InvalidInput { .. } => Step::Connect,
            ProbeError::StarttlsNotOffered { .. } => Step::Starttls,
            ProbeError::MechanismNotOffered { .. } | ProbeError::AuthRejected { .. } => Step::Authenticate,
            ProbeError::FolderMissing { .. } => Step::Examine,
        }
    }
}

/// Signs in to the mailbox with `token` and opens it (IMAP `EXAMINE`, POP3 `STAT`; SMTP:
/// `AUTH` then `MAIL FROM`, reset without sending).
pub async fn probe(target: &ProbeTarget, token: &AccessToken) -> Result<ProbeReport, ProbeError> {
    probe_traced(target, token).await.map_err(ProbeError::from)
}

/// [`probe`], keeping the transcript of a failure too ([`ProbeFailure::transcript`]).
pub async fn probe_traced(target: &ProbeTarget, token: &AccessToken) -> Result<ProbeReport, ProbeFailure> {
    probe_traced_later(target, &TokenLater::ready(target, token.clone())).await
}

/// [`probe_traced`] with a token that may still be being fetched: the probe connects, sets up
/// TLS and reads the greeting meanwhile (see [`TokenLater`]).
#[tracing::instrument(skip_all, fields(protocol = %target.protocol, addr = %target.addr()))]
pub async fn probe_traced_later(target: &ProbeTarget, token: &TokenLater) -> Result<ProbeReport, ProbeFailure> {
    let result = match target.protocol {
        Service::Imap => imap::probe_later(target, token).await,
        Service::Pop3 => pop3::probe_later(target, token).await,
        // An outgoing check signs in at once: it waits for its token first.
        Service::Smtp => match token.get(target).await {
            Ok(token) => smtp::probe_traced(target, token, None).await,
            Err(error) => Err(ProbeFailure { error, transcript: Default::default() }),
        },
    };
    match &result {
        Ok(r) => tracing::debug!(mechanism = r.mechanism, messages = r.messages, "probe succeeded"),
        Err(e) => tracing::debug!(code = e.code(), step = e.step(), "probe failed: {e}"),
    }
    result
}

/// Runs the whole dialogue of `service` — greeting, capabilities, SASL, `EXAMINE`/`STAT`/
/// `MAIL FROM`, logout — against `replies`, a server's bytes as they would arrive after the TLS
/// handshake, with what the client writes discarded; under the same deadline, byte budget and
/// redaction as a real probe. For the fuzz targets (`fuzz/`): every reply parser and the line
/// reader meet arbitrary server bytes here. Returns the outcome and the bytes read.
#[doc(hidden)]
pub async fn replay(service: Service, replies: &[u8]) -> (Result<ProbeReport, ProbeError>, u64) {
    let t = ProbeTarget {
        protocol: service,
        host: "mail.example.com".into(),
        port: 993,
        security: Security::Tls,
        folder: "INBOX".into(),
        sasl_user: "alice@example.com".into(),
        ca_file: None,
        timeout: Duration::from_secs(1),
    };
    let access = AccessToken::new("replayed-access-token".into());
    let token = TokenLater::ready(&t, access.clone());
    let read = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&read);
    let dialogue = async {
        let watch = Watch::current();
        let stream = Metered::new(
            tokio::io::join(std::io::Cursor::new(replies.to_vec()), tokio::io::sink()),
            Arc::clone(&watch),
        );
        let outcome = match service {
            Service::Imap => imap::over(&t, stream, &token).await,
            Service::Pop3 => pop3::over(&t, stream, &token).await,
            Service::Smtp => smtp::over(&t, stream, &access, None).await,
        };
        counted.store(watch.received.load(Ordering::SeqCst), Ordering::SeqCst);
        outcome
    };
    let outcome = guarded(&t, &token, dialogue).await.map_err(ProbeError::from);
    (outcome, read.load(Ordering::SeqCst))
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
    name: Step,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, ProbeError> {
    Watch::enter(name);
    tokio::time::timeout(t.timeout, fut).await.map_err(|_| timeout(t, name))
}

fn timeout(t: &ProbeTarget, step: Step) -> ProbeError {
    ProbeError::Timeout { proto: t.proto(), addr: t.addr(), step, waited: t.timeout }
}

/// An I/O failure on an established connection.
pub(crate) fn broken(t: &ProbeTarget, step: Step, e: &std::io::Error) -> ProbeError {
    ProbeError::Connection { proto: t.proto(), addr: t.addr(), step, detail: e.to_string() }
}

/// A reply that does not fit the protocol; `words` is what the server said.
pub(crate) fn unexpected(t: &ProbeTarget, step: Step, words: impl Into<String>) -> ProbeError {
    ProbeError::Protocol { proto: t.proto(), addr: t.addr(), step, words: words.into() }
}

/// Resolves the host and connects, trying each address in turn, each under the timeout. The
/// stream counts what the server sends against the probe's [`BYTE_BUDGET`].
pub(crate) async fn connect(t: &ProbeTarget) -> Result<Metered<TcpStream>, ProbeError> {
    let (proto, addr) = (t.proto(), t.addr());
    let addrs: Vec<_> = step(t, Step::Connect, tokio::net::lookup_host((t.host.as_str(), t.port)))
        .await?
        .map_err(|e| ProbeError::Dns { proto, host: t.host.clone(), detail: e.to_string() })?
        .collect();
    let mut last = None;
    for a in addrs {
        match tokio::time::timeout(t.timeout, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                Watch::with_current(|w| w.scribe.note(format!("connected to {a}")));
                return Ok(Metered::new(s, Watch::current()));
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Some(ProbeError::ConnectRefused { proto, addr: addr.clone() })
            }
            Ok(Err(e)) => last = Some(ProbeError::Connect { proto, addr: addr.clone(), detail: e.to_string() }),
            Err(_) => last = Some(timeout(t, Step::Connect)),
        }
    }
    Err(last.unwrap_or(ProbeError::Dns { proto, host: t.host.clone(), detail: "no address found".into() }))
}

tokio::task_local! {
    /// The probe in progress on this task: what the server has sent so far and the step it is
    /// in. Set by [`guarded`]; the network code reads it without it being passed through every
    /// function of every dialogue.
    static WATCH: Arc<Watch>;
}

/// What one probe has received, and where it is.
#[derive(Debug)]
pub(crate) struct Watch {
    received: AtomicU64,
    /// [`BYTE_BUDGET`]; smaller in tests.
    budget: u64,
    over: std::sync::atomic::AtomicBool,
    step: std::sync::Mutex<Step>,
    /// The transcript being recorded.
    pub(crate) scribe: Scribe,
}

impl Default for Watch {
    fn default() -> Self {
        Self {
            received: AtomicU64::new(0),
            budget: BYTE_BUDGET,
            over: Default::default(),
            step: std::sync::Mutex::new(Step::Connect),
            scribe: Scribe::default(),
        }
    }
}

impl Watch {
    /// The probe on this task, or a fresh one (dialogue tests that skip [`guarded`]).
    pub(crate) fn current() -> Arc<Watch> {
        WATCH.try_with(Arc::clone).unwrap_or_default()
    }

    /// Runs `f` on the probe of this task, if there is one.
    pub(crate) fn with_current(f: impl FnOnce(&Watch)) {
        let _ = WATCH.try_with(|w| f(w));
    }

    fn enter(name: Step) {
        let _ = WATCH.try_with(|w| *w.step.lock().unwrap_or_else(|p| p.into_inner()) = name);
    }

    pub(crate) fn step(&self) -> Step {
        *self.step.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn over_budget(&self) -> bool {
        self.over.load(Ordering::SeqCst)
    }
}

/// The access token a probe signs in with: ready, or still being fetched. Why: a refresh
/// (a round trip to the identity provider, then the keyring) and the connection to the mail
/// server (TCP, TLS, the greeting: three round trips) need nothing of each other, so
/// [`crate::app::App::verify`] runs them side by side, and the probe waits for the token only
/// where it signs in. That wait does not count against the probe's deadline (see [`guarded`]):
/// a slow identity provider is the refresh's failure, with its own deadline, not the mail
/// server's.
pub struct TokenLater {
    ready: std::sync::OnceLock<AccessToken>,
    pending: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<AccessToken>>>,
    redactor: Arc<Redactor>,
    /// Time spent waiting for the token so far, and since when a wait is running.
    waited: std::sync::Mutex<(Duration, Option<std::time::Instant>)>,
}

impl fmt::Debug for TokenLater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenLater").field("ready", &self.ready.get().is_some()).finish_non_exhaustive()
    }
}

impl TokenLater {
    /// A token that is at hand.
    pub fn ready(t: &ProbeTarget, token: AccessToken) -> Self {
        let later = Self::new(t, None);
        later.redactor.learn(&token);
        let _ = later.ready.set(token);
        later
    }

    /// A token that `rx` will bring; a dropped sender (the refresh failed) ends the probe.
    pub fn later(t: &ProbeTarget, rx: tokio::sync::oneshot::Receiver<AccessToken>) -> Self {
        Self::new(t, Some(rx))
    }

    fn new(t: &ProbeTarget, rx: Option<tokio::sync::oneshot::Receiver<AccessToken>>) -> Self {
        Self {
            ready: std::sync::OnceLock::new(),
            pending: tokio::sync::Mutex::new(rx),
            redactor: Arc::new(Redactor::pending(t)),
            waited: std::sync::Mutex::new((Duration::ZERO, None)),
        }
    }

    /// The token, waiting for it if it is still being fetched. Its forms are known to the
    /// probe's redactor before it is handed out.
    pub(crate) async fn get(&self, t: &ProbeTarget) -> Result<&AccessToken, ProbeError> {
        if let Some(token) = self.ready.get() {
            return Ok(token);
        }
        let mut pending = self.pending.lock().await;
        if let Some(rx) = pending.take() {
            self.waited.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(std::time::Instant::now());
            let got = rx.await;
            {
                let mut w = self.waited.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(since) = w.1.take() {
                    w.0 += since.elapsed();
                }
            }
            if let Ok(token) = got {
                self.redactor.learn(&token);
                let _ = self.ready.set(token);
            }
        }
        drop(pending);
        self.ready.get().ok_or_else(|| invalid_input(t, "the access token", "the refresh brought none"))
    }

    /// How long the probe has waited for the token, a wait still running included.
    fn waited(&self) -> Duration {
        let w = self.waited.lock().unwrap_or_else(|p| p.into_inner());
        w.0 + w.1.map_or(Duration::ZERO, |since| since.elapsed())
    }
}

/// Runs one whole probe: refuses input that cannot go on the wire, bounds it by the deadline
/// and the byte budget, redacts the token from whatever the server said, and hands over the
/// transcript with the outcome.
pub(crate) async fn guarded(
    t: &ProbeTarget,
    token: &TokenLater,
    dialogue: impl Future<Output = Result<ProbeReport, ProbeError>>,
) -> Result<ProbeReport, ProbeFailure> {
    let redactor = Arc::clone(&token.redactor);
    let watch = Arc::new(Watch { scribe: Scribe::new(Some(Arc::clone(&redactor))), ..Watch::default() });
    let outcome = match sasl::check_user(&t.sasl_user) {
        Err(problem) => Err(invalid_input(t, "the sign-in address", problem)),
        Ok(()) => {
            // One deadline for the whole dialogue, on top of the per-step timeouts: those alone
            // let a server that answers a line every few seconds keep a probe for minutes. Time
            // spent waiting for the token is added to it (see [`TokenLater`]).
            let start = tokio::time::Instant::now();
            let limit = || start + t.deadline() + token.waited();
            let dialogue = WATCH.scope(Arc::clone(&watch), dialogue);
            tokio::pin!(dialogue);
            let ended = loop {
                tokio::select! {
                    r = &mut dialogue => break Ok(r),
                    _ = tokio::time::sleep_until(limit()) => {
                        if limit() <= tokio::time::Instant::now() {
                            break Err(());
                        }
                    }
                }
            };
            match ended {
                Ok(Ok(report)) => Ok(report),
                // Whatever broke first (TLS, a parser, a line read), the cause was the budget.
                Ok(Err(e)) if watch.over_budget() => {
                    Err(ProbeError::ReplyTooLarge { proto: t.proto(), addr: t.addr(), step: e.step_kind() })
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ProbeError::Deadline {
                    proto: t.proto(),
                    addr: t.addr(),
                    step: watch.step(),
                    waited: t.deadline(),
                }),
            }
        }
    };
    let transcript = watch.scribe.take();
    match outcome {
        Ok(mut r) => {
            r.detail = redactor.apply(&r.detail);
            r.transcript = transcript;
            Ok(r)
        }
        Err(e) => Err(ProbeFailure { error: e.redacted(&redactor), transcript }),
    }
}

pub(crate) fn invalid_input(t: &ProbeTarget, field: &'static str, problem: impl Into<String>) -> ProbeError {
    ProbeError::InvalidInput { proto: t.proto(), addr: t.addr(), field, problem: problem.into() }
}

impl ProbeError {
    /// A SASL response that cannot be built (see [`sasl::SaslError`]).
    pub(crate) fn from_sasl(t: &ProbeTarget, e: sasl::SaslError) -> Self {
        invalid_input(t, e.field, sasl::CONTROL_PROBLEM)
    }
}

/// A stream that counts the bytes read from it and fails once the probe's [`BYTE_BUDGET`] is
/// spent, so no reply is ever buffered past it (async-imap alone would take a literal of up to
/// 512 MiB). Hand-written because it must share its count with [`guarded`]: a few lines.
pub(crate) struct Metered<S> {
    inner: S,
    watch: Arc<Watch>,
}

impl<S> Metered<S> {
    fn new(inner: S, watch: Arc<Watch>) -> Self {
        Self { inner, watch }
    }
}

impl<S> fmt::Debug for Metered<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metered").field("received", &self.watch.received.load(Ordering::SeqCst)).finish()
    }
}

/// The error a [`Metered`] stream fails with once the budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("the server sent more than {} KiB", BYTE_BUDGET / 1024)]
pub(crate) struct OverBudget;

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let received = this.watch.received.load(Ordering::SeqCst);
        let left = this.watch.budget.saturating_sub(received);
        if left == 0 {
            this.watch.over.store(true, Ordering::SeqCst);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, OverBudget)));
        }
        let n = if (buf.remaining() as u64) <= left {
            let before = buf.filled().len();
            let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
            if !matches!(polled, Poll::Ready(Ok(()))) {
                return polled;
            }
            buf.filled().len() - before
        } else {
            // Less budget left than room in the caller's buffer: read no more than the budget,
            // through a small buffer of our own (the caller's cannot be shortened safely).
            let mut own = vec![0u8; left as usize];
            let mut small = ReadBuf::new(&mut own);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut small);
            if !matches!(polled, Poll::Ready(Ok(()))) {
                return polled;
            }
            buf.put_slice(small.filled());
            small.filled().len()
        };
        this.watch.received.fetch_add(n as u64, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Removes the token from text the server sent, by exact value: the token, its base64, and
/// the SASL responses of both mechanisms, raw and base64. A server that echoes the client's
/// line (in a `NO`, an `-ERR`, a `535`, a challenge) would otherwise put the token into the
/// health history, the terminal and the window. Exact values, not a pattern: a pattern would
/// also eat the server's own words, and miss a token of an unexpected shape.
pub(crate) struct Redactor {
    /// Set once the token is known: a probe whose token is still being fetched records the
    /// server's greeting before it (which cannot contain a token the client never sent).
    secrets: std::sync::OnceLock<Vec<SecretString>>,
    user: String,
    host: String,
    port: u16,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor").field("values", &self.secrets().len()).finish()
    }
}

/// What a redacted token reads as.
pub const REDACTED: &str = "[token redacted]";

impl Redactor {
    /// Values shorter than this are not redacted: replacing a one-letter test token would eat
    /// every such letter of the server's words, and a real access token is far longer.
    const MIN_LEN: usize = 8;

    #[cfg(test)]
    pub(crate) fn new(t: &ProbeTarget, token: &AccessToken) -> Self {
        let r = Self::pending(t);
        r.learn(token);
        r
    }

    /// A redactor for a token not known yet (see [`TokenLater`]).
    fn pending(t: &ProbeTarget) -> Self {
        Self { secrets: std::sync::OnceLock::new(), user: t.sasl_user.clone(), host: t.host.clone(), port: t.port }
    }

    fn secrets(&self) -> &[SecretString] {
        self.secrets.get().map_or(&[], Vec::as_slice)
    }

    /// Learns the token's forms; the first token learnt stays.
    fn learn(&self, token: &AccessToken) {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        use base64::Engine;
        let tok = token.secret();
        // Unpadded base64 is a prefix of the padded form, so both are caught; the padded form
        // too, so that a redacted client line shows no stray `=`.
        let mut secrets = vec![
            SecretString::from(tok.clone()),
            SecretString::from(STANDARD.encode(tok)),
            SecretString::from(STANDARD_NO_PAD.encode(tok)),
            SecretString::from(URL_SAFE_NO_PAD.encode(tok)),
        ];
        for m in [sasl::Mechanism::XOAuth2, sasl::Mechanism::OAuthBearer] {
            if let Ok(raw) = m.initial_response(&self.user, &self.host, self.port, tok) {
                secrets.push(SecretString::from(STANDARD.encode(raw.expose_secret())));
                secrets.push(SecretString::from(STANDARD_NO_PAD.encode(raw.expose_secret())));
                secrets.push(raw);
            }
        }
        secrets.retain(|s| s.expose_secret().len() >= Self::MIN_LEN);
        // Longest first: the raw SASL response contains the token.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.expose_secret().len()));
        let _ = self.secrets.set(secrets);
    }

    /// `text` with every secret value replaced by [`REDACTED`].
    pub(crate) fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets() {
            if out.contains(s.expose_secret()) {
                out = out.replace(s.expose_secret(), REDACTED);
            }
        }
        out
    }

    /// `text` with every secret value replaced by `<redacted, N bytes>` (N its length), as the
    /// transcript shows the client's lines.
    pub(crate) fn apply_sized(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets() {
            let v = s.expose_secret();
            if out.contains(v) {
                out = out.replace(v, &transcript::redacted(v.len()));
            }
        }
        out
    }
}

impl ProbeError {
    /// The same error with the token removed from every text that came from outside.
    fn redacted(self, r: &Redactor) -> Self {
        use ProbeError::*;
        match self {
            Dns { proto, host, detail } => Dns { proto, host, detail: r.apply(&detail) },
            Connect { proto, addr, detail } => Connect { proto, addr, detail: r.apply(&detail) },
            Connection { proto, addr, step, detail } => Connection { proto, addr, step, detail: r.apply(&detail) },
            Tls { proto, addr, step, mut source } => {
                source.detail = r.apply(&source.detail);
                Tls { proto, addr, step, source }
            }
            MechanismNotOffered { proto, addr, offered } => {
                MechanismNotOffered { proto, addr, offered: r.apply(&offered) }
            }
            AuthRejected { proto, command, mechanism, addr, words } => {
                AuthRejected { proto, command, mechanism, addr, words: r.apply(&words) }
            }
            FolderMissing { addr, folder, words } => FolderMissing { addr, folder, words: r.apply(&words) },
            Protocol { proto, addr, step, words } => Protocol { proto, addr, step, words: r.apply(&words) },
            e @ (ConnectRefused { .. }
            | Timeout { .. }
            | TlsSetup { .. }
            | StarttlsNotOffered { .. }
            | Deadline { .. }
            | ReplyTooLarge { .. }
            | InvalidInput { .. }) => e,
        }
    }
}

/// Whether the TLS session began after a plain-text upgrade (STARTTLS/STLS), and so without a
/// greeting of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upgraded {
    /// Implicit TLS: the greeting comes over TLS.
    No,
    /// After STARTTLS/STLS: the greeting was read in plain text; capabilities must be asked
    /// again over TLS (RFC 2595 §3.1, RFC 3207 §4.2, RFC 9051 §6.2.1).
    Yes,
}

/// The shape every probe shares: TLS set up before connecting (an unusable CA file is reported
/// without touching the network), connect, then TLS at once — or, with STARTTLS, `upgrade` runs
/// the protocol's plain-text part (greeting, capabilities, the upgrade command; it refuses a
/// server that does not offer it, so the token never crosses the network in clear) and hands
/// back the bare stream. Dropping the plain-text reader drops anything the server sent after its
/// go-ahead, so nothing injected before the handshake is read as if it came over TLS. `session`
/// runs the rest over TLS.
pub(crate) async fn connected<U, UF, D, DF>(t: &ProbeTarget, upgrade: U, session: D) -> Result<ProbeReport, ProbeError>
where
    U: FnOnce(Metered<TcpStream>) -> UF,
    UF: Future<Output = Result<Metered<TcpStream>, ProbeError>>,
    D: FnOnce(TlsStream<Metered<TcpStream>>, Upgraded) -> DF,
    DF: Future<Output = Result<ProbeReport, ProbeError>>,
{
    let tls = Tls::new(t)?;
    let tcp = connect(t).await?;
    match t.security {
        Security::Tls => session(tls.wrap(t, tcp).await?, Upgraded::No).await,
        Security::Starttls => {
            let tcp = upgrade(tcp).await?;
            session(tls.wrap(t, tcp).await?, Upgraded::Yes).await
        }
    }
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
        let outcome = step(t, Step::Tls, self.connector.connect(self.name.clone(), stream)).await?;
        Watch::with_current(|w| match &outcome {
            Ok(s) => {
                let c = s.get_ref().1;
                let version = c.protocol_version().and_then(|v| v.as_str()).map(|v| v.replace('_', "."));
                let cipher = c.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).map(str::to_string);
                w.scribe.note(format!(
                    "TLS established with {} ({}, {})",
                    t.host,
                    version.as_deref().unwrap_or("?"),
                    cipher.as_deref().unwrap_or("?")
                ));
                w.scribe.tls(|f| {
                    f.version = version;
                    f.cipher = cipher;
                });
            }
            Err(e) => {
                w.scribe.note(format!("TLS handshake failed: {e}"));
                w.scribe.tls(|_| {});
            }
        });
        outcome.map_err(|e| ProbeError::Tls {
            proto: t.proto(),
            addr: t.addr(),
            step: Step::Tls,
            source: HandshakeError::from_io(&e, &t.host),
        })
    }
}

/// Longest server line accepted, by every probe (RFC 2449 and RFC 5321 allow 512 octets; IMAP
/// lines are longer, and async-imap alone would buffer up to 512 MiB): generous, but bounded, so
/// a hostile server cannot make a probe buffer without end. A literal is not a line: the byte
/// budget ([`BYTE_BUDGET`]) bounds those.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// The server's words when a line passes [`MAX_LINE`].
pub(crate) const LINE_TOO_LONG: &str = "the server sent a line longer than 64 KiB";

/// Line-oriented I/O for the hand-written dialogues (SMTP, POP3 before STLS): bounded line reads, writes,
/// each under the step timeout. Each protocol adds its own replies in its module.
#[derive(Debug)]
pub(crate) struct LineConn<S> {
    io: BufReader<Transcribed<S>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LineConn<S> {
    pub(crate) fn new(stream: S) -> Self {
        Self { io: BufReader::new(Transcribed::new(stream)) }
    }

    /// The stream, without what was buffered from it. For a STARTTLS/STLS upgrade: the server
    /// sends nothing after its go-ahead until the handshake, so nothing buffered is lost.
    pub(crate) fn into_inner(self) -> S {
        self.io.into_inner().into_inner()
    }

    pub(crate) async fn send(&mut self, t: &ProbeTarget, name: Step, line: &str) -> Result<(), ProbeError> {
        self.write(t, name, format!("{line}\r\n").as_bytes()).await
    }

    /// Sends a line that carries a credential; exposed here and nowhere else, and the wire
    /// copy is wiped once written.
    pub(crate) async fn send_secret(
        &mut self,
        t: &ProbeTarget,
        name: Step,
        line: &SecretString,
    ) -> Result<(), ProbeError> {
        let wire = SecretString::from(format!("{}\r\n", line.expose_secret()));
        self.write(t, name, wire.expose_secret().as_bytes()).await
    }

    pub(crate) async fn write(&mut self, t: &ProbeTarget, name: Step, bytes: &[u8]) -> Result<(), ProbeError> {
        let io = self.io.get_mut();
        step(t, name, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await?
        .map_err(|e| broken(t, name, &e))
    }

    /// One server line, without its line break.
    pub(crate) async fn line(&mut self, t: &ProbeTarget, name: Step) -> Result<String, ProbeError> {
        let mut buf = Vec::new();
        step(t, name, (&mut self.io).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf))
            .await?
            .map_err(|e| broken(t, name, &e))?;
        if !buf.ends_with(b"\n") {
            return Err(unexpected(
                t,
                name,
                if buf.len() > MAX_LINE { LINE_TOO_LONG } else { "the server closed the connection" },
            ));
        }
        Ok(String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string())
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use std::sync::atomic::AtomicU64;

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

    const TOKEN: &str = "tok-echoed-0123456789";

    fn token() -> AccessToken {
        AccessToken::new(TOKEN.into())
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn unb64(s: &str) -> String {
        use base64::Engine;
        String::from_utf8_lossy(&base64::engine::general_purpose::STANDARD.decode(s).unwrap_or_default()).into_owned()
    }

    /// A whole probe (through [`probe`]) over implicit TLS against `respond`, trusting the test CA.
    async fn over_tls(
        service: Service,
        greeting: &'static str,
        respond: impl FnMut(&str) -> Reply + Send + 'static,
    ) -> (Result<ProbeReport, ProbeError>, Vec<String>) {
        let pki = crate::tls::tests::test_pki(&["127.0.0.1"], false);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let (port, h) = serve(greeting, ServerTls::Implicit(pki.server.clone()), respond).await;
        let mut t = target(service, port, Security::Tls);
        t.ca_file = Some(ca);
        let r = probe(&t, &token()).await;
        (r, h.await.unwrap())
    }

    /// The error shows none of the token's forms, and says where it was redacted.
    fn assert_redacted(e: &ProbeError, seen: &[String]) {
        let sasl_line = seen.iter().find(|l| l.starts_with("dXNlcj1")).expect("the SASL response was sent");
        let words = e.server_words().unwrap_or_default();
        for shown in [e.to_string(), words.to_string()] {
            assert!(!shown.contains(TOKEN), "{shown}");
            assert!(!shown.contains(b64(TOKEN).trim_end_matches('=')), "{shown}");
            assert!(!shown.contains(sasl_line.trim_end_matches('=')), "{shown}");
            assert!(!shown.contains("dXNlcj1"), "no part of the SASL response: {shown}");
            assert!(!shown.contains("auth=Bearer"), "{shown}");
        }
        assert!(words.contains(REDACTED), "{words}");
    }

    #[tokio::test]
    async fn an_imap_server_echoing_the_sasl_line_gets_it_redacted() {
        let mut auth_tag = String::new();
        let (r, seen) = over_tls(Service::Imap, "* OK ready\r\n", move |l: &str| {
            let tag = l.split(' ').next().unwrap_or("").to_string();
            if l.ends_with(" CAPABILITY") {
                send(format!("* CAPABILITY IMAP4rev1 AUTH=XOAUTH2\r\n{tag} OK done\r\n"))
            } else if l.contains(" AUTHENTICATE ") {
                auth_tag = tag;
                send("+ \r\n")
            } else {
                send(format!("{auth_tag} NO [AUTHENTICATIONFAILED] you sent {l} ({TOKEN}, {})\r\n", b64(TOKEN)))
            }
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), "auth_rejected", "{e}");
        assert_redacted(&e, &seen);
        assert!(e.server_words().unwrap().starts_with("NO [AUTHENTICATIONFAILED] you sent "), "{e}");
    }

    #[tokio::test]
    async fn a_pop3_server_echoing_the_sasl_line_gets_it_redacted() {
        // Without CAPA the response goes on a line of its own, the line echoed here.
        let (r, seen) = over_tls(Service::Pop3, "+OK ready\r\n", |l: &str| match l {
            "CAPA" => send("-ERR no CAPA\r\n"),
            "AUTH XOAUTH2" => send("+ \r\n"),
            l => send(format!("-ERR you sent {l} which reads {} and {TOKEN}\r\n", unb64(l))),
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), "auth_rejected", "{e}");
        assert_redacted(&e, &seen);
        assert!(!e.to_string().contains("user=alice@example.com\x01"), "the decoded response too: {e}");
    }

    #[tokio::test]
    async fn an_smtp_server_echoing_the_sasl_line_gets_it_redacted() {
        let (r, seen) = over_tls(Service::Smtp, "220 mx ESMTP\r\n", |l: &str| match l {
            l if l.starts_with("EHLO") => send("250-mx\r\n250 AUTH XOAUTH2\r\n"),
            "AUTH XOAUTH2" => send("334 \r\n"),
            l => send(format!("535-5.7.8 you sent {l}\r\n535 5.7.8 token {TOKEN} ({})\r\n", b64(TOKEN))),
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), "auth_rejected", "{e}");
        assert_redacted(&e, &seen);
        assert!(e.server_words().unwrap().starts_with("535 5.7.8 you sent "), "{e}");
    }

    /// One line every 250 ms, each well within the step timeout, forever.
    fn trickle(first: &str, again: &str) -> Reply {
        Reply::Trickle(first.into(), again.into(), Duration::from_millis(250))
    }

    /// Runs the probe, failing the test (instead of hanging it) if it is still going after 30 s.
    async fn ends(t: &ProbeTarget) -> (ProbeError, Duration) {
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(30), probe(t, &token()))
            .await
            .expect("the probe is still running after 30 s");
        (r.unwrap_err(), started.elapsed())
    }

    #[tokio::test]
    async fn a_trickling_pop3_capability_list_ends_at_the_deadline() {
        let (port, _h) = serve("+OK ready\r\n", ServerTls::None, |l: &str| match l {
            "CAPA" => trickle("+OK\r\n", "X-PADDING\r\n"),
            _ => send("-ERR\r\n"),
        })
        .await;
        let mut t = target(Protocol::Pop3, port, Security::Starttls);
        t.timeout = Duration::from_secs(1);
        let (e, took) = ends(&t).await;
        assert_eq!((e.code(), e.step()), ("probe_deadline", "capability"), "{e}");
        assert!(e.to_string().contains("did not finish the check within 3s (it was still in CAPA)"), "{e}");
        assert!(took < t.deadline() + Duration::from_secs(5), "took {took:?}");
    }

    #[tokio::test]
    async fn a_trickling_smtp_reply_ends_at_the_deadline() {
        let (port, _h) = serve("220 mx ESMTP\r\n", ServerTls::None, |l: &str| match l {
            l if l.starts_with("EHLO") => trickle("250-mx\r\n", "250-X-PADDING\r\n"),
            _ => send("502 no\r\n"),
        })
        .await;
        let mut t = target(Service::Smtp, port, Security::Starttls);
        t.timeout = Duration::from_secs(1);
        let (e, took) = ends(&t).await;
        assert_eq!((e.code(), e.step()), ("probe_deadline", "ehlo"), "{e}");
        assert!(took < t.deadline() + Duration::from_secs(5), "took {took:?}");
    }

    /// A flood of `line`s after `head`, up to 300 MB; returns what the server managed to write.
    fn flood(head: &str, line: String, written: &Arc<AtomicU64>) -> Reply {
        Reply::Flood { head: head.into(), line, total: 300_000_000, written: Arc::clone(written) }
    }

    /// Far more than the budget would be a buffered reply; the slack is what the two sockets'
    /// kernel buffers hold.
    const WRITTEN_AT_MOST: u64 = BYTE_BUDGET + 24 * 1024 * 1024;

    #[tokio::test]
    async fn a_300_mb_imap_literal_is_not_buffered() {
        let written = Arc::new(AtomicU64::new(0));
        let w = Arc::clone(&written);
        let (port, h) = serve("* OK ready\r\n", ServerTls::None, move |l: &str| {
            if l.ends_with(" CAPABILITY") {
                // Lines of 1000 octets: no single line is long, the literal is.
                flood("* 1 FETCH (BODY[] {300000000}\r\n", format!("{}\r\n", "x".repeat(998)), &w)
            } else {
                Reply::Close
            }
        })
        .await;
        let (e, _) = ends(&target(Protocol::Imap, port, Security::Starttls)).await;
        assert_eq!((e.code(), e.step()), ("reply_too_large", "capability"), "{e}");
        assert_eq!(
            e.to_string(),
            format!("IMAP server 127.0.0.1:{port} sent more than 1024 KiB during CAPABILITY, so the check was stopped")
        );
        let _ = tokio::time::timeout(Duration::from_secs(20), h).await;
        let sent = written.load(Ordering::SeqCst);
        assert!(sent < WRITTEN_AT_MOST, "the server got {sent} bytes in");
    }

    #[tokio::test]
    async fn an_endless_pop3_capability_list_of_long_lines_is_not_buffered() {
        let written = Arc::new(AtomicU64::new(0));
        let w = Arc::clone(&written);
        let (port, h) = serve("+OK ready\r\n", ServerTls::None, move |l: &str| match l {
            "CAPA" => flood("+OK\r\n", format!("X-{}\r\n", "P".repeat(60_000)), &w),
            _ => Reply::Close,
        })
        .await;
        let (e, _) = ends(&target(Protocol::Pop3, port, Security::Starttls)).await;
        assert_eq!((e.code(), e.step()), ("reply_too_large", "capability"), "{e}");
        let _ = tokio::time::timeout(Duration::from_secs(20), h).await;
        let sent = written.load(Ordering::SeqCst);
        assert!(sent < WRITTEN_AT_MOST, "the server got {sent} bytes in");
    }

    #[tokio::test]
    async fn the_meter_reads_no_more_than_the_budget() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 4096];
            let mut n = 0u64;
            while b.write_all(&chunk).await.is_ok() {
                n += chunk.len() as u64;
            }
            n
        });
        let watch = Arc::new(Watch::default());
        let mut m = Metered::new(a, Arc::clone(&watch));
        let mut got = 0u64;
        let mut buf = vec![0u8; 100_000];
        let err = loop {
            match m.read(&mut buf).await {
                Ok(n) => got += n as u64,
                Err(e) => break e,
            }
        };
        assert_eq!(got, BYTE_BUDGET, "exactly the budget is read");
        assert!(err.get_ref().is_some_and(|e| e.is::<OverBudget>()), "{err}");
        assert!(watch.over_budget());
        drop(m);
        assert!(writer.await.unwrap() <= BYTE_BUDGET + 64 * 1024);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Whatever the sizes of what arrives and of the reader's buffer, a metered stream hands
        /// over exactly the budget (or all there is, if less) and then fails.
        #[test]
        fn the_meter_never_reads_past_its_budget(
            sent in 0usize..6000,
            budget in 0u64..4000,
            reads in proptest::collection::vec(1usize..900, 1..40),
        ) {
            let (got, failed) = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
                let data = vec![b'x'; sent];
                let watch = Arc::new(Watch { budget, ..Watch::default() });
                let mut m = Metered::new(std::io::Cursor::new(data), Arc::clone(&watch));
                let (mut got, mut failed) = (0u64, false);
                for n in reads.iter().cycle().take(10_000) {
                    let mut buf = vec![0u8; *n];
                    match m.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(k) => got += k as u64,
                        Err(e) => {
                            failed = e.get_ref().is_some_and(|e| e.is::<OverBudget>());
                            break;
                        }
                    }
                }
                (got, failed)
            });
            proptest::prop_assert_eq!(got, (sent as u64).min(budget));
            // Past the budget the stream fails; exactly at it, the end of the data may come first.
            if (sent as u64) > budget {
                proptest::prop_assert!(failed);
            }
        }
    }

    #[tokio::test]
    async fn replayed_replies_run_the_whole_dialogue() {
        let imap = "* OK ready\r\n* CAPABILITY IMAP4rev1 AUTH=XOAUTH2\r\nA0001 OK done\r\n+ \r\nA0002 OK in\r\n\
                    * 4 EXISTS\r\nA0003 OK [READ-ONLY] done\r\n* BYE\r\nA0004 OK bye\r\n";
        let (r, read) = replay(Service::Imap, imap.as_bytes()).await;
        assert_eq!(r.unwrap().messages, 4);
        assert_eq!(read, imap.len() as u64);
        let pop3 = "+OK\r\n+OK\r\nSASL XOAUTH2\r\n.\r\n+ \r\n+OK in\r\n+OK 2 10\r\n+OK bye\r\n";
        assert_eq!(replay(Service::Pop3, pop3.as_bytes()).await.0.unwrap().messages, 2);
        let smtp = "220 mx\r\n250-mx\r\n250 AUTH XOAUTH2\r\n334 \r\n235 ok\r\n250 ok\r\n250 reset\r\n221 bye\r\n";
        assert!(replay(Service::Smtp, smtp.as_bytes()).await.0.unwrap().detail.contains("accepts mail"));
        let flood = format!("* OK ready\r\n* 1 FETCH (BODY[] {{9000000}}\r\n{}", "x\r\n".repeat(3_000_000));
        let (r, read) = replay(Service::Imap, flood.as_bytes()).await;
        assert_eq!(r.unwrap_err().code(), "reply_too_large");
        assert_eq!(read, BYTE_BUDGET);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Any bytes from any server: an outcome with a catalogued code, never a panic, never
        /// more read than the budget.
        #[test]
        fn any_replies_end_with_a_catalogued_code(
            service in proptest::sample::select(vec![Service::Imap, Service::Pop3, Service::Smtp]),
            head in proptest::sample::select(vec!["* OK hi\r\n", "+OK hi\r\n", "220 hi\r\n", ""]),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
        ) {
            let replies = [head.as_bytes(), &bytes].concat();
            let (r, read) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(replay(service, &replies));
            proptest::prop_assert!(read <= BYTE_BUDGET);
            if let Err(e) = r {
                proptest::prop_assert!(crate::diagnose::known_codes().any(|c| c == e.code()), "{}: {}", e.code(), e);
            }
        }
    }

    #[tokio::test]
    async fn a_control_character_in_the_user_is_refused_before_connecting() {
        for service in [Service::Imap, Service::Pop3, Service::Smtp] {
            let mut t = target(service, closed_port(), Security::Tls);
            t.sasl_user = "alice@example.com\x01auth=Bearer forged".into();
            let e = probe(&t, &token()).await.unwrap_err();
            assert_eq!((e.code(), e.step()), ("invalid_input", "connect"), "{service}: {e}");
            assert!(e.to_string().contains("the sign-in address contains a control character"), "{e}");
            assert!(!e.to_string().contains("forged"), "the value is not shown: {e}");
        }
    }

    #[tokio::test]
    async fn a_line_break_in_the_recipient_never_reaches_the_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let t = target(Service::Smtp, listener.local_addr().unwrap().port(), Security::Starttls);
        for to in ["desk@example.com\r\nRCPT TO:<evil@example.com>", "desk@example.com>\nDATA", "not an address"] {
            let m = smtp::TestMessage { to: to.into(), subject: "s".into(), body: "b".into() };
            let e = smtp::probe(&t, &token(), Some(&m)).await.unwrap_err();
            assert_eq!(e.code(), "invalid_input", "{to:?}: {e}");
            assert!(e.to_string().contains("the recipient (`to`)"), "{e}");
            assert!(!e.to_string().contains("evil") && !e.to_string().contains('\n'), "{e}");
        }
        let nobody = listener.accept().map(|_| ()).map_err(|e| e.kind());
        assert_eq!(nobody, Err(std::io::ErrorKind::WouldBlock), "no connection was made");
    }

    #[test]
    fn steps_keep_their_stored_words() {
        use Step::*;
        let all = [
            Connect,
            Tls,
            Greeting,
            Capability,
            Starttls,
            Authenticate,
            Examine,
            Stat,
            Logout,
            Quit,
            Ehlo,
            Mail,
            Rcpt,
            Data,
        ];
        let words: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        // Stored in health history and read by the window: these words never change.
        assert_eq!(
            words,
            [
                "connect",
                "tls",
                "greeting",
                "capability",
                "starttls",
                "authenticate",
                "examine",
                "stat",
                "logout",
                "quit",
                "ehlo",
                "mail",
                "rcpt",
                "data"
            ]
        );
        for s in all {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(
            (Capability.words("POP3"), Capability.words("IMAP"), Starttls.words("POP3")),
            ("CAPA", "CAPABILITY", "STLS")
        );
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
        let e = unexpected(&t, Step::Starttls, "-ERR not now");
        assert_eq!(e.to_string(), "POP3 server 127.0.0.1:110 answered STLS unexpectedly: -ERR not now");
        assert_eq!((e.code(), e.step(), e.server_words()), ("protocol", "starttls", Some("-ERR not now")));
        let e = timeout(&target(Protocol::Imap, 143, Security::Starttls), Step::Greeting);
        assert_eq!(e.to_string(), "IMAP server 127.0.0.1:143 did not answer within 5s during the greeting");
    }
}
