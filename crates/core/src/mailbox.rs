//! The mailbox model and its validation.
//!
//! A mailbox is what an admin configures once: where the mail lives (IMAP or POP3 host, port,
//! TLS or STARTTLS, folder), who signs in (`login`, which defaults to the address and lets a
//! delegate sign in for a shared mailbox) and how (provider, tenant, client id, scopes,
//! endpoints). Secrets are not part of it: refresh tokens and client secrets live in the keyring
//! (see [`crate::secret`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Incoming mail protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Imap,
    Pop3,
}

/// How the connection is secured. There is deliberately no plaintext option: a bearer token must
/// never cross the network in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Implicit TLS from the first byte (IMAPS 993, POP3S 995).
    Tls,
    /// Plain connection upgraded with STARTTLS (IMAP) or STLS (POP3) before any credential is sent.
    Starttls,
}

/// Who issues the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Microsoft,
    Google,
    Generic,
}

/// How the mailbox obtains its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// Authorization code + PKCE through the system browser (RFC 6749 §4.1, RFC 7636, RFC 8252).
    #[default]
    AuthCode,
    /// Device authorization grant (RFC 8628): a code typed in on any device's browser.
    Device,
    /// App-only access with the app's client secret (RFC 6749 §4.4); no user signs in.
    ClientCredentials,
}

/// Optional outbound mail server (SMTP submission).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    /// `tls` (implicit, 465) or `starttls` (587).
    pub security: Security,
}

macro_rules! text_enum {
    ($ty:ty, $field:literal, $($name:literal => $val:expr),+) => {
        impl FromStr for $ty {
            type Err = FieldError;
            fn from_str(s: &str) -> Result<Self, FieldError> {
                match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
                    $($name => Ok($val),)+
                    other => Err(FieldError::new(
                        $field,
                        format!("`{other}` is not one of: {}", [$($name),+].join(", ")),
                    )),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let s = match self { $(v if *v == $val => $name,)+ _ => unreachable!() };
                f.write_str(s)
            }
        }
    };
}

text_enum!(Protocol, "protocol", "imap" => Protocol::Imap, "pop3" => Protocol::Pop3);
text_enum!(Security, "security", "tls" => Security::Tls, "starttls" => Security::Starttls);
text_enum!(Flow, "flow", "auth_code" => Flow::AuthCode, "device" => Flow::Device, "client_credentials" => Flow::ClientCredentials);
text_enum!(ProviderKind, "provider", "microsoft" => ProviderKind::Microsoft, "google" => ProviderKind::Google, "generic" => ProviderKind::Generic);

/// A validation failure that names the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

/// A date an admin types (a client secret's expiry), in the one form every front end takes:
/// ISO 8601 `YYYY-MM-DD` (what an HTML date input sends, and what sorts in a CSV). Surrounding
/// blanks are ignored; the error names `field` and repeats the text as given.
pub fn parse_date(field: &'static str, text: &str) -> Result<chrono::NaiveDate, FieldError> {
    chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| FieldError::new(field, format!("`{text}` is not a date like 2027-03-31")))
}

