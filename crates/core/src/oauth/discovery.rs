//! OpenID Connect discovery (OpenID Connect Discovery 1.0 §4) for generic providers: the admin
//! gives the issuer URL, and the authorization, token and device endpoints come from
//! `{issuer}/.well-known/openid-configuration`.
//!
//! Written here rather than taken from the `openidconnect` crate: only three fields of the
//! document are needed, and that crate would bring a second OAuth client stack next to oauth2.

use serde::Deserialize;
use url::Url;

use super::OAuthError;
use crate::mailbox::check_endpoint;

/// The endpoints an issuer publishes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Discovered {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
}

/// Where the issuer's configuration lives: the issuer without a trailing slash, then
/// `/.well-known/openid-configuration` (§4.1, also for issuers with a path).
pub fn well_known_url(issuer: &str) -> Result<Url, String> {
    check_endpoint(issuer)?;
    let u = Url::parse(issuer).map_err(|e| e.to_string())?;
    if u.query().is_some() || u.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    Url::parse(&format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))).map_err(|e| e.to_string())
}

/// Checks a fetched document against the configured issuer: the `issuer` it names must be the
/// one asked for (§4.3; a trailing slash aside), and every endpoint must be a URL this app may
/// send codes and tokens to.
pub fn check(issuer: &str, doc: Discovered) -> Result<Discovered, String> {
    if doc.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(format!("the document names the issuer {}, not {issuer}", doc.issuer));
    }
    for (name, v) in [
        ("authorization_endpoint", Some(&doc.authorization_endpoint)),
        ("token_endpoint", Some(&doc.token_endpoint)),
        ("device_authorization_endpoint", doc.device_authorization_endpoint.as_ref()),
    ] {
        if let Some(Err(e)) = v.map(|v| check_endpoint(v)) {
            return Err(format!("its {name} {e}"));
        }
    }
    Ok(doc)
}

/// Fetches and checks the issuer's configuration.
pub async fn discover(issuer: &str, http: &reqwest::Client) -> Result<Discovered, OAuthError> {
    let fail = |detail: String| OAuthError::Discovery { issuer: issuer.to_string(), detail };
    let url = well_known_url(issuer).map_err(|e| OAuthError::Config { field: "issuer", message: e })?;
    let resp = http.get(url.clone()).send().await.map_err(|e| fail(format!("cannot reach {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(fail(format!("{url} answered HTTP {}", resp.status())));
    }
    let doc: Discovered =
        resp.json().await.map_err(|e| fail(format!("{url} is not an OpenID configuration document: {e}")))?;
    check(issuer, doc).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(issuer: &str) -> Discovered {
        Discovered {
            issuer: issuer.into(),
            authorization_endpoint: "https://id.example.com/auth".into(),
            token_endpoint: "https://id.example.com/token".into(),
            device_authorization_endpoint: None,
        }
    }

    #[test]
    fn well_known_url_appends_to_the_issuer_path() {
        assert_eq!(
            well_known_url("https://id.example.com/realms/support/").unwrap().as_str(),
            "https://id.example.com/realms/support/.well-known/openid-configuration"
        );
        assert_eq!(
            well_known_url("http://127.0.0.1:9000").unwrap().as_str(),
            "http://127.0.0.1:9000/.well-known/openid-configuration"
        );
        assert!(well_known_url("http://id.example.com").unwrap_err().contains("https"));
        assert!(well_known_url("https://id.example.com/?tenant=x").unwrap_err().contains("query"));
        assert!(well_known_url("not a url").unwrap_err().contains("not a URL"));
    }

    #[test]
    fn the_document_must_name_the_issuer_asked_for() {
        assert!(check("https://id.example.com/", doc("https://id.example.com")).is_ok());
        let e = check("https://id.example.com", doc("https://evil.example.net")).unwrap_err();
        assert!(e.contains("https://evil.example.net"), "{e}");
    }

    #[test]
    fn endpoints_must_be_https_or_loopback() {
        let mut d = doc("https://id.example.com");
        d.token_endpoint = "http://id.example.com/token".into();
        assert!(check("https://id.example.com", d).unwrap_err().contains("token_endpoint"));
        let mut d = doc("https://id.example.com");
        d.device_authorization_endpoint = Some("ftp://id.example.com/device".into());
        assert!(check("https://id.example.com", d).unwrap_err().contains("device_authorization_endpoint"));
    }
}
