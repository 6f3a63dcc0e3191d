//! IMAP probe (RFC 9051 / RFC 3501) with async-imap: `AUTHENTICATE XOAUTH2` (or `OAUTHBEARER`,
//! RFC 7628), then `EXAMINE` of the folder — read-only, so probing never changes `\Recent`
//! flags — and `LOGOUT`.
//!
//! With STARTTLS (RFC 2595 / RFC 9051 §6.2.1) the capability list is read first: a server that
//! does not offer STARTTLS is refused before any credential is sent, and the capabilities are
//! read again over TLS (the plaintext list must not be trusted).

use std::sync::{Arc, Mutex};

use async_imap::imap_proto::{Capability, Response};
use async_imap::types::UnsolicitedResponse;
use async_imap::Client;
use oauth2::AccessToken;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{connect, sasl, start_tls, step, ProbeError, ProbeReport, ProbeTarget};
use crate::mailbox::Security;

const PROTO: &str = "IMAP";

pub async fn probe(t: &ProbeTarget, token: &AccessToken) -> Result<ProbeReport, ProbeError> {
    let tcp = connect(t).await?;
    match t.security {
        Security::Tls => {
            let tls = start_tls(t, tcp).await?;
            let mut client = Client::new(tls);
            greeting(t, &mut client).await?;
            login_and_examine(t, client, token).await
        }
        Security::Starttls => {
            let mut client = Client::new(tcp);
            greeting(t, &mut client).await?;
            let caps = capabilities(t, &mut client).await?;
            if !caps.iter().any(|c| c == "STARTTLS") {
                return Err(ProbeError::StarttlsNotOffered { proto: PROTO, addr: t.addr(), command: "STARTTLS" });
            }
            step(t, "STARTTLS", client.run_command_and_check_ok("STARTTLS", None))
                .await?
                .map_err(|e| protocol(t, "STARTTLS", &e))?;
            let tls = start_tls(t, client.into_inner()).await?;
            login_and_examine(t, Client::new(tls), token).await
        }
    }
}

/// Authenticates on an established (TLS) connection, opens the folder read-only, logs out.
pub(crate) async fn login_and_examine<S>(
    t: &ProbeTarget,
    mut client: Client<S>,
    token: &AccessToken,
) -> Result<ProbeReport, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let caps = capabilities(t, &mut client).await?;
    let mechanism = if caps.iter().any(|c| c == "AUTH=XOAUTH2") {
        "XOAUTH2"
    } else if caps.iter().any(|c| c == "AUTH=OAUTHBEARER") {
        "OAUTHBEARER"
    } else {
        return Err(ProbeError::MechanismNotOffered { proto: PROTO, addr: t.addr(), offered: auth_list(&caps) });
    };
    let initial = match mechanism {
        "XOAUTH2" => sasl::xoauth2(&t.sasl_user, token.secret()),
        _ => sasl::oauthbearer(&t.sasl_user, &t.host, t.port, token.secret()),
    };
    let challenge = Arc::new(Mutex::new(None));
    let auth = Bearer { initial: Some(initial), failure: challenge.clone() };
    let mut session = match step(t, "AUTHENTICATE", client.authenticate(mechanism, auth)).await? {
        Ok(s) => s,
        Err((e, _client)) => {
            let mut words = imap_words(&e);
            if let Some(json) = challenge.lock().unwrap_or_else(|p| p.into_inner()).take() {
                words = format!("{words} ({json})");
            }
            return Err(ProbeError::AuthRejected {
                proto: PROTO,
                command: "AUTHENTICATE",
                mechanism,
                addr: t.addr(),
                words,
            });
        }
    };
    let mailbox = match step(t, "EXAMINE", session.examine(&t.folder)).await? {
        Ok(m) => m,
        Err(e @ (async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_))) => {
            return Err(ProbeError::FolderMissing { folder: t.folder.clone(), words: imap_words(&e) })
        }
        Err(e) => return Err(protocol(t, "EXAMINE", &e)),
    };
    // A failed LOGOUT does not undo the proof that the mailbox was read.
    let _ = step(t, "LOGOUT", session.logout()).await;
    Ok(ProbeReport {
        mechanism,
        messages: mailbox.exists,
        detail: format!("{} opened read-only: {} messages", t.folder, mailbox.exists),
    })
}

