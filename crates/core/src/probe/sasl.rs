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
//!
//! Fields are separated by `^A` (0x01): a user, host or token holding `^A` (or any control
//! character) could add a field of its own, e.g. a second `auth=`. The builders refuse such
//! values ([`SaslError`]); the mailbox validation refuses them earlier, and this is the last
//! line of defence before the wire.

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
    pub fn initial_response(self, user: &str, host: &str, port: u16, token: &str) -> Result<SecretString, SaslError> {
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

/// Why a SASL response cannot be built: a value holds a character that would change its
/// structure. Names the field, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field} {}", CONTROL_PROBLEM)]
pub struct SaslError {
    /// `the sign-in address`, `the host` or `the access token`.
    pub field: &'static str,
}

/// The problem with a value holding a control character, in words.
pub const CONTROL_PROBLEM: &str =
    "contains a control character (such as a line break), which cannot be sent in a sign-in";

/// Whether `value` may go into a SASL response: no control character (C0, DEL, C1), since
/// `^A` separates fields and CR/LF end the protocol line.
pub fn check_field(value: &str) -> Result<(), &'static str> {
    if value.chars().any(char::is_control) {
        Err(CONTROL_PROBLEM)
    } else {
        Ok(())
    }
}

/// The sign-in address, checked as [`check_field`] does.
pub fn check_user(user: &str) -> Result<(), &'static str> {
    check_field(user)
}

fn checked(field: &'static str, value: &str) -> Result<(), SaslError> {
    check_field(value).map_err(|_| SaslError { field })
}

/// The raw XOAUTH2 initial response (not base64).
pub fn xoauth2(user: &str, token: &str) -> Result<SecretString, SaslError> {
    checked("the sign-in address", user)?;
    checked("the access token", token)?;
    Ok(SecretString::from(format!("user={user}\x01auth=Bearer {token}\x01\x01")))
}

