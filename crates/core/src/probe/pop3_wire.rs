//! The stream async-pop reads and writes in the POP3 probe ([`Wire`]): the probe's rules for a
//! network step, applied below the crate, where they hold whatever the crate does with errors.
//!
//! async-pop 1.1 (see `pop3.rs` for what it does in the probe) reads greedily into a buffer it
//! re-parses from its start, and trusts what it reads. Its weak spots, each with a test in
//! `pop3.rs` against the crate itself, and what this stream does about them:
//! - `async_pop::new` waits for a greeting, and after STLS (RFC 2595 §4) there is none: the
//!   stream hands over [`AFTER_STLS`] first, a synthetic `+OK` that the server never sent and
//!   so is never in the transcript or in an error;
//! - at the end of the stream it reads again and again and never fails: here the end is an
//!   error (`the server closed the connection`);
//! - `new` swallows any failure of its `CAPA`: the first failure is kept ([`Seen::failure`]),
//!   and once failed the stream fails every read and write, so the crate cannot go on over a
//!   broken stream;
//! - its parser of the capability list knows a fixed set of SASL mechanisms and of capability
//!   parameters, and on any other (RFC 2449 §6 allows any) fails on the whole list, leaves its
//!   `CAPA` as the command the next reply is read for, and drops the reply: the stream reads
//!   the server's list itself, with the probe's own CAPA reader (`CapaList` in `pop3.rs`),
//!   keeps it for the probe ([`Seen::capabilities`]) and hands the crate [`CRATE_CAPA`], an
//!   empty list, in its place — the transcript and the server's words keep the server's lines;
//! - after a reply that came in two reads it keeps waiting for as many bytes as that reply had
//!   (a size it asked for and never forgets), so a shorter next reply is never read: the stream
//!   hands the crate each reply whole, one at a time (a capability list of any length is one
//!   short reply, [`CRATE_CAPA`]); a single long line may come in pieces, which the crate reads
//!   without asking for a size;
//! - with `trace` logging on it formats what it read with `str::from_utf8(..).unwrap()`, and
//!   panics on a reply that is not UTF-8: the crate sees bytes above 0x7F as `?` (the
//!   transcript and the server's words keep them);
//! - its buffer grows to 20 MiB for one reply: lines are capped at [`MAX_LINE`] and replies at
//!   [`MAX_REPLY_LINES`] lines (the byte budget, below, bounds the rest, and so the capability
//!   list this stream holds until its dot: a flood of long lines ends as `reply_too_large`, as
//!   before STLS).
//!
//! Each line from the server must arrive within the step timeout of the command before it, as
//! in the hand-written dialogues (`LineConn`); the step is the command the crate writes (`CAPA`,
//! `AUTH`, `STAT`, `QUIT`), so timeouts, the transcript's redaction of the SASL step and the
//! probe's deadline name it. The crate is handed a line at a time and yields to the scheduler
//! between lines, so the probe's deadline can end even a reply that never stops.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::pop3::CapaList;
use super::transcript::Transcribed;
use super::{Step, Watch, LINE_TOO_LONG, MAX_LINE};

/// What the crate reads instead of a greeting after STLS.
pub(crate) const AFTER_STLS: &[u8] = b"+OK\r\n";

/// Lines one reply may have: more capabilities than any server has; past this the list is not
/// a list.
pub(crate) const MAX_REPLY_LINES: usize = 1000;

/// What async-pop reads instead of the server's capability list: the probe reads that list
/// itself ([`Seen::capabilities`]).
pub(crate) const CRATE_CAPA: &[u8] = b"+OK\r\n.\r\n";

/// How the stream failed, and in which step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No line within the step timeout.
    TimedOut(Step),
    /// The server closed the connection.
    Closed(Step),
    /// A line longer than [`MAX_LINE`].
    LineTooLong(Step),
    /// More than [`MAX_REPLY_LINES`] lines after one command.
    EndlessReply(Step),
    /// The connection broke (or the byte budget was spent, which the probe tells apart).
    Broken(Step, io::ErrorKind, String),
}

impl Failure {
    pub(crate) fn step(&self) -> Step {
        match self {
            Failure::TimedOut(s)
            | Failure::Closed(s)
            | Failure::LineTooLong(s)
            | Failure::EndlessReply(s)
            | Failure::Broken(s, ..) => *s,
        }
    }

    fn io(&self) -> io::Error {
        match self {
            Failure::TimedOut(_) => io::Error::new(io::ErrorKind::TimedOut, "no answer within the step timeout"),
            Failure::Closed(_) => io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"),
            Failure::LineTooLong(_) => io::Error::new(io::ErrorKind::InvalidData, LINE_TOO_LONG),
            Failure::EndlessReply(_) => io::Error::new(io::ErrorKind::InvalidData, "an endless reply"),
            Failure::Broken(_, kind, detail) => io::Error::new(*kind, detail.clone()),
        }
    }
}

