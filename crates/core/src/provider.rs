//! Provider presets: Microsoft 365, Google and generic OAuth2/OIDC.
//!
//! A preset fills what an admin would otherwise copy from a portal guide: endpoints, scopes,
//! mail hosts and ports, and the extra authorization parameters the provider needs to hand out a
//! refresh token. Admin-supplied values always win over the preset.
//!
//! - Microsoft identity platform v2: `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/…`;
//!   delegated scopes on `https://outlook.office.com/` plus `offline_access`. Desktop apps are
//!   registered with the redirect `http://localhost` (the port is ignored when matching), so
//!   the listener answers on both 127.0.0.1 and [::1].
//! - Google: scope `https://mail.google.com/`; `access_type=offline` and `prompt=consent` are
//!   needed to receive a refresh token; loopback redirect `http://127.0.0.1:<port>`.

use crate::mailbox::{Mailbox, Protocol, ProviderKind, Security};

/// Endpoints and defaults of a provider, for one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub auth_url: Option<String>,
    pub token_url: Option<String>,
    pub scopes: Vec<String>,
    pub auth_params: Vec<(String, String)>,
    /// Host name used in the loopback redirect URI; the listener binds 127.0.0.1, and for
    /// `localhost` also [::1] on the same port (the browser may resolve it to either).
    pub redirect_host: &'static str,
    pub host: Option<&'static str>,
    /// Device authorization endpoint (RFC 8628), where the provider has one.
    pub device_url: Option<String>,
    /// The provider's SMTP submission host ([`smtp_host`]) and the security it documents
    /// (Microsoft 365: STARTTLS on 587; Gmail: implicit TLS on 465).
    pub smtp_host: Option<&'static str>,
    pub smtp_security: Security,
}

pub const MS_IMAP_SCOPE: &str = "https://outlook.office.com/IMAP.AccessAsUser.All";
pub const MS_POP_SCOPE: &str = "https://outlook.office.com/POP.AccessAsUser.All";
pub const MS_SMTP_SCOPE: &str = "https://outlook.office.com/SMTP.Send";
pub const GOOGLE_SCOPE: &str = "https://mail.google.com/";

/// The Microsoft 365 tenant used when none is given: work and school accounts of any tenant
/// (`/organizations`), the form a multi-tenant app registration answers. The one home of this
/// default: the import, the editor's preset and the window (through `ui/src/lib/core.json`,
/// see [`crate::contract`]) take it from here.
pub const DEFAULT_TENANT: &str = "organizations";

/// The tenant a mailbox of `kind` gets when none is given: [`DEFAULT_TENANT`] for Microsoft 365,
/// none for the other providers.
pub fn default_tenant(kind: ProviderKind) -> Option<&'static str> {
    (kind == ProviderKind::Microsoft).then_some(DEFAULT_TENANT)
}

pub fn preset(kind: ProviderKind, protocol: Protocol, tenant: Option<&str>) -> Preset {
    match kind {
        ProviderKind::Microsoft => {
            let t = tenant.filter(|t| !t.is_empty()).unwrap_or(DEFAULT_TENANT);
            let base = format!("https://login.microsoftonline.com/{t}/oauth2/v2.0");
            let scope = match protocol {
                Protocol::Imap => MS_IMAP_SCOPE,
                Protocol::Pop3 => MS_POP_SCOPE,
            };
            Preset {
                device_url: Some(format!("{base}/devicecode")),
                auth_url: Some(format!("{base}/authorize")),
                token_url: Some(format!("{base}/token")),
                scopes: vec![scope.into(), "offline_access".into()],
                auth_params: vec![("prompt".into(), "select_account".into())],
                redirect_host: "localhost",
                host: Some("outlook.office365.com"),
                smtp_host: smtp_host(kind),
                smtp_security: Security::Starttls,
            }
        }
        ProviderKind::Google => Preset {
            // Google's device flow does not allow the mail scope; it is offered anyway so the
            // provider's own error tells the admin, rather than a guess here.
            device_url: Some("https://oauth2.googleapis.com/device/code".into()),
            auth_url: Some("https://accounts.google.com/o/oauth2/v2/auth".into()),
            token_url: Some("https://oauth2.googleapis.com/token".into()),
            scopes: vec![GOOGLE_SCOPE.into()],
            auth_params: vec![("access_type".into(), "offline".into()), ("prompt".into(), "consent".into())],
            redirect_host: "127.0.0.1",
            host: Some(match protocol {
                Protocol::Imap => "imap.gmail.com",
                Protocol::Pop3 => "pop.gmail.com",
            }),
            smtp_host: smtp_host(kind),
            smtp_security: Security::Tls,
        },
        ProviderKind::Generic => Preset {
            device_url: None,
            auth_url: None,
            token_url: None,
            scopes: vec![],
            auth_params: vec![],
            redirect_host: "127.0.0.1",
            host: None,
            smtp_host: None,
            smtp_security: Security::Starttls,
        },
    }
}

