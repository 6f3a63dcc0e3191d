//! The loopback redirect listener of RFC 8252 §7.3.
//!
//! Binds `127.0.0.1` on an ephemeral port (or the mailbox's fixed `redirect_port`, for providers
//! that match the redirect URI exactly, port included), loopback only. When the redirect URI
//! names `localhost` (Microsoft registers `http://localhost`), the browser may resolve it to
//! `::1` first, so the listener also binds `[::1]` on the same port (RFC 8252 §7.3 and §8.3:
//! `localhost` may resolve to either address).
//!
//! It waits for exactly one request to `/` whose `state` matches. Everything else keeps the flow
//! waiting: stray requests (favicon, other paths) get a 404, a callback with a wrong or missing
//! `state` gets a 400 and is ignored — it may be a forged redirect from another page (CSRF), and
//! must not end the real sign-in. A matching callback with `error=` ends the flow with the
//! provider's words.
//!
//! Robust against what a desktop really sees on its loopback: browsers open speculative
//! connections that never send a request, other programs probe ports. So connections are
//! served concurrently (a task each, at most [`MAX_CONNECTIONS`] at once, the rest wait in the
//! kernel's backlog), each with its own deadline and a request-size cap; an `accept` error is
//! logged and the listener keeps going (with a short pause when the process is out of file
//! descriptors); and the request head is parsed as bytes, so a stray non-UTF-8 header byte does
//! not drop the real callback — only the request target has to be text. The whole wait has a
//! timeout.
//!
//! Written by hand rather than with an HTTP server crate: we need one GET request line, with a
//! size cap, on one or two sockets, and a server framework would add far more surface than it
//! saves.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use oauth2::AuthorizationCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The largest request head accepted; a callback URL is well under 4 KiB.
pub const MAX_REQUEST: usize = 8 * 1024;
/// One slow or silent connection must not hold a slot for long.
pub const PER_CONNECTION: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's accept backlog until a slot frees.
pub const MAX_CONNECTIONS: usize = 32;
/// Pause after an `accept` error such as "too many open files", so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Attempts at finding an ephemeral port free on both 127.0.0.1 and [::1].
const BIND_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("cannot open the loopback listener on 127.0.0.1: {0}")]
    Bind(std::io::Error),
    /// The mailbox's fixed `redirect_port` is in use by another program.
    #[error(
        "cannot listen on {addr}:{port}, the mailbox's redirect_port: {source} (another program is using the port)"
    )]
    PortTaken { addr: &'static str, port: u16, source: std::io::Error },
    #[error(
        "the sign-in was not completed in the browser within {secs} seconds (no redirect came back to {redirect_uri})"
    )]
    Timeout { secs: u64, redirect_uri: String },
    #[error("the identity provider refused the sign-in: {error}{}", description.as_deref().map(|d| format!(" — {d}")).unwrap_or_default())]
    Provider { error: String, description: Option<String> },
    #[error("the loopback listener failed: {0}")]
    Io(std::io::Error),
}

/// What a request to the listener was.
#[derive(Debug, PartialEq, Eq)]
pub enum Callback {
    /// `/?code=…&state=<matching>`. Why oauth2's `AuthorizationCode`: until it is exchanged the
    /// code is as good as a token (with the PKCE verifier), and that type's `Debug` prints no value.
    Code(AuthorizationCode),
    /// `/?error=…&state=<matching>`.
    Error { error: String, description: Option<String> },
    /// A request to `/` with a missing or different state: refused, flow keeps waiting.
    WrongState,
    /// Any other path or a request without code or error: 404, flow keeps waiting.
    Stray,
    /// Not an HTTP GET request line.
    Malformed,
}

