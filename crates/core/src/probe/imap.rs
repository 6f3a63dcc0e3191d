//! IMAP probe (RFC 9051 / RFC 3501) with async-imap: `AUTHENTICATE XOAUTH2` (or `OAUTHBEARER`,
//! RFC 7628), then `EXAMINE` of the folder — read-only (RFC 9051 §6.3.3), so probing never
//! changes `\Recent` or `\Seen` — and `LOGOUT`.
//!
//! With STARTTLS (RFC 2595, RFC 9051 §6.2.1) the capability list is read first: a server that
//! does not offer STARTTLS is refused before any credential is sent, and the capabilities are
//! asked again over TLS, because the plain-text list may have been forged (RFC 9051 §6.2.1).
//!
//! The server's words in errors are its own response line, as read off the wire by
//! [`Recorder`], not async-imap's rendering of them.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use async_imap::error::Error as ImapError;
use async_imap::imap_proto::{Capability, Response, ResponseCode, Status};
use async_imap::types::UnsolicitedResponse;
use async_imap::Client;
use oauth2::AccessToken;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::sasl::{self, Mechanism};
use super::transcript::Transcribed;
use super::MAX_LINE;
use super::{
    broken, connect, count_messages, step, unexpected, ProbeError, ProbeFailure, ProbeReport, ProbeTarget, Tls,
};
use crate::mailbox::Security;

const PROTO: &str = "IMAP";

pub async fn probe(t: &ProbeTarget, token: &AccessToken) -> Result<ProbeReport, ProbeFailure> {
    super::guarded(t, token, dialogue(t, token)).await
}

async fn dialogue(t: &ProbeTarget, token: &AccessToken) -> Result<ProbeReport, ProbeError> {
    let tls = Tls::new(t)?;
    let heard = Heard::default();
    let tcp = connect(t).await?;
    match t.security {
        Security::Tls => over(t, tls.wrap(t, tcp).await?, token).await,
        Security::Starttls => {
            let mut client = Client::new(Recorder::new(tcp, &heard));
            let caps = match greeting(t, &mut client, &heard).await? {
                Some(caps) => caps,
                None => capabilities(t, &mut client, &heard).await?,
            };
            // The token must never cross the network in clear: no STARTTLS, no sign-in.
            if !caps.iter().any(|c| c == "STARTTLS") {
                return Err(ProbeError::StarttlsNotOffered { proto: PROTO, addr: t.addr(), command: "STARTTLS" });
            }
            step(t, "starttls", client.run_command_and_check_ok("STARTTLS", None))
                .await?
                .map_err(|e| failure(t, "starttls", e, &heard))?;
            // Dropping the client also drops anything the server sent after its OK in plain
            // text, so nothing injected before the handshake is read as if it came over TLS.
            let tcp = client.into_inner().into_inner();
            let stream = tls.wrap(t, tcp).await?;
            // The capabilities seen in plain text may have been forged: asked again over TLS.
            login_and_examine(t, Client::new(Recorder::new(stream, &heard)), &heard, token, None).await
        }
    }
}

/// The whole dialogue on an established (TLS) connection, from the greeting on.
pub(crate) async fn over<S>(t: &ProbeTarget, stream: S, token: &AccessToken) -> Result<ProbeReport, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug,
{
    let heard = Heard::default();
    let mut client = Client::new(Recorder::new(stream, &heard));
    let caps = greeting(t, &mut client, &heard).await?;
    login_and_examine(t, client, &heard, token, caps).await
}

