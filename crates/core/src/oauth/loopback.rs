//! The loopback redirect listener of RFC 8252 §7.3.
//!
//! Binds `127.0.0.1:0` (an ephemeral port, loopback only), then waits for exactly one request to
//! `/` whose `state` matches. Everything else keeps the flow waiting: stray requests (favicon,
//! other paths) get a 404, a callback with a wrong or missing `state` gets a 400 and is ignored —
//! it may be a forged redirect from another page (CSRF), and must not end the real sign-in. A
//! matching callback with `error=` ends the flow with the provider's words. Requests are capped
//! at a few KiB, and the whole wait has a timeout.
//!
//! Written by hand rather than with an HTTP server crate: we need one GET request line, with a
//! size cap, on one socket, and a server framework would add far more surface than it saves.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest request head accepted; a callback URL is well under 4 KiB.
const MAX_REQUEST: usize = 8 * 1024;
/// One slow or silent connection must not hold up the listener.
const PER_CONNECTION: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("cannot open the loopback listener on 127.0.0.1: {0}")]
    Bind(std::io::Error),
    #[error("the sign-in was not completed in the browser within {0} seconds")]
    Timeout(u64),
    #[error("the identity provider refused the sign-in: {error}{}", description.as_deref().map(|d| format!(" — {d}")).unwrap_or_default())]
    Provider { error: String, description: Option<String> },
    #[error("the loopback listener failed: {0}")]
    Io(std::io::Error),
}

/// What a request to the listener was.
#[derive(Debug, PartialEq, Eq)]
pub enum Callback {
    /// `/?code=…&state=<matching>`.
    Code(String),
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
pub fn parse_request(head: &str, expected_state: &str) -> Callback {
    let Some(line) = head.lines().next() else { return Callback::Malformed };
    let mut parts = line.split(' ');
    let (Some("GET"), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Callback::Malformed;
    };
    if !version.starts_with("HTTP/1.") {
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
        (Some(code), None) => Callback::Code(code),
        (None, None) => Callback::Stray,
    }
}

/// A bound listener, before the browser is opened.
#[derive(Debug)]
pub struct Loopback {
    listener: TcpListener,
    port: u16,
}

impl Loopback {
    pub async fn bind() -> Result<Self, LoopbackError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(LoopbackError::Bind)?;
        let port = listener.local_addr().map_err(LoopbackError::Bind)?.port();
        Ok(Self { listener, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits for the one matching callback. Returns the authorization code.
    ///
    /// The browser is answered before the caller exchanges the code, so the page says the
    /// sign-in finished in the browser; the app shows the outcome of the exchange itself.
    pub async fn wait(self, expected_state: &str, timeout: Duration) -> Result<String, LoopbackError> {
        let run = async {
            loop {
                let (stream, _) = self.listener.accept().await.map_err(LoopbackError::Io)?;
                match tokio::time::timeout(PER_CONNECTION, handle(stream, expected_state)).await {
                    Ok(Some(result)) => return result,
                    Ok(None) | Err(_) => continue,
                }
            }
        };
        tokio::time::timeout(timeout, run).await.unwrap_or(Err(LoopbackError::Timeout(timeout.as_secs())))
    }
}

/// Serves one connection; `Some` ends the flow.
async fn handle(mut stream: TcpStream, expected_state: &str) -> Option<Result<String, LoopbackError>> {
    let head = read_head(&mut stream).await?;
    let callback = parse_request(&head, expected_state);
    let (status, body, outcome) = match callback {
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
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    outcome
}

async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= MAX_REQUEST {
            break;
        }
    }
    buf.truncate(MAX_REQUEST);
    String::from_utf8(buf).ok()
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

    const S: &str = "st4te";

    #[test]
    fn parses_callbacks() {
        assert_eq!(
            parse_request("GET /?code=abc&state=st4te HTTP/1.1\r\nHost: x\r\n\r\n", S),
            Callback::Code("abc".into())
        );
        assert_eq!(
            parse_request(
                "GET /?error=access_denied&error_description=user%20said%20no&state=st4te HTTP/1.1\r\n\r\n",
                S
            ),
            Callback::Error { error: "access_denied".into(), description: Some("user said no".into()) }
        );
        assert_eq!(parse_request("GET /?code=abc&state=other HTTP/1.1\r\n\r\n", S), Callback::WrongState);
        assert_eq!(parse_request("GET /?code=abc HTTP/1.1\r\n\r\n", S), Callback::WrongState);
        assert_eq!(parse_request("GET /?code=abc&state=st4tex HTTP/1.1\r\n\r\n", S), Callback::WrongState);
        assert_eq!(parse_request("GET /favicon.ico HTTP/1.1\r\n\r\n", S), Callback::Stray);
        assert_eq!(parse_request("GET / HTTP/1.1\r\n\r\n", S), Callback::Stray);
        assert_eq!(parse_request("POST /?code=a&state=st4te HTTP/1.1\r\n\r\n", S), Callback::Malformed);
        assert_eq!(parse_request("garbage", S), Callback::Malformed);
    }

    async fn get(port: u16, target: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn stray_and_forged_requests_keep_the_flow_waiting() {
        let lb = Loopback::bind().await.unwrap();
        let port = lb.port();
        let wait = tokio::spawn(async move { lb.wait(S, Duration::from_secs(10)).await });
        assert!(get(port, "/favicon.ico").await.starts_with("HTTP/1.1 404"));
        assert!(get(port, "/?code=evil&state=forged").await.starts_with("HTTP/1.1 400"));
        let ok = get(port, "/?code=good&state=st4te").await;
        assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("Signed in"), "{ok}");
        assert_eq!(wait.await.unwrap().unwrap(), "good");
    }

    #[tokio::test]
    async fn oversized_request_is_refused_and_flow_continues() {
        let lb = Loopback::bind().await.unwrap();
        let port = lb.port();
        let wait = tokio::spawn(async move { lb.wait(S, Duration::from_secs(10)).await });
        let big = format!("/?code=x&state=st4te&pad={}", "a".repeat(20_000));
        let resp = get(port, &big).await;
        assert!(resp.starts_with("HTTP/1.1 404"), "{}", &resp[..40.min(resp.len())]);
        get(port, "/?error=access_denied&state=st4te").await;
        match wait.await.unwrap() {
            Err(LoopbackError::Provider { error, .. }) => assert_eq!(error, "access_denied"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn times_out() {
        let lb = Loopback::bind().await.unwrap();
        let err = lb.wait(S, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, LoopbackError::Timeout(_)), "{err:?}");
    }
}
