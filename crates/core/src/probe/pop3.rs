//! POP3 probe: RFC 1939 with CAPA (RFC 2449), STLS (RFC 2595) and AUTH (RFC 5034) using
//! XOAUTH2 or OAUTHBEARER, then `STAT` and `QUIT`.
//!
//! Written by hand rather than with the async-pop crate: async-pop cannot do STLS — its client
//! always waits for a greeting when it is created, and a server sends none after the STLS
//! upgrade — and a mailbox on port 110 with STLS must be probed the same way as one on 995.
//! The dialogue needed here is five commands; lines are capped so a hostile server cannot make
//! us buffer without bound.

use oauth2::AccessToken;
use secrecy::ExposeSecret;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::{connect, sasl, start_tls, step, ProbeError, ProbeReport, ProbeTarget};
use crate::mailbox::Security;

const PROTO: &str = "POP3";
/// RFC 2449 allows 512 octets per response line; be generous, but bounded.
const MAX_LINE: u64 = 64 * 1024;

pub async fn probe(t: &ProbeTarget, token: &AccessToken) -> Result<ProbeReport, ProbeError> {
    let tcp = connect(t).await?;
    match t.security {
        Security::Tls => {
            let mut conn = Conn::new(start_tls(t, tcp).await?);
            conn.expect_ok(t, "greeting").await?;
            login_and_stat(t, conn, token).await
        }
        Security::Starttls => {
            let mut conn = Conn::new(tcp);
            conn.expect_ok(t, "greeting").await?;
            let caps = conn.capa(t).await?;
            if !caps.iter().any(|c| c == "STLS") {
                return Err(ProbeError::StarttlsNotOffered { proto: PROTO, addr: t.addr(), command: "STLS" });
            }
            conn.send(t, "STLS").await?;
            conn.expect_ok(t, "STLS").await?;
            let tls = start_tls(t, conn.into_inner()).await?;
            login_and_stat(t, Conn::new(tls), token).await
        }
    }
}

/// Authenticates on an established (TLS) connection, then `STAT` and `QUIT`.
pub(crate) async fn login_and_stat<S: AsyncRead + AsyncWrite + Unpin>(
    t: &ProbeTarget,
    mut conn: Conn<S>,
    token: &AccessToken,
) -> Result<ProbeReport, ProbeError> {
    let caps = conn.capa(t).await?;
    let sasl_line = caps.iter().find(|c| c.starts_with("SASL")).cloned().unwrap_or_default();
    let offered: Vec<&str> = sasl_line.split_whitespace().skip(1).collect();
    let mechanism = if offered.contains(&"XOAUTH2") || caps.is_empty() {
        // A server without CAPA gets XOAUTH2, the mechanism Microsoft and Google use.
        "XOAUTH2"
    } else if offered.contains(&"OAUTHBEARER") {
        "OAUTHBEARER"
    } else {
        let offered = if offered.is_empty() { "no SASL mechanism".to_string() } else { offered.join(", ") };
        return Err(ProbeError::MechanismNotOffered { proto: PROTO, addr: t.addr(), offered });
    };
    let raw = match mechanism {
        "XOAUTH2" => sasl::xoauth2(&t.sasl_user, token.secret()),
        _ => sasl::oauthbearer(&t.sasl_user, &t.host, t.port, token.secret()),
    };
    let rejected = |words: String| ProbeError::AuthRejected { proto: PROTO, command: "AUTH", mechanism, addr: t.addr(), words };

    conn.send(t, &format!("AUTH {mechanism}")).await?;
    let line = conn.line(t, "AUTH").await?;
    if !line.starts_with('+') || line.starts_with("+OK") {
        return Err(rejected(line));
    }
    conn.send(t, sasl::base64(&raw).expose_secret()).await?;
    let line = conn.line(t, "AUTH").await?;
    if line.starts_with("+OK") {
        // signed in
    } else if let Some(challenge) = line.strip_prefix('+') {
        // A failure challenge (base64 JSON): answer with an empty line, then read the -ERR.
        let json = sasl::decode_failure_challenge(challenge);
        conn.send(t, "").await?;
        let fin = conn.line(t, "AUTH").await?;
        return Err(rejected(match json {
            Some(j) => format!("{fin} ({j})"),
            None => fin,
        }));
    } else {
        return Err(rejected(line));
    }

    conn.send(t, "STAT").await?;
    let stat = conn.line(t, "STAT").await?;
    let mut parts = stat.split_whitespace();
    let (Some("+OK"), Some(count), size) = (parts.next(), parts.next().and_then(|n| n.parse::<u32>().ok()), parts.next())
    else {
        return Err(ProbeError::Protocol { proto: PROTO, addr: t.addr(), step: "STAT", words: stat });
    };
    // A failed QUIT does not undo the proof that the maildrop was read.
    if conn.send(t, "QUIT").await.is_ok() {
        let _ = conn.line(t, "QUIT").await;
    }
    Ok(ProbeReport {
        mechanism,
        messages: count,
        detail: format!("maildrop opened: {count} messages ({} octets)", size.unwrap_or("?")),
    })
}

