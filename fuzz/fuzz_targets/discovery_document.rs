//! An issuer's OpenID configuration is fetched from the network: whatever it says, only a
//! document naming the configured issuer, with endpoints this app may send tokens to, passes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailbox_auth_core::oauth::discovery::{check, Discovered};

const ISSUER: &str = "https://login.example.com/tenant";

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<Discovered>(data) else { return };
    if let Ok(ok) = check(ISSUER, doc) {
        assert_eq!(ok.issuer.trim_end_matches('/'), ISSUER);
        for url in [Some(&ok.authorization_endpoint), Some(&ok.token_endpoint), ok.device_authorization_endpoint.as_ref()]
            .into_iter()
            .flatten()
        {
            assert!(
                url.starts_with("https://") || url.starts_with("http://127.") || url.starts_with("http://localhost")
                    || url.starts_with("http://[::1]"),
                "an endpoint that is neither https nor loopback passed: {url}"
            );
        }
    }
});