/// Answers the server's continuations: the initial response first, then an empty line to a
/// failure challenge (whose decoded JSON is kept for the error).
struct Bearer {
    initial: Option<SecretString>,
    failure: Arc<Mutex<Option<String>>>,
}

impl async_imap::Authenticator for Bearer {
    type Response = Vec<u8>;
    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        match self.initial.take() {
            Some(initial) => initial.expose_secret().as_bytes().to_vec(),
            None => {
                let text = String::from_utf8_lossy(challenge).trim().to_string();
                if !text.is_empty() {
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
                }
                Vec::new()
            }
        }
    }
}

async fn greeting<S>(t: &ProbeTarget, client: &mut Client<S>) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let first = step(t, "greeting", client.read_response()).await?;
    match first {
        Ok(Some(r)) => match r.parsed() {
            Response::Data { status: async_imap::imap_proto::Status::Ok, .. } => Ok(()),
            Response::Data { status: async_imap::imap_proto::Status::PreAuth, .. } => Ok(()),
            other => Err(ProbeError::Protocol { proto: PROTO, addr: t.addr(), step: "greeting", words: format!("{other:?}") }),
        },
        Ok(None) => Err(ProbeError::Protocol {
            proto: PROTO,
            addr: t.addr(),
            step: "greeting",
            words: "the server closed the connection without a greeting".into(),
        }),
        Err(e) => Err(ProbeError::Protocol { proto: PROTO, addr: t.addr(), step: "greeting", words: e.to_string() }),
    }
}

/// `CAPABILITY`, as upper-case atoms (`IMAP4REV1`, `STARTTLS`, `AUTH=XOAUTH2`).
async fn capabilities<S>(t: &ProbeTarget, client: &mut Client<S>) -> Result<Vec<String>, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let (tx, rx) = async_channel::unbounded::<UnsolicitedResponse>();
    step(t, "CAPABILITY", client.run_command_and_check_ok("CAPABILITY", Some(tx)))
        .await?
        .map_err(|e| protocol(t, "CAPABILITY", &e))?;
    let mut caps = Vec::new();
    while let Ok(UnsolicitedResponse::Other(r)) = rx.try_recv() {
        if let Response::Capabilities(list) = r.parsed() {
            caps.extend(list.iter().map(|c| match c {
                Capability::Imap4rev1 => "IMAP4REV1".to_string(),
                Capability::Auth(m) => format!("AUTH={}", m.to_ascii_uppercase()),
                Capability::Atom(a) => a.to_ascii_uppercase(),
            }));
        }
    }
    Ok(caps)
}

fn auth_list(caps: &[String]) -> String {
    let list: Vec<&str> = caps.iter().filter_map(|c| c.strip_prefix("AUTH=")).collect();
    if list.is_empty() { "no SASL mechanism".into() } else { list.join(", ") }
}

fn protocol(t: &ProbeTarget, step: &'static str, e: &async_imap::error::Error) -> ProbeError {
    ProbeError::Protocol { proto: PROTO, addr: t.addr(), step, words: imap_words(e) }
}

