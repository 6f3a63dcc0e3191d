//! SASL initial responses for bearer tokens.
//!
//! - XOAUTH2 (Google's and Microsoft's mechanism): `user=<user>^Aauth=Bearer <token>^A^A`,
//!   base64-encoded on the wire. On failure the server sends a base64 JSON challenge
//!   (`{"status":"401",…}`), which the client answers with an empty line.
//! - OAUTHBEARER (RFC 7628 §3.1): GS2 header `n,a=<user>,` then `^Ahost=<h>^Aport=<p>^Aauth=Bearer
//!   <token>^A^A`, with `,` and `=` in the user escaped as `=2C` and `=3D` (RFC 5801 §4).
//!
//! The strings carry the access token, so they are built as [`SecretString`] and exposed only
//! where the wire bytes are written.

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

/// The raw XOAUTH2 initial response (not base64).
pub fn xoauth2(user: &str, token: &str) -> SecretString {
    SecretString::from(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// The raw OAUTHBEARER initial response (not base64).
pub fn oauthbearer(user: &str, host: &str, port: u16, token: &str) -> SecretString {
    let user = user.replace('=', "=3D").replace(',', "=2C");
    SecretString::from(format!("n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"))
}

/// Base64 of a SASL response, still secret.
pub fn base64(raw: &SecretString) -> SecretString {
    SecretString::from(base64::engine::general_purpose::STANDARD.encode(raw.expose_secret()))
}

/// Decodes a server's failure challenge (base64 JSON such as
/// `{"status":"401","schemes":"bearer","scope":"…"}`) into text, if it is one.
pub fn decode_failure_challenge(challenge: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(challenge.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_known_answer() {
        let raw = xoauth2("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg");
        assert_eq!(raw.expose_secret(), "user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01");
        // Computed independently: python3 -c 'import base64;print(base64.b64encode(b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01").decode())'
        assert_eq!(
            base64(&raw).expose_secret(),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    }

    #[test]
    fn oauthbearer_escapes_the_user() {
        let raw = oauthbearer("a,b=c@example.com", "imap.example.com", 993, "tok");
        assert_eq!(
            raw.expose_secret(),
            "n,a=a=2Cb=3Dc@example.com,\x01host=imap.example.com\x01port=993\x01auth=Bearer tok\x01\x01"
        );
    }

    #[test]
    fn decodes_failure_challenge() {
        // base64 of {"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}
        let c = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";
        assert_eq!(
            decode_failure_challenge(c).as_deref(),
            Some(r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#)
        );
        assert_eq!(decode_failure_challenge("not base64!"), None);
        assert_eq!(decode_failure_challenge(""), None);
    }

    #[test]
    fn responses_do_not_print_the_token() {
        let raw = xoauth2("u@example.com", "tok-SECRET");
        let b = base64(&raw);
        let printed = format!("{raw:?} {b:?}");
        assert!(!printed.contains("SECRET") && !printed.contains(b.expose_secret()), "{printed}");
    }
}
