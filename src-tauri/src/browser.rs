//! Opening the sign-in page in the system browser, http/https only.
//!
//! tauri-plugin-opener opens URLs on Linux through the `open` crate (`xdg-open`, `gio`, …),
//! which picks the desktop's default handler and does not consult `$BROWSER`. Admins on
//! headless or scripted set-ups (and the GUI tests) rely on `$BROWSER`, as the CLI does, so
//! when it is set the `webbrowser` crate (which honours it) opens the page; otherwise the opener
//! plugin does.

use tauri::{AppHandle, Runtime};
use tauri_plugin_opener::OpenerExt;
use url::Url;

/// Only web pages may be opened: a sign-in URL comes from the mailbox's configured
/// authorization endpoint, and a `file:` or custom-scheme URL there must never start a program.
pub fn check_scheme(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!("refusing to open a `{other}:` address; only http and https are opened")),
    }
}

pub fn open<R: Runtime>(app: &AppHandle<R>, url: &Url) -> Result<(), String> {
    check_scheme(url)?;
    if std::env::var_os("BROWSER").is_some_and(|b| !b.is_empty()) {
        webbrowser::open(url.as_str()).map_err(|e| format!("cannot start $BROWSER: {e}"))
    } else {
        app.opener().open_url(url.as_str(), None::<&str>).map_err(|e| format!("cannot open a browser: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_web_addresses_are_opened() {
        assert!(check_scheme(&Url::parse("https://login.microsoftonline.com/x").unwrap()).is_ok());
        assert!(check_scheme(&Url::parse("http://127.0.0.1:9000/auth").unwrap()).is_ok());
        for bad in ["file:///etc/passwd", "javascript:alert(1)", "ms-settings:privacy", "smb://host/share"] {
            assert!(check_scheme(&Url::parse(bad).unwrap()).is_err(), "{bad}");
        }
    }
}
