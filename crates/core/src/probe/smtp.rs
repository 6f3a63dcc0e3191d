//! SMTP submission probe: RFC 5321 with STARTTLS (RFC 3207) and AUTH (RFC 4954) using
//! XOAUTH2 or OAUTHBEARER, then proof that sending is allowed: `MAIL FROM` (reset without
//! sending), or — when asked — a real test message.
//!
//! Written by hand rather than with lettre: lettre's XOAUTH2 cannot answer the server's failure
//! challenge (`334 <base64 JSON>`, which Gmail sends), so the server's final words — the ones
//! that say *why* (`535 5.7.139 … SmtpClientAuthentication is disabled`) — would be lost. The
//! dialogue needed is a handful of commands. The test message itself is formatted by lettre's
//! message builder (RFC 5322 headers, Date, Message-ID). The closing `RSET`/`QUIT` are sent
//! without waiting for their replies.

use oauth2::AccessToken;
use tokio::io::{AsyncRead, AsyncWrite};

use super::sasl::Mechanism;
use super::{invalid_input, sasl, unexpected, LineConn, ProbeError, ProbeFailure, ProbeReport, ProbeTarget};
use super::{Step, Upgraded};

const PROTO: &str = "SMTP";
/// A reply of more lines than this is not a mail server. (The probe's deadline and byte budget
/// end a reply trickled or padded to stay under it; see [`super`].)
const MAX_REPLY_LINES: usize = 200;