/// A configured mailbox. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Mailbox {
    /// Unique, admin-chosen name (the key in the store and the keyring).
    pub name: String,
    pub email: String,
    /// The account that signs in; the mailbox address when empty.
    pub login: Option<String>,
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// IMAP folder to open; ignored for POP3.
    pub folder: String,
    pub provider: ProviderKind,
    /// Microsoft 365 tenant: `organizations`, `common`, a tenant id or a domain.
    pub tenant: Option<String>,
    pub client_id: String,
    pub scopes: Vec<String>,
    /// Authorization endpoint (generic provider; presets fill it for the others).
    pub auth_url: Option<String>,
    /// Token endpoint (generic provider; presets fill it for the others).
    pub token_url: Option<String>,
    /// Extra authorization parameters the IdP needs, e.g. `prompt=consent`, `access_type=offline`,
    /// `resource=…`. Presets add their own; these come on top and win.
    pub auth_params: Vec<(String, String)>,
    /// Extra trusted CA certificate(s), PEM, for the mail server.
    pub ca_file: Option<PathBuf>,
    /// How tokens are obtained.
    #[serde(default)]
    pub flow: Flow,
    /// Device authorization endpoint (generic provider, device flow).
    #[serde(default)]
    pub device_url: Option<String>,
    /// OpenID Connect issuer (generic provider): endpoints left empty are read from its
    /// `/.well-known/openid-configuration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Outbound SMTP server, when replies are sent through this mailbox.
    #[serde(default)]
    pub smtp: Option<Smtp>,
    /// When the app registration's client secret expires (amber 30 days before, red after).
    #[serde(default)]
    pub client_secret_expires: Option<chrono::NaiveDate>,
    /// A fixed loopback port for the browser sign-in's redirect URI, for providers that match
    /// the registered redirect URI exactly, port included; a free port when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_port: Option<u16>,
    /// The longest a sign-in lives however often it is used, in days (e.g. 7 for a Google app
    /// whose consent screen is in "Testing"): the countdown runs from the sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signin_max_age_days: Option<u32>,
    /// How often the monitor checks this mailbox, in minutes, instead of the monitor's own
    /// interval (e.g. 5 for a mailbox a help desk depends on, 1440 for an archive).
    #[serde(default)]
    pub check_interval_minutes: Option<u32>,
}

/// The longest per-mailbox check interval: a week.
pub const MAX_CHECK_INTERVAL_MINUTES: u32 = 7 * 24 * 60;

impl Mailbox {
    /// A stand-in for a stored mailbox whose settings cannot be read: only the name is known
    /// (the list shows it, red, instead of failing as a whole).
    pub fn unreadable(name: &str) -> Mailbox {
        Mailbox {
            name: name.to_string(),
            email: String::new(),
            login: None,
            protocol: Protocol::Imap,
            host: String::new(),
            port: 0,
            security: Security::Tls,
            folder: String::new(),
            provider: ProviderKind::Generic,
            tenant: None,
            client_id: String::new(),
            scopes: vec![],
            auth_url: None,
            token_url: None,
            auth_params: vec![],
            ca_file: None,
            flow: Flow::AuthCode,
            device_url: None,
            issuer: None,
            smtp: None,
            client_secret_expires: None,
            redirect_port: None,
            signin_max_age_days: None,
            check_interval_minutes: None,
        }
    }

    /// The SASL user: the login, or the mailbox address.
    pub fn sasl_user(&self) -> &str {
        self.login.as_deref().filter(|l| !l.is_empty()).unwrap_or(&self.email)
    }

