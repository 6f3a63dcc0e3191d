//! Failure → cause → fix, as data.
//!
//! Every failure carries a stable code (from the probes, the OAuth flows, the keyring) and,
//! when the other side said something, its words. The catalogue below turns that into what the
//! admin should change. Provider-specific codes found in the server's words (Microsoft's
//! `AADSTS…`) take precedence over the generic code, because they are more precise.

use serde::{Deserialize, Serialize};

/// What went wrong and what to do, in the admin's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    pub cause: &'static str,
    pub fix: &'static str,
    /// The action a front end offers for `fix`, when this program can take it (see [`FIXES`]).
    pub action: Option<Fix>,
}

/// An action that carries out a diagnosis's fix, decided here so that no front end derives it
/// from codes. On the wire `{"kind": "exchange_script"}`, `{"kind": "sign_in_again"}`,
/// `{"kind": "edit_field", "field": "folder"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
// `doctor::Fix` (a keyring fix) takes the plain name in the window's bindings; a container's
// name does not change its JSON.
#[serde(rename = "FixAction", tag = "kind", rename_all = "snake_case")]
pub enum Fix {
    /// Run the Exchange Online PowerShell for the (app-only) mailbox: its service principal,
    /// FullAccess permission and IMAP/POP enabled (`exchange_script`).
    ExchangeScript,
    /// Sign in again (Authenticate): the stored sign-in is gone, expired or not the right one.
    SignInAgain,
    /// Correct one field of the mailbox: a column of [`crate::import::COLUMNS`], or
    /// `client_secret` (the secret kept in the keyring for app-only access and confidential
    /// apps).
    EditField { field: String },
}

impl Fix {
    fn edit(field: &str) -> Self {
        Fix::EditField { field: field.into() }
    }

    /// The fix for a record of `check`: a server field of the outgoing server names its
    /// `smtp_*` counterpart (a refused SMTP port is fixed in `smtp_port`, not `port`).
    pub fn for_check(self, check: crate::health::Check) -> Self {
        match self {
            Fix::EditField { field } if check == crate::health::Check::Smtp => match field.as_str() {
                "host" | "port" | "security" => Fix::EditField { field: format!("smtp_{field}") },
                _ => Fix::EditField { field },
            },
            other => other,
        }
    }
}

/// The action of each catalogue entry (code or marker) that has one. Entries whose fix is
/// outside this program (an admin portal, the network, the server's certificate) have none.
const FIXES: &[(&str, FixKind)] = &[
    // Exchange Online: the script sets the service principal, FullAccess and IMAP/POP.
    ("auth_rejected_app_only", FixKind::ExchangeScript),
    ("User is authenticated but not connected", FixKind::ExchangeScript),
    ("AUTHENTICATE failed", FixKind::ExchangeScript),
    ("-ERR Authentication failure", FixKind::ExchangeScript),
    // The stored sign-in is gone or no longer accepted.
    ("invalid_grant", FixKind::SignInAgain),
    ("refresh_rejected", FixKind::SignInAgain),
    ("not_authenticated", FixKind::SignInAgain),
    ("signin_missing", FixKind::SignInAgain),
    ("signin_expiring", FixKind::SignInAgain),
    ("signin_timeout", FixKind::SignInAgain),
    ("expired_token", FixKind::SignInAgain),
    ("interaction_required", FixKind::SignInAgain),
    ("consent_required", FixKind::SignInAgain),
    ("access_denied", FixKind::SignInAgain),
    ("cancelled", FixKind::SignInAgain),
    ("nonce_mismatch", FixKind::SignInAgain),
    ("AADSTS50076", FixKind::SignInAgain),
    ("AADSTS70008", FixKind::SignInAgain),
    ("AADSTS700082", FixKind::SignInAgain),
    ("AADSTS50173", FixKind::SignInAgain),
    ("AADSTS70043", FixKind::SignInAgain),
    ("Token has been expired or revoked", FixKind::SignInAgain),
    // A field of the mailbox is wrong.
    ("folder_missing", FixKind::Edit("folder")),
    ("dns", FixKind::Edit("host")),
    ("tls_hostname", FixKind::Edit("host")),
    ("connect_refused", FixKind::Edit("port")),
    ("protocol", FixKind::Edit("port")),
    ("tls", FixKind::Edit("security")),
    ("starttls_not_offered", FixKind::Edit("security")),
    ("tls_untrusted", FixKind::Edit("ca_file")),
    ("ca_file", FixKind::Edit("ca_file")),
    ("redirect_port_taken", FixKind::Edit("redirect_port")),
    ("discovery_failed", FixKind::Edit("issuer")),
    ("token_endpoint_unreachable", FixKind::Edit("token_url")),
    ("token_response_invalid", FixKind::Edit("token_url")),
    ("invalid_scope", FixKind::Edit("scopes")),
    ("invalid_client", FixKind::Edit("client_id")),
    ("signed_in_as_other", FixKind::Edit("login")),
    ("AADSTS50194", FixKind::Edit("tenant")),
    ("AADSTS90002", FixKind::Edit("tenant")),
    ("AADSTS700016", FixKind::Edit("client_id")),
    ("AADSTS7000215", FixKind::Edit("client_secret")),
    ("AADSTS7000222", FixKind::Edit("client_secret")),
    ("no_client_secret", FixKind::Edit("client_secret")),
    ("client_secret_expired", FixKind::Edit("client_secret")),
    ("client_secret_expiring", FixKind::Edit("client_secret")),
];

