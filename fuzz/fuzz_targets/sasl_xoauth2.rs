//! The SASL builders get the sign-in address from a CSV or the editor and the token from an
//! identity provider: no control character gets into a response, and a response decodes into
//! exactly its intended fields (no input can add an `auth=` or any other field).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailbox_auth_core::probe::sasl::{oauthbearer, xoauth2};
use secrecy::ExposeSecret;

fuzz_target!(|input: (&str, &str, &str, u16)| {
    let (user, host, token, port) = input;
    let control = |s: &str| s.chars().any(char::is_control);
    match xoauth2(user, token) {
        Err(_) => assert!(control(user) || control(token)),
        Ok(raw) => {
            let fields: Vec<&str> = raw.expose_secret().split('\x01').collect();
            assert_eq!(fields, [format!("user={user}").as_str(), &format!("auth=Bearer {token}"), "", ""]);
        }
    }
    match oauthbearer(user, host, port, token) {
        Err(_) => assert!(control(user) || control(host) || control(token)),
        Ok(raw) => {
            let fields: Vec<&str> = raw.expose_secret().split('\x01').collect();
            assert_eq!(fields.len(), 6, "{fields:?}");
            let name = fields[0].strip_prefix("n,a=").and_then(|r| r.strip_suffix(',')).expect("GS2 header");
            assert!(!name.contains(','), "an unescaped comma in the GS2 header: {name:?}");
            assert_eq!(
                &fields[1..],
                [format!("host={host}").as_str(), &format!("port={port}"), &format!("auth=Bearer {token}"), "", ""]
            );
        }
    }
});
