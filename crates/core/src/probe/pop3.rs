//! POP3 probe: RFC 1939 with CAPA (RFC 2449), STLS (RFC 2595 §4) and AUTH (RFC 5034) using
//! XOAUTH2 or OAUTHBEARER (RFC 7628), then `STAT` and `QUIT`.
//!
//! The session over TLS goes through the async-pop crate: `async_pop::new` reads the greeting
//! and sends `CAPA` (the list itself is read beneath it, see below), async-pop's SASL `Authenticator` (`Bearer`) and `Communicator`
//! carry the exchange, its parser reads the replies to `AUTH` and `STAT`, and its stream writes
//! every command. What stays hand-written, and why (each reason has a test named for it, against
//! the crate itself, that fails once a version of the crate can do the part):
//! - the plain-text part before STLS (greeting, CAPA, `STLS`, `+OK`): async-pop has no STLS
//!   command and its client never hands back its stream for the handshake
//!   (`async_pop_cannot_send_stls_so_stls_is_hand_written`);
//! - `AUTH` is sent over the client's stream rather than with `Client::auth`, which asks for the
//!   capabilities again after signing in, a round trip the probe does not need
//!   (`async_pop_asks_capa_again_after_auth_so_auth_goes_over_its_stream`), and cannot answer
//!   a failure challenge after the response
//!   (`async_pop_cannot_answer_a_failure_challenge_so_the_probe_answers_it`);
//! - the stream beneath the crate, `Wire` (`pop3_wire.rs`): the greeting async-pop waits for
//!   after STLS (`async_pop_waits_for_a_greeting_so_after_stls_the_wire_hands_it_one`), the end
//!   of the stream as an error (`async_pop_never_ends_at_the_end_of_the_stream_so_the_wire_makes_it_an_error`),
//!   replies handed whole (`async_pop_waits_forever_after_a_reply_in_two_reads_so_replies_are_handed_whole`),
//!   the failure of a `CAPA` the crate swallows (a failed `CAPA` is no error to `new`),
//!   ASCII for the crate, which panics on other bytes when `trace` logging is on
//!   (`async_pop_panics_on_a_reply_that_is_not_utf8_when_trace_logging_is_on_so_it_reads_ascii`),
//!   the line cap, the step timeouts, the transcript and the server's own words;
//! - the capability list over TLS: the probe reads it itself ([`CapaList`], the same reader as
//!   before STLS) beneath the crate, and chooses the mechanism from the words after `SASL`
//!   ([`sasl_mechanisms`]). async-pop's parser knows a fixed list of SASL mechanisms and of
//!   capability parameters; RFC 2449 §6 allows any, and on one it does not know the crate fails
//!   on the whole list (`async_pop_cannot_read_unknown_sasl_mechanisms_so_the_probe_reads_capa_itself`),
//!   which would turn a working mailbox red for a capability the admin cannot change. Its own
//!   parse is of no use to the probe and, failed, breaks its state, so it is handed an empty
//!   list; the transcript and any error keep the server's lines. A list ends at its lone dot
//!   whatever its length, within the line cap (64 KiB), 1000 lines and the byte budget.
//!
//! The SASL exchange: when the server lists SASL in CAPA and `AUTH <mechanism> <response>`
//! fits RFC 5034 §4's 255 octets, the initial response goes on the AUTH line (one round trip
//! fewer); otherwise — and a real Microsoft or Google access token is always too long —
//! `AUTH XOAUTH2` alone, the server's `+ ` continuation, then the base64 response on its own
//! line, the form Dovecot and Exchange Online both accept. `QUIT` is sent, its reply not
//! awaited. A failure is a `+ <base64 JSON>` challenge, answered with an
//! empty line (XOAUTH2) or `^A` (OAUTHBEARER, RFC 7628 §3.2.3), then the final `-ERR`. async-pop
//! takes the response as a `String` and base64-encodes it into strings of its own, which are
//! not wiped after use as the probe's [`SecretString`]s are.
//!
//! Server lines are capped (64 KiB) so a hostile server cannot make the probe buffer without
//! bound; every line must come within the step timeout, and the whole dialogue under the
//! probe's deadline and byte budget (see [`super`]): a capability list trickled a line at a
//! time, or a thousand lines of 64 KiB, ends the probe early.

use async_pop::error::ErrorKind;
use async_pop::request::Request;
use async_pop::response::types::DataType;
use async_pop::response::Response;
use async_pop::sasl::{Authenticator, Communicator};
use base64::Engine;
use oauth2::AccessToken;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite};

use super::pop3_wire::{Failure, Seen, Wire};
use super::sasl::{self, Mechanism};
use super::{count_messages, unexpected, LineConn, ProbeError, ProbeFailure, ProbeReport, ProbeTarget};
use super::{Step, TokenLater, Upgraded};

const PROTO: &str = "POP3";
/// RFC 5034 §4: an `AUTH` command with its initial response is at most 255 octets (CRLF
/// included).
const MAX_AUTH_LINE: usize = 255;
/// More capabilities than any server has; past this the list is not a list.
const MAX_CAPABILITIES: usize = 1000;

pub async fn probe(t: &ProbeTarget, token: &AccessToken) -> Result<ProbeReport, ProbeFailure> {
    probe_later(t, &TokenLater::ready(t, token.clone())).await
}

/// [`probe`] with a token that may still be coming: it is awaited just before `AUTH`.
pub async fn probe_later(t: &ProbeTarget, token: &TokenLater) -> Result<ProbeReport, ProbeFailure> {
    super::guarded(t, token, dialogue(t, token)).await
}

async fn dialogue(t: &ProbeTarget, token: &TokenLater) -> Result<ProbeReport, ProbeError> {
    super::connected(
        t,
        |tcp| stls(t, tcp),
        |stream, upgraded| async move {
            let seen = Seen::default();
            let wire = match upgraded {
                Upgraded::No => Wire::new(stream, t.timeout, &seen),
                // No greeting comes after STLS; async-pop waits for one.
                Upgraded::Yes => Wire::after_stls(stream, t.timeout, &seen),
            };
            session(t, wire, &seen, token).await
        },
    )
    .await
}

/// The plain-text part before STLS (RFC 2595 §4): greeting, CAPA, `STLS`, `+OK`. Hand-written:
/// async-pop has no STLS command and cannot hand its stream back for the handshake.
async fn stls<S: AsyncRead + AsyncWrite + Unpin>(t: &ProbeTarget, tcp: S) -> Result<S, ProbeError> {
    let mut conn = Conn::new(tcp);
    conn.greeting(t).await?;
    let caps = conn.capa(t).await?;
    // The token must never cross the network in clear: no STLS, no sign-in.
    if !caps.is_some_and(|c| c.iter().any(|c| c == "STLS")) {
        return Err(ProbeError::StarttlsNotOffered { proto: PROTO, addr: t.addr(), command: "STLS" });
    }
    conn.send(t, Step::Starttls, "STLS").await?;
    let reply = conn.line(t, Step::Starttls).await?;
    if !reply.starts_with("+OK") {
        return Err(unexpected(t, Step::Starttls, reply));
    }
    Ok(conn.into_inner())
}

