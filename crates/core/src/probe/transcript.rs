//! The transcript of one probe: what the client and the server said, line by line, with the
//! time of each line, and the facts of the TLS session (version, cipher suite, the server's
//! certificate chain). It is what a support escalation needs and what nobody saved before.
//!
//! Recorded below the protocol code by [`Transcribed`], a stream wrapper placed above TLS (so it
//! sees plain text), and by the TLS certificate verifier (so the chain is known even when the
//! handshake fails because of it). Secrets never enter it:
//! - a client line of the SASL exchange (`AUTHENTICATE`/`AUTH`, RFC 4422) keeps its command
//!   and mechanism; its initial response, and every other client line of that step except the
//!   failure acknowledgements (empty, `AQ==`, `*`), become `<redacted, N bytes>`, whatever the
//!   token looks like — by structure, not by value;
//! - then, on every client line, the token, its base64 and the SASL responses are replaced by
//!   value as well (`<redacted, N bytes>`), in case one turned up anywhere else;
//! - server lines are kept verbatim except for the echoed token, which the probe's redaction
//!   replaces with `[token redacted]` (see `Redactor`).
//!
//! The partial client line, which may hold the SASL response while it is being written, lives in
//! a buffer that is wiped when dropped. The transcript is bounded ([`MAX_LINES`] lines of at most
//! [`MAX_TEXT`] characters), like everything else a server can make a probe keep.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use rustls::pki_types::CertificateDer;
use secrecy::zeroize::Zeroizing;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Redactor, Step, Watch};

/// Lines kept per probe; a probe exchanges a few dozen.
pub const MAX_LINES: usize = 400;
/// Characters kept per line; the rest is counted, not kept.
pub const MAX_TEXT: usize = 2000;
/// A client line is held (wiped afterwards) up to this long before it is redacted and cut:
/// long enough for any SASL response, so redaction by value sees it whole.
const MAX_CLIENT_LINE: usize = 64 * 1024;

/// What one probe said and heard. Serialised as it is into support bundles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    /// Every line in order: the client's (secrets redacted), the server's (verbatim but for an
    /// echoed token), and notes of the probe's own (connected, TLS established, upgrade).
    pub lines: Vec<Line>,
    /// The TLS session, when a handshake was attempted.
    pub tls: Option<TlsFacts>,
    /// Lines past [`MAX_LINES`], counted but not kept.
    pub omitted_lines: u64,
}

/// One line of a [`Transcript`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Milliseconds since the probe started.
    pub ms: u64,
    pub from: Side,
    /// Without its line break; cut at [`MAX_TEXT`] characters (`… [N more bytes]`).
    pub text: String,
}

/// Who said a [`Line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The probe (`C:` in a printed transcript).
    Client,
    /// The mail server (`S:`).
    Server,
    /// What happened on the connection itself (`*`): connected, TLS, an upgrade.
    Note,
}

/// The TLS session of a probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFacts {
    /// E.g. `TLSv1.3`; `None` when the handshake did not complete.
    pub version: Option<String>,
    /// E.g. `TLS13_AES_256_GCM_SHA384`; `None` when the handshake did not complete.
    pub cipher: Option<String>,
    /// The certificates the server presented, its own first.
    pub chain: Vec<CertSummary>,
}

/// One certificate of the server's chain, as an admin compares it with what the server should
/// present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertSummary {
    /// E.g. `CN=imap.example.com`.
    pub subject: String,
    pub issuer: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    /// Subject alternative names: `DNS:imap.example.com`, `IP:192.0.2.1`, …
    pub sans: Vec<String>,
    /// SHA-256 of the DER certificate, hex.
    pub sha256: String,
}

