//! CSV files come from other people: parsing never panics, every accepted mailbox validates,
//! and every refused row names a line and a field.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailbox_auth_core::import::parse;

fuzz_target!(|text: &str| {
    if let Ok(parsed) = parse(text, None) {
        for row in &parsed.rows {
            match &row.outcome {
                Ok(m) => assert!(m.validate().is_ok(), "an imported mailbox does not validate: {m:?}"),
                Err(errors) => {
                    assert!(!errors.is_empty(), "a refused row without an error: {row:?}");
                    assert!(errors.iter().all(|e| e.line == row.line && e.line > 0), "a row error without its line: {row:?}");
                }
            }
        }
    }
});
