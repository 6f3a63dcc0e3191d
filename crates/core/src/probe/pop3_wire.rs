//! The stream async-pop reads and writes in the POP3 probe ([`Wire`]): the probe's rules for a
//! network step, applied below the crate, where they hold whatever the crate does with errors.
//!
//! async-pop 1.1 (see `pop3.rs` for what it does in the probe) reads greedily into a buffer it
//! re-parses from its start, and trusts what it reads. Its weak spots, each with a test in
//! `pop3.rs` against the crate itself, and what this stream does about them:
//! - `async_pop::new` waits for a greeting, and after STLS (RFC 2595 §4) there is none: the
//!   stream hands over [`AFTER_STLS`] first, a synthetic `+OK` that is never sent by the server
//!   and so is never in the transcript or in an error;
//! - at the end of the stream it polls again and again without ever failing: here the end is an
//!   error (`the server closed the connection`);
//! - `new` swallows any failure of its `CAPA`: the first failure is kept ([`Seen::failure`]),
//!   and once failed the stream fails every read and write, so the crate cannot go on on a
//!   broken stream;
//! - its buffer panics when more than 2 KiB follow a reply in one read: the stream hands the
//!   crate at most one line per read, so nothing ever follows a reply;
//! - with `trace` logging on, it formats what it read with `from_utf8(..).unwrap()`: the crate
//!   sees bytes above 0x7F as `?` (the transcript and the server's words keep them);
//! - its buffer grows to 20 MiB for one reply: lines are capped at [`MAX_LINE`] and replies at
//!   [`MAX_REPLY_LINES`] lines (the byte budget, below, bounds the rest).
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

use super::transcript::Transcribed;
use super::{Step, Watch, LINE_TOO_LONG, MAX_LINE};

/// What the crate reads instead of a greeting after STLS.
pub(crate) const AFTER_STLS: &[u8] = b"+OK\r\n";

/// Lines one reply may have: more capabilities than any server has; past this the list is not
/// a list.
pub(crate) const MAX_REPLY_LINES: usize = 1000;

/// What async-pop reads at most at once at the start of a reply (its buffer's first chunk).
pub(crate) const CRATE_READ: usize = 2048;

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
    /// A capability list longer than async-pop takes in one read ([`CRATE_READ`]).
    ReplyTooLong(Step),
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
            | Failure::ReplyTooLong(s)
            | Failure::Broken(s, ..) => *s,
        }
    }

    fn io(&self) -> io::Error {
        match self {
            Failure::TimedOut(_) => io::Error::new(io::ErrorKind::TimedOut, "no answer within the step timeout"),
            Failure::Closed(_) => io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"),
            Failure::LineTooLong(_) => io::Error::new(io::ErrorKind::InvalidData, LINE_TOO_LONG),
            Failure::EndlessReply(_) => io::Error::new(io::ErrorKind::InvalidData, "an endless reply"),
            Failure::ReplyTooLong(_) => io::Error::new(io::ErrorKind::InvalidData, "a reply too long for async-pop"),
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
    /// `CAPA` the lines up to the lone dot (RFC 2449 §5). A capability list longer than the
    /// crate's first read ([`CRATE_READ`]) is refused: async-pop would take it in two reads
    /// and then wait for bytes that never come.
    fn reply_end(&self) -> Result<Option<usize>, Failure> {
        let p = &self.pending;
        let Some(first) = p.iter().position(|b| *b == b'\n').map(|i| i + 1) else { return Ok(None) };
        if !(self.step == Step::Capability && p.starts_with(b"+OK")) {
            return Ok(Some(first));
        }
        let mut start = first;
        while let Some(i) = p[start..].iter().position(|b| *b == b'\n') {
            let line = &p[start..start + i];
            start += i + 1;
            if line == b"." || line == b".\r" {
                return if start > CRATE_READ { Err(Failure::ReplyTooLong(self.step)) } else { Ok(Some(start)) };
            }
        }
        if p.len() > CRATE_READ {
            return Err(Failure::ReplyTooLong(self.step));
        }
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