impl CertSummary {
    /// The summary of a DER certificate; one that cannot be parsed is named so, with its hash.
    pub fn from_der(der: &[u8]) -> Self {
        use x509_parser::prelude::*;
        let sha256 =
            ring::digest::digest(&ring::digest::SHA256, der).as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let date = |t: ASN1Time| {
            chrono::DateTime::from_timestamp(t.timestamp(), 0)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        match X509Certificate::from_der(der) {
            Ok((_, cert)) => {
                let mut sans = Vec::new();
                if let Ok(Some(ext)) = cert.subject_alternative_name() {
                    for name in &ext.value.general_names {
                        sans.push(match name {
                            GeneralName::DNSName(d) => format!("DNS:{d}"),
                            GeneralName::IPAddress(ip) => match ip.len() {
                                4 => format!(
                                    "IP:{}",
                                    std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                                ),
                                16 => format!(
                                    "IP:{}",
                                    std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                                ),
                                _ => "IP:?".into(),
                            },
                            GeneralName::RFC822Name(m) => format!("email:{m}"),
                            GeneralName::URI(u) => format!("URI:{u}"),
                            other => format!("{other:?}"),
                        });
                    }
                }
                CertSummary {
                    subject: cert.subject().to_string(),
                    issuer: cert.issuer().to_string(),
                    not_before: date(cert.validity().not_before),
                    not_after: date(cert.validity().not_after),
                    sans,
                    sha256,
                }
            }
            Err(e) => CertSummary {
                subject: format!("(a certificate that cannot be read: {e})"),
                issuer: String::new(),
                not_before: String::new(),
                not_after: String::new(),
                sans: Vec::new(),
                sha256,
            },
        }
    }
}

impl Transcript {
    /// The transcript as text, one line each: `   12 ms C: A0001 CAPABILITY`, `S:` for the
    /// server, `*` for notes; then the TLS facts.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            let who = match l.from {
                Side::Client => "C:",
                Side::Server => "S:",
                Side::Note => "* ",
            };
            out.push_str(&format!("{:>6} ms {who} {}\n", l.ms, l.text));
        }
        if self.omitted_lines > 0 {
            out.push_str(&format!("({} more lines not kept)\n", self.omitted_lines));
        }
        if let Some(tls) = &self.tls {
            out.push_str(&format!(
                "TLS: {} {}\n",
                tls.version.as_deref().unwrap_or("(no session)"),
                tls.cipher.as_deref().unwrap_or("")
            ));
            for (i, c) in tls.chain.iter().enumerate() {
                out.push_str(&format!(
                    "certificate {i}: subject {}; issuer {}; valid {} to {}; names {}; sha256 {}\n",
                    c.subject,
                    c.issuer,
                    c.not_before,
                    c.not_after,
                    c.sans.join(", "),
                    c.sha256
                ));
            }
        }
        out
    }

    /// The client's lines, in order (for tests and round-trip counts).
    pub fn client_lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter(|l| l.from == Side::Client).map(|l| l.text.as_str())
    }

    /// Request/response turns: how many times the client spoke and then waited for the server
    /// (a run of client lines followed by a server line counts once). Round trips on the wire,
    /// apart from connecting and the TLS handshake.
    pub fn turns(&self) -> usize {
        let mut turns = 0;
        let mut spoke = false;
        for l in &self.lines {
            match l.from {
                Side::Client => spoke = true,
                Side::Server if spoke => {
                    turns += 1;
                    spoke = false;
                }
                _ => {}
            }
        }
        turns
    }
}

/// `<redacted, N bytes>`: what a secret in a client line reads as.
pub fn redacted(bytes: usize) -> String {
    format!("<redacted, {bytes} bytes>")
}

/// The recording side of one probe's transcript, held by its [`Watch`].
pub(crate) struct Scribe {
    started: Instant,
    redactor: Option<Arc<Redactor>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    transcript: Transcript,
    /// The client line being written: may hold the SASL response, so it is wiped on drop.
    client: Zeroizing<Vec<u8>>,
    client_over: usize,
    server: Vec<u8>,
    server_over: usize,
}

impl std::fmt::Debug for Scribe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scribe").finish_non_exhaustive()
    }
}