/// What the server said, as handed to the crate, shared between a [`Wire`] and the probe.
#[derive(Debug, Default, Clone)]
pub(crate) struct Seen(Arc<Mutex<SeenState>>);

#[derive(Debug, Default)]
struct SeenState {
    /// The last complete line, without its line break.
    line: String,
    /// The line being handed over, raw.
    partial: Vec<u8>,
    /// Complete lines since the client last spoke.
    lines: usize,
    /// The server's capability list, as the probe reads it.
    capabilities: Option<Vec<String>>,
    failure: Option<Failure>,
}

impl Seen {
    fn lock(&self) -> MutexGuard<'_, SeenState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server's words for an error: the line the crate was reading (when it stopped
    /// mid-line), or the last complete one.
    pub(crate) fn words(&self) -> String {
        let s = self.lock();
        if s.partial.is_empty() {
            s.line.clone()
        } else {
            String::from_utf8_lossy(&s.partial).trim_end().to_string()
        }
    }

    /// The last complete line.
    pub(crate) fn line(&self) -> String {
        self.lock().line.clone()
    }

    /// Complete lines the server sent since the client's last command.
    pub(crate) fn lines(&self) -> usize {
        self.lock().lines
    }

    /// The capability list the server sent after `+OK` to `CAPA` (read with the probe's
    /// `CapaList`: dot-stuffing undone, upper case), once it has ended; async-pop was handed an
    /// empty list instead.
    pub(crate) fn capabilities(&self) -> Option<Vec<String>> {
        self.lock().capabilities.clone()
    }

    /// The first failure of the stream, if it failed.
    pub(crate) fn failure(&self) -> Option<Failure> {
        self.lock().failure.clone()
    }

    fn fail(&self, f: Failure) -> io::Error {
        let mut s = self.lock();
        s.failure.get_or_insert(f).io()
    }
}

/// The stream beneath async-pop in the POP3 probe (see the module docs); above it the
/// transcript ([`Transcribed`]), the byte budget and TLS.
pub(crate) struct Wire<S> {
    inner: Transcribed<S>,
    /// The synthetic greeting still to hand over.
    greeting: &'static [u8],
    /// Read from the server, not yet handed to the crate (past a line end).
    pending: Vec<u8>,
    /// Bytes of the reply being handed over still to hand.
    handing: usize,
    /// The capability list being read, and how far into `pending` its lines have been read.
    capa: CapaList,
    scanned: usize,
    seen: Seen,
    step: Step,
    client_at_line_start: bool,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> std::fmt::Debug for Wire<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").field("step", &self.step).finish_non_exhaustive()
    }
}

impl<S> Wire<S> {
    /// A stream from its greeting on, each line within `timeout`.
    pub(crate) fn new(inner: S, timeout: Duration, seen: &Seen) -> Self {
        Self {
            inner: Transcribed::new(inner),
            greeting: b"",
            pending: Vec::new(),
            handing: 0,
            capa: CapaList::default(),
            scanned: 0,
            seen: seen.clone(),
            step: Step::Greeting,
            client_at_line_start: true,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// A stream after STLS: the crate reads [`AFTER_STLS`] first.
    pub(crate) fn after_stls(inner: S, timeout: Duration, seen: &Seen) -> Self {
        Self { greeting: AFTER_STLS, ..Self::new(inner, timeout, seen) }
    }

    fn restart_clock(&mut self) {
        let at = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(at);
    }

    fn fail(&mut self, f: Failure) -> Poll<io::Result<()>> {
        Poll::Ready(Err(self.seen.fail(f)))
    }

    /// Takes in bytes the server sent: notes its lines, caps them, and restarts the step clock
    /// at each line end.
    fn note(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let step = self.step;
        let mut lines = 0;
        {
            let mut s = self.seen.lock();
            for &b in bytes {
                if b == b'\n' {
                    let raw = std::mem::take(&mut s.partial);
                    s.line = String::from_utf8_lossy(&raw).trim_end().to_string();
                    s.lines += 1;
                    lines += 1;
                    if s.lines > MAX_REPLY_LINES {
                        return Err(Failure::EndlessReply(step));
                    }
                } else if s.partial.len() >= MAX_LINE {
                    return Err(Failure::LineTooLong(step));
                } else {
                    s.partial.push(b);
                }
            }
        }
        if lines > 0 {
            self.restart_clock();
        }
        Ok(())
    }

    /// Where the reply in `pending` ends, once it is all there: one line, or for a `+OK` to
    /// `CAPA` the lines up to the lone dot (RFC 2449 §5), which are read here with the probe's
    /// CAPA reader and replaced by [`CRATE_CAPA`] (see the module docs).
    fn reply_end(&mut self) -> Result<Option<usize>, Failure> {
        let Some(first) = self.pending.iter().position(|b| *b == b'\n').map(|i| i + 1) else { return Ok(None) };
        if !(self.step == Step::Capability && self.pending.starts_with(b"+OK")) {
            return Ok(Some(first));
        }
        let mut start = self.scanned.max(first);
        while let Some(i) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&self.pending[start..start + i]);
            start += i + 1;
            match self.capa.take(line.trim_end_matches(['\r', '\n'])) {
                Ok(false) => {}
                Ok(true) => {
                    let list = std::mem::take(&mut self.capa).into_vec();
                    self.seen.lock().capabilities = Some(list);
                    self.scanned = 0;
                    self.pending.splice(..start, CRATE_CAPA.iter().copied());
                    return Ok(Some(CRATE_CAPA.len()));
                }
                Err(_) => return Err(Failure::EndlessReply(self.step)),
            }
        }
        self.scanned = start;
        Ok(None)
    }
}