/// The raw OAUTHBEARER initial response (not base64), RFC 7628 §3.1.
pub fn oauthbearer(user: &str, host: &str, port: u16, token: &str) -> Result<SecretString, SaslError> {
    checked("the sign-in address", user)?;
    checked("the host", host)?;
    checked("the access token", token)?;
    // RFC 5801 §4 saslname: `=` first, or the `=` of `=2C` would be escaped again.
    let user = user.replace('=', "=3D").replace(',', "=2C");
    Ok(SecretString::from(format!("n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01")))
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

/// The server's final words with the decoded failure challenge in parentheses, the form every
/// probe reports a refused sign-in in: `NO [AUTHENTICATIONFAILED] … ({"status":"401",…})`.
pub fn with_challenge(words: String, challenge: Option<String>) -> String {
    match challenge {
        Some(c) => format!("{words} ({c})"),
        None => words,
    }
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
        let raw = xoauth2("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg").unwrap();
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
            oauthbearer("user@example.com", "server.example.com", 143, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==")
                .unwrap();
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
        let raw = oauthbearer("a,b=c@example.com", "imap.example.com", 993, "tok").unwrap();
        assert_eq!(
            raw.expose_secret(),
            "n,a=a=2Cb=3Dc@example.com,\x01host=imap.example.com\x01port=993\x01auth=Bearer tok\x01\x01"
        );
        let raw = oauthbearer("x=2C@example.com", "h", 1, "t").unwrap();
        assert!(raw.expose_secret().starts_with("n,a=x=3D2C@example.com,\x01"), "escaping is not applied twice");
    }

    #[test]
    fn mechanisms() {
        assert_eq!(Mechanism::pick(["PLAIN", "oauthbearer", "XOAUTH2"]), Some(Mechanism::XOAuth2));
        assert_eq!(Mechanism::pick(["PLAIN", "OAUTHBEARER"]), Some(Mechanism::OAuthBearer));
        assert_eq!(Mechanism::pick(["PLAIN", "LOGIN"]), None);
        let m = Mechanism::OAuthBearer;
        assert_eq!(
            m.initial_response("u", "h", 1, "t").unwrap().expose_secret(),
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
        let raw = xoauth2("u@example.com", "tok-SECRET").unwrap();
        let b = base64(&raw);
        let printed = format!("{raw:?} {b:?}");
        assert!(!printed.contains("SECRET") && !printed.contains(b.expose_secret()), "{printed}");
    }

    #[test]
    fn control_characters_cannot_add_fields() {
        for user in ["a@example.com\x01auth=Bearer forged", "a@example.com\r\n", "a\u{85}@example.com", "a\x7f"] {
            assert_eq!(xoauth2(user, "tok").unwrap_err().field, "the sign-in address", "{user:?}");
            assert_eq!(oauthbearer(user, "h", 1, "tok").unwrap_err().field, "the sign-in address", "{user:?}");
        }
        assert_eq!(xoauth2("u", "tok\x01x").unwrap_err().field, "the access token");
        assert_eq!(oauthbearer("u", "h\x01port=1", 1, "t").unwrap_err().field, "the host");
        let e = xoauth2("u\x01", "secret-token").unwrap_err().to_string();
        assert!(e.starts_with("the sign-in address contains a control character") && !e.contains("secret"), "{e}");
    }

    /// Undoes RFC 5801 §4's saslname escaping.
    fn unescape_saslname(s: &str) -> Option<String> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('=') {
            out.push_str(&rest[..i]);
            out.push(match rest.get(i + 1..i + 3)? {
                "2C" => ',',
                "3D" => '=',
                _ => return None,
            });
            rest = &rest[i + 3..];
        }
        out.push_str(rest);
        Some(out)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever the user and token, XOAUTH2 decodes to exactly its two fields, or is refused.
        #[test]
        fn xoauth2_has_exactly_its_fields(user in "\\PC{0,40}|.{0,40}", token in "[ -~]{0,40}|.{0,20}") {
            let control = |s: &str| s.chars().any(char::is_control);
            match xoauth2(&user, &token) {
                Err(_) => proptest::prop_assert!(control(&user) || control(&token)),
                Ok(raw) => {
                    let decoded = base64::engine::general_purpose::STANDARD.decode(base64(&raw).expose_secret()).unwrap();
                    let text = String::from_utf8(decoded).unwrap();
                    let fields: Vec<&str> = text.split('\x01').collect();
                    let user_field = format!("user={user}");
                    let auth_field = format!("auth=Bearer {token}");
                    proptest::prop_assert_eq!(fields, vec![user_field.as_str(), auth_field.as_str(), "", ""]);
                }
            }
        }

        /// Whatever the user, host and token, OAUTHBEARER has its GS2 header naming exactly the
        /// user and exactly the three key-value pairs, or is refused.
        #[test]
        fn oauthbearer_has_exactly_its_fields(
            user in "\\PC{0,40}|[=,a-z\x01]{0,20}",
            host in "[a-z0-9.-]{1,20}|.{0,10}",
            port: u16,
            token in "[ -~]{0,40}|.{0,20}",
        ) {
            let control = |s: &str| s.chars().any(char::is_control);
            match oauthbearer(&user, &host, port, &token) {
                Err(_) => proptest::prop_assert!(control(&user) || control(&host) || control(&token)),
                Ok(raw) => {
                    let text = raw.expose_secret();
                    let fields: Vec<&str> = text.split('\x01').collect();
                    proptest::prop_assert_eq!(fields.len(), 6, "{:?}", fields);
                    let gs2 = fields[0].strip_prefix("n,a=").and_then(|r| r.strip_suffix(','));
                    proptest::prop_assert!(gs2.is_some_and(|n| !n.contains(',')), "{:?}", fields[0]);
                    proptest::prop_assert_eq!(unescape_saslname(gs2.unwrap()), Some(user.clone()));
                    let host_field = format!("host={host}");
                    let port_field = format!("port={port}");
                    let auth_field = format!("auth=Bearer {token}");
                    proptest::prop_assert_eq!(
                        &fields[1..],
                        &[host_field.as_str(), port_field.as_str(), auth_field.as_str(), "", ""][..]
                    );
                }
            }
        }

        /// Failure challenges from a server: any text, never a panic.
        #[test]
        fn any_failure_challenge_is_handled(c in ".{0,200}") {
            let _ = decode_failure_challenge(&c);
        }
    }
}