impl Default for Scribe {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Scribe {
    pub(crate) fn new(redactor: Option<Arc<Redactor>>) -> Self {
        Self { started: Instant::now(), redactor, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, inner: &mut Inner, from: Side, text: String) {
        let t = &mut inner.transcript;
        if t.lines.len() >= MAX_LINES {
            t.omitted_lines += 1;
            return;
        }
        t.lines.push(Line { ms: self.started.elapsed().as_millis() as u64, from, text });
    }

    /// A note of the probe's own.
    pub(crate) fn note(&self, text: impl Into<String>) {
        let mut inner = self.lock();
        self.push(&mut inner, Side::Note, cut(text.into(), 0));
    }

    /// Bytes the client wrote, during `step`.
    pub(crate) fn client_bytes(&self, bytes: &[u8], step: Step) {
        let mut inner = self.lock();
        for &b in bytes {
            if b == b'\n' {
                let raw = std::mem::take(&mut inner.client);
                let over = std::mem::take(&mut inner.client_over);
                let line = String::from_utf8_lossy(&raw);
                let text = self.client_text(step, line.trim_end_matches(['\r', '\n']));
                drop(line);
                let text = cut(text, over);
                self.push(&mut inner, Side::Client, text);
            } else if inner.client.len() >= MAX_CLIENT_LINE {
                inner.client_over += 1;
            } else {
                inner.client.push(b);
            }
        }
    }

    /// Bytes the server sent.
    pub(crate) fn server_bytes(&self, bytes: &[u8]) {
        let mut inner = self.lock();
        for &b in bytes {
            if b == b'\n' {
                let raw = std::mem::take(&mut inner.server);
                let over = std::mem::take(&mut inner.server_over);
                let text = self.server_text(String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']));
                self.push(&mut inner, Side::Server, cut(text, over));
            } else if inner.server.len() >= MAX_TEXT {
                if b != b'\r' {
                    inner.server_over += 1;
                }
            } else {
                inner.server.push(b);
            }
        }
    }

    fn server_text(&self, line: &str) -> String {
        match &self.redactor {
            Some(r) => r.apply(line),
            None => line.to_string(),
        }
    }

    /// A client line with its secrets redacted: by structure in the SASL step, then by value.
    fn client_text(&self, step: Step, line: &str) -> String {
        let text = if step == Step::Authenticate { redact_sasl_line(line) } else { line.to_string() };
        match &self.redactor {
            Some(r) => r.apply_sized(&text),
            None => text,
        }
    }

    /// Records the TLS facts, merging with what is known (the chain comes from the verifier,
    /// the version and cipher after the handshake).
    pub(crate) fn tls(&self, f: impl FnOnce(&mut TlsFacts)) {
        let mut inner = self.lock();
        f(inner.transcript.tls.get_or_insert_with(TlsFacts::default));
    }

    /// The transcript so far, with any unfinished lines.
    pub(crate) fn take(&self) -> Transcript {
        let mut inner = self.lock();
        if !inner.server.is_empty() {
            let raw = std::mem::take(&mut inner.server);
            let text = self.server_text(&String::from_utf8_lossy(&raw));
            self.push(&mut inner, Side::Server, format!("{} [no line end]", cut(text, 0)));
        }
        if !inner.client.is_empty() {
            // An unfinished client line is never shown: it may be part of a SASL response.
            let n = inner.client.len() + inner.client_over;
            inner.client = Zeroizing::new(Vec::new());
            self.push(&mut inner, Side::Client, format!("{} [no line end]", redacted(n)));
        }
        std::mem::take(&mut inner.transcript)
    }
}

/// Cuts `text` at [`MAX_TEXT`] characters, noting what was left out (plus `over` bytes already
/// dropped).
fn cut(mut text: String, over: usize) -> String {
    let mut left = over;
    if let Some((i, _)) = text.char_indices().nth(MAX_TEXT) {
        left += text.len() - i;
        text.truncate(i);
    }
    if left > 0 {
        text.push_str(&format!("… [{left} more bytes]"));
    }
    text
}

/// A client line of the SASL step: `[tag ]AUTHENTICATE|AUTH <mechanism>` keeps those words and
/// loses its initial response; a failure acknowledgement (empty, `AQ==`, `*` to cancel) stays;
/// any other line is a SASL response and is redacted whole.
pub(crate) fn redact_sasl_line(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let command =
        words.iter().take(2).position(|w| w.eq_ignore_ascii_case("AUTHENTICATE") || w.eq_ignore_ascii_case("AUTH"));
    if let Some(i) = command {
        let keep = (i + 2).min(words.len());
        let head = words[..keep].join(" ");
        return match line.len() - head.len() {
            0 => head,
            rest => format!("{head} {}", redacted(rest - 1)),
        };
    }
    if ["", "*", "AQ=="].contains(&line) {
        return line.to_string();
    }
    redacted(line.len())
}

/// A stream that writes what passes through it into the probe's transcript: placed above TLS,
/// so it sees the plain text. Reads and writes are otherwise untouched.
pub(crate) struct Transcribed<S> {
    inner: S,
    watch: Arc<Watch>,
}

impl<S> Transcribed<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, watch: Watch::current() }
    }

