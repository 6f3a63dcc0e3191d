//! The IMAP probe's view of what the server said: [`Recorder`] notes the server's last
//! complete line as async-imap reads it ([`Heard`]), so errors carry the server's own response
//! line rather than async-imap's rendering of it, and caps the line length at [`MAX_LINE`].

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::transcript::Transcribed;
use super::MAX_LINE;

/// The last complete line the server sent, shared between a [`Recorder`] and the probe.
#[derive(Debug, Default, Clone)]
pub(crate) struct Heard(Arc<Mutex<HeardState>>);

#[derive(Debug, Default)]
struct HeardState {
    partial: Vec<u8>,
    line: String,
}

impl Heard {
    fn lock(&self) -> MutexGuard<'_, HeardState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last line, without its line break.
    pub(crate) fn line(&self) -> String {
        self.lock().line.clone()
    }

    /// The last line without a leading `* ` (for greetings).
    pub(crate) fn untagged(&self) -> String {
        let l = self.line();
        l.strip_prefix("* ").map(str::to_string).unwrap_or(l)
    }

    /// Takes in bytes the server sent; fails when a line grows past [`MAX_LINE`].
    fn feed(&self, bytes: &[u8]) -> Result<(), LineTooLong> {
        let mut s = self.lock();
        for &b in bytes {
            if b == b'\n' {
                s.line = String::from_utf8_lossy(&s.partial).trim_end().to_string();
                s.partial.clear();
            } else if s.partial.len() >= MAX_LINE {
                return Err(LineTooLong);
            } else {
                s.partial.push(b);
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}", super::LINE_TOO_LONG)]
pub(crate) struct LineTooLong;

/// A stream that notes the server's lines as they are read (only what the server sends: the
/// client's lines, which carry the token, are not recorded) and caps their length.
pub(crate) struct Recorder<S> {
    inner: Transcribed<S>,
    heard: Heard,
}

impl<S> Recorder<S> {
    pub(crate) fn new(inner: S, heard: &Heard) -> Self {
        Self { inner: Transcribed::new(inner), heard: heard.clone() }
    }

    /// The stream beneath (for the STARTTLS upgrade).
    pub(crate) fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S> std::fmt::Debug for Recorder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if let Err(e) = this.heard.feed(&buf.filled()[before..]) {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heard_keeps_the_last_line_and_caps_it() {
        let h = Heard::default();
        h.feed(b"* OK ready\r\nA1 NO [AUTHENTICATIONFAILED] Auth").unwrap();
        assert_eq!(h.line(), "* OK ready");
        h.feed(b"entication failed.\r\n").unwrap();
        assert_eq!(h.line(), "A1 NO [AUTHENTICATIONFAILED] Authentication failed.");
        assert!(h.feed(&vec![b'x'; MAX_LINE + 1]).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever the server sends, in whatever pieces: no panic, and the kept line is
        /// never longer than the cap.
        #[test]
        fn heard_never_keeps_more_than_a_line(pieces in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..20)) {
            let h = Heard::default();
            for p in &pieces {
                if h.feed(p).is_err() {
                    break;
                }
                proptest::prop_assert!(h.line().len() <= MAX_LINE);
            }
        }
    }
}
