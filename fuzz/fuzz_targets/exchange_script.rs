//! Values quoted into the Exchange Online PowerShell: PowerShell ends a single-quoted string at
//! ' and at U+2018–U+201B, so every one of them inside a value must come out doubled.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailbox_auth_core::oauth::client_credentials::ps_quote;

const QUOTES: [char; 5] = ['\'', '\u{2018}', '\u{2019}', '\u{201A}', '\u{201B}'];

fuzz_target!(|value: &str| {
    let quoted = ps_quote(value);
    let inner = quoted.strip_prefix('\'').and_then(|q| q.strip_suffix('\'')).expect("single-quoted");
    // Read it back as PowerShell does: a quote character must be followed by another one.
    let mut chars = inner.chars().peekable();
    let mut back = String::new();
    while let Some(c) = chars.next() {
        if QUOTES.contains(&c) {
            let next = chars.next().expect("a lone quote would end the string");
            assert!(QUOTES.contains(&next), "a lone quote would end the string: {quoted:?}");
        }
        back.push(c);
    }
    assert_eq!(back, value);
});
