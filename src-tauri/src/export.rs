//! Mailboxes to CSV, in the import's own columns, so an export imports back unchanged.
//!
//! (The CLI has no export yet; if it gets one, this belongs in `mailbox_auth_core::import`.)

use mailbox_auth_core::import::COLUMNS;
use mailbox_auth_core::mailbox::{Flow, Mailbox};

pub fn to_csv(mailboxes: &[Mailbox]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for m in mailboxes {
        w.write_record(COLUMNS.iter().map(|c| cell(m, c)))?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8(bytes).expect("CSV of UTF-8 strings is UTF-8"))
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
        "smtp_host" => m.smtp.as_ref().map(|s| s.host.clone()).unwrap_or_default(),
        "smtp_port" => m.smtp.as_ref().map(|s| s.port.to_string()).unwrap_or_default(),
        "smtp_security" => m.smtp.as_ref().map(|s| s.security.to_string()).unwrap_or_default(),
        "client_secret_expires" => m.client_secret_expires.map(|d| d.to_string()).unwrap_or_default(),
        "redirect_port" => m.redirect_port.map(|p| p.to_string()).unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailbox_auth_core::import::parse;

    #[test]
    fn export_imports_back_unchanged() {
        let src = "name,email,provider,tenant,client_id,protocol,auth_params,client_secret_expires\n\
                   helpdesk,helpdesk@contoso.com,microsoft,contoso.onmicrosoft.com,00000000-1111-2222-3333-444444444444,pop3,prompt=consent,2027-03-31\n\
                   gen,\"a,b@x.test\",generic,,cid,imap,,\n";
        let first = parse(src, None).unwrap();
        assert_eq!(first.mailboxes.len(), 1, "{:?}", first.errors);
        let mut m = first.mailboxes;
        let mut generic = m[0].clone();
        generic.name = "with, comma".into();
        generic.provider = mailbox_auth_core::mailbox::ProviderKind::Generic;
        generic.tenant = None;
        generic.auth_url = Some("https://idp.example.com/auth".into());
        generic.token_url = Some("https://idp.example.com/token".into());
        generic.redirect_port = Some(53682);
        m.push(generic);
        let text = to_csv(&m).unwrap();
        let again = parse(&text, None).unwrap();
        assert!(again.errors.is_empty(), "{:?}\n{text}", again.errors);
        assert_eq!(again.mailboxes, m);
    }
}