/// Authenticates on an established (TLS) connection whose greeting was read, opens the
/// folder read-only, logs out. `caps` are the capabilities the greeting announced over this
/// connection (RFC 9051 §7.1: `* OK [CAPABILITY …]`), saving a `CAPABILITY` round trip; `None`
/// asks for them.
pub(crate) async fn login_and_examine<S>(
    t: &ProbeTarget,
    mut client: Client<Recorder<S>>,
    heard: &Heard,
    token: &AccessToken,
    caps: Option<Vec<String>>,
) -> Result<ProbeReport, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let caps = match caps {
        Some(caps) => caps,
        None => capabilities(t, &mut client, heard).await?,
    };
    let offered = caps.iter().filter_map(|c| c.strip_prefix("AUTH="));
    let Some(mechanism) = Mechanism::pick(offered.clone()) else {
        let list: Vec<&str> = offered.collect();
        let offered = if list.is_empty() { "no SASL mechanism".into() } else { list.join(", ") };
        return Err(ProbeError::MechanismNotOffered { proto: PROTO, addr: t.addr(), offered });
    };
    let initial = mechanism
        .initial_response(&t.sasl_user, &t.host, t.port, token.secret())
        .map_err(|e| ProbeError::from_sasl(t, e))?;
    // SASL-IR (RFC 4959): the initial response on the AUTHENTICATE line itself, one round trip
    // fewer. Without it, the response follows the server's empty `+` continuation.
    let sasl_ir = caps.iter().any(|c| c == "SASL-IR");
    let command: Zeroizing<String> = Zeroizing::new(if sasl_ir {
        format!("{} {}", mechanism.name(), sasl::base64(&initial).expose_secret())
    } else {
        mechanism.name().to_string()
    });
    let challenge = Arc::new(Mutex::new(None));
    let auth = Bearer { mechanism, initial: (!sasl_ir).then_some(initial), failure: Arc::clone(&challenge) };
    let rejected = |words: String| ProbeError::AuthRejected {
        proto: PROTO,
        command: "AUTHENTICATE",
        mechanism: mechanism.name(),
        addr: t.addr(),
        words,
    };
    let mut session = match step(t, "authenticate", client.authenticate(command.as_str(), auth)).await? {
        Ok(s) => s,
        Err((e, _client)) => {
            let json = challenge.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(match (e, json) {
                (e @ (ImapError::No(_) | ImapError::Bad(_)), json) => {
                    rejected(sasl::with_challenge(words(&e, heard), json))
                }
                // Some servers hang up after the failure challenge instead of saying NO.
                (ImapError::ConnectionLost, Some(json)) => {
                    rejected(sasl::with_challenge("the server closed the connection".into(), Some(json)))
                }
                (e, _) => failure(t, "authenticate", e, heard),
            });
        }
    };
    drop(command);
    let folder = mutf7(&t.folder);
    let mailbox = match step(t, "examine", session.examine(&folder)).await? {
        Ok(m) => m,
        Err(e @ (ImapError::No(_) | ImapError::Bad(_) | ImapError::Validate(_))) => {
            return Err(ProbeError::FolderMissing { addr: t.addr(), folder: t.folder.clone(), words: words(&e, heard) })
        }
        Err(e) => return Err(failure(t, "examine", e, heard)),
    };
    // LOGOUT is sent but its reply not awaited: the mailbox was read, and the server ends the
    // session on the command (RFC 9051 §6.1.3) whether or not its BYE is read. A failed LOGOUT
    // does not undo the proof.
    let _ = step(t, "logout", session.run_command("LOGOUT")).await;
    Ok(ProbeReport {
        mechanism: mechanism.name(),
        messages: mailbox.exists,
        detail: format!("{} opened read-only: {}", t.folder, count_messages(mailbox.exists)),
        transcript: Default::default(),
    })
}

/// Answers the server's continuations: the initial response first, then the mechanism's
/// acknowledgement of a failure challenge, whose decoded JSON is kept for the error.
struct Bearer {
    mechanism: Mechanism,
    initial: Option<SecretString>,
    failure: Arc<Mutex<Option<String>>>,
}

impl async_imap::Authenticator for Bearer {
    /// Wiped when async-imap drops it after encoding.
    type Response = Zeroizing<Vec<u8>>;
    fn process(&mut self, challenge: &[u8]) -> Self::Response {
        match self.initial.take() {
            Some(initial) => Zeroizing::new(initial.expose_secret().as_bytes().to_vec()),
            None => {
                if let Some(text) = sasl::challenge_text(challenge) {
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
                }
                Zeroizing::new(self.mechanism.failure_ack().to_vec())
            }
        }
    }
}

/// Reads the greeting: `OK` goes on, with the capabilities it announced if it did; `BYE` (or
/// anything else) is the server's refusal.
async fn greeting<S>(
    t: &ProbeTarget,
    client: &mut Client<Recorder<S>>,
    heard: &Heard,
) -> Result<Option<Vec<String>>, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match step(t, "greeting", client.read_response()).await? {
        Ok(Some(r)) => match r.parsed() {
            Response::Data { status: Status::Ok, outcome } => Ok(match &outcome.code {
                Some(ResponseCode::Capabilities(list)) => Some(list.iter().map(capability).collect()),
                _ => None,
            }),
            // Signed in already, as whoever the server chose: the token would prove nothing.
            Response::Data { status: Status::PreAuth, .. } => Err(unexpected(
                t,
                "greeting",
                format!("{} (the connection is pre-authenticated, so the token cannot be tested)", heard.untagged()),
            )),
            _ => Err(unexpected(t, "greeting", heard.untagged())),
        },
        Ok(None) => Err(unexpected(t, "greeting", "the server closed the connection without a greeting")),
        Err(e) => Err(io_failure(t, "greeting", &e, heard)),
    }
}