/// A POP3 connection: buffered line reads, bounded, each under the step timeout.
pub(crate) struct Conn<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(crate) fn new(stream: S) -> Self {
        Self { io: BufReader::new(stream) }
    }

    /// The raw stream, for the STLS upgrade. The server sends nothing after `+OK` until the
    /// handshake, so no buffered byte is lost.
    fn into_inner(self) -> S {
        self.io.into_inner()
    }

    async fn send(&mut self, t: &ProbeTarget, line: &str) -> Result<(), ProbeError> {
        let io = self.io.get_mut();
        step(t, "send", async {
            io.write_all(line.as_bytes()).await?;
            io.write_all(b"\r\n").await?;
            io.flush().await
        })
        .await?
        .map_err(|e| ProbeError::Connect { addr: t.addr(), detail: e.to_string() })
    }

    async fn line(&mut self, t: &ProbeTarget, name: &'static str) -> Result<String, ProbeError> {
        let mut buf = Vec::new();
        let n = step(t, name, (&mut self.io).take(MAX_LINE).read_until(b'\n', &mut buf))
            .await?
            .map_err(|e| ProbeError::Connect { addr: t.addr(), detail: e.to_string() })?;
        if n == 0 {
            return Err(ProbeError::Protocol {
                proto: PROTO,
                addr: t.addr(),
                step: name,
                words: "the server closed the connection".into(),
            });
        }
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    }

    async fn expect_ok(&mut self, t: &ProbeTarget, name: &'static str) -> Result<String, ProbeError> {
        let l = self.line(t, name).await?;
        if l.starts_with("+OK") {
            Ok(l)
        } else {
            Err(ProbeError::Protocol { proto: PROTO, addr: t.addr(), step: name, words: l })
        }
    }

    /// `CAPA`, one capability per line; empty when the server does not support CAPA.
    async fn capa(&mut self, t: &ProbeTarget) -> Result<Vec<String>, ProbeError> {
        self.send(t, "CAPA").await?;
        let first = self.line(t, "CAPA").await?;
        if !first.starts_with("+OK") {
            return Ok(Vec::new());
        }
        let mut caps = Vec::new();
        loop {
            let l = self.line(t, "CAPA").await?;
            if l == "." {
                return Ok(caps);
            }
            caps.push(l.to_ascii_uppercase());
            if caps.len() > 1000 {
                return Err(ProbeError::Protocol { proto: PROTO, addr: t.addr(), step: "CAPA", words: "endless capability list".into() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Protocol;
    use std::time::Duration;
    use tokio::net::TcpListener;

    fn target(port: u16, security: Security) -> ProbeTarget {
        ProbeTarget {
            protocol: Protocol::Pop3,
            host: "127.0.0.1".into(),
            port,
            security,
            folder: "INBOX".into(),
            sasl_user: "bob@example.com".into(),
            ca_file: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// A scripted POP3 server; returns what the client sent.
    async fn server(respond: fn(&str) -> Option<&'static str>) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let h = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"+OK POP3 ready\r\n").await.unwrap();
            let mut seen = Vec::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end().to_string();
                let reply = respond(&line);
                seen.push(line);
                match reply {
                    Some(out) => {
                        if w.write_all(out.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                }
            }
            seen
        });
        (port, h)
    }

    async fn plain_login(respond: fn(&str) -> Option<&'static str>) -> (Result<ProbeReport, ProbeError>, Vec<String>) {
        let (port, h) = server(respond).await;
        let t = target(port, Security::Tls);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut conn = Conn::new(tcp);
        conn.expect_ok(&t, "greeting").await.unwrap();
        let r = login_and_stat(&t, conn, &AccessToken::new("tok-456".into())).await;
        (r, h.await.unwrap())
    }

    #[tokio::test]
    async fn stls_not_offered_sends_no_credential() {
        let (port, h) = server(|l| match l {
            "CAPA" => Some("+OK\r\nUSER\r\nSASL XOAUTH2\r\n.\r\n"),
            _ => Some("-ERR no\r\n"),
        })
        .await;
        let err = probe(&target(port, Security::Starttls), &AccessToken::new("tok".into())).await.unwrap_err();
        assert_eq!(err.code(), "starttls_not_offered", "{err}");
        drop(err);
        let seen = h.await.unwrap();
        assert_eq!(seen, vec!["CAPA"], "nothing but CAPA before giving up");
    }

    #[tokio::test]
    async fn auth_xoauth2_then_stat() {
        let (r, seen) = plain_login(|l| match l {
            "CAPA" => Some("+OK\r\nSASL XOAUTH2 OAUTHBEARER\r\n.\r\n"),
            "AUTH XOAUTH2" => Some("+ \r\n"),
            "STAT" => Some("+OK 2 3456\r\n"),
            "QUIT" => Some("+OK bye\r\n"),
            l if l.starts_with("dXNl") => Some("+OK Logged in.\r\n"),
            _ => Some("-ERR ?\r\n"),
        })
        .await;
        let rep = r.unwrap();
        assert_eq!((rep.mechanism, rep.messages), ("XOAUTH2", 2));
        assert!(rep.detail.contains("3456 octets"), "{}", rep.detail);
        let payload = sasl::base64(&sasl::xoauth2("bob@example.com", "tok-456"));
        assert_eq!(seen, vec!["CAPA", "AUTH XOAUTH2", payload.expose_secret(), "STAT", "QUIT"]);
    }

    #[tokio::test]
    async fn failure_challenge_gets_an_empty_line_and_keeps_the_words() {
        let (r, seen) = plain_login(|l| match l {
            "CAPA" => Some("+OK\r\nSASL XOAUTH2\r\n.\r\n"),
            "AUTH XOAUTH2" => Some("+ \r\n"),
            "" => Some("-ERR [AUTH] Authentication failed.\r\n"),
            // {"status":"401","schemes":"bearer"}
            l if l.starts_with("dXNl") => Some("+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n"),
            _ => Some("-ERR ?\r\n"),
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), "auth_rejected");
        assert_eq!(e.server_words(), Some(r#"-ERR [AUTH] Authentication failed. ({"status":"401","schemes":"bearer"})"#));
        assert_eq!(seen.last().map(String::as_str), Some(""), "{seen:?}");
        let printed = format!("{e} {e:?}");
        assert!(!printed.contains("tok-456") && !printed.contains("dXNl"), "{printed}");
    }

    #[tokio::test]
    async fn plain_err_after_auth_command() {
        let (r, _) = plain_login(|l| match l {
            "CAPA" => Some("+OK\r\nSASL XOAUTH2\r\n.\r\n"),
            _ => Some("-ERR Authentication failure: unknown user name or bad password.\r\n"),
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.server_words(), Some("-ERR Authentication failure: unknown user name or bad password."));
    }

    #[tokio::test]
    async fn overlong_line_is_cut_not_buffered() {
        let (r, _) = plain_login(|l| match l {
            "CAPA" => Some("-ERR no capa\r\n"),
            "AUTH XOAUTH2" => Some("+ \r\n"),
            l if l.starts_with("dXNl") => Some("+OK\r\n"),
            "STAT" => Some(Box::leak(format!("+OK {}\r\n", "9".repeat(100_000)).into_boxed_str())),
            _ => Some("+OK\r\n"),
        })
        .await;
        assert_eq!(r.unwrap_err().code(), "protocol");
    }
}