/// The server's words from an async-imap error, back in IMAP's own form: async-imap reports a
/// `NO` as `code: Some(AuthenticationFailed), info: Some("Authentication failed.")`, which
/// becomes `NO [AUTHENTICATIONFAILED] Authentication failed.`.
pub(crate) fn imap_words(e: &async_imap::error::Error) -> String {
    use async_imap::error::Error as E;
    let (status, text) = match e {
        E::No(s) => ("NO", s.as_str()),
        E::Bad(s) => ("BAD", s.as_str()),
        E::ConnectionLost => return "the server closed the connection".into(),
        other => return other.to_string(),
    };
    // async-imap prints `code: …, info: Some("…")` or `outcome: ResponseOutcome { code: …,
    // information: Some("…") }` depending on the command.
    let info = ["information: Some(\"", "info: Some(\""]
        .iter()
        .find_map(|k| text.split_once(k))
        .and_then(|(_, rest)| rest.rsplit_once("\")"))
        .map(|(i, _)| i.replace("\\\"", "\""))
        .unwrap_or_default();
    let code = text
        .split_once("code: Some(")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(c, _)| c)
        .filter(|c| c.chars().all(|ch| ch.is_ascii_alphanumeric()))
        .map(|c| format!("[{}] ", c.to_ascii_uppercase()))
        .unwrap_or_default();
    format!("{status} {code}{info}").trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Protocol;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    fn target(port: u16, security: Security, folder: &str) -> ProbeTarget {
        ProbeTarget {
            protocol: Protocol::Imap,
            host: "127.0.0.1".into(),
            port,
            security,
            folder: folder.into(),
            sasl_user: "alice@example.com".into(),
            ca_file: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// A scripted IMAP server: answers each client line with the responder's lines and records
    /// what the client sent. The responder sees the client's line and returns the server's reply.
    async fn server(
        greeting: &'static str,
        respond: fn(&str) -> Vec<String>,
    ) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let h = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(greeting.as_bytes()).await.unwrap();
            let mut seen = Vec::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end().to_string();
                let reply = respond(&line);
                seen.push(line);
                for out in reply {
                    if w.write_all(out.as_bytes()).await.is_err() {
                        break;
                    }
                }
            }
            seen
        });
        (port, h)
    }

    fn tag(line: &str) -> &str {
        line.split(' ').next().unwrap_or("")
    }

    #[tokio::test]
    async fn starttls_not_offered_sends_no_credential() {
        let (port, h) = server("* OK ready\r\n", |l| {
            if l.ends_with("CAPABILITY") {
                vec![format!("* CAPABILITY IMAP4rev1 AUTH=XOAUTH2\r\n{} OK done\r\n", tag(l))]
            } else {
                vec![format!("{} BAD unexpected\r\n", tag(l))]
            }
        })
        .await;
        let err = probe(&target(port, Security::Starttls, "INBOX"), &AccessToken::new("tok".into())).await.unwrap_err();
        assert_eq!(err.code(), "starttls_not_offered", "{err}");
        let seen = h.await.unwrap();
        assert!(seen.iter().all(|l| !l.contains("AUTHENTICATE") && !l.contains("tok")), "{seen:?}");
    }

    async fn run_login(respond: fn(&str) -> Vec<String>, folder: &str) -> (Result<ProbeReport, ProbeError>, Vec<String>) {
        let (port, h) = server("* OK ready\r\n", respond).await;
        let t = target(port, Security::Tls, folder);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut client = Client::new(tcp);
        greeting(&t, &mut client).await.unwrap();
        let r = login_and_examine(&t, client, &AccessToken::new("tok-123".into())).await;
        (r, h.await.unwrap())
    }

    fn happy(l: &str) -> Vec<String> {
        let t = tag(l);
        if l.ends_with("CAPABILITY") {
            vec![format!("* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 AUTH=OAUTHBEARER\r\n{t} OK done\r\n")]
        } else if l.ends_with("AUTHENTICATE XOAUTH2") {
            vec!["+ \r\n".into()]
        } else if l.starts_with("dXNl") {
            vec!["A0002 OK Logged in\r\n".into()]
        } else if l.contains("EXAMINE \"INBOX\"") {
            vec![format!("* FLAGS ()\r\n* 3 EXISTS\r\n* 0 RECENT\r\n{t} OK [READ-ONLY] done\r\n")]
        } else if l.contains("EXAMINE") {
            vec![format!("{t} NO Mailbox doesn't exist: Nope\r\n")]
        } else if l.ends_with("LOGOUT") {
            vec![format!("* BYE\r\n{t} OK bye\r\n")]
        } else {
            vec![format!("{t} BAD ?\r\n")]
        }
    }

    #[tokio::test]
    async fn authenticates_and_examines() {
        let (r, seen) = run_login(happy, "INBOX").await;
        let report = r.unwrap();
        assert_eq!((report.mechanism, report.messages), ("XOAUTH2", 3));
        let expected = sasl::base64(&sasl::xoauth2("alice@example.com", "tok-123"));
        assert!(seen.contains(&expected.expose_secret().to_string()), "{seen:?}");
        assert!(seen.iter().any(|l| l.contains("EXAMINE \"INBOX\"")), "{seen:?}");
        assert!(!seen.iter().any(|l| l.contains("SELECT")), "read-only: {seen:?}");
    }

    #[tokio::test]
    async fn missing_folder_keeps_the_servers_words() {
        let (r, _) = run_login(happy, "Nope").await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), "folder_missing");
        assert_eq!(e.server_words(), Some("NO Mailbox doesn't exist: Nope"));
    }

    #[tokio::test]
    async fn failure_challenge_is_answered_with_an_empty_line() {
        fn refuse(l: &str) -> Vec<String> {
            let t = tag(l);
            if l.ends_with("CAPABILITY") {
                vec![format!("* CAPABILITY IMAP4rev1 AUTH=XOAUTH2\r\n{t} OK done\r\n")]
            } else if l.ends_with("AUTHENTICATE XOAUTH2") {
                vec!["+ \r\n".into()]
            } else if l.starts_with("dXNl") {
                // {"status":"401","schemes":"bearer"}
                vec!["+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n".into()]
            } else if l.is_empty() {
                vec!["A0002 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n".into()]
            } else {
                vec![format!("{t} BAD ?\r\n")]
            }
        }
        let (r, seen) = run_login(refuse, "INBOX").await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), "auth_rejected");
        let words = e.server_words().unwrap();
        assert!(words.starts_with("NO [AUTHENTICATIONFAILED] Authentication failed."), "{words}");
        assert!(words.contains(r#""status":"401""#), "{words}");
        assert!(seen.contains(&String::new()), "an empty line answers the challenge: {seen:?}");
        let printed = format!("{e} {e:?}");
        let b64 = sasl::base64(&sasl::xoauth2("alice@example.com", "tok-123"));
        assert!(!printed.contains("tok-123") && !printed.contains(b64.expose_secret()), "{printed}");
    }

    #[tokio::test]
    async fn oauthbearer_when_xoauth2_is_not_offered() {
        fn ob(l: &str) -> Vec<String> {
            let t = tag(l);
            if l.ends_with("CAPABILITY") {
                vec![format!("* CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER\r\n{t} OK done\r\n")]
            } else if l.ends_with("AUTHENTICATE OAUTHBEARER") {
                vec!["+ \r\n".into()]
            } else if l.starts_with("bixh") {
                vec!["A0002 OK Logged in\r\n".into()]
            } else if l.contains("EXAMINE") {
                vec![format!("* 0 EXISTS\r\n{t} OK [READ-ONLY] done\r\n")]
            } else {
                vec![format!("{t} OK\r\n")]
            }
        }
        let (r, _) = run_login(ob, "INBOX").await;
        assert_eq!(r.unwrap().mechanism, "OAUTHBEARER");
    }

    #[tokio::test]
    async fn no_oauth_mechanism_is_named() {
        fn plain(l: &str) -> Vec<String> {
            vec![format!("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{} OK done\r\n", tag(l))]
        }
        let (r, _) = run_login(plain, "INBOX").await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), "mechanism_not_offered");
        assert!(e.to_string().contains("PLAIN"), "{e}");
    }

    #[tokio::test]
    async fn connection_refused_and_timeout() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = probe(&target(port, Security::Tls, "INBOX"), &AccessToken::new("t".into())).await.unwrap_err();
        assert_eq!(e.code(), "connect_refused", "{e}");

        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut t = target(silent.local_addr().unwrap().port(), Security::Starttls, "INBOX");
        t.timeout = Duration::from_millis(300);
        let _keep = tokio::spawn(async move {
            let (_s, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let e = probe(&t, &AccessToken::new("t".into())).await.unwrap_err();
        assert_eq!(e.code(), "timeout", "{e}");
        assert!(e.to_string().contains("greeting"), "{e}");
    }

    #[test]
    fn words_are_rebuilt_from_async_imap_errors() {
        let e = async_imap::error::Error::No(r#"code: Some(AuthenticationFailed), info: Some("Authentication failed.")"#.into());
        assert_eq!(imap_words(&e), "NO [AUTHENTICATIONFAILED] Authentication failed.");
        let e = async_imap::error::Error::No(r#"code: None, info: Some("AUTHENTICATE failed.")"#.into());
        assert_eq!(imap_words(&e), "NO AUTHENTICATE failed.");
        let e = async_imap::error::Error::No(
            r#"outcome: ResponseOutcome { code: None, information: Some("Mailbox doesn't exist: Nope") }"#.into(),
        );
        assert_eq!(imap_words(&e), "NO Mailbox doesn't exist: Nope");
    }
}