/// The whole dialogue on an established (TLS) connection, from the greeting on.
pub(crate) async fn over<S: AsyncRead + AsyncWrite + Unpin + Send>(
    t: &ProbeTarget,
    stream: S,
    token: &TokenLater,
) -> Result<ProbeReport, ProbeError> {
    let seen = Seen::default();
    session(t, Wire::new(stream, t.timeout, &seen), &seen, token).await
}

/// The session over TLS with async-pop: its client reads the greeting and the capabilities
/// (`async_pop::new`), then `AUTH`, `STAT` and `QUIT` go over its stream.
async fn session<S: AsyncRead + AsyncWrite + Unpin + Send>(
    t: &ProbeTarget,
    wire: Wire<S>,
    seen: &Seen,
    token: &TokenLater,
) -> Result<ProbeReport, ProbeError> {
    super::Watch::enter(Step::Greeting);
    let client = match async_pop::new(wire).await {
        Ok(client) => client,
        Err(e) => return Err(failed(t, seen, Step::Greeting, &e)),
    };
    // After STLS the capabilities are asked again (async-pop's `new` does): the plain-text list
    // may have been forged.
    let caps = capabilities(t, seen)?;
    let mechanism = match &caps {
        Some(caps) => {
            let offered = sasl_mechanisms(caps);
            match Mechanism::pick(offered.iter().copied()) {
                Some(m) => m,
                None => {
                    let offered = if offered.is_empty() { "no SASL mechanism".into() } else { offered.join(", ") };
                    return Err(ProbeError::MechanismNotOffered { proto: PROTO, addr: t.addr(), offered });
                }
            }
        }
        // No CAPA: try XOAUTH2, the mechanism Microsoft and Google use; the server's answer
        // to AUTH tells the rest.
        None => Mechanism::XOAuth2,
    };
    let rejected = |words: String| ProbeError::AuthRejected {
        proto: PROTO,
        command: "AUTH",
        mechanism: mechanism.name(),
        addr: t.addr(),
        words,
    };
    // The token is needed from here on; the refresh ran while the connection was set up.
    let token = token.get(t).await?;
    let response = mechanism
        .initial_response(&t.sasl_user, &t.host, t.port, token.secret())
        .map_err(|e| ProbeError::from_sasl(t, e))?;
    // RFC 5034 §4: the initial response may go on the AUTH line, saving a round trip, unless
    // the command would exceed 255 octets (a long access token). A server that lists SASL in
    // CAPA implements RFC 5034; without CAPA, the older form is the safe one.
    let ir_len = "AUTH  ".len() + mechanism.name().len() + sasl::base64(&response).expose_secret().len() + 2;
    let bearer = Bearer { mechanism, response, initial: caps.is_some() && ir_len <= MAX_AUTH_LINE };

    // `Client::auth` would ask for the capabilities again after signing in, a round trip the
    // probe does not need: the same steps go over the client's stream instead.
    let Some(mut pop) = client.into_inner() else {
        return Err(unexpected(t, Step::Authenticate, "the POP3 client lost its connection"));
    };
    let mut auth = command("AUTH");
    auth.add_arg(bearer.mechanism());
    if let Some(initial) = Zeroizing::new(bearer.auth()).as_deref() {
        auth.add_arg(base64::engine::general_purpose::STANDARD.encode(initial));
    }
    let sent = pop.encode(&auth).await;
    drop(auth);
    sent.map_err(|e| failed(t, seen, Step::Authenticate, &e))?;
    if let Err(e) = bearer.handle(Communicator::new(&mut pop)).await {
        return Err(match e.kind() {
            ErrorKind::ServerError(_) if seen.failure().is_none() => rejected(seen.line()),
            _ => failed(t, seen, Step::Authenticate, &e),
        });
    }
    match pop.read_response(command("AUTH")).await {
        Ok(Response::Message(_)) => {}
        // A failure challenge (RFC 7628 §3.2.2): acknowledged, then the server's final -ERR.
        Ok(Response::Challenge(challenge)) => {
            let json = sasl::challenge_text(challenge.as_ref());
            let ack = String::from_utf8_lossy(mechanism.failure_ack()).to_string();
            Communicator::new(&mut pop).send(ack).await.map_err(|e| failed(t, seen, Step::Authenticate, &e))?;
            match pop.read_response(command("AUTH")).await {
                Ok(Response::Message(_)) => {}
                Err(e) if matches!(e.kind(), ErrorKind::ServerError(_)) && seen.failure().is_none() => {
                    return Err(rejected(sasl::with_challenge(seen.line(), json)))
                }
                Ok(_) => return Err(unexpected(t, Step::Authenticate, seen.words())),
                Err(e) => return Err(failed(t, seen, Step::Authenticate, &e)),
            }
        }
        Err(e) if matches!(e.kind(), ErrorKind::ServerError(_)) && seen.failure().is_none() => {
            return Err(rejected(seen.line()))
        }
        Ok(_) => return Err(unexpected(t, Step::Authenticate, seen.words())),
        Err(e) => return Err(failed(t, seen, Step::Authenticate, &e)),
    }
    drop(bearer);

    let stat = command("STAT");
    pop.encode(&stat).await.map_err(|e| failed(t, seen, Step::Stat, &e))?;
    let (count, size) = match pop.read_response(stat).await {
        Ok(Response::Stat(s)) => match (s.counter().value().map(u32::try_from), s.size().value()) {
            (Ok(Ok(count)), Ok(size)) => (count, size),
            _ => return Err(unexpected(t, Step::Stat, seen.line())),
        },
        Ok(_) => return Err(unexpected(t, Step::Stat, seen.words())),
        Err(e) => return Err(failed(t, seen, Step::Stat, &e)),
    };
    // QUIT is sent but its reply not awaited: nothing was marked for deletion, so the UPDATE
    // state (RFC 1939 §6) has nothing to do, and a failed QUIT does not undo the proof that
    // the maildrop was read.
    let _ = pop.encode(&command("QUIT")).await;
    Ok(ProbeReport {
        mechanism: mechanism.name(),
        messages: count,
        detail: format!("STAT: {} ({size} octets)", count_messages(count)),
        transcript: Default::default(),
    })
}

/// An async-pop request for one of its commands.
fn command(name: &str) -> Request {
    // The names used here are the crate's own commands (`AUTH`, `STAT`, `QUIT`): parsing them
    // cannot fail.
    name.parse().unwrap_or_else(|_| unreachable!("async-pop knows {name}"))
}

