//! Log set-up shared by the CLI and the desktop shell: what the user asks for
//! (`MAILBOX_AUTH_LOG`, `RUST_LOG`, in `tracing-subscriber`'s `EnvFilter` syntax), minus what
//! would print the wire.
//!
//! Why a cap at all: some libraries log the bytes they exchange. async-imap logs every line it
//! sends and receives at `trace` (target `async_imap::imap_stream`, through the `log` crate),
//! and the line after `AUTHENTICATE XOAUTH2` is the base64 SASL response, which carries the
//! access token; a server that echoes it sends it back. async-pop does the same (target
//! `async_pop::stream`, `C: AUTH XOAUTH2 <response>`). rustls and the HTTP stack (hyper,
//! reqwest, whose verbose connection logging prints the token endpoint's answers) do the same
//! at `trace`. The cap is a second filter that must *also* let an event through, so no user
//! directive — however specific (`async_imap::imap_stream=trace`) — can turn those targets back
//! on. Our own code never logs a token, a SASL response or a line a server sent after
//! authentication starts.

use tracing::Subscriber;
use tracing_subscriber::filter::combinator::And;
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Targets that print wire data at `trace`, and the most they may log. Matched by prefix on
/// the module path (`async_imap` covers `async_imap::imap_stream`).
pub const WIRE_CAPS: &[(&str, LevelFilter)] = &[
    ("async_imap", LevelFilter::DEBUG),
    ("async_pop", LevelFilter::DEBUG),
    ("imap_proto", LevelFilter::DEBUG),
    ("rustls", LevelFilter::DEBUG),
    ("tokio_rustls", LevelFilter::DEBUG),
    ("hyper", LevelFilter::DEBUG),
    ("hyper_util", LevelFilter::DEBUG),
    ("h2", LevelFilter::DEBUG),
    ("reqwest", LevelFilter::DEBUG),
    ("oauth2", LevelFilter::DEBUG),
    ("lettre", LevelFilter::DEBUG),
];

/// The filter for the user's `directives` (empty: `default`), with [`WIRE_CAPS`] applied on
/// top: an event is logged only when both allow it.
pub fn filter<S>(directives: &str, default: &str) -> And<EnvFilter, Targets, S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let directives = if directives.trim().is_empty() { default } else { directives };
    let user = EnvFilter::builder().with_default_directive(LevelFilter::WARN.into()).parse_lossy(directives);
    let caps = Targets::new().with_default(LevelFilter::TRACE).with_targets(WIRE_CAPS.iter().copied());
    FilterExt::and(user, caps)
}

/// Installs the stderr logger with the directives from the environment variable `env_var`
/// (`default` when it is unset or empty), through [`filter`]. Does nothing if a logger is
/// already installed.
pub fn init(env_var: &str, default: &str) {
    let directives = std::env::var(env_var).unwrap_or_default();
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter(&directives, default)))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer, to read back what was logged.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged_with(directives: &str) -> String {
        let out = Captured::default();
        let w = out.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || w.clone())
                .with_ansi(false)
                .with_filter(filter(directives, "warn")),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "async_imap::imap_stream", "encode: dXNlcj1hbGljZQFhdXRoPUJlYXJlciBTRUNSRVQBAQ==");
            tracing::debug!(target: "async_imap::imap_stream", "debug line");
            tracing::trace!(target: "async_pop::stream", "C: AUTH XOAUTH2 dXNlcj1ib2IBYXV0aD1CZWFyZXIgU0VDUkVUAQE=");
            tracing::trace!(target: "reqwest::connect::verbose", "read: refresh_token=SECRET");
            tracing::trace!(target: "mailbox_auth_core::probe", "own trace line");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn no_directive_turns_wire_logging_back_on() {
        for d in [
            "trace",
            "async_imap=trace,mailbox_auth_core=trace",
            "async_imap::imap_stream=trace,trace",
            "trace,reqwest::connect::verbose=trace",
            "async_pop=trace,async_pop::stream=trace,trace",
        ] {
            let text = logged_with(d);
            assert!(!text.contains("SECRET") && !text.contains("dXNlcj1"), "{d}: {text}");
            assert!(text.contains("own trace line"), "{d}: the rest still logs: {text}");
        }
        assert!(logged_with("async_imap=debug").contains("debug line"), "below the cap still logs");
        assert!(!logged_with("").contains("own trace line"), "the default is warn");
    }
}
