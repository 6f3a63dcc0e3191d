//! Bulk import of mailboxes from CSV.
//!
//! A header row names the columns, in any order, using the mailbox field names. Unknown columns
//! are an error for the whole file (a typo must not silently drop a setting). Each data row is
//! validated on its own; bad rows are reported with their line number and field, good rows are
//! imported together in one transaction. Importing a name that exists updates it.

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use crate::mailbox::{parse_auth_params, FieldError, Flow, Mailbox, Protocol, ProviderKind, Security, Smtp};
use crate::provider;

pub const COLUMNS: &[&str] = &[
    "name",
    "email",
    "login",
    "protocol",
    "host",
    "port",
    "security",
    "folder",
    "provider",
    "tenant",
    "client_id",
    "scopes",
    "auth_url",
    "token_url",
    "auth_params",
    "ca_file",
    "flow",
    "device_url",
    "issuer",
    "smtp_host",
    "smtp_port",
    "smtp_security",
    "client_secret_expires",
    "redirect_port",
    "signin_max_age_days",
    "check_interval_minutes",
];
const REQUIRED: &[&str] = &["name", "email", "client_id"];

/// A problem with one row (or, with line 1, the header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[error("line {line}: {field}: {message}")]
pub struct RowError {
    pub line: u64,
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// The header itself is wrong: nothing is imported.
    #[error("{0}")]
    Header(RowError),
}

/// The outcome of parsing a CSV: the valid mailboxes and the rejected rows.
#[derive(Debug, Default)]
pub struct Parsed {
    pub mailboxes: Vec<Mailbox>,
    /// The line of each of `mailboxes`, in the same order.
    pub lines: Vec<u64>,
    pub errors: Vec<RowError>,
    /// The line and `name` cell of each refused row (the name may be empty or a duplicate).
    pub refused: Vec<(u64, String)>,
}

/// Undoes the export's formula neutralisation (see [`crate::export`]): a cell the export
/// prefixed with `'` (because it began with `= + - @ '` or a tab or CR) loses that one `'`.
pub(crate) fn unescape_cell(v: &str) -> &str {
    match v.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\'', '\t', '\r']) => rest,
        _ => v,
    }
}

/// Parses CSV text. `base` resolves relative `ca_file` paths (the CSV's folder).
pub fn parse(text: &str, base: Option<&Path>) -> Result<Parsed, ImportError> {
    let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(text.as_bytes());
    let header_err =
        |field: &str, message: String| ImportError::Header(RowError { line: 1, field: field.into(), message });
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| header_err("header", e.to_string()))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let mut seen = HashSet::new();
    for h in &headers {
        if !COLUMNS.contains(&h.as_str()) {
            return Err(header_err(h, format!("unknown column; the columns are: {}", COLUMNS.join(", "))));
        }
        if !seen.insert(h.as_str()) {
            return Err(header_err(h, "column appears twice".into()));
        }
    }
    for r in REQUIRED {
        if !seen.contains(r) {
            return Err(header_err(r, "required column is missing".into()));
        }
    }
    let mut out = Parsed::default();
    let mut names = HashSet::new();
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                out.errors.push(RowError { line, field: "row".into(), message: e.to_string() });
                out.refused.push((line, String::new()));
                continue;
            }
        };
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        if rec.iter().all(str::is_empty) {
            continue;
        }
        if rec.len() != headers.len() {
            out.errors.push(RowError {
                line,
                field: "row".into(),
                message: format!("has {} values but the header has {} columns", rec.len(), headers.len()),
            });
            let name = headers.iter().position(|h| h == "name").and_then(|i| rec.get(i)).unwrap_or_default();
            out.refused.push((line, name.to_string()));
            continue;
        }
        let get = |col: &str| {
            headers.iter().position(|h| h == col).map(|i| unescape_cell(&rec[i]).to_string()).filter(|v| !v.is_empty())
        };
        match build(&get, base) {
            Ok(m) => {
                if !names.insert(m.name.clone()) {
                    out.errors.push(RowError {
                        line,
                        field: "name".into(),
                        message: format!("`{}` appears earlier in the file", m.name),
                    });
                    out.refused.push((line, m.name));
                } else {
                    out.mailboxes.push(m);
                    out.lines.push(line);
                }
            }
            Err(errs) => {
                out.errors.extend(errs.into_iter().map(|e| RowError {
                    line,
                    field: e.field.into(),
                    message: e.message,
                }));
                out.refused.push((line, get("name").unwrap_or_default()));
            }
        }
    }
    Ok(out)
}