/// The usual port for a protocol and security.
pub fn default_port(protocol: Protocol, security: Security) -> u16 {
    match (protocol, security) {
        (Protocol::Imap, Security::Tls) => 993,
        (Protocol::Imap, Security::Starttls) => 143,
        (Protocol::Pop3, Security::Tls) => 995,
        (Protocol::Pop3, Security::Starttls) => 110,
    }
}

/// The usual SMTP submission port for a security.
pub fn default_smtp_port(security: Security) -> u16 {
    match security {
        Security::Tls => 465,
        Security::Starttls => 587,
    }
}

/// The provider's SMTP submission host.
pub fn smtp_host(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::Microsoft => Some("smtp.office365.com"),
        ProviderKind::Google => Some("smtp.gmail.com"),
        ProviderKind::Generic => None,
    }
}

/// App-only (client credentials) scope for Exchange Online IMAP/POP/SMTP.
pub const MS_APP_ONLY_SCOPE: &str = "https://outlook.office365.com/.default";

/// The authorization parameters to send: the preset's, overridden key by key by the mailbox's.
pub fn effective_auth_params(m: &Mailbox) -> Vec<(String, String)> {
    let mut params = preset(m.provider, m.protocol, m.tenant.as_deref()).auth_params;
    for (k, v) in &m.auth_params {
        params.retain(|(pk, _)| pk != k);
        params.push((k.clone(), v.clone()));
    }
    // Microsoft pre-fills the account picker with the mailbox's sign-in address.
    if m.provider == ProviderKind::Microsoft && !params.iter().any(|(k, _)| k == "login_hint") {
        params.push(("login_hint".into(), m.sasl_user().to_string()));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::sample;

    #[test]
    fn smtp_presets_are_the_providers_documented_submission_servers() {
        let ms = preset(ProviderKind::Microsoft, Protocol::Imap, None);
        assert_eq!((ms.smtp_host, ms.smtp_security), (Some("smtp.office365.com"), Security::Starttls));
        assert_eq!(default_smtp_port(ms.smtp_security), 587);
        let google = preset(ProviderKind::Google, Protocol::Pop3, None);
        assert_eq!((google.smtp_host, google.smtp_security), (Some("smtp.gmail.com"), Security::Tls));
        assert_eq!(default_smtp_port(google.smtp_security), 465);
        assert_eq!(preset(ProviderKind::Generic, Protocol::Imap, None).smtp_host, None);
    }

    #[test]
    fn the_tenant_default_is_organizations_for_microsoft_only() {
        assert_eq!(default_tenant(ProviderKind::Microsoft), Some("organizations"));
        assert_eq!(default_tenant(ProviderKind::Google), None);
        assert_eq!(default_tenant(ProviderKind::Generic), None);
        let p = preset(ProviderKind::Microsoft, Protocol::Imap, None);
        assert_eq!(p.token_url.as_deref(), Some("https://login.microsoftonline.com/organizations/oauth2/v2.0/token"));
    }

    #[test]
    fn microsoft_endpoints_use_tenant_and_v2() {
        let p = preset(ProviderKind::Microsoft, Protocol::Pop3, Some("contoso.onmicrosoft.com"));
        assert_eq!(
            p.token_url.as_deref(),
            Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
        );
        assert_eq!(p.scopes, vec![MS_POP_SCOPE.to_string(), "offline_access".to_string()]);
        assert_eq!(p.redirect_host, "localhost");
    }

    #[test]
    fn google_asks_for_offline_access() {
        let p = preset(ProviderKind::Google, Protocol::Imap, None);
        assert!(p.auth_params.contains(&("access_type".into(), "offline".into())));
        assert!(p.auth_params.contains(&("prompt".into(), "consent".into())));
        assert_eq!(p.host, Some("imap.gmail.com"));
    }

    #[test]
    fn mailbox_params_override_preset_ones() {
        let mut m = sample();
        m.provider = ProviderKind::Microsoft;
        m.tenant = Some("organizations".into());
        m.auth_params = vec![("prompt".into(), "consent".into()), ("resource".into(), "x".into())];
        let p = effective_auth_params(&m);
        assert_eq!(
            p,
            vec![
                ("prompt".to_string(), "consent".to_string()),
                ("resource".to_string(), "x".to_string()),
                ("login_hint".to_string(), "support@example.com".to_string())
            ]
        );
    }
}