/// The capability list the server sent in answer to async-pop's `CAPA`, as the stream beneath
/// the crate read it ([`Seen::capabilities`]), or `None` when the server does not support CAPA.
/// The crate itself is handed an empty list (see `pop3_wire.rs`): its parse of the server's list
/// is not used, and must not fail, as it does on a list it cannot read.
fn capabilities(t: &ProbeTarget, seen: &Seen) -> Result<Option<Vec<String>>, ProbeError> {
    if let Some(f) = seen.failure() {
        return Err(from_wire(t, f));
    }
    if let Some(caps) = seen.capabilities() {
        return Ok(Some(caps));
    }
    match (seen.lines(), seen.line().as_str()) {
        (1, l) if l.starts_with("-ERR") => Ok(None),
        _ => Err(unexpected(t, Step::Capability, seen.words())),
    }
}

/// An async-pop error as the probe reports it: the stream's own failure if it failed (the
/// crate's error then only echoes it), otherwise the server's line the crate could not take.
fn failed(t: &ProbeTarget, seen: &Seen, step: Step, _e: &async_pop::error::Error) -> ProbeError {
    match seen.failure() {
        Some(f) => from_wire(t, f),
        None => unexpected(t, step, seen.words()),
    }
}

fn from_wire(t: &ProbeTarget, f: Failure) -> ProbeError {
    let step = f.step();
    match f {
        Failure::TimedOut(_) => super::timeout(t, step),
        Failure::Closed(_) => unexpected(t, step, "the server closed the connection"),
        Failure::LineTooLong(_) => unexpected(t, step, super::LINE_TOO_LONG),
        Failure::EndlessReply(_) if step == Step::Capability => unexpected(t, step, "an endless capability list"),
        Failure::EndlessReply(_) => unexpected(t, step, "an endless reply"),
        Failure::Broken(_, kind, detail) => super::broken(t, step, &std::io::Error::new(kind, detail)),
    }
}

/// XOAUTH2 or OAUTHBEARER as an async-pop [`Authenticator`]: the initial response on the AUTH
/// line (RFC 5034 §4) when it fits, otherwise the two-step form — `AUTH <mechanism>`, the
/// server's `+ ` continuation, the response on a line of its own.
struct Bearer {
    mechanism: Mechanism,
    /// The raw response (async-pop base64-encodes it).
    response: SecretString,
    initial: bool,
}

#[async_trait::async_trait]
impl Authenticator for Bearer {
    fn mechanism(&self) -> &str {
        self.mechanism.name()
    }

    fn auth(&self) -> Option<String> {
        self.initial.then(|| self.response.expose_secret().to_string())
    }

    async fn handle<'a, S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send>(
        &self,
        mut communicator: Communicator<'a, S>,
    ) -> async_pop::error::Result<()> {
        if !self.initial {
            communicator.next_challenge().await?;
            communicator.send(Zeroizing::new(self.response.expose_secret().to_string()).as_str()).await?;
        }
        Ok(())
    }
}

/// A POP3 connection: the shared bounded line I/O, plus POP3's greeting and CAPA.
pub(crate) type Conn<S> = LineConn<S>;

impl<S: AsyncRead + AsyncWrite + Unpin> LineConn<S> {
    /// The greeting must be `+OK`; anything else is the server's refusal.
    pub(crate) async fn greeting(&mut self, t: &ProbeTarget) -> Result<(), ProbeError> {
        let l = self.line(t, Step::Greeting).await?;
        if l.starts_with("+OK") {
            Ok(())
        } else {
            Err(unexpected(t, Step::Greeting, l))
        }
    }

    /// `CAPA`, one upper-case capability per line; `None` when the server does not support it.
    async fn capa(&mut self, t: &ProbeTarget) -> Result<Option<Vec<String>>, ProbeError> {
        self.send(t, Step::Capability, "CAPA").await?;
        if !self.line(t, Step::Capability).await?.starts_with("+OK") {
            return Ok(None);
        }
        let mut list = CapaList::default();
        loop {
            let l = self.line(t, Step::Capability).await?;
            if list.take(&l).map_err(|e| unexpected(t, Step::Capability, e))? {
                return Ok(Some(list.into_vec()));
            }
        }
    }
}

/// The lines of a capability list after its `+OK` (RFC 2449 §5), read a line at a time: by the
/// plain-text part before STLS and by the stream beneath async-pop over TLS (`pop3_wire.rs`).
/// Hand-written: the probe needs only the names and the SASL mechanisms, and must take any
/// capability RFC 2449 §6 allows (parameters of any form, any SASL mechanism name), which
/// async-pop's parser does not (see [`sasl_mechanisms`]).
#[derive(Debug, Default)]
pub(crate) struct CapaList(Vec<String>);

impl CapaList {
    /// Takes one line (without its line break); `Ok(true)` at the lone dot that ends the list.
    pub(crate) fn take(&mut self, line: &str) -> Result<bool, &'static str> {
        if line == "." {
            return Ok(true);
        }
        // RFC 1939 §3: a terminating-octet-looking first dot is doubled.
        let l = line.strip_prefix('.').unwrap_or(line);
        self.0.push(l.to_ascii_uppercase());
        if self.0.len() > MAX_CAPABILITIES {
            return Err("an endless capability list");
        }
        Ok(false)
    }

    pub(crate) fn into_vec(self) -> Vec<String> {
        self.0
    }
}

