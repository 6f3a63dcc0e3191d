//! The loopback listener's request parser gets whatever a local process sends: it must never
//! panic, and only a request carrying the expected `state` may yield a code.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailbox_auth_core::oauth::loopback::{parse_request, Callback};

fuzz_target!(|head: &[u8]| {
    if let Callback::Code(_) = parse_request(head, "fuzz-state") {
        let text = String::from_utf8_lossy(head);
        assert!(text.contains("state=fuzz-state"), "a code without the expected state: {text:?}");
    }
});
