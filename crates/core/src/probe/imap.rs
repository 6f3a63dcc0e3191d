//! IMAP probe (RFC 9051 / RFC 3501) with async-imap: `AUTHENTICATE XOAUTH2` (or `OAUTHBEARER`,
//! RFC 7628), then `EXAMINE` of the folder — read-only (RFC 9051 §6.3.3), so probing never
//! changes `\Recent` or `\Seen` — and `LOGOUT`.
//!
//! With STARTTLS (RFC 2595, RFC 9051 §6.2.1) the capability list is read first: a server that
//! does not offer STARTTLS is refused before any credential is sent, and the capabilities are
//! asked again over TLS, because the plain-text list may have been forged (RFC 9051 §6.2.1).
//!
//! The server's words in errors are its own response line, as read off the wire by
//! [`Recorder`] (`recorder.rs`), not async-imap's rendering of them; folder names are sent in
//! modified UTF-7 (`mutf7.rs`).

use std::io;
use std::sync::{Arc, Mutex};

use async_imap::error::Error as ImapError;
use async_imap::imap_proto::{Capability, Response, ResponseCode, Status};
use async_imap::types::UnsolicitedResponse;
use async_imap::Client;
use oauth2::AccessToken;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite};

use super::mutf7::mutf7;
use super::recorder::{Heard, LineTooLong, Recorder};
use super::sasl::{self, Mechanism};
use super::{broken, count_messages, step, unexpected, ProbeError, ProbeFailure, ProbeReport, ProbeTarget};
use super::{Step, TokenLater, Upgraded};

const PROTO: &str = "IMAP";

pub async fn probe(t: &ProbeTarget, token: &AccessToken) -> Result<ProbeReport, ProbeFailure> {
    probe_later(t, &TokenLater::ready(t, token.clone())).await
}

/// [`probe`] with a token that may still be coming: it is awaited just before `AUTHENTICATE`.
pub async fn probe_later(t: &ProbeTarget, token: &TokenLater) -> Result<ProbeReport, ProbeFailure> {
    super::guarded(t, token, dialogue(t, token)).await
}

async fn dialogue(t: &ProbeTarget, token: &TokenLater) -> Result<ProbeReport, ProbeError> {
    let heard = &Heard::default();
    super::connected(
        t,
        |tcp| starttls(t, tcp, heard),
        |stream, upgraded| async move {
            match upgraded {
                Upgraded::No => over(t, stream, token).await,
                // The capabilities seen in plain text may have been forged: asked again over TLS.
                Upgraded::Yes => {
                    login_and_examine(t, Client::new(Recorder::new(stream, heard)), heard, token, None).await
                }
            }
        },
    )
    .await
}

/// The plain-text part before STARTTLS (RFC 9051 §6.2.1): greeting, capabilities (the
/// greeting's, or `CAPABILITY`), `STARTTLS`, its `OK`.
async fn starttls<S>(t: &ProbeTarget, tcp: S, heard: &Heard) -> Result<S, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug,
{
    let mut client = Client::new(Recorder::new(tcp, heard));
    let caps = match greeting(t, &mut client, heard).await? {
        Some(caps) => caps,
        None => capabilities(t, &mut client, heard).await?,
    };
    // The token must never cross the network in clear: no STARTTLS, no sign-in.
    if !caps.iter().any(|c| c == "STARTTLS") {
        return Err(ProbeError::StarttlsNotOffered { proto: PROTO, addr: t.addr(), command: "STARTTLS" });
    }
    step(t, Step::Starttls, client.run_command_and_check_ok("STARTTLS", None))
        .await?
        .map_err(|e| failure(t, Step::Starttls, e, heard))?;
    Ok(client.into_inner().into_inner())
}