/// The probe step of a command the crate writes (`CAPA`, `AUTH …`, `STAT`, `QUIT`); `None` for
/// the lines of a SASL exchange, which stay in the step of their `AUTH`.
fn step_of(line: &[u8]) -> Option<Step> {
    let word = line.split(|b| *b == b' ' || *b == b'\r').next().unwrap_or_default();
    match word {
        b"CAPA" => Some(Step::Capability),
        b"AUTH" => Some(Step::Authenticate),
        b"STAT" => Some(Step::Stat),
        b"QUIT" => Some(Step::Quit),
        _ => None,
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(f) = this.seen.failure() {
            return Poll::Ready(Err(f.io()));
        }
        if !this.greeting.is_empty() {
            let n = this.greeting.len().min(buf.remaining());
            buf.put_slice(&this.greeting[..n]);
            this.greeting = &this.greeting[n..];
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.handing == 0 {
                this.handing = match this.reply_end() {
                    Ok(Some(end)) => end,
                    Ok(None) => 0,
                    Err(f) => return this.fail(f),
                };
            }
            if this.handing > 0 {
                // The reply, whole if the crate has room for it; the rest of a long line in the
                // next reads (a line's text leaves the crate asking for more, not for a size).
                let n = this.handing.min(buf.remaining());
                let mut chunk: Vec<u8> = this.pending.drain(..n).collect();
                this.handing -= n;
                for b in chunk.iter_mut().filter(|b| !b.is_ascii()) {
                    *b = b'?';
                }
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            let mut own = [0u8; 4096];
            let mut read = ReadBuf::new(&mut own);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => {
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        return this.fail(Failure::TimedOut(this.step));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return this.fail(Failure::Broken(this.step, e.kind(), e.to_string())),
                Poll::Ready(Ok(())) if read.filled().is_empty() => return this.fail(Failure::Closed(this.step)),
                Poll::Ready(Ok(())) => {
                    let got = read.filled().to_vec();
                    if let Err(f) = this.note(&got) {
                        return this.fail(f);
                    }
                    this.pending.extend_from_slice(&got);
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(f) = this.seen.failure() {
            return Poll::Ready(Err(f.io()));
        }
        if this.client_at_line_start && !buf.is_empty() {
            if let Some(step) = step_of(buf) {
                this.step = step;
                Watch::enter(step);
            }
            this.seen.lock().lines = 0;
            this.client_at_line_start = false;
            this.restart_clock();
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if buf[..n].ends_with(b"\n") {
                    this.client_at_line_start = true;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => {
                Poll::Ready(Err(this.seen.fail(Failure::Broken(this.step, e.kind(), e.to_string()))))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(this.seen.fail(Failure::TimedOut(this.step))));
                }
                Poll::Pending
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) => this.fail(Failure::Broken(this.step, e.kind(), e.to_string())),
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => this.fail(Failure::TimedOut(this.step)),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A wire over `bytes` (then the end of the stream), the client's writes discarded.
    fn over(
        bytes: &'static [u8],
        seen: &Seen,
    ) -> Wire<tokio::io::Join<std::io::Cursor<&'static [u8]>, tokio::io::Sink>> {
        Wire::new(tokio::io::join(std::io::Cursor::new(bytes), tokio::io::sink()), Duration::from_secs(2), seen)
    }

    #[tokio::test]
    async fn replies_are_handed_one_at_a_time_and_the_end_is_an_error() {
        let seen = Seen::default();
        let mut w = over(b"+OK a\r\n+OK b\r\n-ERR c", &seen);
        let mut buf = [0u8; 100];
        let n = w.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"+OK a\r\n");
        let n = w.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"+OK b\r\n");
        let e = w.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(seen.failure(), Some(Failure::Closed(Step::Greeting)));
        assert_eq!(seen.words(), "-ERR c", "the line the server did not finish");
        assert!(w.read(&mut buf).await.is_err(), "once failed, always failed");
    }

    #[tokio::test]
    async fn the_crate_sees_ascii_and_the_words_keep_the_text() {
        let seen = Seen::default();
        let mut w = over("-ERR [IN-USE] Müller\r\n".as_bytes(), &seen);
        let mut buf = [0u8; 100];
        let n = w.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"-ERR [IN-USE] M??ller\r\n");
        assert_eq!(seen.line(), "-ERR [IN-USE] Müller");
    }

    #[tokio::test]
    async fn a_long_line_is_handed_in_pieces_and_a_longer_one_refused() {
        static LONG: std::sync::LazyLock<Vec<u8>> =
            std::sync::LazyLock::new(|| [b"+OK ".as_slice(), &[b'x'; 5000], b"\r\n"].concat());
        let seen = Seen::default();
        let mut w = over(LONG.as_slice(), &seen);
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        while !got.ends_with(b"\n") {
            let n = w.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, *LONG);

        static TOO_LONG: std::sync::LazyLock<Vec<u8>> =
            std::sync::LazyLock::new(|| [b"+OK ".as_slice(), &vec![b'x'; MAX_LINE + 1], b"\r\n"].concat());
        let seen = Seen::default();
        let mut w = over(TOO_LONG.as_slice(), &seen);
        assert!(w.read(&mut buf).await.is_err());
        assert_eq!(seen.failure(), Some(Failure::LineTooLong(Step::Greeting)));
    }

    #[tokio::test]
    async fn a_capability_list_is_read_here_and_the_crate_handed_an_empty_one() {
        use tokio::io::AsyncWriteExt;
        let seen = Seen::default();
        let mut w = over(b"+OK hi\r\n+OK\r\nSASL xoauth2 X-FOO\r\n..X-STUFFED\r\n.\r\n+OK 1 2\r\n", &seen);
        let mut buf = [0u8; 100];
        let n = w.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"+OK hi\r\n");
        w.write_all(b"CAPA\r\n").await.unwrap();
        let n = w.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], CRATE_CAPA);
        assert_eq!(seen.capabilities(), Some(vec!["SASL XOAUTH2 X-FOO".to_string(), ".X-STUFFED".into()]));
        w.write_all(b"STAT\r\n").await.unwrap();
        let n = w.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"+OK 1 2\r\n");
    }

    #[test]
    fn steps_are_the_commands_written() {
        assert_eq!(step_of(b"CAPA"), Some(Step::Capability));
        assert_eq!(step_of(b"AUTH XOAUTH2 dXNlcj1h"), Some(Step::Authenticate));
        assert_eq!(step_of(b"STAT"), Some(Step::Stat));
        assert_eq!(step_of(b"QUIT"), Some(Step::Quit));
        // SASL responses stay in the step of their AUTH.
        assert_eq!(step_of(b"dXNlcj1hbGljZQ=="), None);
        assert_eq!(step_of(b"AQ=="), None);
        assert_eq!(step_of(b"\r\n"), None);
    }

    #[tokio::test]
    async fn a_silent_server_times_out_in_the_step_of_its_command() {
        let (client, _server) = tokio::io::duplex(1024);
        let seen = Seen::default();
        let mut w = Wire::new(client, Duration::from_millis(200), &seen);
        let mut buf = [0u8; 16];
        let e = w.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(seen.failure(), Some(Failure::TimedOut(Step::Greeting)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Whatever the server sends: the crate is handed only ASCII, never more than one line
        /// per read, and every byte of what it is handed, in order, up to the first failure.
        #[test]
        fn the_crate_is_handed_ascii_a_line_at_a_time(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            let handed = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
                let seen = Seen::default();
                let mut w = over(bytes, &seen);
                let mut handed = Vec::new();
                let mut buf = [0u8; 2048];
                while let Ok(n) = w.read(&mut buf).await {
                    proptest::prop_assert!(n > 0);
                    proptest::prop_assert!(buf[..n].is_ascii());
                    proptest::prop_assert!(!buf[..n.saturating_sub(1)].contains(&b'\n'), "one line per read");
                    handed.extend_from_slice(&buf[..n]);
                }
                Ok(handed)
            })?;
            let expected: Vec<u8> = bytes[..handed.len()].iter().map(|b| if b.is_ascii() { *b } else { b'?' }).collect();
            proptest::prop_assert_eq!(handed, expected);
        }
    }
}
