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

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn host() -> impl Strategy<Value = (&'static str, bool)> {
            // (host, is this machine)
            prop::sample::select(vec![
                ("id.example.com", false),
                ("127.0.0.1", true),
                ("127.8.9.10", true),
                ("localhost", true),
                ("[::1]", true),
                ("127.0.0.1.evil.example", false),
                ("localhost.evil.example", false),
                ("10.0.0.1", false),
                ("[::2]", false),
            ])
        }

        fn endpoint() -> impl Strategy<Value = (String, bool)> {
            (prop::sample::select(vec!["https", "http", "ftp", "javascript"]), host(), "(/[a-z0-9]{0,8}){0,3}")
                .prop_map(|(scheme, (h, local), path)| {
                    let ok = scheme == "https" || (scheme == "http" && local);
                    (format!("{scheme}://{h}{path}"), ok)
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// The document is accepted exactly when every endpoint is https, or http to this
            /// machine; the error names the first bad one.
            #[test]
            fn endpoints_are_https_or_loopback(a in endpoint(), t in endpoint(), d in proptest::option::of(endpoint())) {
                let issuer = "https://id.example.com";
                let doc = Discovered {
                    issuer: issuer.into(),
                    authorization_endpoint: a.0.clone(),
                    token_endpoint: t.0.clone(),
                    device_authorization_endpoint: d.as_ref().map(|d| d.0.clone()),
                };
                let expected_bad = [("authorization_endpoint", a.1), ("token_endpoint", t.1), ("device_authorization_endpoint", d.as_ref().is_none_or(|d| d.1))]
                    .into_iter()
                    .find(|(_, ok)| !ok)
                    .map(|(name, _)| name);
                match (check(issuer, doc), expected_bad) {
                    (Ok(_), None) => {}
                    (Err(e), Some(name)) => prop_assert!(e.starts_with(&format!("its {name} ")), "{e}"),
                    (got, want) => prop_assert!(false, "got {got:?}, expected bad {want:?}"),
                }
            }

            /// The issuer in the document must be the one asked for, a trailing slash aside.
            #[test]
            fn the_issuer_must_match(asked in "https://[a-z]{1,6}\\.example(/[a-z]{0,5}){0,2}/?", named in "https://[a-z]{1,6}\\.example(/[a-z]{0,5}){0,2}/?") {
                let same = asked.trim_end_matches('/') == named.trim_end_matches('/');
                let got = check(&asked, doc(&named));
                prop_assert_eq!(got.is_ok(), same, "{:?}", got);
                let slashed = format!("{}/", asked.trim_end_matches('/'));
                prop_assert!(check(&asked, doc(&slashed)).is_ok(), "a trailing slash is no difference");
            }

            #[test]
            fn any_text_never_panics(issuer in any::<String>(), named in any::<String>(), ep in any::<String>()) {
                let _ = well_known_url(&issuer);
                let mut d = doc(&named);
                d.token_endpoint = ep;
                let _ = check(&issuer, d);
            }
        }
    }
}
