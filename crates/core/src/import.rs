//! Bulk import of mailboxes from CSV.
//!
//! A header row names the columns, in any order, using the mailbox field names. Unknown columns
//! are an error for the whole file (a typo must not silently drop a setting). Each data row is
//! validated on its own; bad rows are reported with their line number and field, good rows are
//! imported together in one transaction. Importing a name that exists updates it.
//!
//! The file is parsed here only (RFC 4180 through the `csv` crate): every row comes back with its
//! line, its cells by column and the mailbox or the errors, so the window's preview table shows
//! what this parser read rather than parsing the text a second time.

use std::collections::{BTreeMap, HashSet};
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

/// One data row of the file, as the preview shows it: its line, its cells by column (as typed,
/// trimmed) and the mailbox it becomes or its errors.
#[derive(Debug, Clone)]
pub struct ParsedRow {
    pub line: u64,
    pub cells: BTreeMap<String, String>,
    pub outcome: Result<Mailbox, Vec<RowError>>,
}

impl ParsedRow {
    /// The row's `name` cell (may be empty, or a name used earlier in the file).
    pub fn name(&self) -> &str {
        match &self.outcome {
            Ok(m) => &m.name,
            Err(_) => self.cells.get("name").map(|n| unescape_cell(n)).unwrap_or_default(),
        }
    }
}

/// The outcome of parsing a CSV: every non-blank data row, in file order.
#[derive(Debug, Default)]
pub struct Parsed {
    pub rows: Vec<ParsedRow>,
}

impl Parsed {
    /// The valid mailboxes, in file order.
    pub fn mailboxes(&self) -> Vec<Mailbox> {
        self.rows.iter().filter_map(|r| r.outcome.as_ref().ok().cloned()).collect()
    }

    /// Every refused row's errors, in file order.
    pub fn errors(&self) -> Vec<RowError> {
        self.rows.iter().filter_map(|r| r.outcome.as_ref().err()).flatten().cloned().collect()
    }
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
    let mut lines = Lines { text: text.as_bytes(), at: 0, line: 1 };
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| lines.of(p.byte())).unwrap_or(0);
                let errors = vec![RowError { line, field: "row".into(), message: e.to_string() }];
                out.rows.push(ParsedRow { line, cells: BTreeMap::new(), outcome: Err(errors) });
                continue;
            }
        };
        let line = rec.position().map(|p| lines.of(p.byte())).unwrap_or(0);
        if rec.iter().all(str::is_empty) {
            continue;
        }
        let cells: BTreeMap<String, String> = headers.iter().cloned().zip(rec.iter().map(str::to_string)).collect();
        if rec.len() != headers.len() {
            let errors = vec![RowError {
                line,
                field: "row".into(),
                message: format!("has {} values but the header has {} columns", rec.len(), headers.len()),
            }];
            out.rows.push(ParsedRow { line, cells, outcome: Err(errors) });
            continue;
        }
        let get = |col: &str| cells.get(col).map(|v| unescape_cell(v).to_string()).filter(|v| !v.is_empty());
        let outcome = match build(&get, base) {
            Ok(m) if !names.insert(m.name.clone()) => Err(vec![RowError {
                line,
                field: "name".into(),
                message: format!("`{}` appears earlier in the file", m.name),
            }]),
            Ok(m) => Ok(m),
            Err(errs) => {
                Err(errs.into_iter().map(|e| RowError { line, field: e.field.into(), message: e.message }).collect())
            }
        };
        out.rows.push(ParsedRow { line, cells, outcome });
    }
    Ok(out)
}

/// The line a record starts on, as an editor numbers it. Why not the `csv` crate's own
/// `Position::line`: it names the first blank line before a record rather than the record's
/// line, and counts no lone CR (old Mac line ends) as a line end, so errors would point at the
/// wrong line. Lines are counted forward from the last record (records come in order).
struct Lines<'a> {
    text: &'a [u8],
    at: usize,
    line: u64,
}

