//! POP3 probe: RFC 1939 with CAPA (RFC 2449), STLS (RFC 2595 §4) and AUTH (RFC 5034) using
//! XOAUTH2 or OAUTHBEARER (RFC 7628), then `STAT` and `QUIT`.
//!
//! Written by hand rather than with the async-pop crate: async-pop cannot do STLS — its client
//! always waits for a greeting when it is created, and a server sends none after the STLS
//! upgrade — and a mailbox on port 110 with STLS must be probed like one on 995. The dialogue
//! needed here is a handful of commands over a generic stream, so the same code runs over TCP,
//! over TLS and, in the tests, against a testing server.
//!
//! The SASL exchange: when the server lists SASL in CAPA and `AUTH <mechanism> <response>`
//! fits RFC 5034 §4's 255 octets, the initial response goes on the AUTH line (one round trip
//! fewer); otherwise — and a real Microsoft or Google access token is always too long —
//! `AUTH XOAUTH2` alone, the server's `+ ` continuation, then the base64 response on its own
//! line, the form Dovecot and Exchange Online both accept. `QUIT` is sent, its reply not
//! awaited. A failure is a `+ <base64 JSON>` challenge, answered with an
//! empty line (XOAUTH2) or `^A` (OAUTHBEARER, RFC 7628 §3.2.3), then the final `-ERR`.
//!
//! Server lines are capped (64 KiB) so a hostile server cannot make the probe buffer without
//! bound; every read and write is under the step timeout, and the whole dialogue under the
//! probe's deadline and byte budget (see [`super`]): a capability list trickled a line at a
//! time, or a thousand lines of 64 KiB, ends the probe early.

use oauth2::AccessToken;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite};

use super::sasl::{self, Mechanism};
use super::{count_messages, unexpected, LineConn, ProbeError, ProbeFailure, ProbeReport, ProbeTarget};
use super::{Step, Upgraded};

const PROTO: &str = "POP3";
/// RFC 5034 §4: an `AUTH` command with its initial response is at most 255 octets (CRLF
/// included).
const MAX_AUTH_LINE: usize = 255;
/// More capabilities than any server has; past this the list is not a list.
const MAX_CAPABILITIES: usize = 1000;

pub async fn probe(t: &ProbeTarget, token: &AccessToken) -> Result<ProbeReport, ProbeFailure> {
    super::guarded(t, token, dialogue(t, token)).await
}

async fn dialogue(t: &ProbeTarget, token: &AccessToken) -> Result<ProbeReport, ProbeError> {
    super::connected(
        t,
        |tcp| stls(t, tcp),
        |stream, upgraded| async move {
            match upgraded {
                Upgraded::No => over(t, stream, token).await,
                Upgraded::Yes => login_and_stat(t, Conn::new(stream), token).await,
            }
        },
    )
    .await
}

/// The plain-text part before STLS (RFC 2595 §4): greeting, CAPA, `STLS`, `+OK`.
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
pub(crate) async fn over<S: AsyncRead + AsyncWrite + Unpin>(
    t: &ProbeTarget,
    stream: S,
    token: &AccessToken,
) -> Result<ProbeReport, ProbeError> {
    let mut conn = Conn::new(stream);
    conn.greeting(t).await?;
    login_and_stat(t, conn, token).await
}