    pub(crate) fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> std::fmt::Debug for Transcribed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcribed").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Transcribed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.watch.scribe.server_bytes(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Transcribed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.watch.scribe.client_bytes(&buf[..n], this.watch.step());
        }
        polled
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Notes the certificates a server presented in the running probe's transcript. Called by the
/// TLS verifier before it judges them, so an untrusted or expired chain is on record too.
pub(crate) fn note_chain(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) {
    Watch::with_current(|w| {
        let chain: Vec<CertSummary> =
            std::iter::once(end_entity).chain(intermediates).map(|c| CertSummary::from_der(c.as_ref())).collect();
        w.scribe.tls(|f| f.chain = chain);
    });
}

#[cfg(test)]
mod tests {
    use super::super::testing::{self, send, Reply, ServerTls};
    use super::super::{probe_traced, sasl, ProbeFailure, ProbeReport, ProbeTarget, Service};
    use super::*;
    use crate::mailbox::Security;
    use base64::Engine;
    use oauth2::AccessToken;
    use secrecy::ExposeSecret;

    /// Every form of `token` a transcript must never hold: the token, its base64 (padded or
    /// not, standard or URL-safe), and the SASL responses of both mechanisms, raw and base64.
    fn forbidden(t: &ProbeTarget, token: &str) -> Vec<String> {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let mut v = vec![
            token.to_string(),
            STANDARD.encode(token),
            STANDARD_NO_PAD.encode(token),
            URL_SAFE_NO_PAD.encode(token),
        ];
        for raw in [
            sasl::xoauth2(&t.sasl_user, token).unwrap(),
            sasl::oauthbearer(&t.sasl_user, &t.host, t.port, token).unwrap(),
        ] {
            v.push(sasl::base64(&raw).expose_secret().trim_end_matches('=').to_string());
            v.push(raw.expose_secret().to_string());
        }
        v
    }

    /// The transcript, as JSON and as text, holds none of the token's forms.
    fn assert_clean(t: &ProbeTarget, token: &str, transcript: &Transcript) {
        let json = serde_json::to_string(transcript).unwrap();
        let text = transcript.render();
        for shown in [&json, &text] {
            for f in forbidden(t, token) {
                assert!(!shown.contains(&f), "{f:?} in {shown}");
            }
            assert!(!shown.contains("auth=Bearer") && !shown.contains("dXNlcj1"), "{shown}");
        }
    }

    /// A whole probe over implicit TLS (the test CA trusted) or a STARTTLS upgrade.
    async fn traced(
        service: Service,
        security: Security,
        greeting: &'static str,
        token: &str,
        respond: impl FnMut(&str) -> Reply + Send + 'static,
    ) -> (Result<ProbeReport, ProbeFailure>, ProbeTarget) {
        let pki = crate::tls::tests::test_pki(&["127.0.0.1", "localhost"], false);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let tls = match security {
            Security::Tls => ServerTls::Implicit(pki.server.clone()),
            Security::Starttls => ServerTls::Upgrade(pki.server.clone()),
        };
        let (port, h) = testing::serve(greeting, tls, respond).await;
        let mut t = testing::target(service, port, security);
        t.ca_file = Some(ca);
        let r = probe_traced(&t, &AccessToken::new(token.into())).await;
        let _ = h.await;
        (r, t)
    }