/// [`Fix`] in a constant table (a `String` cannot be built in a `const`).
#[derive(Debug, Clone, Copy)]
enum FixKind {
    ExchangeScript,
    SignInAgain,
    Edit(&'static str),
}

fn action(key: &str) -> Option<Fix> {
    FIXES.iter().find(|(k, _)| *k == key).map(|(_, f)| match f {
        FixKind::ExchangeScript => Fix::ExchangeScript,
        FixKind::SignInAgain => Fix::SignInAgain,
        FixKind::Edit(field) => Fix::edit(field),
    })
}

/// `(code or marker, cause, fix)`.
type Entry = (&'static str, &'static str, &'static str);

/// Markers looked for in the server's words, most specific first. Microsoft's `AADSTS` codes
/// come from the identity platform's error reference; the mail-server lines are the ones
/// Exchange Online and Gmail actually send.
const BY_WORDS: &[Entry] = &[
    // Microsoft identity platform (AADSTS)
    ("AADSTS50011", "The redirect URI sent by Mailbox Auth is not registered for the app.",
     "In Microsoft Entra → App registrations → your app → Authentication, add the platform \"Mobile and desktop applications\" with the redirect URI http://localhost."),
    ("AADSTS50194", "The app is registered for a single tenant, but the sign-in used the multi-tenant endpoint.",
     "Set the mailbox's tenant to your tenant id or domain (not common/organizations), or make the app multi-tenant in Entra → Authentication → Supported account types."),
    ("AADSTS90002", "The tenant does not exist.",
     "Check the tenant: use the tenant id (Entra → Overview → Tenant ID) or a verified domain such as contoso.onmicrosoft.com."),
    ("AADSTS700016", "The client id is not known in this tenant.",
     "Check the client_id against Entra → App registrations → Overview (Application (client) ID) and that the tenant is the one the app lives in."),
    ("AADSTS65001", "Nobody has consented to the app's mail permissions.",
     "Have an admin grant consent: Entra → App registrations → your app → API permissions → Grant admin consent; or sign in once and accept."),
    ("AADSTS7000215", "The client secret is wrong: often the secret's ID was copied instead of its value.",
     "In Entra → Certificates & secrets, create a new client secret and store its Value (not the Secret ID) for this mailbox."),
    ("AADSTS7000222", "The app's client secret has expired.",
     "In Entra → Certificates & secrets, create a new client secret, store it for the mailbox and record its new expiry date."),
    ("AADSTS700027", "The app's client assertion was signed with a key the app registration does not know: the certificate was never uploaded, was deleted, or another certificate's key signed it.",
     "Upload the mailbox's certificate (the .cer made by `mailbox-auth app-cert create`, its thumbprint shown by `mailbox-auth app-cert show`) in Entra → App registrations → your app → Certificates & secrets → Certificates, and check that the thumbprint listed there is the one shown; or make a new certificate and upload that."),
    ("AADSTS700025", "The app is a public client, so it must not send a client secret.",
     "Remove the client secret stored for this mailbox, or turn off \"Allow public client flows\" if the app is meant to be confidential."),
    ("AADSTS7000218", "The app is treated as confidential but no client secret was sent.",
     "In Entra → Authentication → Advanced settings, set \"Allow public client flows\" to Yes, or store the app's client secret for this mailbox."),
    ("AADSTS50076", "Multi-factor authentication is required for this sign-in.",
     "Click Authenticate and complete the MFA prompt in the browser; the refresh token then carries the MFA claim."),
    ("AADSTS53003", "A Conditional Access policy blocked the sign-in.",
     "Ask an Entra admin to check Sign-in logs → Conditional Access for this user and app, and allow the app or sign in from a compliant device/location."),
    ("AADSTS70008", "The authorization code or refresh token expired because it was not used for a long time.",
     "Click Authenticate and sign in again; verify the mailbox regularly so its sign-in stays fresh."),
    ("AADSTS700082", "The refresh token expired after 90 days without use.",
     "Click Authenticate and sign in again; scheduled verification keeps the refresh token in use."),
    ("AADSTS50173", "The sign-in was revoked, usually because the user's password changed or sessions were revoked.",
     "Click Authenticate and sign in again with the current password."),
    ("AADSTS70043", "A Conditional Access sign-in frequency policy expired the refresh token.",
     "Click Authenticate and sign in again; ask an Entra admin to exclude this app from the sign-in frequency policy if it must run unattended."),
    ("AADSTS9002313", "Microsoft rejected the request as malformed.",
     "Check the tenant, client_id, scopes and extra authorization parameters for typos; use the v2.0 endpoints and scopes such as https://outlook.office.com/IMAP.AccessAsUser.All."),
    // Google
    ("Token has been expired or revoked", "Google no longer accepts the refresh token: an app in \"Testing\" gets tokens that expire after 7 days, or the user removed the app's access.",
     "If the OAuth consent screen is in Testing, publish the app (Google Cloud → OAuth consent screen → Publish); then click Authenticate and sign in again."),
    // Exchange Online IMAP/POP/SMTP
    ("User is authenticated but not connected", "Exchange accepted the token but the signed-in identity has no access to this mailbox.",
     "For app-only access run Add-MailboxPermission -Identity <mailbox> -User <service principal id> -AccessRights FullAccess; for delegated access sign in as the mailbox's user or a delegate with FullAccess."),
    ("AUTHENTICATE failed", "Exchange refused the token after a successful sign-in: IMAP is disabled for the mailbox, the token is for another API (for example Microsoft Graph instead of outlook.office.com), or for app-only the service principal or its mailbox permission is missing.",
     "Run Set-CASMailbox -Identity <mailbox> -ImapEnabled $true; request the scope https://outlook.office.com/IMAP.AccessAsUser.All (delegated) or https://outlook.office365.com/.default (app-only, with New-ServicePrincipal and Add-MailboxPermission)."),
    ("-ERR Authentication failure", "The POP3 server refused the token: POP is disabled for the mailbox, or the token does not belong to this mailbox's user.",
     "Run Set-CASMailbox -Identity <mailbox> -PopEnabled $true, request https://outlook.office.com/POP.AccessAsUser.All, and sign in as the mailbox's user."),
    ("5.7.139", "SMTP AUTH is disabled for the tenant or for this mailbox.",
     "Run Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false (or Set-TransportConfig -SmtpClientAuthenticationDisabled $false for the tenant)."),
    ("5.7.57", "The SMTP server did not see an authenticated session before the message was sent.",
     "Use smtp.office365.com port 587 with STARTTLS and the SMTP.Send scope, so that AUTH XOAUTH2 succeeds before MAIL FROM."),
    ("5.7.3", "The SMTP server refused the token.",
     "Check that SMTP AUTH is enabled for the mailbox, the token has the SMTP.Send scope, and the signed-in account is the sender."),
];

/// Codes, as produced by the probes, the OAuth flows and the keyring.
const BY_CODE: &[Entry] = &[
    // OAuth (RFC 6749 §5.2 and §4.1.2.1)
    ("invalid_grant", "The stored sign-in is no longer valid: the refresh token expired, was revoked, or was already used once (rotated).",
     "Click Authenticate and sign in again."),
    ("invalid_client", "The identity provider does not accept the client id or client secret.",
     "Check the client_id, and the client secret if the app has one (it may have expired)."),
    ("unauthorized_client", "The app registration is not allowed to use this sign-in flow.",
     "Allow the authorization code flow (public client / desktop platform) for the app at the identity provider."),
    ("invalid_scope", "The identity provider does not know one of the requested scopes.",
     "Check the scopes of the mailbox against those the app registration exposes."),
    ("access_denied", "The sign-in was refused: the permissions were declined at the consent screen, or the device code sign-in was denied.",
     "Sign in again and accept the requested permissions, or ask an admin to grant consent for the organisation."),
    // Device authorization grant (RFC 8628 §3.5); `authorization_pending` and `slow_down` only
    // make the poller wait, so they never end a sign-in.
    ("expired_token", "The device code expired before the sign-in was completed on the other device.",
     "Click Authenticate again and enter the new code at the address shown before it expires (Microsoft and Google allow about 15 minutes)."),
    ("consent_required", "The user or an admin must first consent to the app's permissions.",
     "Sign in again and accept, or have an admin grant consent for the organisation."),
    ("interaction_required", "The identity provider needs the user to sign in interactively (for example MFA).",
     "Click Authenticate and complete the sign-in in the browser."),
    ("signin_timeout", "The sign-in was not completed in the browser in time: no redirect came back to Mailbox Auth.",
     "Click Authenticate again and finish signing in in the browser window that opens; check the account and password. If the browser showed the identity provider's error page instead (for example about the redirect URI), check the redirect URI registered for the app: http://127.0.0.1 (http://localhost for Microsoft) for a desktop app; if the provider matches the port too, register the one named above and set it as the mailbox's redirect_port."),
    ("no_refresh_token", "The identity provider returned no refresh token, so the mailbox cannot stay authorised.",
     "Request the offline_access scope (Microsoft, generic) or add access_type=offline and prompt=consent (Google) to the authorization parameters."),
    ("not_authenticated", "The mailbox has not been authenticated yet.", "Click Authenticate and sign in."),
    ("no_client_secret", "App-only access needs the app's client secret or certificate, and none is stored.",
     "Store the client secret of the app registration for this mailbox (Entra → Certificates & secrets → the secret's Value), or make a certificate with `mailbox-auth app-cert create` and upload its .cer there."),
    ("client_certificate_unreadable", "The certificate credential stored for the mailbox cannot be read or cannot sign.",
     "Make a new certificate with `mailbox-auth app-cert create <mailbox>` and upload its .cer to the app registration (Entra → Certificates & secrets → Certificates)."),
    ("client_secret_expired", "The app registration's client secret has expired.",
     "Create a new client secret for the app, store it for this mailbox and record its expiry date."),
    ("client_secret_expiring", "The app registration's client secret expires within 30 days.",
     "Create a new client secret before the expiry date, store it for this mailbox and record its new expiry date."),
    ("signed_in_as_other", "The account that signed in is not the mailbox's login.",
     "Sign in again with the mailbox's own account, or set the login field to the delegate that has access to the mailbox."),
    ("token_endpoint_unreachable", "The token endpoint could not be reached.",
     "Check the token URL and this machine's network connection to the identity provider."),
    ("token_response_invalid", "The token endpoint did not answer like an OAuth server.",
     "Check the token URL: it must be the provider's OAuth2 token endpoint."),
    ("refresh_rejected", "The identity provider refused the stored sign-in without saying why: the refresh token was revoked, expired, or already used once (one-time refresh tokens).",
     "Click Authenticate and sign in again."),
    ("token_endpoint_unavailable", "The identity provider's token endpoint is down or throttling requests (HTTP 5xx or 429); the stored sign-in is still valid.",
     "Nothing to change: try again later (after the time the provider asked for, if it named one). If it lasts, check the provider's status page."),
    ("throttled", "The server or identity provider is throttling this account (too many connections or requests); the mailbox itself is not broken.",
     "Nothing to change: the check is retried after the back-off the server asked for. If it lasts, close other programs holding connections to this mailbox (mail clients, fetchers) or lower the monitor's per-account connection limit."),
    ("signin_expiring", "The mailbox's sign-in ends soon: its refresh token has a fixed lifetime (for example 7 days for a Google app whose consent screen is in Testing) or was not used for most of its idle lifetime.",
     "Click Authenticate and sign in again before the date shown; for Google, publish the app (OAuth consent screen → Publish) so sign-ins stop expiring after 7 days; keep the monitor running so idle sign-ins stay in use."),
    ("refresh_busy", "Another program using this mailbox (the window, a scheduled verify, a mail fetcher) kept its sign-in locked for too long.",
     "Try again; if it keeps happening, end the program that hangs while refreshing this mailbox."),
    ("discovery_failed", "The issuer's OpenID configuration could not be read or does not fit the issuer.",
     "Check the issuer URL: it is the address in front of /.well-known/openid-configuration (for example https://login.example.com/realms/support); or leave it empty and enter the authorization and token URLs."),
    ("config", "The mailbox settings are incomplete.", "Fill in the named field in the mailbox editor."),
    ("loopback", "The local sign-in listener could not run.", "Check that this machine allows programs to listen on 127.0.0.1."),
    ("cancelled", "The sign-in was cancelled.", "Click Authenticate to start again."),
    ("nonce_mismatch", "The id_token the identity provider returned does not carry the nonce this sign-in sent, so it may belong to another sign-in; nothing was stored.",
     "Click Authenticate and sign in again. If it keeps failing, remove any fixed nonce from the mailbox's authorization parameters (a fresh one is sent for every sign-in with the openid scope), and check that the issuer and token URL belong to the same identity provider."),
    ("redirect_port_taken", "Another program is listening on the mailbox's fixed redirect port, so the sign-in cannot receive the browser's redirect there.",
     "Close the program using that port (`ss -ltnp` shows it), or register another loopback port with the identity provider and set it as the mailbox's redirect_port; leave redirect_port empty if the provider accepts any port."),
    // Keyring
    ("keyring_unavailable", "No OS keyring (Secret Service) is reachable.",
     "Install and unlock gnome-keyring or KeePassXC (with Secret Service enabled), then try again."),
    ("keyring_locked", "The OS keyring is locked or refused access.", "Unlock the keyring and try again."),
    ("keyring_failed", "The OS keyring failed.", "Unlock or restart the keyring service and try again."),
    ("signin_missing", "The mailbox was signed in, but its stored sign-in is no longer in the OS keyring: the keyring was reset or replaced, or the data directory was moved to another machine.",
     "Click Authenticate and sign in again (run `mailbox-auth doctor` first when many mailboxes show this: the keyring itself may be the problem)."),
    // Mail server probes
    ("dns", "The mail server's host name does not resolve.", "Check the host name for typos; for Microsoft 365 it is outlook.office365.com."),
    ("connect_refused", "Nothing accepts connections at that host and port.",
     "Check the port (IMAP 993 with TLS, 143 with STARTTLS; POP3 995 with TLS, 110 with STARTTLS; SMTP 465 with TLS, 587 with STARTTLS) and that the server is running."),
    ("connect", "The mail server could not be reached.", "Check the host, the port and any firewall between this machine and the server."),
    ("timeout", "The mail server did not answer in time.", "Check the host and port, and any firewall that silently drops the connection."),
    ("tls_untrusted", "The mail server's certificate is not signed by a trusted authority.",
     "If the server uses a private CA, set the mailbox's CA certificate file to that CA's PEM; otherwise check you are talking to the right server."),
    ("tls_hostname", "The mail server's certificate does not match the host name.", "Use the host name the certificate was issued for."),
    ("tls_expired", "The mail server's certificate has expired (or is not valid yet).",
     "Renew the server's certificate, and check this machine's clock."),
    ("tls", "The TLS handshake with the mail server failed.",
     "Check the security setting: port 993/995 need TLS, 143/110 need STARTTLS."),
    ("ca_file", "The extra CA certificate file cannot be used.", "Point the CA certificate setting at a readable PEM file containing a certificate."),
    ("starttls_not_offered", "The server does not offer STARTTLS, so the token was not sent.",
     "Use TLS on the server's TLS port (IMAP 993, POP3 995), or enable STARTTLS on the server."),
    ("mechanism_not_offered", "The server offers neither XOAUTH2 nor OAUTHBEARER.",
     "Enable OAuth (XOAUTH2/OAUTHBEARER) on the mail server, or check that the host is the provider's mail server."),
    ("auth_rejected", "The mail server refused the access token.",
     "Check that the signed-in account is the mailbox's login (or has access to it), that IMAP/POP is enabled for the mailbox, and that the scopes are for this mail service."),
    ("auth_rejected_app_only", "The mail server refused the app-only token: the app has no access to this mailbox.",
     "For app-only access the app's service principal must be registered in Exchange and hold FullAccess on the mailbox, with IMAP/POP enabled: run the PowerShell from the window's Exchange script dialog or `mailbox-auth exchange-script` (New-ServicePrincipal, Add-MailboxPermission, Set-CASMailbox)."),
    ("folder_missing", "Sign-in worked, but the folder does not exist.", "Fix the folder name (usually INBOX)."),
    ("protocol", "The server answered in a way that does not fit the protocol.",
     "Check that the port belongs to the chosen protocol (IMAP or POP3) and security."),
    ("probe_deadline", "The mail server answered too slowly: the whole check did not finish within its deadline (three times the step timeout), though each answer came in time.",
     "Check the host and port and the network path to the server (a proxy or firewall that slows connections); a longer --timeout also lengthens the deadline."),
    ("reply_too_large", "The mail server sent far more than a sign-in check needs (over 1 MiB), so the check was stopped.",
     "Check that the host and port belong to the mail server; a server that answers a sign-in with megabytes is misbehaving or is not a mail server."),
    ("invalid_input", "A value to be sent to the server cannot be sent: it holds a control character (such as a line break) or is not a valid address.",
     "Correct the named field (the mailbox's login or email, or the recipient given with --to) and try again."),
    ("store", "The local data store failed.", "Check that the data directory is writable and has free space."),
    ("not_found", "There is no mailbox with that name.", "Check the name with `mailbox-auth list`."),
];

const UNKNOWN: Diagnosis = Diagnosis {
    cause: "An unexpected failure.",
    fix: "Read the server's words above; if they do not help, check the mailbox settings and try again.",
    action: None,
};

/// The diagnosis for a failure code and the server's words.
pub fn diagnose(code: &str, server_words: Option<&str>) -> Diagnosis {
    if let Some(words) = server_words {
        if let Some((marker, cause, fix)) = BY_WORDS.iter().find(|(marker, ..)| has_marker(words, marker)) {
            return Diagnosis { cause, fix, action: action(marker) };
        }
    }
    BY_CODE
        .iter()
        .find(|(c, ..)| *c == code)
        .map(|(c, cause, fix)| Diagnosis { cause, fix, action: action(c) })
        .unwrap_or(UNKNOWN)
}

/// Whether `marker` occurs in `words` as a whole code: `AADSTS70008` must not match inside
/// `AADSTS700082`, nor `5.7.3` inside `5.7.30`.
fn has_marker(words: &str, marker: &str) -> bool {
    words.match_indices(marker).any(|(i, _)| {
        let next = words[i + marker.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_digit())
    })
}

/// Words by which mail servers say "come back later" rather than "no": RFC 5530's `[LIMIT]`
/// and Gmail's `[THROTTLED]` response codes, Gmail's "Too many simultaneous connections",
/// Exchange Online's "Request is throttled. Suggested Backoff Time: N milliseconds" (on IMAP,
/// POP3 and SMTP alike), Dovecot's "Maximum number of connections from user+IP exceeded", and
/// SMTP 4.7.x rate limits ("421 4.7.0 Too many connections", "451 4.7.500 throttled").
const THROTTLE_MARKERS: &[&str] = &[
    "[limit]",
    "[throttled]",
    "throttl",
    "too many simultaneous",
    "too many connections",
    "too many concurrent",
    "too many login",
    "too many requests",
    "too many sessions",
    "maximum number of connections",
    "bandwidth limits",
];

/// Whether the server's words say it is throttling (a temporary refusal to be retried after a
/// back-off), not that the mailbox or its sign-in is broken.
pub fn is_throttling(words: &str) -> bool {
    let lower = words.to_ascii_lowercase();
    THROTTLE_MARKERS.iter().any(|m| lower.contains(m))
}

/// The back-off the words ask for: Exchange's "Suggested Backoff Time: N milliseconds", or
/// "retry after N seconds" (an HTTP `Retry-After` as the token endpoint's error states it).
pub fn backoff(words: &str) -> Option<std::time::Duration> {
    let lower = words.to_ascii_lowercase();
    let number_after = |marker: &str| -> Option<u64> {
        let rest = &lower[lower.find(marker)? + marker.len()..];
        let digits: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    };
    if let Some(ms) = number_after("suggested backoff time:") {
        return Some(std::time::Duration::from_millis(ms));
    }
    number_after("retry after").map(std::time::Duration::from_secs)
}

/// The codes the catalogue knows (for tests and documentation).
pub fn known_codes() -> impl Iterator<Item = &'static str> {
    BY_CODE.iter().map(|(c, ..)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_beat_codes() {
        let d = diagnose(
            "invalid_client",
            Some("AADSTS7000218: The request body must contain client_assertion or client_secret."),
        );
        assert!(d.fix.contains("Allow public client flows"), "{d:?}");
    }

    #[test]
    fn unknown_code_gets_the_generic_answer() {
        assert_eq!(diagnose("something-new", None), UNKNOWN);
    }

    /// Provider error bodies and server lines recorded from public documentation.
    #[derive(serde::Deserialize)]
    struct Fixture {
        code: String,
        body: Option<serde_json::Value>,
        line: Option<String>,
        cause: String,
        fix: String,
    }

    fn fixtures() -> Vec<Fixture> {
        serde_json::from_str(include_str!("../fixtures/provider-errors.json")).expect("fixture JSON")
    }

    /// The words as the OAuth code keeps them: `error: error_description`.
    fn words(f: &Fixture) -> String {
        match (&f.body, &f.line) {
            (Some(b), _) => {
                format!("{}: {}", b["error"].as_str().unwrap(), b["error_description"].as_str().unwrap_or(""))
            }
            (None, Some(l)) => l.clone(),
            (None, None) => panic!("fixture without body or line"),
        }
    }

    #[test]
    fn every_fixture_gets_its_cause_and_fix() {
        for f in fixtures() {
            let w = words(&f);
            let d = diagnose(&f.code, Some(&w));
            assert!(d.cause.contains(&f.cause), "cause for {w:?}: {:?} lacks {:?}", d.cause, f.cause);
            assert!(d.fix.contains(&f.fix), "fix for {w:?}: {:?} lacks {:?}", d.fix, f.fix);
        }
    }

    #[test]
    fn every_marker_and_oauth_code_has_a_fixture() {
        let fx = fixtures();
        for (marker, ..) in BY_WORDS {
            assert!(fx.iter().any(|f| has_marker(&words(f), marker)), "no fixture for {marker}");
        }
        for code in [
            "invalid_grant",
            "invalid_client",
            "unauthorized_client",
            "invalid_scope",
            "access_denied",
            "expired_token",
            "consent_required",
            "interaction_required",
        ] {
            assert!(
                fx.iter().any(|f| f.code == code && !BY_WORDS.iter().any(|(m, ..)| has_marker(&words(f), m))),
                "no plain fixture for {code}"
            );
        }
    }

    #[test]
    fn local_failures_have_their_fix() {
        for (code, cause, fix) in LOCAL_CASES {
            let d = diagnose(code, None);
            assert!(d.cause.contains(cause) && d.fix.contains(fix), "{code}: {d:?}");
        }
    }

    #[test]
    fn every_code_in_the_catalogue_is_tested() {
        let fx = fixtures();
        for (code, ..) in BY_CODE {
            assert!(
                fx.iter().any(|f| f.code == *code) || LOCAL_CASES.iter().any(|(c, ..)| c == code),
                "{code} has neither a fixture nor a local case"
            );
        }
    }

    /// `(code, words in the cause, words in the fix)` for failures that happen on this side.
    const LOCAL_CASES: &[(&str, &str, &str)] = &[
        ("dns", "does not resolve", "host name"),
        ("connect_refused", "Nothing accepts connections", "Check the port"),
        ("connect", "could not be reached", "firewall"),
        ("timeout", "did not answer in time", "firewall"),
        ("tls_untrusted", "not signed by a trusted authority", "CA certificate file"),
        ("tls_hostname", "does not match the host name", "issued for"),
        ("tls_expired", "has expired", "clock"),
        ("tls", "handshake", "993/995 need TLS"),
        ("ca_file", "cannot be used", "PEM file"),
        ("starttls_not_offered", "token was not sent", "TLS port"),
        ("mechanism_not_offered", "neither XOAUTH2 nor OAUTHBEARER", "Enable OAuth"),
        ("folder_missing", "folder does not exist", "folder name"),
        ("auth_rejected_app_only", "app-only token", "Add-MailboxPermission"),
        ("protocol", "does not fit the protocol", "port belongs"),
        ("probe_deadline", "deadline", "--timeout"),
        ("reply_too_large", "over 1 MiB", "host and port"),
        ("invalid_input", "control character", "named field"),
        ("signin_timeout", "not completed", "redirect URI registered for the app"),
        ("no_refresh_token", "no refresh token", "offline_access"),
        ("not_authenticated", "not been authenticated", "Authenticate"),
        ("no_client_secret", "none is stored", "Certificates & secrets"),
        ("client_certificate_unreadable", "cannot be read", "app-cert create"),
        ("client_secret_expired", "has expired", "new client secret"),
        ("client_secret_expiring", "within 30 days", "before the expiry date"),
        ("signed_in_as_other", "not the mailbox's login", "login field"),
        ("keyring_unavailable", "No OS keyring", "gnome-keyring"),
        ("keyring_locked", "locked", "Unlock"),
        ("token_endpoint_unreachable", "could not be reached", "token URL"),
        ("discovery_failed", "OpenID configuration", "issuer URL"),
        ("token_response_invalid", "not answer like an OAuth server", "token URL"),
        ("refresh_rejected", "already used once", "sign in again"),
        ("refresh_busy", "kept its sign-in locked", "Try again"),
        ("throttled", "not broken", "retried after the back-off"),
        ("signin_expiring", "sign-in ends soon", "sign in again before the date"),
        ("token_endpoint_unavailable", "down or throttling", "try again later"),
        ("config", "incomplete", "named field"),
        ("loopback", "could not run", "127.0.0.1"),
        ("cancelled", "cancelled", "start again"),
        ("nonce_mismatch", "does not carry the nonce", "fixed nonce"),
        ("redirect_port_taken", "fixed redirect port", "redirect_port"),
        ("keyring_failed", "keyring failed", "restart the keyring"),
        ("signin_missing", "no longer in the OS keyring", "Authenticate"),
        ("store", "data store failed", "writable"),
        ("not_found", "no mailbox with that name", "mailbox-auth list"),
    ];

    /// Lines as servers send them (bytes off the wire), throttling or not.
    #[test]
    fn throttling_lines_are_told_from_failures() {
        let throttled: &[(&[u8], Option<u64>)] = &[
            (b"a1 NO [LIMIT] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)\r\n", None),
            (b"* NO [THROTTLED] Account exceeded command or bandwidth limits\r\n", None),
            (b"* BYE [UNAVAILABLE] Too many simultaneous connections. (Failure)\r\n", None),
            (b"A3 BAD Request is throttled. Suggested Backoff Time: 299720 milliseconds\r\n", Some(299_720)),
            (b"-ERR Request is throttled. Suggested Backoff Time: 1500 milliseconds\r\n", Some(1_500)),
            (b"-ERR [SYS/TEMP] Too many simultaneous POP3 connections\r\n", None),
            (b"421 4.7.0 Too many connections from your IP, try again later\r\n", None),
            (b"451 4.7.500 Server busy. Request is throttled. Suggested Backoff Time: 60000 milliseconds\r\n", Some(60_000)),
            (b"432 4.7.12 Too many login attempts, please try again later\r\n", None),
        ];
        for (line, ms) in throttled {
            let words = String::from_utf8_lossy(line);
            assert!(is_throttling(&words), "{words:?}");
            assert_eq!(backoff(&words).map(|d| d.as_millis() as u64), *ms, "{words:?}");
        }
        // The token endpoint's 429 is told by its status (see `app`); its Retry-After reads back.
        let words = "the token endpoint https://idp/token is unavailable (HTTP 429); it asks to retry after 7 seconds";
        assert_eq!(backoff(words), Some(std::time::Duration::from_secs(7)));
        let broken: &[&[u8]] = &[
            b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
            b"NO AUTHENTICATE failed.\r\n",
            b"-ERR [AUTH] Authentication failed.\r\n",
            b"535 5.7.3 Authentication unsuccessful\r\n",
            b"-ERR [SYS/TEMP] Mailbox is locked\r\n",
            b"a2 NO Mailbox doesn't exist: INBOX\r\n",
        ];
        for line in broken {
            let words = String::from_utf8_lossy(line);
            assert!(!is_throttling(&words), "{words:?}");
        }
    }

    #[test]
    fn catalogue_has_no_duplicates_or_blank_text() {
        let mut seen = std::collections::HashSet::new();
        for (c, cause, fix) in BY_CODE.iter().chain(BY_WORDS) {
            assert!(seen.insert(*c), "duplicate {c}");
            assert!(!cause.is_empty() && !fix.is_empty(), "{c}");
        }
    }

    /// `(code or the server's words, the action its fix offers)`, one line per entry of
    /// [`FIXES`]: reached through [`diagnose`], as the records get it.
    const FIX_CASES: &[(&str, Option<&str>, &str)] = &[
        ("auth_rejected_app_only", None, r#"{"kind":"exchange_script"}"#),
        ("auth_rejected", Some("A1 NO User is authenticated but not connected."), r#"{"kind":"exchange_script"}"#),
        ("auth_rejected", Some("A1 NO AUTHENTICATE failed."), r#"{"kind":"exchange_script"}"#),
        (
            "auth_rejected",
            Some("-ERR Authentication failure: unknown user name or bad password."),
            r#"{"kind":"exchange_script"}"#,
        ),
        ("invalid_grant", None, r#"{"kind":"sign_in_again"}"#),
        ("refresh_rejected", None, r#"{"kind":"sign_in_again"}"#),
        ("not_authenticated", None, r#"{"kind":"sign_in_again"}"#),
        ("signin_missing", None, r#"{"kind":"sign_in_again"}"#),
        ("signin_expiring", None, r#"{"kind":"sign_in_again"}"#),
        ("signin_timeout", None, r#"{"kind":"sign_in_again"}"#),
        ("expired_token", None, r#"{"kind":"sign_in_again"}"#),
        ("interaction_required", None, r#"{"kind":"sign_in_again"}"#),
        ("consent_required", None, r#"{"kind":"sign_in_again"}"#),
        ("access_denied", None, r#"{"kind":"sign_in_again"}"#),
        ("cancelled", None, r#"{"kind":"sign_in_again"}"#),
        ("nonce_mismatch", None, r#"{"kind":"sign_in_again"}"#),
        (
            "invalid_grant",
            Some("invalid_grant: AADSTS50076: Due to a configuration change"),
            r#"{"kind":"sign_in_again"}"#,
        ),
        (
            "invalid_grant",
            Some("invalid_grant: AADSTS70008: The provided authorization code or refresh token has expired"),
            r#"{"kind":"sign_in_again"}"#,
        ),
        (
            "invalid_grant",
            Some("invalid_grant: AADSTS700082: The refresh token has expired due to inactivity."),
            r#"{"kind":"sign_in_again"}"#,
        ),
        (
            "invalid_grant",
            Some("invalid_grant: AADSTS50173: The provided grant has expired"),
            r#"{"kind":"sign_in_again"}"#,
        ),
        (
            "invalid_grant",
            Some("invalid_grant: AADSTS70043: The refresh token has expired or is invalid"),
            r#"{"kind":"sign_in_again"}"#,
        ),
        ("invalid_grant", Some("invalid_grant: Token has been expired or revoked."), r#"{"kind":"sign_in_again"}"#),
        ("folder_missing", None, r#"{"kind":"edit_field","field":"folder"}"#),
        ("dns", None, r#"{"kind":"edit_field","field":"host"}"#),
        ("tls_hostname", None, r#"{"kind":"edit_field","field":"host"}"#),
        ("connect_refused", None, r#"{"kind":"edit_field","field":"port"}"#),
        ("protocol", None, r#"{"kind":"edit_field","field":"port"}"#),
        ("tls", None, r#"{"kind":"edit_field","field":"security"}"#),
        ("starttls_not_offered", None, r#"{"kind":"edit_field","field":"security"}"#),
        ("tls_untrusted", None, r#"{"kind":"edit_field","field":"ca_file"}"#),
        ("ca_file", None, r#"{"kind":"edit_field","field":"ca_file"}"#),
        ("redirect_port_taken", None, r#"{"kind":"edit_field","field":"redirect_port"}"#),
        ("discovery_failed", None, r#"{"kind":"edit_field","field":"issuer"}"#),
        ("token_endpoint_unreachable", None, r#"{"kind":"edit_field","field":"token_url"}"#),
        ("token_response_invalid", None, r#"{"kind":"edit_field","field":"token_url"}"#),
        ("invalid_scope", None, r#"{"kind":"edit_field","field":"scopes"}"#),
        ("invalid_client", None, r#"{"kind":"edit_field","field":"client_id"}"#),
        ("signed_in_as_other", None, r#"{"kind":"edit_field","field":"login"}"#),
        (
            "invalid_request",
            Some("invalid_request: AADSTS50194: Application is not configured as a multi-tenant application."),
            r#"{"kind":"edit_field","field":"tenant"}"#,
        ),
        (
            "invalid_request",
            Some("invalid_request: AADSTS90002: Tenant 'contoso.example' not found."),
            r#"{"kind":"edit_field","field":"tenant"}"#,
        ),
        (
            "unauthorized_client",
            Some("unauthorized_client: AADSTS700016: Application with identifier 'x' was not found"),
            r#"{"kind":"edit_field","field":"client_id"}"#,
        ),
        (
            "invalid_client",
            Some("invalid_client: AADSTS7000215: Invalid client secret provided."),
            r#"{"kind":"edit_field","field":"client_secret"}"#,
        ),
        (
            "invalid_client",
            Some("invalid_client: AADSTS7000222: The provided client secret keys are expired."),
            r#"{"kind":"edit_field","field":"client_secret"}"#,
        ),
        ("no_client_secret", None, r#"{"kind":"edit_field","field":"client_secret"}"#),
        ("client_secret_expired", None, r#"{"kind":"edit_field","field":"client_secret"}"#),
        ("client_secret_expiring", None, r#"{"kind":"edit_field","field":"client_secret"}"#),
    ];

    #[test]
    fn each_fix_reaches_its_diagnosis_on_the_wire() {
        for (code, words, wire) in FIX_CASES {
            let d = diagnose(code, *words);
            let got = serde_json::to_string(&d.action).unwrap();
            assert_eq!(&got, wire, "{code} {words:?}");
            let back: Fix = serde_json::from_str(wire).unwrap();
            assert_eq!(Some(back), d.action, "{wire} reads back");
        }
        // Words beat codes for the action too; no entry, no action.
        assert_eq!(diagnose("auth_rejected", None).action, None, "a delegated refusal: the fix is in who signed in");
        assert_eq!(diagnose("5.7.139", Some("535 5.7.139 Authentication unsuccessful")).action, None);
        assert_eq!(diagnose("something-new", None).action, None);
        assert_eq!(diagnose("throttled", None).action, None, "nothing to change");
    }

    #[test]
    fn every_fix_has_a_case_and_names_a_catalogue_entry_and_a_real_field() {
        let keys: Vec<&str> = BY_CODE.iter().chain(BY_WORDS).map(|(k, ..)| *k).collect();
        for (key, kind) in FIXES {
            assert!(keys.contains(key), "{key} is in no catalogue entry");
            let d = FIX_CASES.iter().map(|(c, w, _)| diagnose(c, *w)).find(|d| {
                let entry = keys.iter().position(|k| k == key).unwrap();
                let (_, cause, fix) = BY_CODE.iter().chain(BY_WORDS).nth(entry).unwrap();
                d.cause == *cause && d.fix == *fix
            });
            assert!(d.is_some(), "{key} has a fix but no case in FIX_CASES");
            if let FixKind::Edit(field) = kind {
                assert!(
                    *field == "client_secret" || crate::import::COLUMNS.contains(field),
                    "{key}: `{field}` is not a mailbox field"
                );
            }
        }
    }

    #[test]
    fn a_server_field_of_the_smtp_check_names_its_smtp_field() {
        use crate::health::Check;
        let port = diagnose("connect_refused", None).action.unwrap();
        assert_eq!(port.clone().for_check(Check::Smtp), Fix::EditField { field: "smtp_port".into() });
        assert_eq!(port.for_check(Check::Imap), Fix::EditField { field: "port".into() });
        let host = diagnose("dns", None).action.unwrap().for_check(Check::Smtp);
        assert_eq!(host, Fix::EditField { field: "smtp_host".into() });
        let folder = diagnose("folder_missing", None).action.unwrap().for_check(Check::Smtp);
        assert_eq!(folder, Fix::EditField { field: "folder".into() });
        assert_eq!(Fix::SignInAgain.for_check(Check::Smtp), Fix::SignInAgain);
    }
}