/// Builds and validates one mailbox from column values, filling provider defaults.
pub fn build(get: &dyn Fn(&str) -> Option<String>, base: Option<&Path>) -> Result<Mailbox, Vec<FieldError>> {
    let mut errs = Vec::new();
    let parse_or = |field: &'static str, default| -> Option<String> { get(field).or(default) };
    let protocol = parse_or("protocol", Some("imap".into())).unwrap_or_default().parse::<Protocol>();
    let security = parse_or("security", Some("tls".into())).unwrap_or_default().parse::<Security>();
    let provider_kind = parse_or("provider", Some("generic".into())).unwrap_or_default().parse::<ProviderKind>();
    let (protocol, security, provider_kind) = match (protocol, security, provider_kind) {
        (Ok(p), Ok(s), Ok(k)) => (p, s, k),
        (p, s, k) => {
            errs.extend([p.err(), s.err(), k.err()].into_iter().flatten());
            return Err(errs);
        }
    };
    let tenant = get("tenant");
    let preset = provider::preset(provider_kind, protocol, tenant.as_deref());
    let port = parse_port("port", get("port"), provider::default_port(protocol, security), &mut errs);
    let auth_params = match get("auth_params").map(|s| parse_auth_params(&s)).transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => {
            errs.push(e);
            vec![]
        }
    };
    let ca_file = get("ca_file").map(|p| {
        let p = std::path::PathBuf::from(p);
        match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p,
        }
    });
    let flow = match get("flow").map(|f| f.parse::<Flow>()).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            errs.push(e);
            Flow::default()
        }
    };
    let smtp = smtp_columns(get, provider_kind, &mut errs);
    let client_secret_expires = match get("client_secret_expires") {
        None => None,
        Some(d) => match crate::mailbox::parse_date("client_secret_expires", &d) {
            Ok(d) => Some(d),
            Err(e) => {
                errs.push(e);
                None
            }
        },
    };
    let redirect_port = get("redirect_port").map(|p| parse_port("redirect_port", Some(p), 0, &mut errs));
    let signin_max_age_days = match get("signin_max_age_days") {
        None => None,
        Some(d) => match d.parse::<u32>() {
            Ok(n) if (1..=36_500).contains(&n) => Some(n),
            _ => {
                errs.push(FieldError::new(
                    "signin_max_age_days",
                    format!("`{d}` is not a number of days (1-36500), e.g. 7 for a Google app in Testing"),
                ));
                None
            }
        },
    };
    let check_interval_minutes = match get("check_interval_minutes") {
        None => None,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=crate::mailbox::MAX_CHECK_INTERVAL_MINUTES).contains(&n) => Some(n),
            _ => {
                errs.push(FieldError::new(
                    "check_interval_minutes",
                    format!("`{v}` is not a number of minutes from 1 to 10080 (a week), e.g. 5"),
                ));
                None
            }
        },
    };
    let m = Mailbox {
        name: get("name").unwrap_or_default(),
        email: get("email").unwrap_or_default(),
        login: get("login"),
        protocol,
        host: get("host").or(preset.host.map(String::from)).unwrap_or_default(),
        port,
        security,
        folder: get("folder").unwrap_or_else(|| "INBOX".into()),
        provider: provider_kind,
        tenant: tenant.or(provider::default_tenant(provider_kind).map(String::from)),
        client_id: get("client_id").unwrap_or_default(),
        scopes: get("scopes").map(|s| s.split_whitespace().map(String::from).collect()).unwrap_or_else(|| {
            // App-only access to Exchange Online asks for the resource's .default scope.
            if flow == Flow::ClientCredentials && provider_kind == ProviderKind::Microsoft {
                vec![provider::MS_APP_ONLY_SCOPE.to_string()]
            } else {
                preset.scopes.clone()
            }
        }),
        auth_url: get("auth_url").or(preset.auth_url),
        token_url: get("token_url").or(preset.token_url),
        auth_params,
        ca_file,
        flow,
        device_url: get("device_url").or(preset.device_url),
        issuer: get("issuer"),
        smtp,
        client_secret_expires,
        redirect_port,
        signin_max_age_days,
        check_interval_minutes,
    };
    if let Err(v) = m.validate() {
        // The port error is already reported with the value the admin typed.
        let reported: Vec<&'static str> = errs.iter().map(|x| x.field).collect();
        errs.extend(
            v.into_iter().filter(|e| {
                !(matches!(e.field, "port" | "smtp_port" | "redirect_port") && reported.contains(&e.field))
            }),
        );
    }
    if let Some(ca) = m.ca_file.as_deref().filter(|p| p.is_absolute()) {
        if let Err(e) = crate::tls::check_ca_file(ca) {
            errs.push(e);
        }
    }
    if errs.is_empty() {
        Ok(m)
    } else {
        Err(errs)
    }
}