/// The whole dialogue on an established (TLS) connection, from the greeting on.
pub(crate) async fn over<S>(t: &ProbeTarget, stream: S, token: &TokenLater) -> Result<ProbeReport, ProbeError>
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
    token: &TokenLater,
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
    // The token is needed from here on; the refresh ran while the connection was set up.
    let token = token.get(t).await?;
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
    let mut session = match step(t, Step::Authenticate, client.authenticate(command.as_str(), auth)).await? {
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
                (e, _) => failure(t, Step::Authenticate, e, heard),
            });
        }
    };
    drop(command);
    let folder = mutf7(&t.folder);
    let mailbox = match step(t, Step::Examine, session.examine(&folder)).await? {
        Ok(m) => m,
        Err(e @ (ImapError::No(_) | ImapError::Bad(_) | ImapError::Validate(_))) => {
            return Err(ProbeError::FolderMissing { addr: t.addr(), folder: t.folder.clone(), words: words(&e, heard) })
        }
        Err(e) => return Err(failure(t, Step::Examine, e, heard)),
    };
    // LOGOUT is sent but its reply not awaited: the mailbox was read, and the server ends the
    // session on the command (RFC 9051 §6.1.3) whether or not its BYE is read. A failed LOGOUT
    // does not undo the proof.
    let _ = step(t, Step::Logout, session.run_command("LOGOUT")).await;
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
    match step(t, Step::Greeting, client.read_response()).await? {
        Ok(Some(r)) => match r.parsed() {
            Response::Data { status: Status::Ok, outcome } => Ok(match &outcome.code {
                Some(ResponseCode::Capabilities(list)) => Some(list.iter().map(capability).collect()),
                _ => None,
            }),
            // Signed in already, as whoever the server chose: the token would prove nothing.
            Response::Data { status: Status::PreAuth, .. } => Err(unexpected(
                t,
                Step::Greeting,
                format!("{} (the connection is pre-authenticated, so the token cannot be tested)", heard.untagged()),
            )),
            _ => Err(unexpected(t, Step::Greeting, heard.untagged())),
        },
        Ok(None) => Err(unexpected(t, Step::Greeting, "the server closed the connection without a greeting")),
        Err(e) => Err(io_failure(t, Step::Greeting, &e, heard)),
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
    step(t, Step::Capability, client.run_command_and_check_ok("CAPABILITY", Some(tx)))
        .await?
        .map_err(|e| failure(t, Step::Capability, e, heard))?;
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
fn failure(t: &ProbeTarget, step: Step, e: ImapError, heard: &Heard) -> ProbeError {
    match e {
        ImapError::Io(io) => io_failure(t, step, &io, heard),
        e => unexpected(t, step, words(&e, heard)),
    }
}

fn io_failure(t: &ProbeTarget, step: Step, e: &io::Error, heard: &Heard) -> ProbeError {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{self, send, Reply, ServerTls};
    use super::*;
    use crate::mailbox::Protocol;
    use crate::mailbox::Security;
    use std::time::Duration;
    use tokio::task::JoinHandle;

    const TOKEN: &str = "tok-imap-123";

    fn target(port: u16, security: Security) -> ProbeTarget {
        testing::target(Protocol::Imap, port, security)
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
        let (port, h) = testing::serve("* OK [CAPABILITY IMAP4rev1] ready\r\n", ServerTls::None, respond).await;
        let mut t = target(port, Security::Tls);
        t.folder = folder.into();
        let heard = Heard::default();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut client = Client::new(Recorder::new(tcp, &heard));
        // The greeting names no mechanism: these dialogues ask CAPABILITY.
        assert_eq!(greeting(&t, &mut client, &heard).await.unwrap(), Some(vec!["IMAP4REV1".to_string()]));
        let r =
            login_and_examine(&t, client, &heard, &TokenLater::ready(&t, AccessToken::new(TOKEN.into())), None).await;
        (r, h.await.unwrap(), port)
    }

    #[tokio::test]
    async fn starttls_not_offered_sends_no_credential() {
        let (port, h) = testing::serve(
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

    /// A scripted server over implicit TLS and a target that trusts its test CA (kept in the
    /// returned directory); the server notes on the `Notify` when it has greeted.
    async fn tls_server(
        greeting: &'static str,
        respond: impl FnMut(&str) -> Reply + Send + 'static,
        step_timeout: Duration,
    ) -> (ProbeTarget, JoinHandle<Vec<String>>, Arc<tokio::sync::Notify>, tempfile::TempDir) {
        let pki = crate::tls::tests::test_pki(&["127.0.0.1"], false);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let greeted = Arc::new(tokio::sync::Notify::new());
        let (port, h) =
            testing::serve_greeted(greeting, ServerTls::Implicit(pki.server.clone()), respond, Arc::clone(&greeted))
                .await;
        let mut t = target(port, Security::Tls);
        t.ca_file = Some(ca);
        t.timeout = step_timeout;
        (t, h, greeted, dir)
    }

    /// A whole probe over implicit TLS (the test CA trusted) against `respond`.
    async fn over_tls(
        greeting: &'static str,
        respond: impl FnMut(&str) -> Reply + Send + 'static,
        timeout: Duration,
    ) -> (Result<ProbeReport, ProbeFailure>, Vec<String>) {
        let (t, h, _, _dir) = tls_server(greeting, respond, timeout).await;
        let r = tokio::time::timeout(Duration::from_secs(20), probe(&t, &AccessToken::new(TOKEN.into())))
            .await
            .expect("the probe ends without waiting for LOGOUT's reply");
        (r, h.await.unwrap())
    }

    /// The greeting of a server with RFC 9051 §7.1 capabilities and RFC 4959 SASL-IR.
    const SASL_IR_GREETING: &str = "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready\r\n";

    /// The server answering a signed-in probe with SASL-IR: `AUTHENTICATE`, `EXAMINE` (3
    /// messages), and no reply to `LOGOUT`.
    fn sasl_ir_server(l: &str) -> Reply {
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
    }

    #[tokio::test]
    async fn the_probe_connects_while_the_token_is_fetched_and_that_wait_is_not_its_deadline() {
        // Steps of 300 ms: the whole probe's deadline is 900 ms, and the token comes 1.2 s
        // after the server greeted.
        let (t, h, greeted, _dir) = tls_server(SASL_IR_GREETING, sasl_ir_server, Duration::from_millis(300)).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let later = TokenLater::later(&t, rx);
        let probe = tokio::spawn({
            let t = t.clone();
            async move { probe_later(&t, &later).await }
        });
        tokio::time::timeout(Duration::from_secs(20), greeted.notified())
            .await
            .expect("TCP, TLS and the greeting before any token exists");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        tx.send(AccessToken::new(TOKEN.into())).unwrap();
        let report = tokio::time::timeout(Duration::from_secs(20), probe).await.unwrap().unwrap().unwrap();
        assert_eq!(report.messages, 3);
        let seen = h.await.unwrap();
        assert_eq!(seen[0], format!("A0001 AUTHENTICATE XOAUTH2 {}", xoauth2_b64()), "{seen:?}");
        assert!(!report.transcript.render().contains(TOKEN), "the token learnt late is redacted too");
    }

    #[tokio::test]
    async fn a_token_that_never_comes_ends_the_probe_before_it_signs_in() {
        let (t, h, greeted, _dir) = tls_server(SASL_IR_GREETING, sasl_ir_server, Duration::from_secs(10)).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<AccessToken>();
        let later = TokenLater::later(&t, rx);
        let probe = tokio::spawn({
            let t = t.clone();
            async move { probe_later(&t, &later).await }
        });
        tokio::time::timeout(Duration::from_secs(20), greeted.notified()).await.unwrap();
        drop(tx);
        let e = tokio::time::timeout(Duration::from_secs(5), probe).await.unwrap().unwrap().unwrap_err();
        assert_eq!(e.error.code(), "invalid_input", "{e:?}");
        assert!(h.await.unwrap().is_empty(), "nothing was sent: no sign-in without a token");
    }

    #[tokio::test]
    async fn the_greetings_capabilities_and_sasl_ir_save_two_round_trips() {
        // RFC 9051 §7.1 capabilities in the greeting, RFC 4959 SASL-IR; the server never
        // answers LOGOUT, and the probe does not wait for it (its step timeout is a minute).
        let (r, seen) = over_tls(SASL_IR_GREETING, sasl_ir_server, Duration::from_secs(60)).await;
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
            SASL_IR_GREETING,
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
    async fn conversation_with_greeting_capabilities_and_sasl_ir() {
        let expected = testing::script(
            r#"
            S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 AUTH=OAUTHBEARER] ready
            C: A0001 AUTHENTICATE XOAUTH2 <redacted, 80 bytes>
            S: A0001 OK Logged in
            C: A0002 EXAMINE "INBOX"
            S: * FLAGS (\Seen)
            S: * 3 EXISTS
            S: A0002 OK [READ-ONLY] Examine completed
            C: A0003 LOGOUT
            "#,
        );
        let (r, heard) = testing::converse(super::super::Service::Imap, &expected).await;
        assert_eq!(heard, expected);
        assert_eq!(r.unwrap().messages, 3);
    }

    #[tokio::test]
    async fn conversation_without_greeting_capabilities_or_sasl_ir() {
        let expected = testing::script(
            r#"
            S: * OK ready
            C: A0001 CAPABILITY
            S: * CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER
            S: A0001 OK done
            C: A0002 AUTHENTICATE OAUTHBEARER
            S: +
            C: <redacted, 124 bytes>
            S: A0002 OK Logged in
            C: A0003 EXAMINE "INBOX"
            S: * 0 EXISTS
            S: A0003 OK [READ-ONLY] done
            C: A0004 LOGOUT
            "#,
        );
        let (r, heard) = testing::converse(super::super::Service::Imap, &expected).await;
        assert_eq!(heard, expected);
        assert_eq!(r.unwrap().mechanism, "OAUTHBEARER");
    }

    #[tokio::test]
    async fn conversation_refused_with_a_failure_challenge() {
        let expected = testing::script(
            r#"
            S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready
            C: A0001 AUTHENTICATE XOAUTH2 <redacted, 80 bytes>
            S: + eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=
            C:
            S: A0001 NO [AUTHENTICATIONFAILED] Authentication failed.
            "#,
        );
        let (r, heard) = testing::converse(super::super::Service::Imap, &expected).await;
        assert_eq!(heard, expected);
        assert_eq!(r.unwrap_err().code(), "auth_rejected");
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
        let (port, _h) = testing::serve("* BYE Too many connections\r\n", ServerTls::None, |_| Reply::Close).await;
        let e = probe(&target(port, Security::Starttls), &AccessToken::new(TOKEN.into())).await.unwrap_err();
        assert_eq!(
            (e.code(), e.step(), e.server_words()),
            ("protocol", "greeting", Some("BYE Too many connections")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn not_imap_is_a_protocol_error() {
        let (port, _h) = testing::serve("+OK POP3 ready\r\n", ServerTls::None, |_| Reply::Close).await;
        let e = probe(&target(port, Security::Starttls), &AccessToken::new(TOKEN.into())).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("protocol", "greeting"), "{e}");
        assert_eq!(e.server_words(), Some("+OK POP3 ready"));
    }

    #[tokio::test]
    async fn connection_refused() {
        let e =
            probe(&target(testing::closed_port(), Security::Tls), &AccessToken::new(TOKEN.into())).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("connect_refused", "connect"), "{e}");
        assert!(e.to_string().starts_with("IMAP server 127.0.0.1:"), "{e}");
    }

    #[tokio::test]
    async fn silent_server_times_out_naming_the_step() {
        let (port, _h) = testing::silent().await;
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
        let (port, _h) = testing::serve("* OK ready\r\n", ServerTls::None, huge).await;
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
        let (port, h) = testing::serve("* OK ready\r\n", ServerTls::Implicit(pki.server.clone()), server()).await;
        let e = probe(&target(port, Security::Tls), &AccessToken::new(TOKEN.into())).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("tls_untrusted", "tls"), "{e}");
        assert!(e.to_string().contains("not trusted"), "{e}");
        assert!(e.server_words().is_some_and(|w| w.contains("UnknownIssuer")), "{e}");
        assert!(h.await.unwrap().is_empty());

        let (port, h) = testing::serve("* OK ready\r\n", ServerTls::Implicit(pki.server.clone()), server()).await;
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
        let (port, h) = testing::serve(
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
}
