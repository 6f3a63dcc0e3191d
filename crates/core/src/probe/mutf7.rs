//! Modified UTF-7 folder names (RFC 3501 §5.1.3, kept by RFC 9051 for servers without
//! UTF8=ACCEPT), as the IMAP probe sends them in `EXAMINE`.
//!
//! Hand-written: a few dozen lines, and the crates that do it (utf7-imap) encode an ASCII name
//! containing `&` differently from how servers list folders.

use base64::Engine;

/// A folder name as IMAP wants it: modified UTF-7 (RFC 3501 §5.1.3) for non-ASCII names
/// (`Entwürfe` → `Entw&APw-rfe`). An ASCII name is taken as already encoded — that is how
/// servers list folders — except that a `&` not starting a valid shift sequence is escaped
/// as `&-` (`R&D` → `R&-D`).
pub(crate) fn mutf7(name: &str) -> String {
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == ',';
    if name.is_ascii() {
        let mut out = String::with_capacity(name.len());
        for (i, c) in name.char_indices() {
            out.push(c);
            if c == '&' {
                let rest = &name[i + 1..];
                // A shift sequence only if it ends in `-` and decodes to UTF-16 (`&0-` does not:
                // six bits are no character), or is the empty `&-`.
                let shifted = rest.find(|c: char| !b64(c)).is_some_and(|end| {
                    rest[end..].starts_with('-') && (end == 0 || utf16_shift(&rest[..end]).is_some())
                });
                if !shifted {
                    out.push('-');
                }
            }
        }
        return out;
    }
    let mut out = String::with_capacity(name.len() * 2);
    let mut pending: Vec<u8> = Vec::new();
    let flush = |out: &mut String, pending: &mut Vec<u8>| {
        if !pending.is_empty() {
            out.push('&');
            out.push_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(&*pending).replace('/', ","));
            out.push('-');
            pending.clear();
        }
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut out, &mut pending);
            match c {
                '&' => out.push_str("&-"),
                c => out.push(c),
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend(c.encode_utf16(&mut units).iter().flat_map(|u| u.to_be_bytes()));
        }
    }
    flush(&mut out, &mut pending);
    out
}

/// The text of a modified-base64 shift sequence (between `&` and `-`), if it is one: canonical
/// base64 (`,` for `/`, no padding) of whole UTF-16 code units forming valid UTF-16.
fn utf16_shift(b64: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64.replace(',', "/")).ok()?;
    if bytes.is_empty() || bytes.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    String::from_utf16(&units).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_in_modified_utf7() {
        // RFC 3501 §5.1.3's example: 台北 and 日本語.
        assert_eq!(mutf7("~peter/mail/台北/日本語"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
        assert_eq!(mutf7("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(mutf7("Boîte & co"), "Bo&AO4-te &- co");
        assert_eq!(mutf7("INBOX"), "INBOX");
        assert_eq!(mutf7("R&D"), "R&-D");
        assert_eq!(mutf7("Entw&APw-rfe"), "Entw&APw-rfe", "already encoded names are left alone");
        assert_eq!(mutf7("A&-B"), "A&-B");
        assert_eq!(mutf7("😀"), "&2D3eAA-");
        assert_eq!(mutf7("&0-"), "&-0-", "six bits are no character, so this `&` is a plain one");
    }

    /// Modified UTF-7 back to text (RFC 3501 §5.1.3), for the round trip; `None` when invalid.
    fn mutf7_decode(s: &str) -> Option<String> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('&') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let end = after.find('-')?;
            let shifted = &after[..end];
            if shifted.is_empty() {
                out.push('&');
            } else {
                let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(shifted.replace(',', "/")).ok()?;
                if bytes.len() % 2 != 0 {
                    return None;
                }
                let units: Vec<u16> = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
                out.push_str(&String::from_utf16(&units).ok()?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Some(out)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// A name with any non-ASCII character comes back unchanged, and is sent as printable
        /// ASCII.
        #[test]
        fn mutf7_round_trips(prefix in ".{0,12}", c in "[^\x00-\x7f]", suffix in ".{0,12}") {
            let name = format!("{prefix}{c}{suffix}");
            let wire = mutf7(&name);
            proptest::prop_assert!(wire.bytes().all(|b| (b' '..=b'~').contains(&b)), "{:?}", wire);
            proptest::prop_assert_eq!(mutf7_decode(&wire), Some(name));
        }

        /// An ASCII name without `&` is sent as it is; with `&`, as valid modified UTF-7.
        #[test]
        fn ascii_names_stay_valid(name in "[ -~]{0,30}") {
            let wire = mutf7(&name);
            if !name.contains('&') {
                proptest::prop_assert_eq!(&wire, &name);
            }
            proptest::prop_assert!(mutf7_decode(&wire).is_some(), "{:?} -> {:?}", name, wire);
        }

    }
}
