//! Extra authorization parameters typed by an admin or imported from a CSV: parsing never
//! panics, and no key or value can carry a separator (which would smuggle in a parameter the
//! admin did not write; the reserved ones are refused by `Mailbox::validate`, fuzzed through
//! `csv_import`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailbox_auth_core::mailbox::parse_auth_params;

fuzz_target!(|text: &str| {
    if let Ok(params) = parse_auth_params(text) {
        for (k, v) in &params {
            for part in [k, v] {
                assert!(!part.contains(|c: char| c == '&' || c.is_whitespace()), "{part:?} from {text:?}");
            }
        }
    }
});