/// A capability as an upper-case atom (`IMAP4REV1`, `STARTTLS`, `AUTH=XOAUTH2`).
fn capability(c: &Capability<'_>) -> String {
    match c {
        Capability::Imap4rev1 => "IMAP4REV1".to_string(),
        Capability::Auth(m) => format!("AUTH={}", m.to_ascii_uppercase()),
        Capability::Atom(a) => a.to_ascii_uppercase(),
    }
}

/// `CAPABILITY`, as upper-case atoms (`IMAP4REV1`, `STARTTLS`, `AUTH=XOAUTH2`).
async fn capabilities<S>(
    t: &ProbeTarget,
    client: &mut Client<Recorder<S>>,
    heard: &Heard,
) -> Result<Vec<String>, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (tx, rx) = async_channel::unbounded::<UnsolicitedResponse>();
    step(t, "capability", client.run_command_and_check_ok("CAPABILITY", Some(tx)))
        .await?
        .map_err(|e| failure(t, "capability", e, heard))?;
    let mut caps = Vec::new();
    while let Ok(u) = rx.try_recv() {
        if let UnsolicitedResponse::Other(r) = u {
            if let Response::Capabilities(list) = r.parsed() {
                caps.extend(list.iter().map(capability));
            }
        }
    }
    Ok(caps)
}

/// An async-imap failure at `step`, with the server's words where it said something.
fn failure(t: &ProbeTarget, step: &'static str, e: ImapError, heard: &Heard) -> ProbeError {
    match e {
        ImapError::Io(io) => io_failure(t, step, &io, heard),
        e => unexpected(t, step, words(&e, heard)),
    }
}

fn io_failure(t: &ProbeTarget, step: &'static str, e: &io::Error, heard: &Heard) -> ProbeError {
    if e.get_ref().is_some_and(|inner| inner.is::<LineTooLong>()) {
        return unexpected(t, step, LineTooLong.to_string());
    }
    match e.kind() {
        // async-imap could not parse what the server sent: not IMAP, or not well-formed.
        io::ErrorKind::Other | io::ErrorKind::InvalidData => {
            let line = heard.line();
            unexpected(t, step, if line.is_empty() { e.to_string() } else { line })
        }
        io::ErrorKind::UnexpectedEof => unexpected(t, step, "the server closed the connection mid-response"),
        _ => broken(t, step, e),
    }
}

/// The server's words for a failed command: its tagged `NO`/`BAD` line without the tag,
/// e.g. `NO [AUTHENTICATIONFAILED] Authentication failed.`.
fn words(e: &ImapError, heard: &Heard) -> String {
    match e {
        ImapError::No(_) | ImapError::Bad(_) => {
            let line = heard.line();
            match line.split_once(' ') {
                Some((_tag, rest))
                    if ["NO ", "BAD "]
                        .iter()
                        .any(|s| rest.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s))) =>
                {
                    rest.to_string()
                }
                _ => e.to_string(),
            }
        }
        ImapError::ConnectionLost => "the server closed the connection".into(),
        e => e.to_string(),
    }
}

/// The last complete line the server sent, shared between a [`Recorder`] and the probe.
#[derive(Debug, Default, Clone)]
pub(crate) struct Heard(Arc<Mutex<HeardState>>);

#[derive(Debug, Default)]
struct HeardState {
    partial: Vec<u8>,
    line: String,
}

impl Heard {
    fn lock(&self) -> MutexGuard<'_, HeardState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last line, without its line break.
    pub(crate) fn line(&self) -> String {
        self.lock().line.clone()
    }

    /// The last line without a leading `* ` (for greetings).
    fn untagged(&self) -> String {
        let l = self.line();
        l.strip_prefix("* ").map(str::to_string).unwrap_or(l)
    }

