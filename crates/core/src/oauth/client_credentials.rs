//! App-only tokens: the client credentials grant (RFC 6749 §4.4).
//!
//! No user signs in: the app registration's client secret (from the keyring) buys an access
//! token for the resource's `.default` scope — for Exchange Online
//! `https://outlook.office365.com/.default`. The mail server then needs the app's service
//! principal registered in Exchange and a mailbox permission (see [`exchange_script`]); the SASL
//! user is the mailbox address. There is no refresh token: every new token is a new grant.

use oauth2::{ClientSecret, Scope};

use super::{endpoints, map_token_error, token_client, OAuthError, Tokens};
use crate::mailbox::Mailbox;

/// Gets an app-only access token.
pub async fn token(m: &Mailbox, client_secret: ClientSecret, http: &reqwest::Client) -> Result<Tokens, OAuthError> {
    let e = endpoints(m)?;
    let resp = token_client(m, Some(client_secret))?
        .exchange_client_credentials()
        .add_scopes(e.scopes.into_iter().map(Scope::new))
        .request_async(http)
        .await
        .map_err(|err| map_token_error("client credentials grant", &e.token_url, err))?;
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

/// The Exchange Online PowerShell that lets an app read the given mailboxes, ready to copy.
pub fn exchange_script(input: &ExchangeScriptInput<'_>) -> String {
    // PowerShell single-quoted strings: a quote is escaped by doubling it.
    let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut out = String::new();
    out.push_str("# Run in Exchange Online PowerShell as an Exchange administrator.\n");
    out.push_str("Install-Module -Name ExchangeOnlineManagement -Scope CurrentUser   # once per machine\n");
    out.push_str("Connect-ExchangeOnline\n\n");
    out.push_str(
        "# Register the app's service principal in Exchange (ObjectId = Enterprise application's Object ID).\n",
    );
    out.push_str(&format!(
        "New-ServicePrincipal -AppId {} -ObjectId {} -DisplayName {}\n\n",
        q(input.app_id),
        q(input.service_principal_object_id),
        q(input.display_name)
    ));
    for (mailbox, imap, pop) in &input.mailboxes {
        out.push_str(&format!("# {mailbox}\n"));
        out.push_str(&format!(
            "Add-MailboxPermission -Identity {} -User {} -AccessRights FullAccess\n",
            q(mailbox),
            q(input.service_principal_object_id)
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_registers_the_service_principal_and_grants_each_mailbox() {
        let s = exchange_script(&ExchangeScriptInput {
            app_id: "00000000-1111-2222-3333-444444444444",
            service_principal_object_id: "55555555-6666-7777-8888-999999999999",
            display_name: "Help desk's mail reader",
            mailboxes: vec![("support@contoso.com", true, false), ("billing@contoso.com", false, true)],
        });
        assert!(s.contains(
            "New-ServicePrincipal -AppId '00000000-1111-2222-3333-444444444444' -ObjectId '55555555-6666-7777-8888-999999999999' -DisplayName 'Help desk''s mail reader'"
        ), "{s}");
        assert!(s.contains("Add-MailboxPermission -Identity 'support@contoso.com' -User '55555555-6666-7777-8888-999999999999' -AccessRights FullAccess"));
        assert!(s.contains("Set-CASMailbox -Identity 'support@contoso.com' -ImapEnabled $true\n"));
        assert!(s.contains("Set-CASMailbox -Identity 'billing@contoso.com' -PopEnabled $true\n"));
        assert_eq!(s.matches("Add-MailboxPermission").count(), 2);
    }
}