impl Lines<'_> {
    fn of(&mut self, start: u64) -> u64 {
        let t = self.text;
        // The record begins after any blank lines the reader skipped from `start`.
        let mut start = usize::try_from(start).unwrap_or(usize::MAX).min(t.len());
        while start < t.len() && matches!(t[start], b'\r' | b'\n') {
            start += 1;
        }
        let from = self.at.min(start);
        let ends = t[from..start]
            .iter()
            .enumerate()
            .filter(|&(i, b)| *b == b'\n' || (*b == b'\r' && t.get(from + i + 1) != Some(&b'\n')))
            .count();
        self.line += ends as u64;
        self.at = start;
        self.line
    }
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

    /// A parse as the tests read it: the valid mailboxes, the errors and the rows.
    #[derive(Debug)]
    struct P {
        mailboxes: Vec<Mailbox>,
        errors: Vec<RowError>,
        rows: Vec<ParsedRow>,
    }

    fn parse(text: &str, base: Option<&Path>) -> Result<P, ImportError> {
        let p = super::parse(text, base)?;
        Ok(P { mailboxes: p.mailboxes(), errors: p.errors(), rows: p.rows })
    }

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
    fn every_row_keeps_its_line_cells_and_name() {
        let text = format!(
            "{GOOD}b,not-an-address,imap.example.com,cid,https://idp/auth,https://idp/token,x\n\n\
             c,c@example.com\n\
             '=d,d@example.com,imap.example.com,cid,https://idp/auth,https://idp/token, x y \n"
        );
        let p = parse(&text, None).unwrap();
        let rows: Vec<(u64, &str, bool)> = p.rows.iter().map(|r| (r.line, r.name(), r.outcome.is_ok())).collect();
        assert_eq!(
            rows,
            [(2, "a", true), (3, "b", false), (5, "c", false), (6, "=d", true)],
            "the blank line 4 is no row"
        );
        let bad = &p.rows[1];
        assert_eq!(bad.cells["email"], "not-an-address", "what the file says, for the preview");
        assert_eq!(bad.cells.len(), 7);
        let short = &p.rows[2];
        assert_eq!(short.cells.keys().collect::<Vec<_>>(), ["email", "name"], "the cells there are");
        assert_eq!(
            short.outcome.as_ref().unwrap_err()[0].to_string(),
            "line 5: row: has 2 values but the header has 7 columns"
        );
        let formula = &p.rows[3];
        assert_eq!(
            (formula.cells["name"].as_str(), formula.cells["scopes"].as_str()),
            ("'=d", "x y"),
            "as typed, trimmed"
        );
    }

    /// Lines as an editor numbers them: after blank lines, with CR, LF or CRLF line ends, and
    /// after a quoted cell that spans lines.
    #[test]
    fn errors_name_the_line_an_editor_shows() {
        let head = "name,email,host,client_id,auth_url,token_url,scopes";
        let good = "a,a@example.com,imap.example.com,cid,https://idp/auth,https://idp/token,x";
        let bad = "b,not-an-address,imap.example.com,cid,https://idp/auth,https://idp/token,x";
        for eol in ["\n", "\r\n", "\r"] {
            let text = [head, good, "", "", bad].join(eol);
            let p = parse(&text, None).unwrap();
            let lines: Vec<u64> = p.errors.iter().map(|e| e.line).collect();
            assert_eq!(lines, [5], "line ends {eol:?}");
        }
        let text = format!("{head}\na,a@example.com,h.example.com,c,https://i/a,https://i/t,\"openid\nmail\"\n{bad}\n");
        let p = parse(&text, None).unwrap();
        assert_eq!((p.mailboxes.len(), p.errors[0].line), (1, 4), "{:?}", p.errors);
    }

    mod props {
        use super::super::{parse, ParsedRow, COLUMNS, REQUIRED};
        use proptest::prelude::*;

        /// A cell: empty, a plausible value for some column, or something awkward (quotes,
        /// commas, a formula character, spaces around, non-ASCII).
        fn cell() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                Just("imap".to_string()),
                Just("pop3".to_string()),
                Just("starttls".to_string()),
                Just("microsoft".to_string()),
                Just("993".to_string()),
                Just("a@example.com".to_string()),
                Just("https://idp.example.com/token".to_string()),
                Just("'=1+1".to_string()),
                "[a-z0-9@.,\"' =+-]{1,16}",
                "\\PC{1,8}",
            ]
        }

        /// A header (the required columns and some others, in any order) and rows of cells.
        fn table() -> impl Strategy<Value = (Vec<&'static str>, Vec<Vec<String>>)> {
            proptest::sample::subsequence(COLUMNS.to_vec(), 0..8)
                .prop_map(|mut cols| {
                    for r in REQUIRED {
                        if !cols.contains(r) {
                            cols.push(r);
                        }
                    }
                    cols
                })
                .prop_shuffle()
                .prop_flat_map(|cols| {
                    let n = cols.len();
                    (Just(cols), proptest::collection::vec(proptest::collection::vec(cell(), n), 0..6))
                })
        }

        fn row_is_consistent(r: &ParsedRow, header: &[&str]) -> Result<(), TestCaseError> {
            prop_assert!(r.cells.keys().all(|k| header.contains(&k.as_str())), "{r:?}");
            match &r.outcome {
                Ok(m) => prop_assert!(m.validate().is_ok(), "an accepted row does not validate: {r:?}"),
                Err(errors) => {
                    prop_assert!(!errors.is_empty(), "refused without a reason: {r:?}");
                    for e in errors {
                        prop_assert_eq!(e.line, r.line);
                        prop_assert!(e.field == "row" || COLUMNS.contains(&e.field.as_str()), "field {:?}", e.field);
                    }
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Every written row comes back once, at its line, with its cells as written
            /// (trimmed), and either a valid mailbox or errors naming its line and a column.
            #[test]
            fn each_row_comes_back_with_its_line_cells_and_mailbox_or_errors((header, rows) in table()) {
                let mut w = csv::Writer::from_writer(vec![]);
                w.write_record(&header).unwrap();
                for r in &rows {
                    w.write_record(r).unwrap();
                }
                let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
                let parsed = parse(&text, None).unwrap();
                let written: Vec<(u64, &Vec<String>)> = rows
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.iter().any(|c| !c.trim().is_empty()))
                    .map(|(i, r)| (i as u64 + 2, r))
                    .collect();
                prop_assert_eq!(parsed.rows.len(), written.len(), "{}", text);
                let mut names = std::collections::HashSet::new();
                for (row, (line, cells)) in parsed.rows.iter().zip(&written) {
                    prop_assert_eq!(row.line, *line);
                    for (col, value) in header.iter().zip(cells.iter()) {
                        prop_assert_eq!(row.cells.get(*col).map(String::as_str), Some(value.trim()));
                    }
                    row_is_consistent(row, &header)?;
                    if let Ok(m) = &row.outcome {
                        prop_assert!(names.insert(m.name.clone()), "`{}` imported twice", m.name);
                    }
                }
            }

            /// Any text: no panic; a header error or rows that are each consistent, in line order.
            #[test]
            fn any_text_gives_consistent_rows(text in "[a-z_,\"'\n\r =@.0-9]{0,200}") {
                let text = format!("name,email,client_id,host\n{text}");
                if let Ok(parsed) = parse(&text, None) {
                    let header = ["name", "email", "client_id", "host"];
                    for w in parsed.rows.windows(2) {
                        prop_assert!(w[0].line < w[1].line, "lines in order");
                    }
                    for r in &parsed.rows {
                        row_is_consistent(r, &header)?;
                    }
                }
            }
        }
    }
}