    /// Takes in bytes the server sent; fails when a line grows past [`MAX_LINE`].
    fn feed(&self, bytes: &[u8]) -> Result<(), LineTooLong> {
        let mut s = self.lock();
        for &b in bytes {
            if b == b'\n' {
                s.line = String::from_utf8_lossy(&s.partial).trim_end().to_string();
                s.partial.clear();
            } else if s.partial.len() >= MAX_LINE {
                return Err(LineTooLong);
            } else {
                s.partial.push(b);
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}", super::LINE_TOO_LONG)]
struct LineTooLong;

/// A stream that notes the server's lines as they are read (only what the server sends: the
/// client's lines, which carry the token, are not recorded) and caps their length.
pub(crate) struct Recorder<S> {
    inner: Transcribed<S>,
    heard: Heard,
}

impl<S> Recorder<S> {
    pub(crate) fn new(inner: S, heard: &Heard) -> Self {
        Self { inner: Transcribed::new(inner), heard: heard.clone() }
    }

    /// The stream beneath (for the STARTTLS upgrade).
    pub(crate) fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S> std::fmt::Debug for Recorder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if let Err(e) = this.heard.feed(&buf.filled()[before..]) {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
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

/// A folder name as IMAP wants it: modified UTF-7 (RFC 3501 §5.1.3) for non-ASCII names
/// (`Entwürfe` → `Entw&APw-rfe`). An ASCII name is taken as already encoded — that is how
/// servers list folders — except that a `&` not starting a valid shift sequence is escaped
/// as `&-` (`R&D` → `R&-D`).
pub(crate) fn mutf7(name: &str) -> String {
    use base64::Engine;
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == ',';
    if name.is_ascii() {
        let mut out = String::with_capacity(name.len());
        for (i, c) in name.char_indices() {
            out.push(c);
            if c == '&' {
                let rest = &name[i + 1..];
                // A shift sequence only if it ends in `-` and decodes to UTF-16 (`&0-` does not:
                // six bits are no character), or is the empty `&-`.
                let shifted = rest.find(|c: char| !b64(c)).is_some_and(|end| {
                    rest[end..].starts_with('-') && (end == 0 || utf16_shift(&rest[..end]).is_some())
                });
                if !shifted {
                    out.push('-');
                }
            }
        }
        return out;
    }
    let mut out = String::with_capacity(name.len() * 2);
    let mut pending: Vec<u8> = Vec::new();
    let flush = |out: &mut String, pending: &mut Vec<u8>| {
        if !pending.is_empty() {
            out.push('&');
            out.push_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(&*pending).replace('/', ","));
            out.push('-');
            pending.clear();
        }
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut out, &mut pending);
            match c {
                '&' => out.push_str("&-"),
                c => out.push(c),
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend(c.encode_utf16(&mut units).iter().flat_map(|u| u.to_be_bytes()));
        }
    }
    flush(&mut out, &mut pending);
    out
}

/// The text of a modified-base64 shift sequence (between `&` and `-`), if it is one: canonical
/// base64 (`,` for `/`, no padding) of whole UTF-16 code units forming valid UTF-16.
fn utf16_shift(b64: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64.replace(',', "/")).ok()?;
    if bytes.is_empty() || bytes.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    String::from_utf16(&units).ok()
}

#[cfg(test)]
mod tests {
    use super::super::scripted::{self, send, Reply, ServerTls};
    use super::*;
    use crate::mailbox::Protocol;
    use std::time::Duration;

    const TOKEN: &str = "tok-imap-123";

    fn target(port: u16, security: Security) -> ProbeTarget {
        scripted::target(Protocol::Imap, port, security)
    }

    fn tag(line: &str) -> String {
        line.split(' ').next().unwrap_or("").to_string()
    }

    fn xoauth2_b64() -> String {
        sasl::base64(&sasl::xoauth2("alice@example.com", TOKEN).unwrap()).expose_secret().to_string()
    }

    /// A server offering `caps`, answering the SASL exchange with `after_auth` (given the
    /// AUTHENTICATE tag), `EXAMINE "INBOX"` with 3 messages and any other folder with NO.
    fn imap_server(caps: &'static str, after_auth: fn() -> Vec<&'static str>) -> impl FnMut(&str) -> Reply + Send {
        let mut auth_tag = String::new();
        let mut auth_steps: Vec<&'static str> = Vec::new();
        move |l: &str| {
            let t = tag(l);
            if l.ends_with(" CAPABILITY") {
                send(format!("* CAPABILITY {caps}\r\n{t} OK done\r\n"))
            } else if l.ends_with(" STARTTLS") {
                Reply::SendThenTls(format!("{t} OK Begin TLS negotiation now\r\n"))
            } else if l.contains(" AUTHENTICATE ") {
                auth_tag = t;
                auth_steps = after_auth();
                send("+ \r\n")
            } else if !auth_steps.is_empty() {
                send(auth_steps.remove(0).replace("TAG", &auth_tag))
            } else if l.ends_with(" EXAMINE \"INBOX\"") {
                send(format!(
                    "* FLAGS (\\Seen)\r\n* 3 EXISTS\r\n* 0 RECENT\r\n{t} OK [READ-ONLY] Examine completed\r\n"
                ))
            } else if l.contains(" EXAMINE ") {
                send(format!("{t} NO Mailbox doesn't exist: Nope\r\n"))
            } else if l.ends_with(" LOGOUT") {
                send(format!("* BYE Logging out\r\n{t} OK Logout completed\r\n"))
            } else {
                send(format!("{t} BAD unexpected\r\n"))
            }
        }
    }

    fn accept() -> Vec<&'static str> {
        vec!["TAG OK Logged in\r\n"]
    }

    fn refuse_with_challenge() -> Vec<&'static str> {
        vec![
            "+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n",
            "TAG NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
        ]
    }