    /// Checks every field; returns all problems, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        let check = |errs: &mut Vec<FieldError>, ok: bool, field: &'static str, msg: &str| {
            if !ok {
                errs.push(FieldError::new(field, msg));
            }
        };
        check(&mut errs, !self.name.trim().is_empty(), "name", "is required");
        check(
            &mut errs,
            self.name.chars().all(|c| !c.is_control()) && self.name.len() <= 100,
            "name",
            "must be at most 100 printable characters",
        );
        check(&mut errs, is_address(&self.email), "email", "must be an address like support@example.com");
        if let Some(login) = self.login.as_deref().filter(|l| !l.is_empty()) {
            check(&mut errs, !login.contains(char::is_whitespace), "login", "must not contain spaces");
        }
        // Why: the address and the login go into the XOAUTH2 / OAUTHBEARER line, whose fields are
        // separated by \x01 (RFC 7628 §3.1), and the folder and host into protocol commands; a
        // control character there could add a field or a command. Refused here, for every way a
        // mailbox comes in (editor, CSV), so no builder ever sees one.
        let text_fields: [(&'static str, Option<&str>); 6] = [
            ("email", Some(&self.email)),
            ("login", self.login.as_deref()),
            ("host", Some(&self.host)),
            ("folder", Some(&self.folder)),
            ("tenant", self.tenant.as_deref()),
            ("smtp_host", self.smtp.as_ref().map(|s| s.host.as_str())),
        ];
        for (field, value) in text_fields {
            if value.is_some_and(|v| v.chars().any(char::is_control)) {
                errs.push(FieldError::new(field, "must not contain control characters (tab, line breaks, \\x01 …)"));
            }
        }
        if self.scopes.iter().chain([&self.client_id]).any(|v| v.chars().any(char::is_control)) {
            let field = if self.client_id.chars().any(char::is_control) { "client_id" } else { "scopes" };
            errs.push(FieldError::new(field, "must not contain control characters"));
        }
        check(&mut errs, is_host(&self.host), "host", "must be a host name like outlook.office365.com");
        check(&mut errs, self.port != 0, "port", "must be between 1 and 65535");
        if self.protocol == Protocol::Imap {
            check(&mut errs, !self.folder.trim().is_empty(), "folder", "is required for IMAP (usually INBOX)");
        }
        check(
            &mut errs,
            !self.client_id.trim().is_empty(),
            "client_id",
            "is required (the app registration's client id)",
        );
        check(&mut errs, !self.scopes.is_empty(), "scopes", "at least one scope is required");
        // Microsoft client ids are GUIDs. Checked because the id also goes, quoted, into the
        // Exchange PowerShell script: a GUID cannot carry anything else into it.
        if self.provider == ProviderKind::Microsoft && !self.client_id.trim().is_empty() {
            check(
                &mut errs,
                is_guid(&self.client_id),
                "client_id",
                "must be the app registration's Application (client) ID, a GUID like 8c1b7a3e-2f4d-4b9a-9e61-0d5f3c2a7b10",
            );
        }
        check(
            &mut errs,
            self.redirect_port != Some(0),
            "redirect_port",
            "must be between 1 and 65535, or empty for a free port",
        );
        if self.provider == ProviderKind::Microsoft {
            check(
                &mut errs,
                self.tenant.as_deref().is_some_and(|t| !t.trim().is_empty()),
                "tenant",
                "is required for Microsoft 365 (organizations, common, a tenant id or a domain)",
            );
        }
        if self.provider == ProviderKind::Generic && self.issuer.is_none() {
            const NEED: &str = "is required for a generic provider without an issuer URL";
            check(&mut errs, self.auth_url.is_some(), "auth_url", NEED);
            check(&mut errs, self.token_url.is_some(), "token_url", NEED);
        }
        if let Some(smtp) = &self.smtp {
            check(&mut errs, is_host(&smtp.host), "smtp_host", "must be a host name like smtp.office365.com");
            check(&mut errs, smtp.port != 0, "smtp_port", "must be between 1 and 65535");
        }
        if self.flow == Flow::Device && self.provider == ProviderKind::Generic && self.issuer.is_none() {
            check(
                &mut errs,
                self.device_url.is_some(),
                "device_url",
                "is required for the device flow with a generic provider",
            );
        }
        for (field, value) in [
            ("auth_url", &self.auth_url),
            ("token_url", &self.token_url),
            ("device_url", &self.device_url),
            ("issuer", &self.issuer),
        ] {
            if let Some(Err(message)) = value.as_deref().map(check_endpoint) {
                errs.push(FieldError::new(field, message));
            }
        }
        for (k, _) in &self.auth_params {
            if k.is_empty() || k.contains(char::is_whitespace) {
                errs.push(FieldError::new("auth_params", format!("`{k}` is not a parameter name")));
            }
            if RESERVED_PARAMS.contains(&k.as_str()) {
                errs.push(FieldError::new(
                    "auth_params",
                    format!("`{k}` is set by the sign-in flow itself and cannot be overridden"),
                ));
            }
        }
        if let Some(ca) = &self.ca_file {
            check(&mut errs, ca.is_absolute(), "ca_file", "must be an absolute path to a PEM file");
        }
        if let Some(m) = self.check_interval_minutes {
            check(
                &mut errs,
                (1..=MAX_CHECK_INTERVAL_MINUTES).contains(&m),
                "check_interval_minutes",
                "must be a number of minutes from 1 to 10080 (a week), or empty for the monitor's interval",
            );
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// Parameters the authorization-code flow owns; letting `auth_params` replace them would break
/// PKCE or the state check. `response_mode` too: `form_post` or `fragment` would send the code
/// where the loopback listener never reads it (OAuth 2.0 Multiple Response Type Encoding
/// Practices §2.1, OAuth 2.0 Form Post Response Mode).
pub const RESERVED_PARAMS: &[&str] = &[
    "response_type",
    "response_mode",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "scope",
];

/// The fields that decide where a stored secret or a token goes, or whose grant it is. When one
/// of them changes on an existing mailbox (an edit or a CSV import with the same name), its
/// stored refresh token and client secret are deleted and it must sign in again; otherwise the
/// next refresh would hand them to the new endpoint.
///
/// - `provider`, `tenant`, `issuer`, `auth_url`, `token_url`, `device_url`: the identity
///   provider's endpoints. The refresh token and the client secret are sent to the token (and
///   device) endpoint; the provider and tenant pick the preset endpoints, the issuer the
///   discovered ones, and the authorization endpoint is who the grant was made with.
/// - `client_id`: a refresh token and a client secret belong to one app registration.
/// - `host`, `port`, `smtp_host`, `smtp_port`: the mail servers receive the access token (a
///   different port on the same host may be another program, possibly any local user's).
/// - `ca_file`: which servers are trusted to receive the token under those host names.
/// - `email`, `login`: whose mailbox the grant opens, and as whom it signs in.
///
/// Not in the list: `protocol` and `security` (the token still goes to the same host and port,
/// always over verified TLS), `scopes`, `auth_params` and `flow` (how a token is asked for, not
/// where it goes), `folder`, `name`, `client_secret_expires`. Removing the SMTP server sends
/// nothing anywhere new, so only a new or changed SMTP host or port counts.
pub const SECRET_ROUTING_FIELDS: &[&str] = &[
    "provider",
    "tenant",
    "issuer",
    "auth_url",
    "token_url",
    "device_url",
    "client_id",
    "host",
    "port",
    "smtp_host",
    "smtp_port",
    "ca_file",
    "email",
    "login",
];

impl Mailbox {
    /// The value of a [`SECRET_ROUTING_FIELDS`] field, for comparing two versions of a mailbox.
    /// `None` means "nothing is sent there" (no SMTP server).
    fn routing_value(&self, field: &str) -> Option<String> {
        let opt = |o: &Option<String>| Some(o.clone().unwrap_or_default());
        match field {
            "provider" => Some(self.provider.to_string()),
            "tenant" => opt(&self.tenant),
            "issuer" => opt(&self.issuer),
            "auth_url" => opt(&self.auth_url),
            "token_url" => opt(&self.token_url),
            "device_url" => opt(&self.device_url),
            "client_id" => Some(self.client_id.clone()),
            "host" => Some(self.host.to_ascii_lowercase()),
            "port" => Some(self.port.to_string()),
            "smtp_host" => self.smtp.as_ref().map(|s| s.host.to_ascii_lowercase()),
            "smtp_port" => self.smtp.as_ref().map(|s| s.port.to_string()),
            "ca_file" => Some(self.ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
            "email" => Some(self.email.clone()),
            // An empty login means "the address": compare who really signs in.
            "login" => Some(self.sasl_user().to_string()),
            other => unreachable!("`{other}` is not a routing field"),
        }
    }

    /// The [`SECRET_ROUTING_FIELDS`] whose value differs in `new`; empty when the stored secrets
    /// may stay.
    pub fn secret_routing_changes(&self, new: &Mailbox) -> Vec<&'static str> {
        SECRET_ROUTING_FIELDS
            .iter()
            .copied()
            .filter(|f| {
                let after = new.routing_value(f);
                // Removing the SMTP server sends nothing anywhere new.
                after.is_some() && after != self.routing_value(f)
            })
            .collect()
    }

    /// Every field (of the CSV's columns) whose value differs in `new`, for the import preview.
    pub fn changed_fields(&self, new: &Mailbox) -> Vec<&'static str> {
        let (a, b) = (serde_json::to_value(self), serde_json::to_value(new));
        let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (a, b) else { return vec![] };
        let mut out: Vec<&'static str> = Vec::new();
        for f in crate::import::COLUMNS {
            let differs = match *f {
                "smtp_host" => self.smtp.as_ref().map(|s| &s.host) != new.smtp.as_ref().map(|s| &s.host),
                "smtp_port" => self.smtp.as_ref().map(|s| s.port) != new.smtp.as_ref().map(|s| s.port),
                "smtp_security" => self.smtp.as_ref().map(|s| s.security) != new.smtp.as_ref().map(|s| s.security),
                key => a.get(key).unwrap_or(&serde_json::Value::Null) != b.get(key).unwrap_or(&serde_json::Value::Null),
            };
            if differs {
                out.push(f);
            }
        }
        out
    }
}

/// A GUID in its usual hyphenated form (either case), as Entra shows client and object ids.
pub fn is_guid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok_and(|u| u.hyphenated().to_string().eq_ignore_ascii_case(s))
}

