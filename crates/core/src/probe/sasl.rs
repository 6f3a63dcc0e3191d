//! SASL (RFC 4422) client responses for bearer tokens.
//!
//! - XOAUTH2 (Google's and Microsoft's mechanism, documented by both):
//!   `user=<user>^Aauth=Bearer <token>^A^A`, base64-encoded on the wire. On failure the server
//!   sends a base64 JSON challenge (`{"status":"401","schemes":"bearer",…}`), which the client
//!   answers with an empty response; the server then sends its final failure.
//! - OAUTHBEARER (RFC 7628 §3.1): GS2 header `n,a=<user>,` then
//!   `^Ahost=<h>^Aport=<p>^Aauth=Bearer <token>^A^A`, with `,` and `=` in the user escaped as
//!   `=2C` and `=3D` (RFC 5801 §4). Its failure challenge is answered with a single `^A`
//!   (RFC 7628 §3.2.3).
//!
//! The responses carry the access token, so they are built as [`SecretString`] (whose `Debug`
//! is redacted) and exposed only where the wire bytes are written.

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

/// A bearer-token SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    XOAuth2,
    OAuthBearer,
}

impl Mechanism {
    /// The mechanism's registered name, as sent in `AUTHENTICATE` / `AUTH`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The preferred mechanism among those a server offers (names compared case-insensitively):
    /// XOAUTH2, which Microsoft and Google both accept, then OAUTHBEARER.
    pub fn pick<'a>(offered: impl IntoIterator<Item = &'a str> + Clone) -> Option<Mechanism> {
        [Mechanism::XOAuth2, Mechanism::OAuthBearer]
            .into_iter()
            .find(|m| offered.clone().into_iter().any(|o| o.eq_ignore_ascii_case(m.name())))
    }

    /// The raw initial response (not base64) for `user` on `host:port`.
    pub fn initial_response(self, user: &str, host: &str, port: u16, token: &str) -> SecretString {
        match self {
            Mechanism::XOAuth2 => xoauth2(user, token),
            Mechanism::OAuthBearer => oauthbearer(user, host, port, token),
        }
    }

    /// The raw (not base64) answer to a failure challenge: empty for XOAUTH2, `^A` for
    /// OAUTHBEARER (RFC 7628 §3.2.3).
    pub fn failure_ack(self) -> &'static [u8] {
        match self {
            Mechanism::XOAuth2 => b"",
            Mechanism::OAuthBearer => b"\x01",
        }
    }
}

/// The raw XOAUTH2 initial response (not base64).
pub fn xoauth2(user: &str, token: &str) -> SecretString {
    SecretString::from(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// The raw OAUTHBEARER initial response (not base64), RFC 7628 §3.1.
pub fn oauthbearer(user: &str, host: &str, port: u16, token: &str) -> SecretString {
    // RFC 5801 §4 saslname: `=` first, or the `=` of `=2C` would be escaped again.
    let user = user.replace('=', "=3D").replace(',', "=2C");
    SecretString::from(format!("n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"))
}

/// Base64 of a SASL response, still secret.
pub fn base64(raw: &SecretString) -> SecretString {
    SecretString::from(base64::engine::general_purpose::STANDARD.encode(raw.expose_secret()))
}

/// Base64 of raw bytes (for the non-secret failure acknowledgement).
pub fn base64_bytes(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Decodes a server's failure challenge (base64 JSON such as
/// `{"status":"401","schemes":"bearer","scope":"…"}`) into text, if it is one.
pub fn decode_failure_challenge(challenge: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(challenge.trim()).ok()?;
    challenge_text(&bytes)
}

/// The text of an already-decoded failure challenge, if it has any.
pub fn challenge_text(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_known_answer() {
        let raw = xoauth2("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg");
        assert_eq!(
            raw.expose_secret(),
            "user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"
        );
        // Computed independently: python3 -c 'import base64;print(base64.b64encode(b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01").decode())'
        assert_eq!(
            base64(&raw).expose_secret(),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    }

    #[test]
    fn oauthbearer_known_answer_from_rfc_7628() {
        // RFC 7628 §4.1, the example's initial client response (checked again with python3).
        let raw =
            oauthbearer("user@example.com", "server.example.com", 143, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
        assert_eq!(
            raw.expose_secret(),
            "n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
        );
        assert_eq!(
            base64(&raw).expose_secret(),
            "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
        );
    }

    #[test]
    fn oauthbearer_escapes_the_user() {
        let raw = oauthbearer("a,b=c@example.com", "imap.example.com", 993, "tok");
        assert_eq!(
            raw.expose_secret(),
            "n,a=a=2Cb=3Dc@example.com,\x01host=imap.example.com\x01port=993\x01auth=Bearer tok\x01\x01"
        );
        let raw = oauthbearer("x=2C@example.com", "h", 1, "t");
        assert!(raw.expose_secret().starts_with("n,a=x=3D2C@example.com,\x01"), "escaping is not applied twice");
    }

    #[test]
    fn mechanisms() {
        assert_eq!(Mechanism::pick(["PLAIN", "oauthbearer", "XOAUTH2"]), Some(Mechanism::XOAuth2));
        assert_eq!(Mechanism::pick(["PLAIN", "OAUTHBEARER"]), Some(Mechanism::OAuthBearer));
        assert_eq!(Mechanism::pick(["PLAIN", "LOGIN"]), None);
        let m = Mechanism::OAuthBearer;
        assert_eq!(
            m.initial_response("u", "h", 1, "t").expose_secret(),
            "n,a=u,\x01host=h\x01port=1\x01auth=Bearer t\x01\x01"
        );
        assert_eq!(base64_bytes(m.failure_ack()), "AQ==");
        assert_eq!(base64_bytes(Mechanism::XOAuth2.failure_ack()), "");
    }

    #[test]
    fn decodes_failure_challenge() {
        // base64 of {"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}
        let c = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";
        assert_eq!(
            decode_failure_challenge(c).as_deref(),
            Some(r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#)
        );
        assert_eq!(
            decode_failure_challenge(" eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n").as_deref(),
            Some(r#"{"status":"401","schemes":"bearer"}"#)
        );
        assert_eq!(decode_failure_challenge("not base64!"), None);
        assert_eq!(decode_failure_challenge(""), None);
        assert_eq!(challenge_text(&[0xff, 0xfe]), None);
    }

    #[test]
    fn responses_do_not_print_the_token() {
        let raw = xoauth2("u@example.com", "tok-SECRET");
        let b = base64(&raw);
        let printed = format!("{raw:?} {b:?}");
        assert!(!printed.contains("SECRET") && !printed.contains(b.expose_secret()), "{printed}");
    }
}