    fn imap() -> impl FnMut(&str) -> Reply + Send {
        let mut auth_tag = String::new();
        move |l: &str| {
            let tag = l.split(' ').next().unwrap_or("").to_string();
            if l.ends_with(" CAPABILITY") {
                send(format!("* CAPABILITY IMAP4rev1 STARTTLS AUTH=XOAUTH2\r\n{tag} OK done\r\n"))
            } else if l.ends_with(" STARTTLS") {
                Reply::SendThenTls(format!("{tag} OK go\r\n"))
            } else if l.contains(" AUTHENTICATE ") {
                auth_tag = tag;
                send("+ \r\n")
            } else if l.ends_with(" EXAMINE \"INBOX\"") {
                send(format!("* 3 EXISTS\r\n{tag} OK [READ-ONLY] done\r\n"))
            } else if l.ends_with(" LOGOUT") {
                send(format!("* BYE\r\n{tag} OK bye\r\n"))
            } else {
                send(format!("{auth_tag} OK Logged in\r\n"))
            }
        }
    }

    fn pop3(l: &str) -> Reply {
        match l {
            "CAPA" => send("+OK\r\nSTLS\r\nSASL XOAUTH2\r\n.\r\n"),
            "STLS" => Reply::SendThenTls("+OK go\r\n".into()),
            l if l.starts_with("AUTH ") => send("+ \r\n"),
            "STAT" => send("+OK 2 10\r\n"),
            "QUIT" => send("+OK bye\r\n"),
            _ => send("+OK in\r\n"),
        }
    }

    fn smtp(l: &str) -> Reply {
        match l {
            l if l.starts_with("EHLO") => send("250-mx\r\n250-STARTTLS\r\n250 AUTH XOAUTH2\r\n"),
            "STARTTLS" => Reply::SendThenTls("220 go\r\n".into()),
            l if l.starts_with("AUTH ") => send("334 \r\n"),
            l if l.starts_with("MAIL FROM") => send("250 ok\r\n"),
            "RSET" => send("250 reset\r\n"),
            "QUIT" => send("221 bye\r\n"),
            _ => send("235 ok\r\n"),
        }
    }