/// A message to send as the proof that mail goes out.
#[derive(Debug, Clone)]
pub struct TestMessage {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Signs in to the submission server; then either resets after `MAIL FROM` or sends `send`.
/// The recipient is checked before connecting: it goes into `RCPT TO:<…>`, where a line break
/// would start a command of its own.
pub async fn probe(
    t: &ProbeTarget,
    token: &AccessToken,
    send: Option<&TestMessage>,
) -> Result<ProbeReport, ProbeError> {
    probe_traced(t, token, send).await.map_err(ProbeError::from)
}

/// [`probe`], keeping the transcript of a failure too.
pub async fn probe_traced(
    t: &ProbeTarget,
    token: &AccessToken,
    send: Option<&TestMessage>,
) -> Result<ProbeReport, ProbeFailure> {
    if let Some(m) = send {
        check_recipient(&m.to).map_err(|problem| ProbeFailure {
            error: invalid_input(t, "the recipient (`to`)", problem),
            transcript: Default::default(),
        })?;
    }
    super::guarded(t, &super::TokenLater::ready(t, token.clone()), dialogue(t, token, send)).await
}

/// Whether `to` is one plain address (RFC 5321 `Mailbox`, as lettre parses it), with no
/// control character; the problem in words otherwise, without the value.
pub fn check_recipient(to: &str) -> Result<(), String> {
    if to.chars().any(char::is_control) {
        return Err("contains a control character (such as a line break)".into());
    }
    to.parse::<lettre::Address>().map(|_| ()).map_err(|e| format!("is not an email address ({e})"))
}

async fn dialogue(t: &ProbeTarget, token: &AccessToken, send: Option<&TestMessage>) -> Result<ProbeReport, ProbeError> {
    super::connected(
        t,
        |tcp| starttls(t, tcp),
        |stream, upgraded| async move {
            match upgraded {
                Upgraded::No => over(t, stream, token, send).await,
                Upgraded::Yes => {
                    let mut conn = Conn::new(stream);
                    // The capabilities seen before TLS are not to be trusted (RFC 3207 §4.2).
                    let ehlo = conn.ehlo(t).await?;
                    session(t, conn, &ehlo, token, send).await
                }
            }
        },
    )
    .await
}

/// The plain-text part before STARTTLS (RFC 3207): greeting, EHLO, `STARTTLS`, `220`.
async fn starttls<S: AsyncRead + AsyncWrite + Unpin>(t: &ProbeTarget, tcp: S) -> Result<S, ProbeError> {
    let mut conn = Conn::new(tcp);
    conn.expect(t, Step::Greeting, 220).await?;
    let ehlo = conn.ehlo(t).await?;
    // The token must never cross the network in clear: no STARTTLS, no sign-in.
    if !ehlo.iter().any(|l| l.eq_ignore_ascii_case("STARTTLS")) {
        return Err(ProbeError::StarttlsNotOffered { proto: PROTO, addr: t.addr(), command: "STARTTLS" });
    }
    conn.send(t, Step::Starttls, "STARTTLS").await?;
    conn.expect(t, Step::Starttls, 220).await?;
    Ok(conn.into_inner())
}

/// The whole dialogue on an established (TLS) connection, from the greeting on.
pub(crate) async fn over<S: AsyncRead + AsyncWrite + Unpin>(
    t: &ProbeTarget,
    stream: S,
    token: &AccessToken,
    send: Option<&TestMessage>,
) -> Result<ProbeReport, ProbeError> {
    let mut conn = Conn::new(stream);
    conn.expect(t, Step::Greeting, 220).await?;
    let ehlo = conn.ehlo(t).await?;
    session(t, conn, &ehlo, token, send).await
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    t: &ProbeTarget,
    mut conn: Conn<S>,
    ehlo: &[String],
    token: &AccessToken,
    send: Option<&TestMessage>,
) -> Result<ProbeReport, ProbeError> {
    let offered: Vec<String> = ehlo
        .iter()
        .filter_map(|l| {
            let u = l.to_ascii_uppercase();
            u.strip_prefix("AUTH ").or_else(|| u.strip_prefix("AUTH=")).map(str::to_string)
        })
        .flat_map(|m| m.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let Some(mech) = Mechanism::pick(offered.iter().map(String::as_str)) else {
        let offered = if offered.is_empty() { "no SASL mechanism".to_string() } else { offered.join(", ") };
        return Err(ProbeError::MechanismNotOffered { proto: PROTO, addr: t.addr(), offered });
    };
    let mechanism = mech.name();
    let raw = mech
        .initial_response(&t.sasl_user, &t.host, t.port, token.secret())
        .map_err(|e| ProbeError::from_sasl(t, e))?;
    let rejected =
        |words: String| ProbeError::AuthRejected { proto: PROTO, command: "AUTH", mechanism, addr: t.addr(), words };
    // `AUTH XOAUTH2`, the server's empty `334`, then the response on its own line: the form
    // Microsoft documents for Exchange Online, and one Gmail and Dovecot accept too.
    conn.send(t, Step::Authenticate, &format!("AUTH {mechanism}")).await?;
    let (code, text) = conn.reply(t, Step::Authenticate).await?;
    if code != 334 {
        return Err(rejected(format!("{code} {text}")));
    }
    conn.send_secret(t, Step::Authenticate, &sasl::base64(&raw)).await?;
    let (code, text) = conn.reply(t, Step::Authenticate).await?;
    match code {
        235 => {}
        334 => {
            // A failure challenge (base64 JSON): acknowledge (empty line for XOAUTH2, ^A for
            // OAUTHBEARER, RFC 7628 §3.2.3), then read the final 5xx.
            let json = sasl::decode_failure_challenge(&text);
            conn.send(t, Step::Authenticate, &sasl::base64_bytes(mech.failure_ack())).await?;
            let (code, fin) = conn.reply(t, Step::Authenticate).await?;
            return Err(rejected(sasl::with_challenge(format!("{code} {fin}"), json)));
        }
        _ => return Err(rejected(format!("{code} {text}"))),
    }

    // AUTH alone does not prove sending is allowed: MAIL FROM is where Exchange says 5.7.57 or
    // refuses a sender the account may not send as.
    conn.send(t, Step::Mail, &format!("MAIL FROM:<{}>", t.sasl_user)).await?;
    let (code, text) = conn.reply(t, Step::Mail).await?;
    if code != 250 {
        return Err(unexpected(t, Step::Mail, format!("{code} {text}")));
    }
    let detail = match send {
        None => {
            // The transaction is reset and the session ended together, the replies not awaited:
            // MAIL FROM's 250 was the proof, and nothing was sent.
            let _ = conn.write(t, Step::Quit, b"RSET\r\nQUIT\r\n").await;
            return Ok(ProbeReport {
                mechanism,
                messages: 0,
                detail: format!("signed in; the server accepts mail from {}", t.sasl_user),
                transcript: Default::default(),
            });
        }
        Some(m) => {
            conn.send(t, Step::Rcpt, &format!("RCPT TO:<{}>", m.to)).await?;
            let (code, text) = conn.reply(t, Step::Rcpt).await?;
            if code != 250 && code != 251 {
                return Err(unexpected(t, Step::Rcpt, format!("{code} {text}")));
            }
            conn.send(t, Step::Data, "DATA").await?;
            let (code, text) = conn.reply(t, Step::Data).await?;
            if code != 354 {
                return Err(unexpected(t, Step::Data, format!("{code} {text}")));
            }
            let bytes = format_message(&t.sasl_user, m).map_err(|e| unexpected(t, Step::Data, e))?;
            conn.write(t, Step::Data, &dot_stuff(&bytes)).await?;
            let (code, text) = conn.reply(t, Step::Data).await?;
            if code != 250 {
                return Err(unexpected(t, Step::Data, format!("{code} {text}")));
            }
            format!("test message sent to {} ({code} {text})", m.to)
        }
    };
    // The message was accepted at the 250 above; QUIT's reply is not awaited.
    let _ = conn.send(t, Step::Quit, "QUIT").await;
    Ok(ProbeReport { mechanism, messages: 0, detail, transcript: Default::default() })
}

/// The test message, formatted as RFC 5322 by lettre's builder.
fn format_message(from: &str, m: &TestMessage) -> Result<Vec<u8>, String> {
    let msg = lettre::Message::builder()
        .from(from.parse().map_err(|e| format!("sender `{from}`: {e}"))?)
        .to(m.to.parse().map_err(|e| format!("recipient `{}`: {e}", m.to))?)
        .subject(m.subject.clone())
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(m.body.clone())
        .map_err(|e| e.to_string())?;
    Ok(msg.formatted())
}

/// CRLF line ends, a leading dot doubled on each line (RFC 5321 §4.5.2), and the end marker.
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split('\n') {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out.push_str(".\r\n");
    out.into_bytes()
}

/// An SMTP connection: the shared bounded line I/O, plus SMTP's multi-line replies.
type Conn<S> = LineConn<S>;

impl<S: AsyncRead + AsyncWrite + Unpin> LineConn<S> {
    /// One reply (RFC 5321 §4.2): its code and its lines, `250-…` continuing to `250 …`.
    async fn reply_lines(&mut self, t: &ProbeTarget, name: Step) -> Result<(u16, Vec<String>), ProbeError> {
        let mut texts = Vec::new();
        for _ in 0..MAX_REPLY_LINES {
            let line = self.line(t, name).await?;
            let Some(code) = line.get(..3).and_then(|c| c.parse::<u16>().ok()) else {
                return Err(unexpected(t, name, line));
            };
            texts.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, texts));
            }
        }
        Err(unexpected(t, name, "an endless reply"))
    }

    /// One reply, its lines joined by spaces.
    async fn reply(&mut self, t: &ProbeTarget, name: Step) -> Result<(u16, String), ProbeError> {
        let (code, lines) = self.reply_lines(t, name).await?;
        Ok((code, lines.join(" ")))
    }

    async fn expect(&mut self, t: &ProbeTarget, name: Step, want: u16) -> Result<String, ProbeError> {
        let (code, text) = self.reply(t, name).await?;
        if code == want {
            Ok(text)
        } else {
            Err(unexpected(t, name, format!("{code} {text}")))
        }
    }

    /// `EHLO`; returns the extension lines (without the greeting line).
    async fn ehlo(&mut self, t: &ProbeTarget) -> Result<Vec<String>, ProbeError> {
        self.send(t, Step::Ehlo, "EHLO mailbox-auth.localdomain").await?;
        let (code, mut lines) = self.reply_lines(t, Step::Ehlo).await?;
        if code != 250 {
            return Err(unexpected(t, Step::Ehlo, format!("{code} {}", lines.join(" "))));
        }
        lines.remove(0);
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::mailbox::Security;
    use secrecy::ExposeSecret;

    const TOKEN: &str = "tok-smtp-789";

    fn smtp_target(port: u16, security: Security) -> ProbeTarget {
        target(super::super::Service::Smtp, port, security)
    }

    fn xoauth2_payload() -> String {
        sasl::base64(&sasl::xoauth2("alice@example.com", TOKEN).unwrap()).expose_secret().to_string()
    }

    #[tokio::test]
    async fn conversation_signs_in_and_proves_mail_from() {
        let expected = script(
            "
            S: 220 mx ESMTP
            C: EHLO mailbox-auth.localdomain
            S: 250-mx.example
            S: 250 AUTH LOGIN OAUTHBEARER XOAUTH2
            C: AUTH XOAUTH2
            S: 334 
            C: <redacted, 80 bytes>
            S: 235 2.7.0 Authentication successful
            C: MAIL FROM:<alice@example.com>
            S: 250 2.1.0 Sender OK
            C: RSET
            C: QUIT
            ",
        );
        let (r, heard) = converse(super::super::Service::Smtp, &expected).await;
        assert_eq!(heard, expected);
        assert_eq!(r.unwrap().mechanism, "XOAUTH2");
    }

    #[tokio::test]
    async fn starttls_not_offered_sends_no_credential() {
        let (port, h) = serve("220 mx ESMTP\r\n", ServerTls::None, |l: &str| {
            if l.starts_with("EHLO") {
                send("250-mx\r\n250 AUTH XOAUTH2\r\n")
            } else {
                send("502 no\r\n")
            }
        })
        .await;
        let e = probe(&smtp_target(port, Security::Starttls), &AccessToken::new(TOKEN.into()), None).await.unwrap_err();
        assert_eq!(e.code(), "starttls_not_offered", "{e}");
        drop(e);
        let seen = h.await.unwrap();
        assert!(seen.iter().all(|l| !l.starts_with("AUTH") && !l.starts_with("dXNl")), "{seen:?}");
    }

    /// Runs the session over plain TCP (TLS is the same code path and tested elsewhere).
    async fn plain_session(
        respond: impl FnMut(&str) -> Reply + Send + 'static,
        send_msg: Option<TestMessage>,
    ) -> (Result<ProbeReport, ProbeError>, Vec<String>) {
        let (port, h) = serve("220 mx ESMTP\r\n", ServerTls::None, respond).await;
        let t = smtp_target(port, Security::Tls);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut conn = Conn::new(tcp);
        conn.expect(&t, Step::Greeting, 220).await.unwrap();
        let ehlo = conn.ehlo(&t).await.unwrap();
        let r = session(&t, conn, &ehlo, &AccessToken::new(TOKEN.into()), send_msg.as_ref()).await;
        (r, h.await.unwrap())
    }

    fn accepting(l: &str) -> Reply {
        match l {
            l if l.starts_with("EHLO") => send("250-mx.example\r\n250-SIZE 1000\r\n250 AUTH LOGIN XOAUTH2\r\n"),
            "AUTH XOAUTH2" => send("334 \r\n"),
            l if l.starts_with("dXNl") => send("235 2.7.0 Authentication successful\r\n"),
            l if l.starts_with("MAIL FROM") => send("250 2.1.0 Sender OK\r\n"),
            l if l.starts_with("RCPT TO") => send("250 2.1.5 Recipient OK\r\n"),
            "DATA" => send("354 Start mail input\r\n"),
            "." => send("250 2.0.0 OK queued as 12345\r\n"),
            "RSET" => send("250 2.0.0 Reset\r\n"),
            "QUIT" => send("221 2.0.0 Bye\r\n"),
            _ => Reply::Nothing,
        }
    }

    #[tokio::test]
    async fn auth_then_mail_from_then_reset() {
        let (r, seen) = plain_session(accepting, None).await;
        let rep = r.unwrap();
        assert_eq!(rep.mechanism, "XOAUTH2");
        assert_eq!(
            seen,
            vec![
                "EHLO mailbox-auth.localdomain".to_string(),
                "AUTH XOAUTH2".into(),
                xoauth2_payload(),
                "MAIL FROM:<alice@example.com>".into(),
                "RSET".into(),
                "QUIT".into()
            ]
        );
    }

    #[tokio::test]
    async fn sends_a_dot_stuffed_test_message() {
        let m = TestMessage {
            to: "desk@example.com".into(),
            subject: "Mailbox Auth test".into(),
            body: "line one\n.dotted line\nend".into(),
        };
        let (r, seen) = plain_session(accepting, Some(m)).await;
        assert!(r.unwrap().detail.contains("queued as 12345"));
        assert!(seen.contains(&"RCPT TO:<desk@example.com>".to_string()), "{seen:?}");
        assert!(seen.contains(&"..dotted line".to_string()), "leading dot doubled: {seen:?}");
        assert!(seen.iter().any(|l| l == "Subject: Mailbox Auth test"), "{seen:?}");
        assert_eq!(seen.iter().filter(|l| *l == ".").count(), 1);
    }

    #[tokio::test]
    async fn disabled_smtp_auth_keeps_the_servers_words() {
        let (r, _) = plain_session(
            |l: &str| match l {
                l if l.starts_with("EHLO") => send("250-mx\r\n250 AUTH XOAUTH2\r\n"),
                l if l.starts_with("AUTH") => send(
                    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.\r\n",
                ),
                _ => send("221 bye\r\n"),
            },
            None,
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), "auth_rejected");
        assert!(e.server_words().unwrap().starts_with("535 5.7.139"), "{e}");
        let d = crate::diagnose::diagnose(e.code(), e.server_words());
        assert!(d.fix.contains("SmtpClientAuthenticationDisabled"), "{d:?}");
    }

    #[tokio::test]
    async fn failure_challenge_is_answered_and_its_json_kept() {
        let (r, seen) = plain_session(
            |l: &str| match l {
                l if l.starts_with("EHLO") => send("250-mx\r\n250 AUTH XOAUTH2\r\n"),
                "AUTH XOAUTH2" => send("334 \r\n"),
                l if l.starts_with("dXNl") => send("334 eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIn0=\r\n"),
                "" => send("535-5.7.8 Username and Password not accepted.\r\n535 5.7.8 Learn more\r\n"),
                _ => send("221 bye\r\n"),
            },
            None,
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(
            e.server_words(),
            Some(
                r#"535 5.7.8 Username and Password not accepted. 5.7.8 Learn more ({"status":"400","schemes":"Bearer"})"#
            )
        );
        assert_eq!(seen[3], "", "an empty line answers the challenge: {seen:?}");
        let printed = format!("{e} {e:?}");
        assert!(!printed.contains(TOKEN) && !printed.contains("dXNlcj1"), "{printed}");
    }

    #[tokio::test]
    async fn unauthenticated_sender_is_refused_at_mail_from() {
        let (r, _) = plain_session(
            |l: &str| match l {
                l if l.starts_with("EHLO") => send("250-mx\r\n250 AUTH XOAUTH2\r\n"),
                "AUTH XOAUTH2" => send("334 \r\n"),
                l if l.starts_with("dXNl") => send("235 ok\r\n"),
                l if l.starts_with("MAIL") => send("530 5.7.57 Client not authenticated to send mail.\r\n"),
                _ => send("221 bye\r\n"),
            },
            None,
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.step(), "mail");
        assert!(crate::diagnose::diagnose(e.code(), e.server_words()).fix.contains("587"));
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff(b"x"), b"x\r\n.\r\n");
    }

    fn scripted_conn(wire: Vec<u8>) -> Conn<tokio::io::Join<std::io::Cursor<Vec<u8>>, tokio::io::Sink>> {
        Conn::new(tokio::io::join(std::io::Cursor::new(wire), tokio::io::sink()))
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    /// Undoes dot-stuffing: the lines before the lone-dot terminator, a leading dot removed.
    fn unstuff(wire: &str) -> Option<Vec<String>> {
        let body = wire.strip_suffix(".\r\n")?;
        let lines: Vec<String> = body
            .split_terminator("\r\n")
            .map(|l| l.strip_prefix('.').map(str::to_string).unwrap_or_else(|| l.to_string()))
            .collect();
        Some(lines)
    }

    #[test]
    fn recipients_are_checked() {
        assert_eq!(check_recipient("desk@example.com"), Ok(()));
        for bad in ["desk@example.com\r\nRCPT TO:<x@example.com>", "a@b\n", "nobody", "a@b>\x00", ""] {
            assert!(check_recipient(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// A multi-line reply ends at its first line without a hyphen after the code.
        #[test]
        fn replies_end_where_they_should(texts in proptest::collection::vec("[ -~]{0,30}", 1..10), code in 200u16..600, after in "[ -~]{0,20}") {
            let mut wire = String::new();
            for (i, text) in texts.iter().enumerate() {
                let sep = if i + 1 == texts.len() { ' ' } else { '-' };
                wire.push_str(&format!("{code}{sep}{text}\r\n"));
            }
            wire.push_str(&format!("{after}\r\n"));
            let t = smtp_target(1, Security::Tls);
            let (reply, next) = block_on(async {
                let mut conn = scripted_conn(wire.into_bytes());
                let reply = conn.reply_lines(&t, Step::Ehlo).await.unwrap();
                (reply, conn.line(&t, Step::Ehlo).await.unwrap())
            });
            proptest::prop_assert_eq!(reply, (code, texts));
            proptest::prop_assert_eq!(next, after);
        }

        /// Any bytes as the server's answers: an error or a result, never a panic or a hang.
        #[test]
        fn any_server_bytes_end_the_session(wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            let t = smtp_target(1, Security::Tls);
            block_on(async {
                let mut conn = scripted_conn(wire);
                if let Ok(ehlo) = conn.ehlo(&t).await {
                    let _ = session(&t, conn, &ehlo, &AccessToken::new(TOKEN.into()), None).await;
                }
            });
        }

        /// Whatever the body, the message ends exactly once, at the end: every line that
        /// starts with a dot is doubled, and unstuffing gives back the lines sent.
        #[test]
        fn dot_stuffing_cannot_forge_the_end(lines in proptest::collection::vec("[.]{0,3}[ -~]{0,10}", 0..12), crlf: bool) {
            let sep = if crlf { "\r\n" } else { "\n" };
            let body = lines.join(sep);
            let wire = String::from_utf8(dot_stuff(body.as_bytes())).unwrap();
            proptest::prop_assert!(wire.ends_with("\r\n.\r\n") || wire == ".\r\n" , "{:?}", wire);
            let all: Vec<&str> = wire.split_terminator("\r\n").collect();
            let (last, rest) = all.split_last().unwrap();
            proptest::prop_assert_eq!(*last, ".");
            proptest::prop_assert!(rest.iter().all(|l| *l != "." && (!l.starts_with('.') || l.starts_with(".."))), "{:?}", wire);
            let mut want: Vec<String> = if lines.is_empty() { vec![String::new()] } else { lines.clone() };
            // A trailing empty line is folded into the terminator's line break.
            if want.len() > 1 && want.last().is_some_and(|l| l.is_empty()) {
                want.pop();
            }
            proptest::prop_assert_eq!(unstuff(&wire), Some(want));
        }
    }
}