/// Parses the request head of one connection.
///
/// Only the request line is read (`GET <target> HTTP/1.x`); header bytes are never decoded, so
/// whatever a browser or proxy puts there (Latin-1 cookies, a stray 0xff) cannot make the real
/// callback unreadable. The target must be ASCII text, as every URL on the wire is.
pub fn parse_request(head: &[u8], expected_state: &str) -> Callback {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head[..line_end].strip_suffix(b"\r").unwrap_or(&head[..line_end]);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(b"GET"), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Callback::Malformed;
    };
    if !version.starts_with(b"HTTP/1.") {
        return Callback::Malformed;
    }
    // Origin-form only (RFC 9112 §3.2.1): a target that does not start with `/` could move the
    // URL's host when glued onto our base below (`@evil/…`).
    let Ok(target) = std::str::from_utf8(target) else { return Callback::Malformed };
    if !target.starts_with('/') || !target.is_ascii() {
        return Callback::Malformed;
    }
    let Ok(url) = url::Url::parse(&format!("http://127.0.0.1{target}")) else { return Callback::Malformed };
    if url.path() != "/" {
        return Callback::Stray;
    }
    let (mut code, mut state, mut error, mut description) = (None, None, None, None);
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "code" => code = Some(v.into_owned()),
            "state" => state = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            _ => {}
        }
    }
    if code.is_none() && error.is_none() {
        return Callback::Stray;
    }
    // Constant-time compare is not needed: the state is single-use and never reused after the
    // flow ends, but compare whole values, never prefixes.
    if state.as_deref() != Some(expected_state) {
        return Callback::WrongState;
    }
    match (code, error) {
        (_, Some(error)) => Callback::Error { error, description },
        (Some(code), None) => Callback::Code(AuthorizationCode::new(code)),
        (None, None) => Callback::Stray,
    }
}

/// A bound listener, before the browser is opened.
#[derive(Debug)]
pub struct Loopback {
    v4: TcpListener,
    /// `[::1]` on the same port, for a `localhost` redirect.
    v6: Option<TcpListener>,
    port: u16,
    redirect_host: String,
}

impl Loopback {
    /// Binds the listener for the redirect `http://{redirect_host}:{port}/`: 127.0.0.1 always,
    /// and `[::1]` on the same port too when `redirect_host` is `localhost`. `port` is the
    /// mailbox's fixed redirect port, or `None` for a free one.
    pub async fn bind(redirect_host: &str, port: Option<u16>) -> Result<Self, LoopbackError> {
        let with_v6 = redirect_host.eq_ignore_ascii_case("localhost");
        let taken = |addr, port, source| LoopbackError::PortTaken { addr, port, source };
        for attempt in 1..=BIND_ATTEMPTS {
            let v4 = match TcpListener::bind((Ipv4Addr::LOCALHOST, port.unwrap_or(0))).await {
                Ok(l) => l,
                Err(e) if port.is_some() && e.kind() == std::io::ErrorKind::AddrInUse => {
                    return Err(taken("127.0.0.1", port.unwrap_or_default(), e))
                }
                Err(e) => return Err(LoopbackError::Bind(e)),
            };
            let bound = v4.local_addr().map_err(LoopbackError::Bind)?.port();
            let mut lb = Self { v4, v6: None, port: bound, redirect_host: redirect_host.to_string() };
            if !with_v6 {
                return Ok(lb);
            }
            match TcpListener::bind((Ipv6Addr::LOCALHOST, bound)).await {
                Ok(v6) => {
                    lb.v6 = Some(v6);
                    return Ok(lb);
                }
                // Another program holds [::1] on this port: a browser resolving `localhost` to
                // ::1 would hand it the callback. For a fixed port say so; otherwise try
                // another free port.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    if let Some(p) = port {
                        return Err(taken("[::1]", p, e));
                    }
                    if attempt == BIND_ATTEMPTS {
                        tracing::warn!(
                            port = bound,
                            "[::1] has no free port matching 127.0.0.1; listening on 127.0.0.1 only"
                        );
                        return Ok(lb);
                    }
                }
                // No IPv6 loopback on this machine: `localhost` then resolves to 127.0.0.1.
                Err(e) => {
                    tracing::debug!(error = %e, "not listening on [::1]");
                    return Ok(lb);
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether `[::1]` is served too.
    pub fn serves_ipv6(&self) -> bool {
        self.v6.is_some()
    }

    /// The redirect URI this listener answers.
    pub fn redirect_uri(&self) -> String {
        format!("http://{}:{}/", self.redirect_host, self.port)
    }

    /// Waits for the one matching callback. Returns the authorization code.
    ///
    /// The browser is answered before the caller exchanges the code, so the page says the
    /// sign-in finished in the browser; the app shows the outcome of the exchange itself.
    /// Connection tasks still running when this returns are aborted (the `JoinSet` is dropped).
    pub async fn wait(self, expected_state: &str, timeout: Duration) -> Result<AuthorizationCode, LoopbackError> {
        let expected: Arc<str> = Arc::from(expected_state);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut conns: JoinSet<Option<Result<AuthorizationCode, LoopbackError>>> = JoinSet::new();
        loop {
            let room = conns.len() < MAX_CONNECTIONS;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(LoopbackError::Timeout { secs: timeout.as_secs(), redirect_uri: self.redirect_uri() });
                }
                Some(done) = conns.join_next(), if !conns.is_empty() => {
                    // `None` (stray, forged, slow, malformed) keeps waiting; a task that
                    // panicked is one lost connection, not a lost sign-in.
                    if let Ok(Some(outcome)) = done {
                        return outcome;
                    }
                }
                accepted = accept(&self.v4), if room => self.serve(accepted, &mut conns, &expected).await,
                accepted = accept_opt(self.v6.as_ref()), if room => self.serve(accepted, &mut conns, &expected).await,
            }
        }
    }