/// A port column: the default when empty; an unparsable value is reported with what was typed
/// (and stands as 0, which validation would refuse again — the caller keeps one message).
fn parse_port(field: &'static str, value: Option<String>, default: u16, errs: &mut Vec<FieldError>) -> u16 {
    match value {
        None => default,
        Some(p) => p.parse::<u16>().unwrap_or_else(|_| {
            errs.push(FieldError::new(field, format!("`{p}` is not a port number (1-65535)")));
            0
        }),
    }
}

/// The optional SMTP columns: none set means no outbound server; a host (or a provider with a
/// known SMTP host and any SMTP column) fills the rest from the usual submission settings.
fn smtp_columns(
    get: &dyn Fn(&str) -> Option<String>,
    provider: ProviderKind,
    errs: &mut Vec<FieldError>,
) -> Option<Smtp> {
    let (host, port, security) = (get("smtp_host"), get("smtp_port"), get("smtp_security"));
    if host.is_none() && port.is_none() && security.is_none() {
        return None;
    }
    let security = match security.map(|s| s.parse::<Security>()).transpose() {
        Ok(s) => s.unwrap_or(Security::Starttls),
        Err(mut e) => {
            e.field = "smtp_security";
            errs.push(e);
            Security::Starttls
        }
    };
    let port = parse_port("smtp_port", port, provider::default_smtp_port(security), errs);
    let host = host.or(provider::smtp_host(provider).map(String::from)).unwrap_or_default();
    Some(Smtp { host, port, security })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name,email,host,client_id,auth_url,token_url,scopes\n\
        a,a@example.com,imap.example.com,cid,https://idp/auth,https://idp/token,openid mail\n";

    #[test]
    fn columns_in_any_order_with_defaults() {
        let p = parse(GOOD, None).unwrap();
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let m = &p.mailboxes[0];
        assert_eq!((m.protocol, m.security, m.port, m.folder.as_str()), (Protocol::Imap, Security::Tls, 993, "INBOX"));
        assert_eq!(m.scopes, vec!["openid", "mail"]);
    }

    #[test]
    fn unknown_column_rejects_the_file() {
        let err = parse("name,email,client_id,colour\n", None).unwrap_err();
        assert!(err.to_string().starts_with("line 1: colour: unknown column"), "{err}");
    }

    #[test]
    fn missing_required_column() {
        let err = parse("name,email\n", None).unwrap_err();
        assert!(err.to_string().contains("client_id: required column is missing"), "{err}");
    }

    #[test]
    fn bad_rows_are_named_by_line_and_field_good_rows_kept() {
        let text = format!(
            "{GOOD}b,not-an-address,imap.example.com,cid,https://idp/auth,https://idp/token,x\n\
             c,c@example.com,imap.example.com,,https://idp/auth,https://idp/token,x\n\
             a,a2@example.com,imap.example.com,cid,https://idp/auth,https://idp/token,x\n"
        );
        let p = parse(&text, None).unwrap();
        assert_eq!(p.mailboxes.len(), 1);
        let errs: Vec<String> = p.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            errs,
            vec![
                "line 3: email: must be an address like support@example.com",
                "line 4: client_id: is required (the app registration's client id)",
                "line 5: name: `a` appears earlier in the file",
            ]
        );
    }

    #[test]
    fn bad_enum_and_port_name_their_fields() {
        let p =
            parse("name,email,client_id,protocol,port\nx,x@e.com,c,smtp,99999\ny,y@e.com,c,imap,abc\n", None).unwrap();
        let f: Vec<(u64, &str)> = p.errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(f[0], (2, "protocol"));
        assert!(f.contains(&(3, "port")), "{f:?}");
        assert!(p.mailboxes.is_empty());
    }

    #[test]
    fn microsoft_preset_fills_host_scopes_and_endpoints() {
        let p = parse("name,email,client_id,provider,protocol\nm,m@contoso.com,00000000-1111-2222-3333-444444444444,microsoft,pop3\n", None).unwrap();
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let m = &p.mailboxes[0];
        assert_eq!(m.host, "outlook.office365.com");
        assert_eq!(m.port, 995);
        assert_eq!(m.tenant.as_deref(), Some("organizations"));
        assert_eq!(m.scopes, vec![provider::MS_POP_SCOPE, "offline_access"]);
        assert!(m.token_url.as_deref().unwrap().contains("/organizations/oauth2/v2.0/token"));
    }

    #[test]
    fn flow_smtp_and_secret_expiry_columns() {
        let p = parse(
            "name,email,client_id,provider,flow,smtp_security,client_secret_expires\n\
             m,m@contoso.com,00000000-1111-2222-3333-444444444444,microsoft,client-credentials,starttls,2027-03-31\n\
             n,n@contoso.com,00000000-1111-2222-3333-444444444444,microsoft,browser,,31/03/2027\n",
            None,
        )
        .unwrap();
        let m = &p.mailboxes[0];
        assert_eq!(m.flow, Flow::ClientCredentials);
        assert_eq!(m.scopes, vec![provider::MS_APP_ONLY_SCOPE]);
        assert_eq!(m.smtp, Some(Smtp { host: "smtp.office365.com".into(), port: 587, security: Security::Starttls }));
        assert_eq!(m.client_secret_expires, chrono::NaiveDate::from_ymd_opt(2027, 3, 31));
        let f: Vec<&str> = p.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(f, vec!["flow", "client_secret_expires"]);
    }

    #[test]
    fn signin_max_age_days_column() {
        let p = parse(
            "name,email,host,client_id,auth_url,token_url,scopes,signin_max_age_days\n\
             a,a@e.com,h.e.com,c,https://i/a,https://i/t,s,7\n\
             b,b@e.com,h.e.com,c,https://i/a,https://i/t,s,\n\
             c,c@e.com,h.e.com,c,https://i/a,https://i/t,s,seven\n\
             d,d@e.com,h.e.com,c,https://i/a,https://i/t,s,0\n",
            None,
        )
        .unwrap();
        let days: Vec<_> = p.mailboxes.iter().map(|m| (m.name.as_str(), m.signin_max_age_days)).collect();
        assert_eq!(days, vec![("a", Some(7)), ("b", None)]);
        let errs: Vec<(u64, &str)> = p.errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(errs, vec![(4, "signin_max_age_days"), (5, "signin_max_age_days")]);
    }

    #[test]
    fn check_interval_minutes_column() {
        let p = parse(
            "name,email,host,client_id,auth_url,token_url,scopes,check_interval_minutes\n\
             a,a@e.com,h.e.com,c,https://i/a,https://i/t,s,5\n\
             b,b@e.com,h.e.com,c,https://i/a,https://i/t,s,\n\
             c,c@e.com,h.e.com,c,https://i/a,https://i/t,s,5m\n\
             d,d@e.com,h.e.com,c,https://i/a,https://i/t,s,0\n\
             e,e@e.com,h.e.com,c,https://i/a,https://i/t,s,10081\n",
            None,
        )
        .unwrap();
        let got: Vec<_> = p.mailboxes.iter().map(|m| (m.name.as_str(), m.check_interval_minutes)).collect();
        assert_eq!(got, vec![("a", Some(5)), ("b", None)]);
        let errs: Vec<(u64, &str)> = p.errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            errs,
            vec![(4, "check_interval_minutes"), (5, "check_interval_minutes"), (6, "check_interval_minutes")]
        );
        assert!(p.errors[0].message.contains("`5m`"), "{}", p.errors[0].message);
    }

    #[test]
    fn redirect_port_column() {
        let p = parse(
            "name,email,host,client_id,auth_url,token_url,scopes,redirect_port\n\
             a,a@e.com,h.e.com,c,https://i/a,https://i/t,s,8400\n\
             b,b@e.com,h.e.com,c,https://i/a,https://i/t,s,\n\
             c,c@e.com,h.e.com,c,https://i/a,https://i/t,s,70000\n\
             d,d@e.com,h.e.com,c,https://i/a,https://i/t,s,0\n",
            None,
        )
        .unwrap();
        let ports: Vec<_> = p.mailboxes.iter().map(|m| (m.name.as_str(), m.redirect_port)).collect();
        assert_eq!(ports, vec![("a", Some(8400)), ("b", None)]);
        let errs: Vec<(u64, &str)> = p.errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(errs, vec![(4, "redirect_port"), (5, "redirect_port")]);
    }

    #[test]
    fn relative_ca_file_resolves_against_the_csv_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        std::fs::write(dir.path().join("certs/ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let p = parse(
            "name,email,host,client_id,auth_url,token_url,scopes,ca_file\na,a@e.com,h.e.com,c,https://i/a,https://i/t,s,certs/ca.pem\n",
            Some(dir.path()),
        )
        .unwrap();
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.mailboxes[0].ca_file.as_deref(), Some(dir.path().join("certs/ca.pem").as_path()));
    }

    /// `ca_file` must be a regular file of at most 1 MiB: a device that never ends, a FIFO
    /// (whose open blocks), a directory or a big file are refused at import, naming the field.
    #[test]
    fn ca_file_must_be_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.pem");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; 2 * 1024 * 1024]).unwrap();
        let small = dir.path().join("ok.pem");
        std::fs::write(&small, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let paths = [
            "/dev/zero".into(),
            fifo.display().to_string(),
            big.display().to_string(),
            dir.path().display().to_string(),
            dir.path().join("missing.pem").display().to_string(),
            small.display().to_string(),
        ];
        let rows: Vec<String> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i},a@e.com,h.e.com,c,https://i/a,https://i/t,s,{p}"))
            .collect();
        let text = format!("name,email,host,client_id,auth_url,token_url,scopes,ca_file\n{}\n", rows.join("\n"));
        let started = std::time::Instant::now();
        let p = parse(&text, None).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "no hang");
        let refused: Vec<(u64, &str)> = p.errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(refused, vec![(2, "ca_file"), (3, "ca_file"), (4, "ca_file"), (5, "ca_file"), (6, "ca_file")]);
        assert!(p.errors[0].message.contains("regular file"), "{:?}", p.errors[0]);
        assert!(p.errors[2].message.contains("1 MiB"), "{:?}", p.errors[2]);
        assert_eq!(p.mailboxes.len(), 1);
    }

    #[test]
    fn refused_rows_keep_their_line_and_name() {
        let text = format!("{GOOD}b,not-an-address,imap.example.com,cid,https://idp/auth,https://idp/token,x\n");
        let p = parse(&text, None).unwrap();
        assert_eq!(p.lines, vec![2]);
        assert_eq!(p.refused, vec![(3, "b".to_string())]);
    }
}