/// Authenticates on an established (TLS) connection whose greeting was read, then `STAT`
/// and `QUIT`.
pub(crate) async fn login_and_stat<S: AsyncRead + AsyncWrite + Unpin>(
    t: &ProbeTarget,
    mut conn: Conn<S>,
    token: &AccessToken,
) -> Result<ProbeReport, ProbeError> {
    // After STLS the capabilities are asked again: the plain-text list may have been forged.
    let caps = conn.capa(t).await?;
    let mechanism = match &caps {
        Some(caps) => {
            let offered: Vec<&str> = caps
                .iter()
                .find_map(|c| c.strip_prefix("SASL "))
                .map(|l| l.split_whitespace().collect())
                .unwrap_or_default();
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

    let response = sasl::base64(
        &mechanism
            .initial_response(&t.sasl_user, &t.host, t.port, token.secret())
            .map_err(|e| ProbeError::from_sasl(t, e))?,
    );
    // RFC 5034 §4: the initial response may go on the AUTH line, saving a round trip, unless
    // the command would exceed 255 octets (a long access token). A server that lists SASL in
    // CAPA implements RFC 5034; without CAPA, the older form is the safe one.
    let ir = SecretString::from(format!("AUTH {} {}", mechanism.name(), response.expose_secret()));
    let line = if caps.is_some() && ir.expose_secret().len() + 2 <= MAX_AUTH_LINE {
        conn.send_secret(t, Step::Authenticate, &ir).await?;
        conn.line(t, Step::Authenticate).await?
    } else {
        conn.send(t, Step::Authenticate, &format!("AUTH {}", mechanism.name())).await?;
        let line = conn.line(t, Step::Authenticate).await?;
        if line.starts_with("-ERR") {
            return Err(rejected(line));
        }
        if !is_continuation(&line) {
            return Err(unexpected(t, Step::Authenticate, line));
        }
        conn.send_secret(t, Step::Authenticate, &response).await?;
        conn.line(t, Step::Authenticate).await?
    };
    drop((ir, response));
    if line.starts_with("+OK") {
        // signed in
    } else if is_continuation(&line) {
        // A failure challenge: acknowledge it, then the server sends its final -ERR.
        let json = sasl::decode_failure_challenge(&line[1..]);
        conn.send(t, Step::Authenticate, &sasl::base64_bytes(mechanism.failure_ack())).await?;
        let last = conn.line(t, Step::Authenticate).await?;
        if !last.starts_with("+OK") {
            return Err(rejected(sasl::with_challenge(last, json)));
        }
    } else if line.starts_with("-ERR") {
        return Err(rejected(line));
    } else {
        return Err(unexpected(t, Step::Authenticate, line));
    }

    conn.send(t, Step::Stat, "STAT").await?;
    let stat = conn.line(t, Step::Stat).await?;
    let Some((count, size)) = parse_stat(&stat) else {
        return Err(unexpected(t, Step::Stat, stat));
    };
    // QUIT is sent but its reply not awaited: nothing was marked for deletion, so the UPDATE
    // state (RFC 1939 §6) has nothing to do, and a failed QUIT does not undo the proof that
    // the maildrop was read.
    let _ = conn.send(t, Step::Quit, "QUIT").await;
    Ok(ProbeReport {
        mechanism: mechanism.name(),
        messages: count,
        detail: format!("STAT: {} ({size} octets)", count_messages(count)),
        transcript: Default::default(),
    })
}

/// A SASL continuation (`+ <base64>` or a bare `+`), as opposed to `+OK`.
fn is_continuation(line: &str) -> bool {
    line == "+" || line.starts_with("+ ")
}

/// `+OK <count> <octets>` (RFC 1939 §5).
fn parse_stat(line: &str) -> Option<(u32, u64)> {
    let mut parts = line.split_whitespace();
    if parts.next()? != "+OK" {
        return None;
    }
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
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
        let mut caps = Vec::new();
        loop {
            let l = self.line(t, Step::Capability).await?;
            if l == "." {
                return Ok(Some(caps));
            }
            // RFC 1939 §3: a terminating-octet-looking first dot is doubled.
            let l = l.strip_prefix('.').unwrap_or(&l);
            caps.push(l.to_ascii_uppercase());
            if caps.len() > MAX_CAPABILITIES {
                return Err(unexpected(t, Step::Capability, "an endless capability list"));
            }
        }
    }
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
        let mut conn = Conn::new(tcp);
        conn.greeting(&t).await.unwrap();
        let r = login_and_stat(&t, conn, &token()).await;
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
        let mut conn = Conn::new(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        conn.greeting(&t).await.unwrap();
        login_and_stat(&t, conn, &AccessToken::new(long.clone())).await.unwrap();
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
        let mut conn = Conn::new(tcp);
        conn.greeting(&t).await.unwrap();
        let e = login_and_stat(&t, conn, &token()).await.unwrap_err();
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

    #[test]
    fn stat_lines() {
        assert_eq!(parse_stat("+OK 2 3456"), Some((2, 3456)));
        assert_eq!(parse_stat("+OK 0 0 extra"), Some((0, 0)));
        assert_eq!(parse_stat("-ERR locked"), None);
        assert_eq!(parse_stat("+OK two 3"), None);
        assert!(is_continuation("+ abc") && is_continuation("+") && !is_continuation("+OK"));
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

        /// Any bytes at all as the answers: an error or a result, never a panic or a hang.
        #[test]
        fn any_server_bytes_end_the_dialogue(wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            let t = target(1, Security::Tls);
            block_on(async {
                let _ = login_and_stat(&t, scripted_conn(wire), &token()).await;
            });
        }

        #[test]
        fn stat_parses_only_counts(line in ".{0,40}") {
            if let Some((n, size)) = parse_stat(&line) {
                proptest::prop_assert_eq!(format!("+OK {n} {size}"), line.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
            }
        }
    }
}