    async fn serve(
        &self,
        accepted: std::io::Result<TcpStream>,
        conns: &mut JoinSet<Option<Result<AuthorizationCode, LoopbackError>>>,
        expected: &Arc<str>,
    ) {
        match accepted {
            Ok(stream) => {
                let expected = expected.clone();
                conns.spawn(async move {
                    tokio::time::timeout(PER_CONNECTION, handle(stream, &expected)).await.ok().flatten()
                });
            }
            // An accept error belongs to one connection (reset before we took it) or to this
            // process (out of file descriptors); neither may end the sign-in. The pause keeps a
            // persistent error from spinning the loop; the connection stays in the backlog.
            Err(e) => {
                tracing::warn!(error = %e, "loopback listener: accept failed; still waiting for the callback");
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::Interrupted
                ) {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

async fn accept(l: &TcpListener) -> std::io::Result<TcpStream> {
    l.accept().await.map(|(s, _)| s)
}

async fn accept_opt(l: Option<&TcpListener>) -> std::io::Result<TcpStream> {
    match l {
        Some(l) => accept(l).await,
        None => std::future::pending().await,
    }
}

/// Serves one connection; `Some` ends the flow.
async fn handle(mut stream: TcpStream, expected_state: &str) -> Option<Result<AuthorizationCode, LoopbackError>> {
    let (status, body, outcome) = match read_head(&mut stream).await? {
        Head::TooLarge => ("431 Request Header Fields Too Large", page("Request too large", "Nothing here."), None),
        Head::Complete(head) => match parse_request(&head, expected_state) {
            Callback::Code(code) => (
                "200 OK",
                page("Signed in", "The sign-in is complete. You can close this tab and return to Mailbox Auth, which is now checking the mailbox."),
                Some(Ok(code)),
            ),
            Callback::Error { error, description } => {
                let text = format!(
                    "The identity provider did not authorise the mailbox: {}{}. Return to Mailbox Auth for what to do next.",
                    error,
                    description.as_deref().map(|d| format!(" — {d}")).unwrap_or_default()
                );
                ("200 OK", page("Sign-in refused", &text), Some(Err(LoopbackError::Provider { error, description })))
            }
            Callback::WrongState => (
                "400 Bad Request",
                page("Not this sign-in", "This response does not belong to the sign-in Mailbox Auth is waiting for, so it was ignored."),
                None,
            ),
            Callback::Stray | Callback::Malformed => ("404 Not Found", page("Not found", "Nothing here."), None),
        },
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // The browser's page is best effort: the code counts even if the tab was closed.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    outcome
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
}

/// Reads up to the blank line that ends the request head, at most [`MAX_REQUEST`] bytes.
/// `None` when the peer closed or failed before sending a whole head.
async fn read_head(stream: &mut TcpStream) -> Option<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            // A client that half-closes after its request line still gets an answer.
            return (!buf.is_empty()).then_some(Head::Complete(buf));
        }
        // Search only the new bytes (and the three before them) for the end of the head.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(Head::Complete(buf));
        }
        if buf.len() > MAX_REQUEST {
            return Some(Head::TooLarge);
        }
    }
}

fn page(title: &str, text: &str) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t} — Mailbox Auth</title></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:36em;margin:4em auto\"><h1>{t}</h1><p>{x}</p></body></html>",
        t = esc(title),
        x = esc(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: &str = "st4te";

    fn p(head: &str) -> Callback {
        parse_request(head.as_bytes(), S)
    }

    #[test]
    fn parses_callbacks() {
        assert_eq!(
            p("GET /?code=abc&state=st4te HTTP/1.1\r\nHost: x\r\n\r\n"),
            Callback::Code(AuthorizationCode::new("abc".into()))
        );
        assert_eq!(
            p("GET /?error=access_denied&error_description=user%20said%20no&state=st4te HTTP/1.1\r\n\r\n"),
            Callback::Error { error: "access_denied".into(), description: Some("user said no".into()) }
        );
        assert_eq!(p("GET /?code=abc&state=other HTTP/1.1\r\n\r\n"), Callback::WrongState);
        assert_eq!(p("GET /?code=abc HTTP/1.1\r\n\r\n"), Callback::WrongState);
        assert_eq!(p("GET /?code=abc&state=st4tex HTTP/1.1\r\n\r\n"), Callback::WrongState);
        assert_eq!(p("GET /favicon.ico HTTP/1.1\r\n\r\n"), Callback::Stray);
        assert_eq!(p("GET / HTTP/1.1\r\n\r\n"), Callback::Stray);
        assert_eq!(p("POST /?code=a&state=st4te HTTP/1.1\r\n\r\n"), Callback::Malformed);
        assert_eq!(p("garbage"), Callback::Malformed);
        // The target must be origin-form: nothing may move the host of the parsed URL.
        assert_eq!(p("GET @evil.example/?code=a&state=st4te HTTP/1.1\r\n\r\n"), Callback::Malformed);
        assert_eq!(p("GET /?code=a&state=st4te HTTP/1.1 extra\r\n\r\n"), Callback::Malformed);
    }

    #[test]
    fn the_received_code_prints_no_value() {
        let c = parse_request(b"GET /?code=c0de-SECRET&state=st4te HTTP/1.1\r\n\r\n", S);
        let Callback::Code(code) = &c else { panic!("{c:?}") };
        assert_eq!(code.secret(), "c0de-SECRET");
        assert!(!format!("{c:?}").contains("c0de-SECRET"), "{c:?}");
    }

    #[test]
    fn header_bytes_are_not_decoded() {
        let head = b"GET /?code=abc&state=st4te HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: caf\xe9=\xff\r\n\r\n";
        assert_eq!(parse_request(head, S), Callback::Code(AuthorizationCode::new("abc".into())));
        // A non-ASCII target is not a URL on the wire.
        assert_eq!(parse_request(b"GET /?code=\xff&state=st4te HTTP/1.1\r\n\r\n", S), Callback::Malformed);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), state in "\\PC{0,20}") {
            let _ = parse_request(&bytes, &state);
        }

        #[test]
        fn a_valid_get_with_the_state_yields_its_code(
            code in "\\PC{1,80}",
            state in "[A-Za-z0-9_-]{1,43}",
            extra in proptest::collection::vec(("[a-z_]{1,10}", "\\PC{0,20}"), 0..4),
            headers in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'), 0..60), 0..5),
        ) {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &extra {
                if !matches!(k.as_str(), "code" | "state" | "error" | "error_description") {
                    q.append_pair(k, v);
                }
            }
            q.append_pair("code", &code).append_pair("state", &state);
            let mut head = format!("GET /?{} HTTP/1.1\r\n", q.finish()).into_bytes();
            for h in &headers {
                head.extend_from_slice(b"X-Any: ");
                head.extend_from_slice(h);
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"\r\n");
            prop_assert_eq!(parse_request(&head, &state), Callback::Code(AuthorizationCode::new(code)));
        }
    }

    async fn send(port: u16, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get(port: u16, target: &str) -> String {
        send(port, format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await
    }

    async fn start(lb: Loopback, secs: u64) -> tokio::task::JoinHandle<Result<AuthorizationCode, LoopbackError>> {
        tokio::spawn(async move { lb.wait(S, Duration::from_secs(secs)).await })
    }

    #[tokio::test]
    async fn stray_and_forged_requests_keep_the_flow_waiting() {
        let lb = Loopback::bind("127.0.0.1", None).await.unwrap();
        let port = lb.port();
        let wait = start(lb, 10).await;
        assert!(get(port, "/favicon.ico").await.starts_with("HTTP/1.1 404"));
        assert!(get(port, "/?code=evil&state=forged").await.starts_with("HTTP/1.1 400"));
        let ok = get(port, "/?code=good&state=st4te").await;
        assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("Signed in"), "{ok}");
        assert_eq!(wait.await.unwrap().unwrap().secret(), "good");
    }

    #[tokio::test]
    async fn oversized_request_is_refused_and_flow_continues() {
        let lb = Loopback::bind("127.0.0.1", None).await.unwrap();
        let port = lb.port();
        let wait = start(lb, 10).await;
        let big = format!("/?code=x&state=st4te&pad={}", "a".repeat(20_000));
        let resp = get(port, &big).await;
        assert!(resp.starts_with("HTTP/1.1 431"), "{}", &resp[..40.min(resp.len())]);
        get(port, "/?error=access_denied&state=st4te").await;
        match wait.await.unwrap() {
            Err(LoopbackError::Provider { error, .. }) => assert_eq!(error, "access_denied"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn times_out_naming_the_redirect_uri() {
        let lb = Loopback::bind("127.0.0.1", None).await.unwrap();
        let port = lb.port();
        let err = lb.wait(S, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, LoopbackError::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains(&format!("http://127.0.0.1:{port}/")), "{err}");
    }

    /// Browsers open speculative connections that never send a request; each used to hold the
    /// listener for its whole 10-second deadline before the real callback was read.
    #[tokio::test]
    async fn idle_connections_do_not_delay_the_callback() {
        let lb = Loopback::bind("127.0.0.1", None).await.unwrap();
        let port = lb.port();
        let wait = start(lb, 120).await;
        let mut idle = Vec::new();
        for _ in 0..5 {
            idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        // Give the listener time to take the idle ones first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let ok = get(port, "/?code=fast&state=st4te").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        let code = tokio::time::timeout(Duration::from_secs(5), wait).await.expect("the code came back in time");
        assert_eq!(code.unwrap().unwrap().secret(), "fast");
        // Generous: the serial listener needed at least 5 × 10 s here.
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        drop(idle);
    }

    #[tokio::test]
    async fn a_non_utf8_header_byte_does_not_drop_the_callback() {
        let lb = Loopback::bind("127.0.0.1", None).await.unwrap();
        let port = lb.port();
        let wait = start(lb, 10).await;
        let resp =
            send(port, b"GET /?code=latin&state=st4te HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: \xff\xfe\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let code = tokio::time::timeout(Duration::from_secs(5), wait).await.expect("no hang");
        assert_eq!(code.unwrap().unwrap().secret(), "latin");
    }

    #[tokio::test]
    async fn localhost_redirects_are_answered_on_ipv6_loopback() {
        let lb = Loopback::bind("localhost", None).await.unwrap();
        let port = lb.port();
        let has_ipv6 = std::net::TcpListener::bind(("::1", 0)).is_ok();
        assert_eq!(lb.serves_ipv6(), has_ipv6, "[::1]:{port} is served wherever the machine has ::1");
        assert_eq!(lb.redirect_uri(), format!("http://localhost:{port}/"));
        let wait = start(lb, 10).await;
        // A forged one on 127.0.0.1 first: both addresses belong to the same sign-in.
        assert!(get(port, "/?code=evil&state=forged").await.starts_with("HTTP/1.1 400"));
        // Without IPv6 loopback, `localhost` resolves to 127.0.0.1 only, which is still served.
        let mut s = TcpStream::connect(if has_ipv6 { ("::1", port) } else { ("127.0.0.1", port) }).await.unwrap();
        s.write_all(b"GET /?code=six&state=st4te HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let code = tokio::time::timeout(Duration::from_secs(5), wait).await.expect("no hang");
        assert_eq!(code.unwrap().unwrap().secret(), "six");
    }

    #[tokio::test]
    async fn a_fixed_port_is_used_and_a_taken_one_is_named() {
        let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = probe.local_addr().unwrap().port();
        let err = Loopback::bind("127.0.0.1", Some(port)).await.unwrap_err();
        assert!(matches!(err, LoopbackError::PortTaken { port: p, .. } if p == port), "{err:?}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}, the mailbox's redirect_port")), "{err}");
        drop(probe);
        let lb = Loopback::bind("localhost", Some(port)).await.unwrap();
        assert_eq!(lb.port(), port);
        let wait = start(lb, 10).await;
        assert!(get(port, "/?code=fixed&state=st4te").await.starts_with("HTTP/1.1 200"));
        assert_eq!(wait.await.unwrap().unwrap().secret(), "fixed");
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_in_the_backlog_and_are_served() {
        let lb = Loopback::bind("127.0.0.1", None).await.unwrap();
        let port = lb.port();
        let wait = start(lb, 60).await;
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 5 {
            idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Closing the idle ones frees their slots; the callback queued behind them is served.
        let cb = tokio::spawn(async move { get(port, "/?code=queued&state=st4te").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(idle);
        assert!(cb.await.unwrap().starts_with("HTTP/1.1 200"));
        let code = tokio::time::timeout(Duration::from_secs(5), wait).await.expect("no hang");
        assert_eq!(code.unwrap().unwrap().secret(), "queued");
    }

    /// When the process runs out of file descriptors, `accept` fails (EMFILE) while the
    /// browser's connection waits in the backlog. That used to end the sign-in with an error;
    /// now the listener pauses and takes the callback once descriptors are free again.
    ///
    /// Runs in a child process (this test binary again), which lowers its own descriptor limit
    /// and uses it up, so no other test shares the shortage.
    #[cfg(target_os = "linux")]
    #[test]
    fn running_out_of_file_descriptors_does_not_end_the_sign_in() {
        use std::io::{BufRead, BufReader, Read, Write};
        const CHILD: &str = "MAILBOX_AUTH_TEST_EMFILE_CHILD";
        if std::env::var_os(CHILD).is_some() {
            return emfile_child();
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "oauth::loopback::tests::running_out_of_file_descriptors_does_not_end_the_sign_in"])
            .args(["--nocapture", "--test-threads", "1"])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut seen = String::new();
        let port: u16 = loop {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "the child ended before it was ready: {seen}");
            if let Some(p) = line.trim().strip_prefix("READY ") {
                break p.parse().unwrap();
            }
            seen.push_str(&line);
        };
        assert!(seen.contains("ACCEPT_FAILED"), "the child really ran out of descriptors: {seen}");
        // The child has no descriptor left: this connection completes in the kernel, but the
        // listener's accept fails until the child frees its descriptors.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"GET /?code=after-emfile&state=st4te HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let status = child.wait().unwrap();
        assert!(rest.contains("CODE after-emfile"), "{rest}");
        assert!(status.success(), "{rest}");
    }

    #[cfg(target_os = "linux")]
    fn emfile_child() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let lb = Loopback::bind("127.0.0.1", None).await.unwrap();
            let port = lb.port();
            // A low soft limit, so using it up is quick.
            let pid = std::process::id().to_string();
            let ok = std::process::Command::new("prlimit")
                .args(["--pid", &pid, "--nofile=64:"])
                .status()
                .expect("prlimit (util-linux) lowers the child's descriptor limit");
            assert!(ok.success());
            // A connection of our own, waiting in the backlog, to prove that accept fails.
            let _probe = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut hog = Vec::new();
            loop {
                match std::fs::File::open("/dev/null") {
                    Ok(f) => hog.push(f),
                    Err(e) if e.raw_os_error() == Some(24) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            match tokio::time::timeout(Duration::from_secs(2), lb.v4.accept()).await {
                Ok(Err(e)) if e.raw_os_error() == Some(24) => println!("ACCEPT_FAILED"),
                other => println!("accept did not fail: {other:?}"),
            }
            // Free the descriptors a second after the browser's connection arrives.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(hog);
            });
            println!("READY {port}");
            match lb.wait(S, Duration::from_secs(20)).await {
                Ok(code) => println!("CODE {}", code.secret()),
                Err(e) => panic!("the sign-in ended: {e}"),
            }
        });
    }
}
