//! App-only tokens: the client credentials grant (RFC 6749 §4.4).
//!
//! No user signs in: the app registration's credential (from the keyring) buys an access
//! token for the resource's `.default` scope — for Exchange Online
//! `https://outlook.office365.com/.default`. The mail server then needs the app's service
//! principal registered in Exchange and a mailbox permission (see [`exchange_script`]); the SASL
//! user is the mailbox address. There is no refresh token: every new token is a new grant.
//!
//! The credential is a client secret (HTTP Basic, RFC 6749 §2.3.1) or a certificate: a client
//! assertion signed with its private key (`private_key_jwt`, RFC 7523 §2.2; see
//! [`crate::appcert`]). A stored certificate wins over a stored secret: it is the credential
//! Microsoft recommends, and an admin who made one means to use it.

use std::sync::Arc;

use oauth2::{ClientSecret, Scope};
use secrecy::ExposeSecret;

use super::{endpoints, token_client, OAuthError, StatusNoting, Tokens};
use crate::appcert;
use crate::mailbox::{FieldError, Mailbox};
use crate::secret::{self, SecretKind, SecretStore};

/// What an app proves itself with.
#[derive(Debug)]
pub enum AppCredential {
    Secret(ClientSecret),
    Certificate(Box<appcert::Credential>),
}

/// The mailbox's app credential from the keyring: its certificate when one is stored, else its
/// client secret. Callers hold the mailbox's lock (see [`crate::lock`]).
pub async fn load(secrets: &Arc<dyn SecretStore>, mailbox: &str) -> Result<Option<AppCredential>, OAuthError> {
    if let Some(stored) = secret::get(secrets, mailbox, SecretKind::ClientCertificate).await? {
        return appcert::parse(mailbox, &stored)
            .map(|c| Some(AppCredential::Certificate(Box::new(c))))
            .map_err(|e| OAuthError::Certificate(e.to_string()));
    }
    Ok(super::client_secret(secrets, mailbox).await?.map(AppCredential::Secret))
}

/// Gets an app-only access token.
pub async fn token(m: &Mailbox, credential: AppCredential, http: &reqwest::Client) -> Result<Tokens, OAuthError> {
    let e = endpoints(m)?;
    let client = StatusNoting::new(http);
    let resp = match credential {
        AppCredential::Secret(client_secret) => {
            token_client(m, Some(client_secret))?
                .exchange_client_credentials()
                .add_scopes(e.scopes.into_iter().map(Scope::new))
                .request_async(&client)
                .await
        }
        AppCredential::Certificate(cert) => {
            // No secret: the client id goes in the body (oauth2's BasicAuth without a secret),
            // next to the assertion (RFC 7523 §2.2).
            let assertion = cert
                .assertion(&m.client_id, &e.token_url, chrono::Utc::now().timestamp())
                .map_err(|err| OAuthError::Certificate(err.to_string()))?;
            token_client(m, None)?
                .exchange_client_credentials()
                .add_scopes(e.scopes.into_iter().map(Scope::new))
                .add_extra_param("client_assertion_type", appcert::ASSERTION_TYPE)
                .add_extra_param("client_assertion", assertion.expose_secret().to_string())
                .request_async(&client)
                .await
        }
    }
    // Throttled or down (429, 5xx) is not a verdict on the app's credential: see
    // `StatusNoting::token_error`.
    .map_err(|err| client.token_error("client credentials grant", &e.token_url, err))?;
    Ok(resp.into())
}

/// Parameters of the Exchange Online PowerShell an admin runs once for app-only access.
#[derive(Debug, Clone)]
pub struct ExchangeScriptInput<'a> {
    /// The app registration's Application (client) ID.
    pub app_id: &'a str,
    /// The Enterprise application's Object ID (not the app registration's object id).
    pub service_principal_object_id: &'a str,
    /// Display name for the service principal in Exchange.
    pub display_name: &'a str,
    /// The mailboxes to grant, with whether each is read over IMAP and/or POP.
    pub mailboxes: Vec<(&'a str, bool, bool)>,
}

/// The characters PowerShell takes for a single quote: `'` and the typographic U+2018–U+201B
/// (its tokenizer's `IsSingleQuote`). Any of them ends a single-quoted string.
const SINGLE_QUOTES: [char; 5] = ['\'', '\u{2018}', '\u{2019}', '\u{201A}', '\u{201B}'];