    /// Runs the post-greeting dialogue over plain TCP (no TLS needed to test the protocol).
    async fn dialogue(
        respond: impl FnMut(&str) -> Reply + Send + 'static,
        folder: &str,
    ) -> (Result<ProbeReport, ProbeError>, Vec<String>, u16) {
        let (port, h) = scripted::serve("* OK [CAPABILITY IMAP4rev1] ready\r\n", ServerTls::None, respond).await;
        let mut t = target(port, Security::Tls);
        t.folder = folder.into();
        let heard = Heard::default();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut client = Client::new(Recorder::new(tcp, &heard));
        // The greeting names no mechanism: these dialogues ask CAPABILITY.
        assert_eq!(greeting(&t, &mut client, &heard).await.unwrap(), Some(vec!["IMAP4REV1".to_string()]));
        let r = login_and_examine(&t, client, &heard, &AccessToken::new(TOKEN.into()), None).await;
        (r, h.await.unwrap(), port)
    }

    #[tokio::test]
    async fn starttls_not_offered_sends_no_credential() {
        let (port, h) = scripted::serve(
            "* OK ready\r\n",
            ServerTls::None,
            imap_server("IMAP4rev1 AUTH=XOAUTH2 AUTH=OAUTHBEARER", accept),
        )
        .await;
        let err = probe(&target(port, Security::Starttls), &AccessToken::new(TOKEN.into())).await.unwrap_err();
        assert_eq!((err.code(), err.step()), ("starttls_not_offered", "starttls"), "{err}");
        assert_eq!(
            err.to_string(),
            format!("IMAP server 127.0.0.1:{port} does not offer STARTTLS, so no credential was sent")
        );
        let seen = h.await.unwrap();
        assert_eq!(seen, vec!["A0001 CAPABILITY"], "nothing but CAPABILITY before giving up");
    }

    #[tokio::test]
    async fn authenticates_and_examines_read_only() {
        let (r, seen, _) = dialogue(imap_server("IMAP4rev1 AUTH=XOAUTH2 AUTH=OAUTHBEARER", accept), "INBOX").await;
        let report = r.unwrap();
        assert_eq!((report.mechanism, report.messages), ("XOAUTH2", 3));
        assert_eq!(report.detail, "INBOX opened read-only: 3 messages");
        assert_eq!(
            seen,
            vec![
                "A0001 CAPABILITY".to_string(),
                "A0002 AUTHENTICATE XOAUTH2".into(),
                xoauth2_b64(),
                "A0003 EXAMINE \"INBOX\"".into(),
                "A0004 LOGOUT".into(),
            ]
        );
    }

    /// A whole probe over implicit TLS (the test CA trusted) against `respond`.
    async fn over_tls(
        greeting: &'static str,
        respond: impl FnMut(&str) -> Reply + Send + 'static,
        timeout: Duration,
    ) -> (Result<ProbeReport, ProbeFailure>, Vec<String>) {
        let pki = crate::tls::tests::test_pki(&["127.0.0.1"], false);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let (port, h) = scripted::serve(greeting, ServerTls::Implicit(pki.server.clone()), respond).await;
        let mut t = target(port, Security::Tls);
        t.ca_file = Some(ca);
        t.timeout = timeout;
        let r = tokio::time::timeout(Duration::from_secs(20), probe(&t, &AccessToken::new(TOKEN.into())))
            .await
            .expect("the probe ends without waiting for LOGOUT's reply");
        (r, h.await.unwrap())
    }