/// The SASL mechanisms a capability list offers: the words after `SASL` (RFC 2449 §6.3), any
/// names at all. async-pop 1.1's parser knows a fixed list of mechanisms and fails on the whole
/// list at a name outside it (`SCRAM-SHA-256-PLUS`, `X-FOO`), so the probe chooses from its own
/// reading (`async_pop_cannot_read_unknown_sasl_mechanisms_so_the_probe_reads_capa_itself`).
pub(crate) fn sasl_mechanisms(caps: &[String]) -> Vec<&str> {
    caps.iter()
        .filter_map(|c| {
            let mut words = c.split_ascii_whitespace();
            (words.next() == Some("SASL")).then_some(words)
        })
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{self, send, Reply, ServerTls};
    use super::*;
    use crate::mailbox::Protocol;
    use crate::mailbox::Security;
    use secrecy::ExposeSecret;
    use std::time::Duration;

    const TOKEN: &str = "tok-pop3-456";
    const CHALLENGE: &str = "+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n"; // {"status":"401","schemes":"bearer"}

    fn target(port: u16, security: Security) -> ProbeTarget {
        let mut t = testing::target(Protocol::Pop3, port, security);
        t.sasl_user = "bob@example.com".into();
        t
    }

    fn token() -> AccessToken {
        AccessToken::new(TOKEN.into())
    }

    fn xoauth2_b64() -> String {
        sasl::base64(&sasl::xoauth2("bob@example.com", TOKEN).unwrap()).expose_secret().to_string()
    }

    /// A POP3 server offering `capa` (None: CAPA unsupported) that accepts any SASL response
    /// when `accept`, and otherwise answers it with the failure challenge.
    fn pop3_server(capa: Option<&'static str>, accept: bool) -> impl FnMut(&str) -> Reply + Send {
        let mut in_auth = 0;
        move |l: &str| {
            if in_auth == 1 {
                in_auth = if accept { 0 } else { 2 };
                return send(if accept { "+OK Logged in.\r\n" } else { CHALLENGE });
            }
            if in_auth == 2 {
                in_auth = 0;
                return send("-ERR [AUTH] Authentication failed.\r\n");
            }
            match l {
                "CAPA" => match capa {
                    Some(c) => send(format!("+OK\r\n{c}.\r\n")),
                    None => send("-ERR unknown command\r\n"),
                },
                "STLS" => Reply::SendThenTls("+OK Begin TLS negotiation now.\r\n".into()),
                "AUTH XOAUTH2" | "AUTH OAUTHBEARER" => {
                    in_auth = 1;
                    send("+ \r\n")
                }
                // RFC 5034 initial response on the AUTH line.
                l if l.starts_with("AUTH XOAUTH2 ") || l.starts_with("AUTH OAUTHBEARER ") => {
                    in_auth = if accept { 0 } else { 2 };
                    send(if accept { "+OK Logged in.\r\n" } else { CHALLENGE })
                }
                "STAT" => send("+OK 2 3456\r\n"),
                "QUIT" => send("+OK Logging out.\r\n"),
                _ => send("-ERR ?\r\n"),
            }
        }
    }

    /// Runs the post-greeting dialogue over plain TCP (no TLS needed to test the protocol).
    async fn dialogue(
        respond: impl FnMut(&str) -> Reply + Send + 'static,
    ) -> (Result<ProbeReport, ProbeError>, Vec<String>, u16) {
        let (port, h) = testing::serve("+OK POP3 ready\r\n", ServerTls::None, respond).await;
        let t = target(port, Security::Tls);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let r = over(&t, tcp, &TokenLater::ready(&t, token())).await;
        (r, h.await.unwrap(), port)
    }

    #[tokio::test]
    async fn conversation_with_the_initial_response_on_the_auth_line() {
        let expected = testing::script(
            "
            S: +OK POP3 ready
            C: CAPA
            S: +OK
            S: SASL PLAIN XOAUTH2
            S: .
            C: AUTH XOAUTH2 <redacted, 80 bytes>
            S: +OK Logged in.
            C: STAT
            S: +OK 2 3456
            C: QUIT
            ",
        );
        let (r, heard) = testing::converse(super::super::Service::Pop3, &expected).await;
        assert_eq!(heard, expected);
        assert_eq!(r.unwrap().detail, "STAT: 2 messages (3456 octets)");
    }

    #[tokio::test]
    async fn stls_not_offered_sends_no_credential() {
        let (port, h) = testing::serve(
            "+OK POP3 ready\r\n",
            ServerTls::None,
            pop3_server(Some("USER\r\nSASL XOAUTH2 OAUTHBEARER\r\n"), true),
        )
        .await;
        let e = probe(&target(port, Security::Starttls), &token()).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("starttls_not_offered", "starttls"), "{e}");
        assert_eq!(
            e.to_string(),
            format!("POP3 server 127.0.0.1:{port} does not offer STLS, so no credential was sent")
        );
        assert_eq!(h.await.unwrap(), vec!["CAPA"], "nothing but CAPA before giving up");
    }

    #[tokio::test]
    async fn no_capa_means_no_stls() {
        let (port, h) = testing::serve("+OK POP3 ready\r\n", ServerTls::None, pop3_server(None, true)).await;
        let e = probe(&target(port, Security::Starttls), &token()).await.unwrap_err();
        assert_eq!(e.code(), "starttls_not_offered", "{e}");
        assert_eq!(h.await.unwrap(), vec!["CAPA"]);
    }

    #[tokio::test]
    async fn auth_xoauth2_then_stat() {
        let (r, seen, _) = dialogue(pop3_server(Some("USER\r\nSASL PLAIN XOAUTH2 OAUTHBEARER\r\n"), true)).await;
        let rep = r.unwrap();
        assert_eq!((rep.mechanism, rep.messages), ("XOAUTH2", 2));
        assert_eq!(rep.detail, "STAT: 2 messages (3456 octets)");
        assert_eq!(
            seen,
            vec!["CAPA".to_string(), format!("AUTH XOAUTH2 {}", xoauth2_b64()), "STAT".into(), "QUIT".into()]
        );
    }

    #[tokio::test]
    async fn a_token_too_long_for_the_auth_line_goes_after_the_continuation() {
        // RFC 5034 §4: the AUTH line with its initial response is at most 255 octets.
        let long = "t".repeat(200);
        let (port, h) =
            testing::serve("+OK POP3 ready\r\n", ServerTls::None, pop3_server(Some("SASL XOAUTH2\r\n"), true)).await;
        let t = target(port, Security::Tls);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        over(&t, tcp, &TokenLater::ready(&t, AccessToken::new(long.clone()))).await.unwrap();
        let b64 = sasl::base64(&sasl::xoauth2("bob@example.com", &long).unwrap());
        assert_eq!(h.await.unwrap()[1..3], ["AUTH XOAUTH2", b64.expose_secret()]);
    }

    #[tokio::test]
    async fn without_capa_xoauth2_is_tried() {
        let (r, seen, _) = dialogue(pop3_server(None, true)).await;
        assert_eq!(r.unwrap().mechanism, "XOAUTH2");
        assert_eq!(seen[..2], ["CAPA", "AUTH XOAUTH2"]);
    }

    #[tokio::test]
    async fn oauthbearer_when_xoauth2_is_not_offered() {
        let (r, seen, port) = dialogue(pop3_server(Some("SASL OAUTHBEARER\r\n"), true)).await;
        assert_eq!(r.unwrap().mechanism, "OAUTHBEARER");
        let expected = sasl::base64(&sasl::oauthbearer("bob@example.com", "127.0.0.1", port, TOKEN).unwrap());
        assert_eq!(seen[1], format!("AUTH OAUTHBEARER {}", expected.expose_secret()));
    }

    #[tokio::test]
    async fn failure_challenge_gets_an_empty_line_and_keeps_the_words() {
        let (r, seen, port) = dialogue(pop3_server(Some("SASL XOAUTH2\r\n"), false)).await;
        let e = r.unwrap_err();
        assert_eq!((e.code(), e.step()), ("auth_rejected", "authenticate"), "{e}");
        assert_eq!(
            e.server_words(),
            Some(r#"-ERR [AUTH] Authentication failed. ({"status":"401","schemes":"bearer"})"#)
        );
        assert_eq!(
            e.to_string(),
            format!(
                r#"POP3 AUTH XOAUTH2 at 127.0.0.1:{port} was refused: -ERR [AUTH] Authentication failed. ({{"status":"401","schemes":"bearer"}})"#
            )
        );
        assert_eq!(
            seen,
            vec!["CAPA".to_string(), format!("AUTH XOAUTH2 {}", xoauth2_b64()), String::new()],
            "no STAT after a refusal"
        );
    }

    #[tokio::test]
    async fn oauthbearer_failure_is_acknowledged_with_ctrl_a() {
        let (r, seen, _) = dialogue(pop3_server(Some("SASL OAUTHBEARER\r\n"), false)).await;
        assert_eq!(r.unwrap_err().code(), "auth_rejected");
        assert_eq!(seen[2], "AQ==", "RFC 7628 §3.2.3: %x01 answers the error");
    }

    #[tokio::test]
    async fn errors_never_show_the_token() {
        let (r, _, _) = dialogue(pop3_server(Some("SASL XOAUTH2\r\n"), false)).await;
        let e = r.unwrap_err();
        let printed = format!("{e} | {e:?} | {:?}", e.server_words());
        assert!(!printed.contains(TOKEN), "{printed}");
        assert!(!printed.contains(&xoauth2_b64()), "{printed}");
        assert!(!printed.contains("dXNlcj1"), "no part of the base64 payload: {printed}");
    }

    #[tokio::test]
    async fn plain_err_to_auth_keeps_the_servers_words() {
        let (r, seen, _) = dialogue(|l: &str| match l {
            "CAPA" => send("+OK\r\nSASL XOAUTH2\r\n.\r\n"),
            _ => send("-ERR Authentication failure: unknown user name or bad password.\r\n"),
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), "auth_rejected");
        assert_eq!(e.server_words(), Some("-ERR Authentication failure: unknown user name or bad password."));
        assert_eq!(seen, vec!["CAPA".to_string(), format!("AUTH XOAUTH2 {}", xoauth2_b64())], "nothing after -ERR");
    }

    #[tokio::test]
    async fn no_oauth_mechanism_is_named() {
        let (r, seen, _) = dialogue(pop3_server(Some("USER\r\nSASL PLAIN LOGIN\r\n"), true)).await;
        let e = r.unwrap_err();
        assert_eq!((e.code(), e.step()), ("mechanism_not_offered", "authenticate"));
        assert!(e.to_string().ends_with("(it offers: PLAIN, LOGIN)"), "{e}");
        assert_eq!(seen, vec!["CAPA"]);
    }

    #[tokio::test]
    async fn stat_err_is_reported_with_the_servers_words() {
        let (r, _, _) = dialogue(|l: &str| match l {
            "CAPA" => send("+OK\r\nSASL XOAUTH2\r\n.\r\n"),
            "AUTH XOAUTH2" => send("+ \r\n"),
            "STAT" => send("-ERR [SYS/TEMP] Mailbox is locked\r\n"),
            _ => send("+OK\r\n"),
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(
            (e.code(), e.step(), e.server_words()),
            ("protocol", "stat", Some("-ERR [SYS/TEMP] Mailbox is locked"))
        );
    }

    #[tokio::test]
    async fn overlong_line_is_refused_not_buffered() {
        let (r, _, _) = dialogue(|l: &str| match l {
            "CAPA" => send("-ERR no capa\r\n"),
            "AUTH XOAUTH2" => send("+ \r\n"),
            "STAT" => send(format!("+OK {}\r\n", "9".repeat(200_000))),
            _ => send("+OK\r\n"),
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!((e.code(), e.step()), ("protocol", "stat"), "{e}");
        assert_eq!(e.server_words(), Some("the server sent a line longer than 64 KiB"));
    }

    #[tokio::test]
    async fn connection_refused() {
        let e = probe(&target(testing::closed_port(), Security::Starttls), &token()).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("connect_refused", "connect"), "{e}");
        assert!(e.to_string().starts_with("POP3 server 127.0.0.1:"), "{e}");
    }

    #[tokio::test]
    async fn silent_server_times_out_naming_the_step() {
        let (port, _h) = testing::silent().await;
        let mut t = target(port, Security::Starttls);
        t.timeout = Duration::from_millis(300);
        let e = probe(&t, &token()).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("timeout", "greeting"), "{e}");

        // A server that goes quiet after sign-in: the timeout names STAT.
        let (port, _h) = testing::serve("+OK ready\r\n", ServerTls::None, |l: &str| match l {
            "CAPA" => send("+OK\r\nSASL XOAUTH2\r\n.\r\n"),
            "AUTH XOAUTH2" => send("+ \r\n"),
            "STAT" => Reply::Nothing,
            _ => send("+OK\r\n"),
        })
        .await;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut t = target(port, Security::Tls);
        t.timeout = Duration::from_millis(300);
        let e = over(&t, tcp, &TokenLater::ready(&t, token())).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("timeout", "stat"), "{e}");
        assert!(e.to_string().ends_with("did not answer within 300ms during STAT"), "{e}");
    }

    #[tokio::test]
    async fn stls_upgrade_end_to_end() {
        let pki = crate::tls::tests::test_pki(&["127.0.0.1"], false);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let capa = Some("USER\r\nSTLS\r\nSASL XOAUTH2\r\n");

        // Untrusted: the handshake fails after STLS, before any credential.
        let (port, h) =
            testing::serve("+OK ready\r\n", ServerTls::Upgrade(pki.server.clone()), pop3_server(capa, true)).await;
        let e = probe(&target(port, Security::Starttls), &token()).await.unwrap_err();
        assert_eq!((e.code(), e.step()), ("tls_untrusted", "tls"), "{e}");
        assert_eq!(h.await.unwrap(), vec!["CAPA", "STLS"]);

        let (port, h) =
            testing::serve("+OK ready\r\n", ServerTls::Upgrade(pki.server.clone()), pop3_server(capa, true)).await;
        let mut t = target(port, Security::Starttls);
        t.ca_file = Some(ca);
        let rep = probe(&t, &token()).await.unwrap();
        assert_eq!(rep.messages, 2);
        // The greeting async-pop is handed after STLS is not the server's: not in the transcript.
        let heard: Vec<&str> = rep
            .transcript
            .lines
            .iter()
            .filter(|l| l.from == super::super::transcript::Side::Server)
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(
            heard,
            [
                "+OK ready",
                "+OK",
                "USER",
                "STLS",
                "SASL XOAUTH2",
                ".",
                "+OK Begin TLS negotiation now.",
                "+OK",
                "USER",
                "STLS",
                "SASL XOAUTH2",
                ".",
                "+OK Logged in.",
                "+OK 2 3456"
            ],
            "{}",
            rep.transcript.render()
        );
        assert_eq!(
            h.await.unwrap(),
            vec![
                "CAPA".to_string(),
                "STLS".into(),
                "[tls]".into(),
                "CAPA".into(),
                format!("AUTH XOAUTH2 {}", xoauth2_b64()),
                "STAT".into(),
                "QUIT".into()
            ],
            "capabilities asked again over TLS, the token only after the upgrade"
        );
    }

    #[tokio::test]
    async fn a_server_that_hangs_up_ends_the_dialogue_naming_the_step() {
        let (r, seen, _) = dialogue(|l: &str| match l {
            "CAPA" => Reply::Close,
            _ => send("+OK\r\n"),
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!((e.code(), e.step()), ("protocol", "capability"), "{e}");
        assert_eq!(e.server_words(), Some("the server closed the connection"));
        assert_eq!(seen, ["CAPA"]);
    }

    #[tokio::test]
    async fn words_keep_the_text_async_pop_sees_as_question_marks() {
        let (r, _, _) = dialogue(|l: &str| match l {
            "CAPA" => send("+OK\r\nSASL XOAUTH2\r\n.\r\n"),
            "STAT" => send("-ERR [IN-USE] Postfach von Müller ist gesperrt\r\n"),
            _ => send("+OK Willkommen, Jürgen\r\n"),
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!((e.code(), e.step()), ("protocol", "stat"), "{e}");
        assert_eq!(e.server_words(), Some("-ERR [IN-USE] Postfach von Müller ist gesperrt"));
    }

    #[tokio::test]
    async fn a_capability_list_async_pop_cannot_read_is_read_by_the_probe_and_signed_in_to() {
        // RFC 2449 §6: parameters of any form, any SASL mechanism, dot-stuffed lines; async-pop
        // reads none of these three lines.
        let expected = testing::script(
            "
            S: +OK POP3 ready
            C: CAPA
            S: +OK Capability list follows
            S: X-EXTENSION with parameters
            S: SASL PLAIN XOAUTH2 SCRAM-SHA-256-PLUS
            S: ..X-DOT-STUFFED
            S: .
            C: AUTH XOAUTH2 <redacted, 80 bytes>
            S: +OK Logged in.
            C: STAT
            S: +OK 2 3456
            C: QUIT
            ",
        );
        let (r, heard) = testing::converse(super::super::Service::Pop3, &expected).await;
        assert_eq!(heard, expected, "the transcript keeps the server's list as it came");
        let rep = r.unwrap();
        assert_eq!((rep.mechanism, rep.detail.as_str()), ("XOAUTH2", "STAT: 2 messages (3456 octets)"));
    }

    #[tokio::test]
    async fn oauthbearer_among_mechanisms_async_pop_does_not_know_is_chosen() {
        let (r, seen, _) =
            dialogue(pop3_server(Some("SASL X-FOO OAUTHBEARER GS2-KRB5\r\nLOGIN-DELAY 900 USER\r\n"), true)).await;
        assert_eq!(r.unwrap().mechanism, "OAUTHBEARER");
        assert!(seen[1].starts_with("AUTH OAUTHBEARER "), "{seen:?}");
    }

    #[tokio::test]
    async fn a_capability_list_longer_than_async_pop_reads_at_once_is_signed_in_to() {
        // 300 lines (3.3 KiB) and a line of 60 000 octets: async-pop would take either in more
        // than one read.
        let long = format!("{}X-LONG {}\r\nSASL XOAUTH2\r\n", "X-PADDING\r\n".repeat(300), "p".repeat(60_000));
        let long: &'static str = Box::leak(long.into_boxed_str());
        let (r, seen, _) = dialogue(pop3_server(Some(long), true)).await;
        assert_eq!(r.unwrap().messages, 2);
        assert_eq!(seen[0], "CAPA");
        assert!(seen[1].starts_with("AUTH XOAUTH2 "), "{seen:?}");
    }

    #[tokio::test]
    async fn a_capability_list_without_its_dot_ends_as_a_protocol_error_before_the_token() {
        let wire = "+OK ready\r\n+OK\r\nSASL XOAUTH2\r\n";
        let (r, _) = super::super::replay(super::super::Service::Pop3, wire.as_bytes()).await;
        let e = r.unwrap_err();
        // Still at `capability`: no AUTH, so no credential, was sent.
        assert_eq!((e.code(), e.step()), ("protocol", "capability"), "{e}");
        assert_eq!(e.server_words(), Some("the server closed the connection"));
    }

    #[tokio::test]
    async fn a_capability_list_of_more_than_1000_lines_ends_as_an_endless_list() {
        let (r, seen, _) = dialogue(|l: &str| match l {
            "CAPA" => send(format!("+OK\r\n{}SASL XOAUTH2\r\n.\r\n", "X-PADDING\r\n".repeat(1000))),
            _ => send("+OK\r\n"),
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(
            (e.code(), e.step(), e.server_words()),
            ("protocol", "capability", Some("an endless capability list"))
        );
        assert_eq!(seen, ["CAPA"]);
    }

    #[tokio::test]
    async fn a_flood_of_long_capability_lines_over_tls_ends_at_the_byte_budget() {
        // As before STLS (`an_endless_pop3_capability_list_of_long_lines_is_not_buffered`):
        // within the line cap and 1000 lines, the byte budget ends it.
        let line = format!("X-{}\r\n", "P".repeat(60_000));
        let flood = format!("+OK ready\r\n+OK\r\n{}", line.repeat(20));
        let (r, read) = super::super::replay(super::super::Service::Pop3, flood.as_bytes()).await;
        let e = r.unwrap_err();
        assert_eq!((e.code(), e.step()), ("reply_too_large", "capability"), "{e}");
        assert_eq!(read, super::super::BYTE_BUDGET);
    }

    #[tokio::test]
    async fn an_empty_capability_list_offers_no_mechanism() {
        let (r, seen, _) = dialogue(pop3_server(Some(""), true)).await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), "mechanism_not_offered", "{e}");
        assert!(e.to_string().ends_with("(it offers: no SASL mechanism)"), "{e}");
        assert_eq!(seen, ["CAPA"]);
    }

    #[tokio::test]
    async fn a_capability_list_trickled_to_async_pop_ends_at_the_probes_deadline() {
        // One line every 250 ms, each in time for the step timeout: only the deadline ends it.
        let (port, _h) = testing::serve("+OK ready\r\n", ServerTls::None, |l: &str| match l {
            "CAPA" => Reply::Trickle("+OK\r\n".into(), "X-PADDING\r\n".into(), Duration::from_millis(250)),
            _ => send("-ERR\r\n"),
        })
        .await;
        let mut t = target(port, Security::Tls);
        t.timeout = Duration::from_secs(1);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let token = TokenLater::ready(&t, token());
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(30), super::super::guarded(&t, &token, over(&t, tcp, &token)))
            .await
            .expect("still running after 30 s");
        let e = r.unwrap_err();
        assert_eq!((e.code(), e.step()), ("probe_deadline", "capability"), "{e}");
        assert!(started.elapsed() < t.deadline() + Duration::from_secs(5), "took {:?}", started.elapsed());
    }

    // What async-pop 1.1 cannot do, shown against the crate itself: each test fails once a
    // version of the crate can, and the hand-written part or the guard named can then go.

    /// A scripted server on an in-memory stream: greets with `greeting` (unless empty), then
    /// answers each client line with `respond`'s text (`None`: hang up); returns what it heard.
    fn scripted(
        greeting: &'static str,
        mut respond: impl FnMut(&str) -> Option<Vec<&'static str>> + Send + 'static,
    ) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64 * 1024);
        let h = tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(server);
            let mut heard = Vec::new();
            if !greeting.is_empty() {
                r.get_mut().write_all(greeting.as_bytes()).await.unwrap();
            }
            loop {
                let mut line = String::new();
                match tokio::time::timeout(Duration::from_millis(500), r.read_line(&mut line)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return heard,
                }
                let line = line.trim_end().to_string();
                let answer = respond(&line);
                heard.push(line);
                let Some(parts) = answer else { return heard };
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        // The rest of the reply comes in a later read.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    r.get_mut().write_all(part.as_bytes()).await.unwrap();
                    r.get_mut().flush().await.unwrap();
                }
            }
        });
        (client, h)
    }

    #[test]
    fn async_pop_cannot_send_stls_so_stls_is_hand_written() {
        // Its commands are a closed list without STLS (and its client never hands back its
        // stream for the TLS handshake).
        assert!("STLS".parse::<Request>().is_err());
        for known in ["CAPA", "AUTH", "STAT", "QUIT"] {
            assert!(known.parse::<Request>().is_ok(), "{known}");
        }
    }

    #[tokio::test]
    async fn async_pop_waits_for_a_greeting_so_after_stls_the_wire_hands_it_one() {
        // After STLS the server says nothing until the client speaks.
        let (client, _h) = scripted("", |_| Some(vec!["+OK\r\nSASL XOAUTH2\r\n.\r\n"]));
        let waited = tokio::time::timeout(Duration::from_millis(300), async_pop::new(client)).await;
        assert!(waited.is_err(), "async-pop no longer waits for a greeting");

        let (client, h) = scripted("", |_| Some(vec!["+OK\r\nSASL XOAUTH2\r\n.\r\n"]));
        let seen = Seen::default();
        let pop = async_pop::new(Wire::after_stls(client, Duration::from_secs(2), &seen)).await.unwrap();
        assert_eq!(seen.capabilities(), Some(vec!["SASL XOAUTH2".to_string()]), "the list read beneath the crate");
        drop(pop);
        assert_eq!(h.await.unwrap(), ["CAPA"]);
    }

    #[tokio::test]
    async fn async_pop_asks_capa_again_after_auth_so_auth_goes_over_its_stream() {
        let (client, h) = scripted("+OK ready\r\n", |l| {
            Some(vec![match l {
                "CAPA" => "+OK\r\nSASL XOAUTH2\r\n.\r\n",
                _ => "+OK\r\n",
            }])
        });
        let mut pop = async_pop::new(client).await.unwrap();
        pop.auth(async_pop::sasl::OAuth2Authenticator::new("bob@example.com", TOKEN)).await.unwrap();
        drop(pop);
        let heard = h.await.unwrap();
        assert_eq!(heard.len(), 3, "{heard:?}");
        assert_eq!((heard[0].as_str(), heard[2].as_str()), ("CAPA", "CAPA"), "a round trip the probe does without");
    }

    #[tokio::test]
    async fn async_pop_cannot_answer_a_failure_challenge_so_the_probe_answers_it() {
        let (client, h) = scripted("+OK ready\r\n", |l| {
            Some(vec![match l {
                "CAPA" => "+OK\r\nSASL XOAUTH2\r\n.\r\n",
                _ => CHALLENGE,
            }])
        });
        let mut pop = async_pop::new(client).await.unwrap();
        let e = pop.auth(async_pop::sasl::OAuth2Authenticator::new("bob@example.com", TOKEN)).await.unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::UnexpectedResponse), "{e:?}");
        drop(pop);
        assert_eq!(h.await.unwrap().len(), 2, "no acknowledgement, so no final -ERR to report");
    }

    #[tokio::test]
    async fn async_pop_cannot_read_unknown_sasl_mechanisms_so_the_probe_reads_capa_itself() {
        // RFC 2449 §6: any SASL mechanism name, any parameters; async-pop's parser knows a fixed
        // list of each and fails on the whole list (quietly: `new` swallows it).
        const LISTS: [&str; 4] = [
            "+OK\r\nUSER\r\nSASL PLAIN XOAUTH2 SCRAM-SHA-256-PLUS\r\n.\r\n",
            "+OK\r\nSASL XOAUTH2 X-FOO\r\n.\r\n",
            "+OK\r\nX-EXTENSION with parameters\r\nSASL XOAUTH2\r\n.\r\n",
            "+OK\r\n..X-DOT-STUFFED\r\nSASL XOAUTH2\r\n.\r\n",
        ];
        for list in LISTS {
            let (client, _h) =
                scripted("+OK ready\r\n", move |l| Some(vec![if l == "CAPA" { list } else { "+OK 1 2\r\n" }]));
            let mut pop = async_pop::new(client).await.expect("the failed CAPA is not reported");
            assert!(!pop.has_auth_mechanism("XOAUTH2"), "async-pop now reads {list:?}: {:?}", pop.capabilities());
            // And its state is broken: the next reply is not read as the answer to its command.
            let stat = tokio::time::timeout(Duration::from_millis(500), pop.stat()).await;
            assert!(!matches!(stat, Ok(Ok(_))), "async-pop now goes on after {list:?}");

            // Through the wire, the probe reads the list, and the crate goes on.
            let (client, _h) =
                scripted("+OK ready\r\n", move |l| Some(vec![if l == "CAPA" { list } else { "+OK 1 2\r\n" }]));
            let seen = Seen::default();
            let mut pop = async_pop::new(Wire::new(client, Duration::from_secs(2), &seen)).await.unwrap();
            let caps = seen.capabilities().expect("the list was read");
            assert_eq!(Mechanism::pick(sasl_mechanisms(&caps)), Some(Mechanism::XOAuth2), "{caps:?}");
            assert_eq!(pop.stat().await.unwrap().counter().value().unwrap(), 1);
        }
    }

    #[tokio::test]
    async fn async_pop_never_ends_at_the_end_of_the_stream_so_the_wire_makes_it_an_error() {
        let (client, _h) = scripted("+OK ready\r\n", |_| None);
        let ended = tokio::time::timeout(Duration::from_millis(500), async_pop::new(client)).await;
        assert!(ended.is_err(), "async-pop now ends at the end of the stream");
    }

    #[tokio::test]
    async fn async_pop_waits_forever_after_a_reply_in_two_reads_so_replies_are_handed_whole() {
        let (client, _h) = scripted("+OK ready\r\n", |l| match l {
            "CAPA" => Some(vec!["+OK\r\nSASL XOAUTH2\r\nTOP\r\nUIDL\r\nUSER\r\n", ".\r\n"]),
            _ => Some(vec!["+OK 1 2\r\n"]),
        });
        let mut pop = async_pop::new(client).await.unwrap();
        assert!(pop.has_auth_mechanism("XOAUTH2"));
        let stat = tokio::time::timeout(Duration::from_millis(500), pop.stat()).await;
        assert!(stat.is_err(), "async-pop now reads a short reply after a long one in two reads");

        // Through the wire, the same server's replies are read.
        let (client, _h) = scripted("+OK ready\r\n", |l| match l {
            "CAPA" => Some(vec!["+OK\r\nSASL XOAUTH2\r\nTOP\r\nUIDL\r\nUSER\r\n", ".\r\n"]),
            _ => Some(vec!["+OK 1 2\r\n"]),
        });
        let seen = Seen::default();
        let mut pop = async_pop::new(Wire::new(client, Duration::from_secs(2), &seen)).await.unwrap();
        assert_eq!(seen.capabilities().unwrap()[0], "SASL XOAUTH2");
        assert_eq!(pop.stat().await.unwrap().counter().value().unwrap(), 1);
    }

    #[tokio::test]
    async fn async_pop_panics_on_a_reply_that_is_not_utf8_when_trace_logging_is_on_so_it_reads_ascii() {
        // A user's `trace` directive sets the `log` crate's level to trace; async-pop then
        // formats what it read with `str::from_utf8(..).unwrap()`. A Latin-1 greeting:
        const GREETING: &[u8] = b"+OK Willkommen, J\xfcrgen\r\n";
        let before = log::max_level();
        log::set_max_level(log::LevelFilter::Trace);
        let greeted = |greeting: &'static [u8]| {
            let (client, mut server) = tokio::io::duplex(4096);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                server.write_all(greeting).await.unwrap();
                let mut sink = [0u8; 64];
                // Refuse CAPA, then hold the connection until the client leaves.
                if server.read(&mut sink).await.unwrap_or(0) > 0 {
                    let _ = server.write_all(b"-ERR no CAPA\r\n").await;
                }
                while server.read(&mut sink).await.unwrap_or(0) > 0 {}
            });
            client
        };
        let raw = tokio::spawn(async_pop::new(greeted(GREETING))).await;
        let seen = Seen::default();
        let through_the_wire =
            tokio::spawn(async_pop::new(Wire::new(greeted(GREETING), Duration::from_secs(2), &seen))).await;
        log::set_max_level(before);
        assert!(raw.is_err_and(|e| e.is_panic()), "async-pop now takes bytes that are not UTF-8");
        let pop = through_the_wire.expect("no panic through the wire").expect("greeted");
        assert_eq!(pop.greeting().map(|g| g.to_string()).as_deref(), Some("Willkommen, J?rgen"));
        assert_eq!(seen.line(), "-ERR no CAPA");
    }

    /// A connection that reads `wire` and then the end of the stream, and discards writes.
    fn scripted_conn(wire: Vec<u8>) -> Conn<tokio::io::Join<std::io::Cursor<Vec<u8>>, tokio::io::Sink>> {
        Conn::new(tokio::io::join(std::io::Cursor::new(wire), tokio::io::sink()))
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// A CAPA list ends at its lone dot, not before or after; dot-stuffed lines come back
        /// unstuffed.
        #[test]
        fn capa_ends_at_its_terminator(caps in proptest::collection::vec("[ -~]{1,30}", 0..12), after in "[ -~]{0,20}") {
            let mut wire = String::from("+OK\r\n");
            for c in &caps {
                // RFC 1939 §3: a line starting with the termination octet is dot-stuffed.
                let stuffed = if c.starts_with('.') { format!(".{c}") } else { c.clone() };
                wire.push_str(&format!("{stuffed}\r\n"));
            }
            wire.push_str(&format!(".\r\n{after}\r\n"));
            let t = target(1, Security::Tls);
            let (got, next) = block_on(async {
                let mut conn = scripted_conn(wire.into_bytes());
                let got = conn.capa(&t).await.unwrap();
                (got, conn.line(&t, Step::Stat).await.unwrap())
            });
            let want: Vec<String> = caps.iter().map(|c| c.to_ascii_uppercase()).collect();
            proptest::prop_assert_eq!(got, Some(want));
            proptest::prop_assert_eq!(next, after);
        }

        /// Any RFC 2449 capability list (names and parameters of any form, dot-stuffed lines,
        /// SASL mechanisms async-pop has never heard of) with XOAUTH2 among the mechanisms: the
        /// probe signs in with XOAUTH2.
        #[test]
        fn xoauth2_is_found_in_any_capability_list(
            caps in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", proptest::collection::vec("[!-~]{1,12}", 0..4)), 0..20),
            stuffed in proptest::collection::vec("\\.[!-~]{1,12}", 0..3),
            mechanisms in proptest::collection::vec("[A-Za-z0-9_-]{1,20}", 0..8),
            xoauth2 in proptest::sample::select(vec!["XOAUTH2", "xoauth2", "XOauth2"]),
            sasl in proptest::sample::select(vec!["SASL", "sasl", "Sasl"]),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            line_at in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut mechanisms = mechanisms;
            mechanisms.insert(at.index(mechanisms.len() + 1), xoauth2.to_string());
            let mut lines: Vec<String> = caps.iter().map(|(name, params)| [name.clone()].iter().chain(params).cloned().collect::<Vec<_>>().join(" ")).collect();
            // RFC 1939 §3: a line starting with the termination octet is dot-stuffed.
            lines.extend(stuffed.iter().map(|l| format!(".{l}")));
            lines.insert(line_at.index(lines.len() + 1), format!("{sasl} {}", mechanisms.join(" ")));
            let wire = format!("+OK ready\r\n+OK\r\n{}\r\n.\r\n+OK in\r\n+OK 2 10\r\n+OK bye\r\n", lines.join("\r\n"));
            let (r, _) = block_on(super::super::replay(super::super::Service::Pop3, wire.as_bytes()));
            let rep = r.map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e} for {wire:?}")))?;
            proptest::prop_assert_eq!(rep.mechanism, "XOAUTH2");
            proptest::prop_assert_eq!(rep.messages, 2);
        }

        /// Any bytes at all as the answers: an error or a result, never a panic or a hang.
        #[test]
        fn any_server_bytes_end_the_dialogue(wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            let t = target(1, Security::Tls);
            block_on(async {
                let _ = over(&t, tokio::io::join(std::io::Cursor::new(wire), tokio::io::sink()), &TokenLater::ready(&t, token())).await;
            });
        }
    }
}
