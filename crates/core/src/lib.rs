//! Mailbox Auth core: everything the desktop shell and the CLI share.
//!
//! No Tauri and no UI here. One module per concern: the mailbox model and its validation,
//! the SQLite store (never secrets), the keyring-backed secret store, the OAuth2 flows,
//! the IMAP/POP3 probes, the diagnosis of failures and the health records.

pub mod app;
pub mod appcert;
pub mod bundle;
pub mod contract;
pub mod diagnose;
pub mod doctor;
pub mod export;
pub mod handover;
pub mod health;
pub mod import;
pub mod lock;
pub mod logging;
pub mod mailbox;
pub mod monitor;
pub mod oauth;
pub mod probe;
pub mod provider;
pub mod secret;
pub mod store;
pub mod tls;
pub mod uptime;

pub use app::{App, AppError, Failure, MailboxView};
