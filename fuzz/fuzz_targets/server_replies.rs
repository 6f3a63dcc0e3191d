//! Whatever an IMAP, POP3 or SMTP server sends after the TLS handshake: the whole probe
//! dialogue ends without a panic, with a code the catalogue knows, and never reads past the
//! probe's byte budget.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailbox_auth_core::diagnose::known_codes;
use mailbox_auth_core::probe::{replay, Service, BYTE_BUDGET};

fuzz_target!(|input: (u8, &[u8])| {
    let (which, replies) = input;
    let service = [Service::Imap, Service::Pop3, Service::Smtp][usize::from(which % 3)];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (outcome, read) = runtime.block_on(replay(service, replies));
    assert!(read <= BYTE_BUDGET, "{read} bytes read");
    if let Err(e) = outcome {
        assert!(known_codes().any(|c| c == e.code()), "{} is not in the catalogue: {e}", e.code());
    }
});