    #[tokio::test]
    async fn the_greetings_capabilities_and_sasl_ir_save_two_round_trips() {
        // RFC 9051 §7.1 capabilities in the greeting, RFC 4959 SASL-IR; the server never
        // answers LOGOUT, and the probe does not wait for it (its step timeout is a minute).
        let (r, seen) = over_tls(
            "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready\r\n",
            |l: &str| {
                let t = tag(l);
                if l.contains(" AUTHENTICATE XOAUTH2 ") {
                    send(format!("{t} OK Logged in\r\n"))
                } else if l.ends_with(" EXAMINE \"INBOX\"") {
                    send(format!("* 3 EXISTS\r\n{t} OK [READ-ONLY] done\r\n"))
                } else if l.ends_with(" LOGOUT") {
                    Reply::Nothing
                } else {
                    send(format!("{t} BAD unexpected\r\n"))
                }
            },
            Duration::from_secs(60),
        )
        .await;
        let report = r.unwrap();
        assert_eq!(report.messages, 3);
        assert_eq!(
            seen,
            vec![
                format!("A0001 AUTHENTICATE XOAUTH2 {}", xoauth2_b64()),
                "A0002 EXAMINE \"INBOX\"".into(),
                "A0003 LOGOUT".into()
            ]
        );
        assert_eq!(report.transcript.turns(), 2, "{}", report.transcript.render());
    }

