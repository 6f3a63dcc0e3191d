//! Mailboxes to CSV, in the import's own columns ([`crate::import::COLUMNS`]), so an export
//! imports back unchanged. No secrets: the CSV holds only what the store holds.
//!
//! Formula injection (CSV injection, OWASP "CSV Injection"): a spreadsheet opening the file runs
//! a cell that begins with `=`, `+`, `-` or `@` (and, in some, a tab or carriage return) as a
//! formula. Every such cell is written with a leading `'`, which spreadsheets show as text;
//! [`crate::import`] removes exactly that one `'` again, so the round trip is exact. A cell that
//! itself begins with `'` gets one too, so a real leading apostrophe survives the round trip.

use crate::import::COLUMNS;
use crate::mailbox::{Flow, Mailbox};

/// The CSV text of `mailboxes` (header row first).
pub fn to_csv(mailboxes: &[Mailbox]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for m in mailboxes {
        w.write_record(COLUMNS.iter().map(|c| neutralise(cell(m, c))))?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8(bytes).expect("CSV of UTF-8 strings is UTF-8"))
}

/// The characters that make a spreadsheet read a cell as a formula, plus `'` (see the module
/// docs).
pub const FORMULA_START: &[char] = &['=', '+', '-', '@', '\t', '\r', '\''];

/// Why: a CSV opened in a spreadsheet must never run a cell as a formula (DDE, HYPERLINK to an
/// attacker's URL); a field value typed by anyone must not become code on the admin's machine.
fn neutralise(v: String) -> String {
    if v.starts_with(FORMULA_START) {
        format!("'{v}")
    } else {
        v
    }
}

fn cell(m: &Mailbox, column: &str) -> String {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    match column {
        "name" => m.name.clone(),
        "email" => m.email.clone(),
        "login" => opt(&m.login),
        "protocol" => m.protocol.to_string(),
        "host" => m.host.clone(),
        "port" => m.port.to_string(),
        "security" => m.security.to_string(),
        "folder" => m.folder.clone(),
        "provider" => m.provider.to_string(),
        "tenant" => opt(&m.tenant),
        "client_id" => m.client_id.clone(),
        "scopes" => m.scopes.join(" "),
        "auth_url" => opt(&m.auth_url),
        "token_url" => opt(&m.token_url),
        "auth_params" => m.auth_params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
        "ca_file" => m.ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "flow" => match m.flow {
            Flow::AuthCode => String::new(),
            f => f.to_string(),
        },
        "device_url" => opt(&m.device_url),
        "issuer" => opt(&m.issuer),
        "smtp_host" => m.smtp.as_ref().map(|s| s.host.clone()).unwrap_or_default(),
        "smtp_port" => m.smtp.as_ref().map(|s| s.port.to_string()).unwrap_or_default(),
        "smtp_security" => m.smtp.as_ref().map(|s| s.security.to_string()).unwrap_or_default(),
        "client_secret_expires" => m.client_secret_expires.map(|d| d.to_string()).unwrap_or_default(),
        "redirect_port" => m.redirect_port.map(|p| p.to_string()).unwrap_or_default(),
        "signin_max_age_days" => m.signin_max_age_days.map(|d| d.to_string()).unwrap_or_default(),
        "check_interval_minutes" => m.check_interval_minutes.map(|d| d.to_string()).unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::parse;
    use crate::mailbox::{ProviderKind, Security, Smtp};
    use proptest::prelude::*;

    #[test]
    fn export_imports_back_unchanged() {
        let src = "name,email,provider,tenant,client_id,protocol,auth_params,client_secret_expires\n\
                   helpdesk,helpdesk@contoso.com,microsoft,contoso.onmicrosoft.com,00000000-1111-2222-3333-444444444444,pop3,prompt=consent,2027-03-31\n\
                   gen,\"a,b@x.test\",generic,,cid,imap,,\n";
        let first = parse(src, None).unwrap();
        assert_eq!(first.mailboxes().len(), 1, "{:?}", first.errors());
        let mut m = first.mailboxes();
        let mut generic = m[0].clone();
        generic.name = "with, comma".into();
        generic.provider = ProviderKind::Generic;
        generic.tenant = None;
        generic.auth_url = Some("https://idp.example.com/auth".into());
        generic.token_url = Some("https://idp.example.com/token".into());
        generic.issuer = Some("https://idp.example.com".into());
        generic.redirect_port = Some(53682);
        generic.signin_max_age_days = Some(7);
        generic.check_interval_minutes = Some(5);
        m.push(generic);
        let text = to_csv(&m).unwrap();
        let again = parse(&text, None).unwrap();
        assert!(again.errors().is_empty(), "{:?}\n{text}", again.errors());
        assert_eq!(again.mailboxes(), m);
    }

    #[test]
    fn formula_cells_are_neutralised() {
        let mut m = crate::mailbox::sample();
        m.name = "=HYPERLINK(\"http://evil.example\",\"x\")".into();
        m.email = "+1@example.com".into();
        m.folder = "@SUM(A1)".into();
        m.client_id = "-2+3".into();
        let text = to_csv(&[m.clone()]).unwrap();
        let row = text.lines().nth(1).unwrap();
        assert!(row.starts_with("\"'=HYPERLINK("), "{row}");
        assert!(row.contains(",'+1@example.com,"), "{row}");
        assert!(row.contains(",'@SUM(A1),"), "{row}");
        assert!(row.contains(",'-2+3,"), "{row}");
        assert_eq!(parse(&text, None).unwrap().mailboxes(), vec![m]);
    }

    /// A printable value without surrounding spaces (the import trims cells), often beginning
    /// with a formula character or an apostrophe.
    fn text() -> impl Strategy<Value = String> {
        ("[=+@'\\-]{0,2}", "[A-Za-z0-9=+@'\\-(),;\"]{1,12}").prop_map(|(a, b)| format!("{a}{b}"))
    }

    fn mailbox() -> impl Strategy<Value = Mailbox> {
        (text(), "[=+@'\\-]?[a-z0-9.+_'=-]{1,10}", text(), text(), proptest::option::of(text()), any::<bool>())
            .prop_map(|(name, local, folder, client_id, login, smtp)| {
                let mut m = crate::mailbox::sample();
                m.name = name;
                m.email = format!("{local}@example.com");
                m.folder = folder;
                m.client_id = client_id;
                m.login = login.filter(|l| !l.contains(char::is_whitespace));
                m.scopes = vec!["openid".into(), "=x".into()];
                m.auth_params = vec![("-k".into(), "=v".into())];
                m.smtp =
                    smtp.then(|| Smtp { host: "smtp.example.com".into(), port: 587, security: Security::Starttls });
                m
            })
            .prop_filter("valid", |m| m.validate().is_ok())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn round_trip_and_no_cell_starts_a_formula(ms in proptest::collection::vec(mailbox(), 1..4)) {
            let mut seen = std::collections::HashSet::new();
            let ms: Vec<Mailbox> = ms.into_iter().filter(|m| seen.insert(m.name.clone())).collect();
            let text = to_csv(&ms).unwrap();
            let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
            for rec in rdr.records() {
                for cell in rec.unwrap().iter() {
                    prop_assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "cell {cell:?}");
                }
            }
            let back = parse(&text, None).unwrap();
            prop_assert!(back.errors().is_empty(), "{:?}\n{}", back.errors(), text);
            prop_assert_eq!(back.mailboxes(), ms);
        }
    }
}