/// A PowerShell single-quoted string literal. Inside one nothing expands (`$`, backtick and
/// `;` are plain text); only a single quote ends it, and a quote written twice stands for
/// itself. So every quote character — including the typographic ones a display name copied from
/// a word processor carries — is doubled: nothing in `s` can close the string and start a
/// command of its own.
pub fn ps_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if SINGLE_QUOTES.contains(&c) {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Text for a `#` comment line: a comment ends at a line break, so none may get in.
fn ps_comment(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') { '?' } else { c }).collect()
}

/// The Exchange Online PowerShell that lets an app read the given mailboxes, ready to copy.
///
/// The app id and the service principal's object id must be GUIDs (they are written in their
/// hyphenated lower-case form); every value goes into the script as a [`ps_quote`]d literal.
pub fn exchange_script(input: &ExchangeScriptInput<'_>) -> Result<String, Vec<FieldError>> {
    let guid = |field: &'static str, v: &str, what: &str| {
        uuid::Uuid::try_parse(v.trim())
            .map(|u| u.hyphenated().to_string())
            .map_err(|_| FieldError::new(field, format!("{what} is a GUID like 8c1b7a3e-2f4d-4b9a-9e61-0d5f3c2a7b10")))
    };
    let app_id = guid("client_id", input.app_id, "the app registration's Application (client) ID");
    let object_id = guid("object_id", input.service_principal_object_id, "the Enterprise application's Object ID");
    let (app_id, object_id) = match (app_id, object_id) {
        (Ok(a), Ok(o)) => (a, o),
        (a, o) => return Err([a.err(), o.err()].into_iter().flatten().collect()),
    };
    let q = ps_quote;
    let mut out = String::new();
    out.push_str("# Run in Exchange Online PowerShell as an Exchange administrator.\n");
    out.push_str("Install-Module -Name ExchangeOnlineManagement -Scope CurrentUser   # once per machine\n");
    out.push_str("Connect-ExchangeOnline\n\n");
    out.push_str(
        "# Register the app's service principal in Exchange (ObjectId = Enterprise application's Object ID).\n",
    );
    out.push_str(&format!(
        "New-ServicePrincipal -AppId {} -ObjectId {} -DisplayName {}\n\n",
        q(&app_id),
        q(&object_id),
        q(input.display_name)
    ));
    for (mailbox, imap, pop) in &input.mailboxes {
        out.push_str(&format!("# {}\n", ps_comment(mailbox)));
        out.push_str(&format!(
            "Add-MailboxPermission -Identity {} -User {} -AccessRights FullAccess\n",
            q(mailbox),
            q(&object_id)
        ));
        let mut flags = Vec::new();
        if *imap {
            flags.push("-ImapEnabled $true");
        }
        if *pop {
            flags.push("-PopEnabled $true");
        }
        if !flags.is_empty() {
            out.push_str(&format!("Set-CASMailbox -Identity {} {}\n", q(mailbox), flags.join(" ")));
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const APP: &str = "00000000-1111-2222-3333-444444444444";
    const OBJ: &str = "55555555-6666-7777-8888-999999999999";

    /// The token endpoint throttling or down is not a verdict on the app's credential: it is
    /// `Unavailable` (which a check records as throttled, or as the endpoint down), as a refresh's
    /// is; an OAuth error keeps its own code.
    #[tokio::test]
    async fn a_throttled_or_failing_token_endpoint_is_unavailable_not_a_refused_credential() {
        let answers: [(&'static str, &'static str, &str); 4] = [
            ("429 Too Many Requests", "<html>slow down</html>", "token_endpoint_unavailable"),
            ("429 Too Many Requests", r#"{"error":"slow_down"}"#, "token_endpoint_unavailable"),
            ("503 Service Unavailable", "", "token_endpoint_unavailable"),
            ("401 Unauthorized", r#"{"error":"invalid_client"}"#, "invalid_client"),
        ];
        for (status, body, code) in answers {
            let port = crate::oauth::test_http::serve(move |_, _| (status, body.to_string())).await;
            let mut m = crate::mailbox::sample();
            m.provider = crate::mailbox::ProviderKind::Generic;
            m.flow = crate::mailbox::Flow::ClientCredentials;
            m.token_url = Some(format!("http://127.0.0.1:{port}/token"));
            m.auth_url = Some(format!("http://127.0.0.1:{port}/authorize"));
            let credential = AppCredential::Secret(ClientSecret::new("cs".into()));
            let err = token(&m, credential, &crate::oauth::http_client()).await.unwrap_err();
            assert_eq!(err.code(), code, "{status} {body}: {err}");
            let expected = status[..3].parse::<u16>().unwrap();
            if code == "token_endpoint_unavailable" {
                assert!(matches!(err, OAuthError::Unavailable { status, .. } if status == expected), "{err:?}");
            }
        }
    }

    /// A token as PowerShell's tokenizer sees it, for the shapes this script may contain.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Tok {
        /// A bare word: a command name, a parameter (`-Identity`) or an argument.
        Word(String),
        /// A single-quoted string, its doubled quotes undone.
        Str(String),
        /// `$name`.
        Var(String),
        /// Anything the script must never contain outside a single-quoted string: `"`, a
        /// backtick, an unterminated string.
        Suspicious(String),
    }

    fn is_quote(c: char) -> bool {
        SINGLE_QUOTES.contains(&c)
    }

    /// Splits a script into statements of tokens the way PowerShell does for these shapes:
    /// single-quoted strings end at any of ' U+2018 U+2019 U+201A U+201B unless it is doubled;
    /// `;`, CR and LF end a statement; `#` starts a comment up to the line end; `$` starts a
    /// variable; a backtick or `"` outside a string is reported, never interpreted.
    fn tokenize(script: &str) -> Vec<Vec<Tok>> {
        let chars: Vec<char> = script.chars().collect();
        let (mut i, mut stmts, mut cur) = (0, Vec::new(), Vec::new());
        let end_stmt = |stmts: &mut Vec<Vec<Tok>>, cur: &mut Vec<Tok>| {
            if !cur.is_empty() {
                stmts.push(std::mem::take(cur));
            }
        };
        while i < chars.len() {
            let c = chars[i];
            match c {
                ' ' | '\t' => i += 1,
                ';' | '\n' | '\r' => {
                    end_stmt(&mut stmts, &mut cur);
                    i += 1;
                }
                '#' => {
                    while i < chars.len() && chars[i] != '\n' && chars[i] != '\r' {
                        i += 1;
                    }
                }
                c if is_quote(c) => {
                    i += 1;
                    let mut s = String::new();
                    loop {
                        match chars.get(i) {
                            None => {
                                cur.push(Tok::Suspicious(format!("unterminated '{s}")));
                                break;
                            }
                            Some(&q) if is_quote(q) => {
                                if chars.get(i + 1).is_some_and(|&n| is_quote(n)) {
                                    s.push(chars[i + 1]);
                                    i += 2;
                                } else {
                                    i += 1;
                                    break;
                                }
                            }
                            Some(&x) => {
                                s.push(x);
                                i += 1;
                            }
                        }
                    }
                    cur.push(Tok::Str(s));
                }
                '$' => {
                    i += 1;
                    let start = i;
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                    cur.push(Tok::Var(chars[start..i].iter().collect()));
                }
                '`' | '"' | '\u{201C}' | '\u{201D}' | '\u{201E}' => {
                    cur.push(Tok::Suspicious(c.to_string()));
                    i += 1;
                }
                _ => {
                    let start = i;
                    while i < chars.len()
                        && !matches!(chars[i], ' ' | '\t' | ';' | '\n' | '\r' | '$' | '`' | '"')
                        && !is_quote(chars[i])
                    {
                        i += 1;
                    }
                    cur.push(Tok::Word(chars[start..i].iter().collect()));
                }
            }
        }
        end_stmt(&mut stmts, &mut cur);
        stmts
    }

    fn w(s: &str) -> Tok {
        Tok::Word(s.into())
    }
    fn st(s: &str) -> Tok {
        Tok::Str(s.into())
    }

    /// The statements the script must consist of, and nothing else.
    fn intended(display: &str, mailboxes: &[(&str, bool, bool)]) -> Vec<Vec<Tok>> {
        let mut v = vec![
            vec![w("Install-Module"), w("-Name"), w("ExchangeOnlineManagement"), w("-Scope"), w("CurrentUser")],
            vec![w("Connect-ExchangeOnline")],
            vec![
                w("New-ServicePrincipal"),
                w("-AppId"),
                st(APP),
                w("-ObjectId"),
                st(OBJ),
                w("-DisplayName"),
                st(display),
            ],
        ];
        for (m, imap, pop) in mailboxes {
            v.push(vec![
                w("Add-MailboxPermission"),
                w("-Identity"),
                st(m),
                w("-User"),
                st(OBJ),
                w("-AccessRights"),
                w("FullAccess"),
            ]);
            let mut set = vec![w("Set-CASMailbox"), w("-Identity"), st(m)];
            if *imap {
                set.extend([w("-ImapEnabled"), Tok::Var("true".into())]);
            }
            if *pop {
                set.extend([w("-PopEnabled"), Tok::Var("true".into())]);
            }
            if *imap || *pop {
                v.push(set);
            }
        }
        v
    }

    fn script(display: &str, mailboxes: Vec<(&str, bool, bool)>) -> String {
        exchange_script(&ExchangeScriptInput {
            app_id: APP,
            service_principal_object_id: OBJ,
            display_name: display,
            mailboxes,
        })
        .unwrap()
    }

    #[test]
    fn script_registers_the_service_principal_and_grants_each_mailbox() {
        let mbs = vec![("support@contoso.com", true, false), ("billing@contoso.com", false, true)];
        let s = script("Help desk's mail reader", mbs.clone());
        assert!(s.contains(
            "New-ServicePrincipal -AppId '00000000-1111-2222-3333-444444444444' -ObjectId '55555555-6666-7777-8888-999999999999' -DisplayName 'Help desk''s mail reader'"
        ), "{s}");
        assert!(s.contains("Add-MailboxPermission -Identity 'support@contoso.com' -User '55555555-6666-7777-8888-999999999999' -AccessRights FullAccess"));
        assert!(s.contains("Set-CASMailbox -Identity 'support@contoso.com' -ImapEnabled $true\n"));
        assert!(s.contains("Set-CASMailbox -Identity 'billing@contoso.com' -PopEnabled $true\n"));
        assert_eq!(tokenize(&s), intended("Help desk's mail reader", &mbs));
    }

    /// U+2019 closes a PowerShell single-quoted string just like `'`: with only `'` doubled,
    /// this display name and address ran a command of their own.
    #[test]
    fn typographic_quotes_cannot_add_a_command() {
        let evil =
            "x\u{2019}; Add-MailboxPermission -Identity boss@contoso.com -User evil -AccessRights FullAccess; \u{2019}";
        for q in SINGLE_QUOTES {
            let evil = evil.replace('\u{2019}', &q.to_string());
            let mbs = vec![(evil.as_str(), true, true)];
            let s = script(&evil, mbs.clone());
            assert_eq!(tokenize(&s), intended(&evil, &mbs), "{s}");
        }
        let newline = "a@contoso.com\nAdd-MailboxPermission -Identity boss@contoso.com -User evil";
        let mbs = vec![(newline, true, false)];
        assert_eq!(tokenize(&script("n", mbs.clone())), intended("n", &mbs), "a line break cannot leave the comment");
    }

    #[test]
    fn app_and_object_ids_must_be_guids() {
        let run = |app: &str, obj: &str| {
            exchange_script(&ExchangeScriptInput {
                app_id: app,
                service_principal_object_id: obj,
                display_name: "d",
                mailboxes: vec![],
            })
        };
        let fields =
            |r: Result<String, Vec<FieldError>>| r.unwrap_err().into_iter().map(|e| e.field).collect::<Vec<_>>();
        assert_eq!(fields(run("x'; Remove-Mailbox boss; '", OBJ)), ["client_id"]);
        assert_eq!(fields(run(APP, "nope")), ["object_id"]);
        assert_eq!(fields(run("", "")), ["client_id", "object_id"]);
        let s = run(" {00000000-1111-2222-3333-44444444444A} ", OBJ).unwrap();
        assert!(s.contains("-AppId '00000000-1111-2222-3333-44444444444a'"), "{s}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever a display name or an address holds, the script has exactly the intended
        /// statements, each value one string argument equal to what was given.
        #[test]
        fn any_text_stays_one_argument(
            display in any::<String>(),
            mails in proptest::collection::vec((any::<String>(), any::<bool>(), any::<bool>()), 0..4),
            quoty in "['\u{2018}\u{2019}\u{201A}\u{201B};$`\"#\n ]{0,12}",
        ) {
            let display = format!("{display}{quoty}");
            let mbs: Vec<(&str, bool, bool)> = mails.iter().map(|(m, i, p)| (m.as_str(), *i, *p)).collect();
            let s = script(&display, mbs.clone());
            prop_assert_eq!(tokenize(&s), intended(&display, &mbs));
        }

        #[test]
        fn quoting_round_trips(v in any::<String>()) {
            let toks = tokenize(&ps_quote(&v));
            prop_assert_eq!(toks, if v.is_empty() { vec![vec![st("")]] } else { vec![vec![st(&v)]] });
        }
    }
}