fn is_address(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    !local.is_empty() && !local.contains(char::is_whitespace) && is_host(domain)
}

fn is_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// An OAuth endpoint or issuer must be https; plain http only towards this machine: an IdP on
/// loopback (the sandbox, a local proxy) never sends a code or token over a network.
pub(crate) fn check_endpoint(v: &str) -> Result<(), String> {
    match url::Url::parse(v) {
        Ok(u) if u.scheme() == "https" => Ok(()),
        Ok(u) if u.scheme() == "http" && is_loopback_host(u.host_str()) => Ok(()),
        Ok(_) => Err("must be an https:// URL (http only for 127.0.0.1 or localhost)".into()),
        Err(e) => Err(format!("is not a URL: {e}")),
    }
}

pub(crate) fn is_loopback_host(host: Option<&str>) -> bool {
    match host {
        Some("localhost") => true,
        Some(h) => {
            h.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// Parses `key=value` pairs separated by `&` or spaces (`prompt=consent access_type=offline`).
pub fn parse_auth_params(s: &str) -> Result<Vec<(String, String)>, FieldError> {
    s.split(|c: char| c == '&' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| FieldError::new("auth_params", format!("`{p}` is not key=value")))
        })
        .collect()
}

#[cfg(test)]
pub(crate) fn sample() -> Mailbox {
    Mailbox {
        name: "support".into(),
        email: "support@example.com".into(),
        login: None,
        protocol: Protocol::Imap,
        host: "imap.example.com".into(),
        port: 993,
        security: Security::Tls,
        folder: "INBOX".into(),
        provider: ProviderKind::Generic,
        tenant: None,
        client_id: "client".into(),
        scopes: vec!["openid".into()],
        auth_url: Some("https://idp.example.com/auth".into()),
        token_url: Some("https://idp.example.com/token".into()),
        auth_params: vec![],
        ca_file: None,
        flow: Flow::AuthCode,
        device_url: None,
        issuer: None,
        smtp: None,
        client_secret_expires: None,
        redirect_port: None,
        signin_max_age_days: None,
        check_interval_minutes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(m: &Mailbox) -> Vec<&'static str> {
        m.validate().err().unwrap_or_default().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn sample_is_valid() {
        assert_eq!(sample().validate(), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut m = sample();
        m.email = "not-an-address".into();
        m.port = 0;
        m.host = "bad host".into();
        assert_eq!(fields(&m), vec!["email", "host", "port"]);
    }

    #[test]
    fn check_interval_is_minutes_from_one_to_a_week() {
        let mut m = sample();
        for ok in [None, Some(1), Some(5), Some(MAX_CHECK_INTERVAL_MINUTES)] {
            m.check_interval_minutes = ok;
            assert_eq!(fields(&m), Vec::<&str>::new(), "{ok:?}");
        }
        for bad in [0, MAX_CHECK_INTERVAL_MINUTES + 1] {
            m.check_interval_minutes = Some(bad);
            let e = m.validate().unwrap_err();
            assert_eq!(e.iter().map(|e| e.field).collect::<Vec<_>>(), ["check_interval_minutes"], "{bad}");
            assert!(e[0].to_string().contains("minutes from 1 to 10080"), "{}", e[0]);
        }
    }

    #[test]
    fn plain_http_endpoints_only_on_loopback() {
        let mut m = sample();
        m.token_url = Some("http://idp.example.com/token".into());
        assert_eq!(fields(&m), vec!["token_url"]);
        m.token_url = Some("http://127.0.0.1:9000/token".into());
        assert_eq!(fields(&m), Vec::<&str>::new());
    }

    #[test]
    fn microsoft_needs_tenant() {
        let mut m = sample();
        m.provider = ProviderKind::Microsoft;
        m.client_id = "00000000-1111-2222-3333-444444444444".into();
        assert_eq!(fields(&m), vec!["tenant"]);
    }

    #[test]
    fn microsoft_client_id_is_a_guid() {
        let mut m = sample();
        m.provider = ProviderKind::Microsoft;
        m.tenant = Some("organizations".into());
        for bad in [
            "client",
            "x\u{2019}; Add-MailboxPermission",
            "{00000000-1111-2222-3333-444444444444}",
            "00000000111122223333444444444444",
        ] {
            m.client_id = bad.into();
            assert_eq!(fields(&m), vec!["client_id"], "{bad}");
        }
        m.client_id = "8C1B7A3E-2F4D-4B9A-9E61-0D5F3C2A7B10".into();
        assert_eq!(fields(&m), Vec::<&str>::new());
        m.redirect_port = Some(0);
        assert_eq!(fields(&m), vec!["redirect_port"]);
    }

    #[test]
    fn stored_json_without_a_redirect_port_still_reads() {
        let mut v = serde_json::to_value(sample()).unwrap();
        assert!(v.get("redirect_port").is_none(), "an unset port is not written");
        v.as_object_mut().unwrap().remove("redirect_port");
        let m: Mailbox = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(m.redirect_port, None);
        v["redirect_port"] = 8400.into();
        assert_eq!(serde_json::from_value::<Mailbox>(v).unwrap().redirect_port, Some(8400));
    }

    #[test]
    fn reserved_auth_params_are_refused() {
        let mut m = sample();
        m.auth_params = parse_auth_params("prompt=consent state=x").unwrap();
        assert_eq!(fields(&m), vec!["auth_params"]);
    }

    #[test]
    fn login_defaults_to_email() {
        let mut m = sample();
        assert_eq!(m.sasl_user(), "support@example.com");
        m.login = Some("delegate@example.com".into());
        assert_eq!(m.sasl_user(), "delegate@example.com");
    }

    #[test]
    fn enums_parse_and_name_the_field() {
        assert_eq!("IMAP".parse::<Protocol>(), Ok(Protocol::Imap));
        let e = "smtp".parse::<Protocol>().unwrap_err();
        assert_eq!(e.field, "protocol");
        assert!(e.message.contains("imap, pop3"), "{}", e.message);
        assert_eq!(Security::Starttls.to_string(), "starttls");
    }

    #[test]
    fn a_generic_issuer_stands_in_for_its_endpoints() {
        let mut m = sample();
        m.auth_url = None;
        m.token_url = None;
        m.flow = Flow::Device;
        assert_eq!(fields(&m), vec!["auth_url", "token_url", "device_url"]);
        m.issuer = Some("https://id.example.com/realms/support".into());
        assert_eq!(fields(&m), Vec::<&str>::new());
        m.issuer = Some("http://id.example.com".into());
        assert_eq!(fields(&m), vec!["issuer"]);
    }

    #[test]
    fn response_mode_is_reserved_nonce_is_not() {
        let mut m = sample();
        m.auth_params = parse_auth_params("response_mode=form_post").unwrap();
        assert_eq!(fields(&m), vec!["auth_params"]);
        m.auth_params = parse_auth_params("nonce=abc prompt=consent").unwrap();
        assert_eq!(fields(&m), Vec::<&str>::new());
    }

    #[test]
    fn control_characters_are_refused_naming_the_field() {
        let mut m = sample();
        m.email = "a\x01auth=Bearer x@example.com".into();
        m.login = Some("b\x01user=c".into());
        m.folder = "INBOX\r\nA1 LOGOUT".into();
        m.name = "n\x07".into();
        m.tenant = Some("t\n".into());
        let f = fields(&m);
        for field in ["name", "email", "login", "folder", "tenant"] {
            assert!(f.contains(&field), "{field} not named: {f:?}");
        }
    }

    #[test]
    fn routing_fields_changes_are_found_and_others_are_not() {
        let old = sample();
        let changed = |f: &dyn Fn(&mut Mailbox)| {
            let mut n = old.clone();
            f(&mut n);
            old.secret_routing_changes(&n)
        };
        assert_eq!(changed(&|m| m.token_url = Some("https://evil.example/token".into())), ["token_url"]);
        assert_eq!(changed(&|m| m.host = "imap.evil.example".into()), ["host"]);
        assert_eq!(changed(&|m| m.port = 1993), ["port"]);
        assert_eq!(changed(&|m| m.client_id = "other".into()), ["client_id"]);
        assert_eq!(changed(&|m| m.issuer = Some("https://evil.example".into())), ["issuer"]);
        assert_eq!(changed(&|m| m.ca_file = Some("/etc/evil.pem".into())), ["ca_file"]);
        assert_eq!(changed(&|m| m.login = Some("boss@example.com".into())), ["login"]);
        assert_eq!(
            changed(
                &|m| m.smtp = Some(Smtp { host: "smtp.evil.example".into(), port: 587, security: Security::Starttls })
            ),
            ["smtp_host", "smtp_port"]
        );
        // Not where a secret goes: no sign-out.
        assert!(changed(&|m| m.folder = "Archive".into()).is_empty());
        assert!(changed(&|m| m.scopes = vec!["mail".into()]).is_empty());
        assert!(changed(&|m| m.security = Security::Starttls).is_empty());
        assert!(changed(&|m| m.login = Some("SUPPORT@example.com".into())).len() == 1);
        // The login spelled out as the address it already was: the same account.
        assert!(changed(&|m| m.login = Some("support@example.com".into())).is_empty());
        let mut with_smtp = old.clone();
        with_smtp.smtp = Some(Smtp { host: "smtp.example.com".into(), port: 587, security: Security::Starttls });
        assert!(with_smtp.secret_routing_changes(&old).is_empty(), "removing SMTP sends nothing anywhere");
        // Every listed field has a value (the list and the comparison agree).
        for f in SECRET_ROUTING_FIELDS {
            let _ = old.routing_value(f);
        }
    }

    #[test]
    fn changed_fields_names_csv_columns() {
        let old = sample();
        let mut new = old.clone();
        new.token_url = Some("https://evil.example/token".into());
        new.folder = "Archive".into();
        assert_eq!(old.changed_fields(&new), ["folder", "token_url"]);
        assert!(old.changed_fields(&old).is_empty());
    }

    #[test]
    fn dates_are_read_in_one_form_and_refused_by_field() {
        assert_eq!(
            parse_date("client_secret_expires", " 2027-03-31 "),
            Ok(chrono::NaiveDate::from_ymd_opt(2027, 3, 31).unwrap())
        );
        for bad in ["31/03/2027", "2027-02-30", "2027-3-31x", "", "next year"] {
            let e = parse_date("client_secret_expires", bad).unwrap_err();
            assert_eq!(e.field, "client_secret_expires");
            assert_eq!(e.message, format!("`{bad}` is not a date like 2027-03-31"));
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn with_control() -> impl Strategy<Value = String> {
            ("[a-z]{0,6}", proptest::char::range('\0', '\u{1f}'), "[a-z@.]{0,12}")
                .prop_map(|(a, c, b)| format!("{a}{c}{b}"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn every_calendar_date_reads_back_and_other_text_names_the_field(
                days in 0i64..200_000, junk in "[^0-9]{1,8}"
            ) {
                let d = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(days);
                prop_assert_eq!(parse_date("f", &d.format("%Y-%m-%d").to_string()), Ok(d));
                prop_assert_eq!(parse_date("f", &junk).map_err(|e| e.field), Err("f"));
            }

            #[test]
            fn validate_never_accepts_a_control_character_in_email_or_login(
                bad in with_control(), in_login in any::<bool>()
            ) {
                let mut m = sample();
                if in_login {
                    m.login = Some(bad);
                } else {
                    m.email = format!("{bad}@example.com");
                }
                let f = fields(&m);
                prop_assert!(f.contains(&if in_login { "login" } else { "email" }), "{:?}", f);
            }
        }
    }
}