    #[tokio::test]
    async fn a_failure_challenge_after_sasl_ir_is_acknowledged() {
        let mut auth_tag = String::new();
        let (r, seen) = over_tls(
            "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready\r\n",
            move |l: &str| {
                if l.contains(" AUTHENTICATE ") {
                    auth_tag = tag(l);
                    send("+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n")
                } else {
                    send(format!("{auth_tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"))
                }
            },
            Duration::from_secs(5),
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(
            e.server_words(),
            Some(r#"NO [AUTHENTICATIONFAILED] Authentication failed. ({"status":"401","schemes":"bearer"})"#)
        );
        assert_eq!(seen[1], "", "an empty line answers the challenge: {seen:?}");
        let client: Vec<&str> = e.transcript.client_lines().collect();
        let size = sasl::base64(&sasl::xoauth2("alice@example.com", TOKEN).unwrap()).expose_secret().len();
        assert_eq!(client, [format!("A0001 AUTHENTICATE XOAUTH2 <redacted, {size} bytes>").as_str(), ""]);
    }

    #[tokio::test]
    async fn missing_folder_keeps_the_servers_words() {
        let (r, seen, _) = dialogue(imap_server("IMAP4rev1 AUTH=XOAUTH2", accept), "Nope").await;
        let e = r.unwrap_err();
        assert_eq!((e.code(), e.step()), ("folder_missing", "examine"), "{e}");
        assert_eq!(e.server_words(), Some("NO Mailbox doesn't exist: Nope"));
        assert!(e.to_string().contains("`Nope`"), "{e}");
        assert!(seen.contains(&"A0003 EXAMINE \"Nope\"".to_string()), "{seen:?}");
        assert!(!seen.iter().any(|l| l.contains("SELECT")), "read-only only: {seen:?}");
    }

    #[tokio::test]
    async fn failure_challenge_is_answered_with_an_empty_line() {
        let (r, seen, port) = dialogue(imap_server("IMAP4rev1 AUTH=XOAUTH2", refuse_with_challenge), "INBOX").await;
        let e = r.unwrap_err();
        assert_eq!((e.code(), e.step()), ("auth_rejected", "authenticate"), "{e}");
        assert_eq!(
            e.server_words(),
            Some(r#"NO [AUTHENTICATIONFAILED] Authentication failed. ({"status":"401","schemes":"bearer"})"#)
        );
        assert_eq!(seen[3], "", "an empty line answers the challenge: {seen:?}");
        assert_eq!(seen.len(), 4, "nothing after the refusal: {seen:?}");
        assert!(
            e.to_string().starts_with(&format!(
                "IMAP AUTHENTICATE XOAUTH2 at 127.0.0.1:{port} was refused: NO [AUTHENTICATIONFAILED] Authentication failed."
            )),
            "{e}"
        );
    }

    #[tokio::test]
    async fn errors_never_show_the_token() {
        let (r, _, _) = dialogue(imap_server("IMAP4rev1 AUTH=XOAUTH2", refuse_with_challenge), "INBOX").await;
        let e = r.unwrap_err();
        let printed = format!("{e} | {e:?} | {:?}", e.server_words());
        assert!(!printed.contains(TOKEN), "{printed}");
        assert!(!printed.contains(&xoauth2_b64()), "{printed}");
        assert!(!printed.contains("dXNlcj1"), "no part of the base64 payload: {printed}");
    }

    #[tokio::test]
    async fn oauthbearer_when_xoauth2_is_not_offered() {
        let (r, seen, port) = dialogue(imap_server("IMAP4rev1 AUTH=PLAIN AUTH=OAUTHBEARER", accept), "INBOX").await;
        assert_eq!(r.unwrap().mechanism, "OAUTHBEARER");
        assert_eq!(seen[1], "A0002 AUTHENTICATE OAUTHBEARER");
        let expected = sasl::base64(&sasl::oauthbearer("alice@example.com", "127.0.0.1", port, TOKEN).unwrap());
        assert_eq!(seen[2], expected.expose_secret(), "the target's host and port are in the response");
    }

    #[tokio::test]
    async fn oauthbearer_failure_is_acknowledged_with_ctrl_a() {
        let (r, seen, _) = dialogue(imap_server("IMAP4rev1 AUTH=OAUTHBEARER", refuse_with_challenge), "INBOX").await;
        assert_eq!(r.unwrap_err().code(), "auth_rejected");
        assert_eq!(seen[3], "AQ==", "RFC 7628 §3.2.3: %x01 answers the error: {seen:?}");
    }

    #[tokio::test]
    async fn no_oauth_mechanism_is_named() {
        let (r, seen, _) = dialogue(imap_server("IMAP4rev1 AUTH=PLAIN AUTH=LOGIN", accept), "INBOX").await;
        let e = r.unwrap_err();
        assert_eq!((e.code(), e.step()), ("mechanism_not_offered", "authenticate"));
        assert!(e.to_string().ends_with("(it offers: PLAIN, LOGIN)"), "{e}");
        assert_eq!(seen, vec!["A0001 CAPABILITY"]);
    }

    #[tokio::test]
    async fn bye_greeting_is_the_servers_refusal() {
        let (port, _h) = scripted::serve("* BYE Too many connections\r\n", ServerTls::None, |_| Reply::Close).await;
        let e = probe(&target(port, Security::Starttls), &AccessToken::new(TOKEN.into())).await.unwrap_err();
        assert_eq!(
            (e.code(), e.step(), e.server_words()),
            ("protocol", "greeting", Some("BYE Too many connections")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn not_imap_is_a_protocol_error() {
        let (port, _h) = scripted::serve("+OK POP3 ready\r\n", ServerTls::None, |_| Reply::Close).await;
        let e = probe(&target(port, Security::Starttls), &AccessToken::new(TOKEN.into())).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("protocol", "greeting"), "{e}");
        assert_eq!(e.server_words(), Some("+OK POP3 ready"));
    }

    #[tokio::test]
    async fn connection_refused() {
        let e =
            probe(&target(scripted::closed_port(), Security::Tls), &AccessToken::new(TOKEN.into())).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("connect_refused", "connect"), "{e}");
        assert!(e.to_string().starts_with("IMAP server 127.0.0.1:"), "{e}");
    }

    #[tokio::test]
    async fn silent_server_times_out_naming_the_step() {
        let (port, _h) = scripted::silent().await;
        let mut t = target(port, Security::Starttls);
        t.timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let e = probe(&t, &AccessToken::new(TOKEN.into())).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("timeout", "greeting"), "{e}");
        assert!(e.to_string().contains("did not answer within 300ms during the greeting"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn overlong_line_is_refused_not_buffered() {
        fn huge(l: &str) -> Reply {
            send(format!("* CAPABILITY IMAP4rev1 {}\r\n{} OK\r\n", "X".repeat(200_000), tag(l)))
        }
        let (port, _h) = scripted::serve("* OK ready\r\n", ServerTls::None, huge).await;
        let e = probe(&target(port, Security::Starttls), &AccessToken::new(TOKEN.into())).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("protocol", "capability"), "{e}");
        assert_eq!(e.server_words(), Some("the server sent a line longer than 64 KiB"));
    }

    #[tokio::test]
    async fn implicit_tls_end_to_end_with_the_ca_file() {
        let pki = crate::tls::tests::test_pki(&["127.0.0.1"], false);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let server = || imap_server("IMAP4rev1 AUTH=XOAUTH2", accept);

        // Without the CA the certificate is not trusted, and nothing is sent.
        let (port, h) = scripted::serve("* OK ready\r\n", ServerTls::Implicit(pki.server.clone()), server()).await;
        let e = probe(&target(port, Security::Tls), &AccessToken::new(TOKEN.into())).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("tls_untrusted", "tls"), "{e}");
        assert!(e.to_string().contains("not trusted"), "{e}");
        assert!(e.server_words().is_some_and(|w| w.contains("UnknownIssuer")), "{e}");
        assert!(h.await.unwrap().is_empty());

        let (port, h) = scripted::serve("* OK ready\r\n", ServerTls::Implicit(pki.server.clone()), server()).await;
        let mut t = target(port, Security::Tls);
        t.ca_file = Some(ca.clone());
        let report = probe(&t, &AccessToken::new(TOKEN.into())).await.unwrap();
        assert_eq!((report.mechanism, report.messages), ("XOAUTH2", 3));
        assert_eq!(h.await.unwrap()[2], xoauth2_b64());
    }

    #[tokio::test]
    async fn starttls_upgrade_end_to_end() {
        let pki = crate::tls::tests::test_pki(&["127.0.0.1"], false);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let (port, h) = scripted::serve(
            "* OK ready\r\n",
            ServerTls::Upgrade(pki.server.clone()),
            imap_server("IMAP4rev1 STARTTLS AUTH=XOAUTH2", accept),
        )
        .await;
        let mut t = target(port, Security::Starttls);
        t.ca_file = Some(ca);
        let report = probe(&t, &AccessToken::new(TOKEN.into())).await.unwrap();
        assert_eq!(report.messages, 3);
        let seen = h.await.unwrap();
        assert_eq!(
            seen,
            vec![
                "A0001 CAPABILITY".to_string(),
                "A0002 STARTTLS".into(),
                "[tls]".into(),
                "A0001 CAPABILITY".into(),
                "A0002 AUTHENTICATE XOAUTH2".into(),
                xoauth2_b64(),
                "A0003 EXAMINE \"INBOX\"".into(),
                "A0004 LOGOUT".into(),
            ],
            "capabilities asked again over TLS, the token only after the upgrade"
        );
    }

    #[test]
    fn folder_names_in_modified_utf7() {
        // RFC 3501 §5.1.3's example: 台北 and 日本語.
        assert_eq!(mutf7("~peter/mail/台北/日本語"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
        assert_eq!(mutf7("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(mutf7("Boîte & co"), "Bo&AO4-te &- co");
        assert_eq!(mutf7("INBOX"), "INBOX");
        assert_eq!(mutf7("R&D"), "R&-D");
        assert_eq!(mutf7("Entw&APw-rfe"), "Entw&APw-rfe", "already encoded names are left alone");
        assert_eq!(mutf7("A&-B"), "A&-B");
        assert_eq!(mutf7("😀"), "&2D3eAA-");
        assert_eq!(mutf7("&0-"), "&-0-", "six bits are no character, so this `&` is a plain one");
    }

    #[test]
    fn heard_keeps_the_last_line_and_caps_it() {
        let h = Heard::default();
        h.feed(b"* OK ready\r\nA1 NO [AUTHENTICATIONFAILED] Auth").unwrap();
        assert_eq!(h.line(), "* OK ready");
        h.feed(b"entication failed.\r\n").unwrap();
        assert_eq!(h.line(), "A1 NO [AUTHENTICATIONFAILED] Authentication failed.");
        assert!(h.feed(&vec![b'x'; MAX_LINE + 1]).is_err());
    }

    /// Modified UTF-7 back to text (RFC 3501 §5.1.3), for the round trip; `None` when invalid.
    fn mutf7_decode(s: &str) -> Option<String> {
        use base64::Engine;
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('&') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let end = after.find('-')?;
            let shifted = &after[..end];
            if shifted.is_empty() {
                out.push('&');
            } else {
                let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(shifted.replace(',', "/")).ok()?;
                if bytes.len() % 2 != 0 {
                    return None;
                }
                let units: Vec<u16> = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
                out.push_str(&String::from_utf16(&units).ok()?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Some(out)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// A name with any non-ASCII character comes back unchanged, and is sent as printable
        /// ASCII.
        #[test]
        fn mutf7_round_trips(prefix in ".{0,12}", c in "[^\x00-\x7f]", suffix in ".{0,12}") {
            let name = format!("{prefix}{c}{suffix}");
            let wire = mutf7(&name);
            proptest::prop_assert!(wire.bytes().all(|b| (b' '..=b'~').contains(&b)), "{:?}", wire);
            proptest::prop_assert_eq!(mutf7_decode(&wire), Some(name));
        }

        /// An ASCII name without `&` is sent as it is; with `&`, as valid modified UTF-7.
        #[test]
        fn ascii_names_stay_valid(name in "[ -~]{0,30}") {
            let wire = mutf7(&name);
            if !name.contains('&') {
                proptest::prop_assert_eq!(&wire, &name);
            }
            proptest::prop_assert!(mutf7_decode(&wire).is_some(), "{:?} -> {:?}", name, wire);
        }

        /// Whatever the server sends, in whatever pieces: no panic, and the kept line is
        /// never longer than the cap.
        #[test]
        fn heard_never_keeps_more_than_a_line(pieces in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..20)) {
            let h = Heard::default();
            for p in &pieces {
                if h.feed(p).is_err() {
                    break;
                }
                proptest::prop_assert!(h.line().len() <= MAX_LINE);
            }
        }
    }
}