    #[tokio::test]
    async fn every_probe_records_a_transcript_with_the_tls_facts_and_no_token() {
        const TOKEN: &str = "ya29.transcript-token-0123456789";
        for security in [Security::Tls, Security::Starttls] {
            for (service, greeting) in [
                (Service::Imap, "* OK ready\r\n"),
                (Service::Pop3, "+OK ready\r\n"),
                (Service::Smtp, "220 mx ESMTP\r\n"),
            ] {
                let script: Box<dyn FnMut(&str) -> Reply + Send> = match service {
                    Service::Imap => Box::new(imap()),
                    Service::Pop3 => Box::new(pop3),
                    Service::Smtp => Box::new(smtp),
                };
                let (r, t) = traced(service, security, greeting, TOKEN, script).await;
                let rep = r.unwrap_or_else(|e| panic!("{service} {security:?}: {e}"));
                let tr = &rep.transcript;
                assert_clean(&t, TOKEN, tr);
                let text = tr.render();
                assert!(
                    tr.lines[0].from == Side::Note && tr.lines[0].text.starts_with("connected to 127.0.0.1:"),
                    "{text}"
                );
                let greeting_line = greeting.trim_end();
                assert!(tr.lines.iter().any(|l| l.from == Side::Server && l.text == greeting_line), "{text}");
                // The SASL response is there, as its size only.
                let xoauth2 = sasl::base64(&sasl::xoauth2(&t.sasl_user, TOKEN).unwrap());
                let size = redacted(xoauth2.expose_secret().len());
                assert!(tr.client_lines().any(|l| l.ends_with(&size)), "{service}: {text}");
                assert!(tr.lines.windows(2).all(|w| w[0].ms <= w[1].ms), "times in order: {text}");
                let tls = tr.tls.as_ref().expect("TLS facts");
                assert_eq!(tls.version.as_deref(), Some("TLSv1.3"), "{text}");
                assert!(tls.cipher.as_deref().is_some_and(|c| c.starts_with("TLS13_")), "{text}");
                assert_eq!(tls.chain.len(), 2, "the leaf and the CA the server sent: {text}");
                assert_eq!(tls.chain[0].sans, ["IP:127.0.0.1", "DNS:localhost"], "{text}");
                assert_eq!(tls.chain[0].issuer, "CN=Mailbox Auth test CA");
                assert_eq!(tls.chain[0].sha256.len(), 64);
                assert!(tls.chain[0].not_after.ends_with('Z'), "{:?}", tls.chain[0]);
                if security == Security::Starttls {
                    // The plain-text part is on record too, before the TLS note.
                    let tls_at = tr.lines.iter().position(|l| l.text.starts_with("TLS established")).unwrap();
                    assert!(tr.lines[..tls_at].iter().any(|l| l.from == Side::Client), "{text}");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_failed_probe_keeps_its_transcript_and_the_echoed_token_is_redacted() {
        const TOKEN: &str = "tok-echoed-by-the-server-42";
        let (r, t) = traced(Service::Pop3, Security::Tls, "+OK ready\r\n", TOKEN, |l: &str| match l {
            "CAPA" => send("+OK\r\nSASL XOAUTH2\r\n.\r\n"),
            "AUTH XOAUTH2" => send("+ \r\n"),
            l => send(format!("-ERR you sent {l} with {TOKEN}\r\n")),
        })
        .await;
        let f = r.unwrap_err();
        assert_eq!(f.code(), "auth_rejected");
        assert_clean(&t, TOKEN, &f.transcript);
        let last = f.transcript.lines.last().unwrap();
        assert_eq!(last.from, Side::Server);
        assert_eq!(last.text, "-ERR you sent AUTH XOAUTH2 [token redacted] with [token redacted]");
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_on_record_without_a_session() {
        let pki = crate::tls::tests::test_pki(&["mail.example.com"], false);
        let (port, _h) = testing::serve("* OK\r\n", ServerTls::Implicit(pki.server.clone()), |_| Reply::Close).await;
        let t = testing::target(Service::Imap, port, Security::Tls);
        let f = probe_traced(&t, &AccessToken::new("tok-untrusted".into())).await.unwrap_err();
        assert_eq!(f.code(), "tls_untrusted");
        let tls = f.transcript.tls.as_ref().expect("the chain was seen");
        assert_eq!((tls.version.as_deref(), tls.cipher.as_deref()), (None, None));
        assert_eq!(tls.chain[0].sans, ["DNS:mail.example.com"]);
        assert!(
            f.transcript.lines.iter().any(|l| l.text.starts_with("TLS handshake failed")),
            "{}",
            f.transcript.render()
        );
    }

    #[test]
    fn sasl_lines_keep_the_command_and_lose_the_response() {
        assert_eq!(redact_sasl_line("A0002 AUTHENTICATE XOAUTH2"), "A0002 AUTHENTICATE XOAUTH2");
        assert_eq!(
            redact_sasl_line("A0002 AUTHENTICATE XOAUTH2 dXNlcj1h"),
            "A0002 AUTHENTICATE XOAUTH2 <redacted, 8 bytes>"
        );
        assert_eq!(redact_sasl_line("AUTH OAUTHBEARER bixh"), "AUTH OAUTHBEARER <redacted, 4 bytes>");
        assert_eq!(redact_sasl_line("dXNlcj1hbGljZQ=="), "<redacted, 16 bytes>");
        assert_eq!(redact_sasl_line("x"), "<redacted, 1 bytes>", "whatever the token looks like");
        for ack in ["", "AQ==", "*"] {
            assert_eq!(redact_sasl_line(ack), ack);
        }
    }

    #[test]
    fn lines_are_cut_and_counted() {
        let s = Scribe::default();
        s.server_bytes(format!("{}\r\n", "x".repeat(MAX_TEXT + 10)).as_bytes());
        for _ in 0..MAX_LINES + 5 {
            s.server_bytes(b"* OK\r\n");
        }
        s.server_bytes(b"partial");
        let t = s.take();
        assert_eq!(t.lines.len(), MAX_LINES);
        assert_eq!(t.omitted_lines, 7, "5 extra lines and the partial one");
        assert!(t.lines[0].text.ends_with("… [10 more bytes]"), "{}", &t.lines[0].text[MAX_TEXT..]);
    }

    #[test]
    fn an_unfinished_client_line_is_never_shown() {
        let s = Scribe::default();
        s.client_bytes(b"A1 CAPABILITY\r\ndXNlcj1hbGljZQFhdXRo", Step::Connect);
        let t = s.take();
        assert_eq!(t.client_lines().collect::<Vec<_>>(), ["A1 CAPABILITY", "<redacted, 20 bytes> [no line end]"]);
    }

    #[test]
    fn turns_count_each_wait_for_the_server() {
        let s = Scribe::default();
        s.note("connected");
        s.server_bytes(b"* OK\r\n");
        s.client_bytes(b"A1 LOGIN\r\nA2 NOOP\r\n", Step::Examine);
        s.server_bytes(b"A1 OK\r\nA2 OK\r\n");
        s.client_bytes(b"A3 EXAMINE INBOX\r\n", Step::Examine);
        s.server_bytes(b"A3 OK\r\n");
        // Not waited for: no turn.
        s.client_bytes(b"A4 LOGOUT\r\n", Step::Examine);
        assert_eq!(s.take().turns(), 2);
    }

    #[test]
    fn a_transcript_renders_as_c_and_s_lines() {
        let s = Scribe::default();
        s.server_bytes(b"* OK ready\r\n");
        s.client_bytes(b"A1 CAPABILITY\r\n", Step::Capability);
        let text = s.take().render();
        let lines: Vec<&str> = text.lines().map(|l| l.split_once(" ms ").unwrap().1).collect();
        assert_eq!(lines, ["S: * OK ready", "C: A1 CAPABILITY"]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the token (short or long, any printable characters) and however the client's
        /// bytes are split into writes, no form of it reaches the transcript.
        #[test]
        fn no_token_form_ever_reaches_a_transcript(
            token in "[!-~]{1,60}",
            mech in proptest::sample::select(vec![sasl::Mechanism::XOAuth2, sasl::Mechanism::OAuthBearer]),
            ir in proptest::bool::ANY,
            split in 1usize..50,
        ) {
            let t = testing::target(Service::Imap, 993, Security::Tls);
            let redactor = Arc::new(Redactor::new(&t, &AccessToken::new(token.clone())));
            let s = Scribe::new(Some(redactor));
            let raw = mech.initial_response(&t.sasl_user, &t.host, t.port, &token).unwrap();
            let b64 = sasl::base64(&raw);
            let wire = if ir {
                format!("A0001 AUTHENTICATE {} {}\r\n", mech.name(), b64.expose_secret())
            } else {
                format!("A0001 AUTHENTICATE {}\r\n{}\r\n", mech.name(), b64.expose_secret())
            };
            for chunk in wire.as_bytes().chunks(split) {
                s.client_bytes(chunk, Step::Authenticate);
            }
            s.server_bytes(format!("A0001 NO you sent {} {}\r\n", b64.expose_secret(), token).as_bytes());
            let tr = s.take();
            let client: Vec<&str> = tr.client_lines().collect();
            proptest::prop_assert!(client.iter().all(|l| !l.contains(b64.expose_secret().trim_end_matches('='))));
            proptest::prop_assert!(client.iter().all(|l| l.starts_with("A0001 AUTHENTICATE ") || l.starts_with("<redacted, ")), "{:?}", client);
            let json = serde_json::to_string(&tr).unwrap();
            proptest::prop_assert!(!json.contains(b64.expose_secret().trim_end_matches('=')), "{}", json);
            if token.len() >= 8 {
                proptest::prop_assert!(!json.contains(&token), "{}", json);
            }
        }
    }
}
