//! `export` (CSV, or `--with-secrets` an encrypted hand-over), `import FILE.age` and `app-cert`.
//!
//! A passphrase is asked on the terminal (not echoed) or, when standard input is not a
//! terminal, read as one line from it: never from the command line, where other users of the
//! machine could see it.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use mailbox_auth_core::handover;
use mailbox_auth_core::App;
use secrecy::{ExposeSecret, SecretString};

#[derive(Subcommand, Debug)]
pub enum AppCertAction {
    /// Make a key pair and a self-signed certificate for an app-only mailbox: the private key
    /// goes to the OS keyring only, the certificate to a .cer file to upload to the app
    /// registration (Entra → Certificates & secrets → Certificates). From then on the mailbox
    /// signs a client assertion with it instead of sending a client secret.
    Create {
        name: String,
        /// Days the certificate is valid (amber 30 days before its end, red after).
        #[arg(long, default_value_t = mailbox_auth_core::appcert::DEFAULT_DAYS)]
        days: u32,
        /// Where to write the certificate (default: NAME.cer in the current folder).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Show the thumbprint and expiry of the mailbox's certificate.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// Reads a passphrase: from the terminal without echo (twice when `confirm`), else one line of
/// standard input.
fn passphrase(confirm: bool) -> anyhow::Result<SecretString> {
    // Why `Zeroizing`: every buffer that held the passphrase is wiped when dropped.
    use secrecy::zeroize::Zeroizing;
    let value = if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(rpassword::prompt_password("Passphrase: ").context("cannot read the passphrase")?);
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password("The same passphrase again: ").context("cannot read the passphrase")?,
            );
            anyhow::ensure!(first == again, "passphrase: the two entries differ; nothing was written");
        }
        SecretString::from(first.as_str())
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line).context("cannot read the passphrase from standard input")?;
        SecretString::from(line.trim_end_matches(['\r', '\n']))
    };
    anyhow::ensure!(!value.expose_secret().is_empty(), "passphrase: nothing was read");
    Ok(value)
}

pub async fn export(app: &App, with_secrets: bool, output: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    if !with_secrets {
        let csv = app.export_csv()?;
        match output {
            Some(path) => std::fs::write(&path, csv).with_context(|| format!("cannot write {}", path.display()))?,
            None => print!("{csv}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(path) = output else {
        anyhow::bail!("--with-secrets needs -o FILE.age: the encrypted hand-over is never written to the terminal")
    };
    let pass = passphrase(true)?;
    let (bytes, report) = app.export_handover(pass).await?;
    write_private(&path, &bytes)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "wrote {} mailbox(es) to {} (encrypted with the passphrase; {} with their sign-in or credential)",
            report.mailboxes.len(),
            path.display(),
            report.with_secrets.len()
        );
        println!("import it on the other machine with `mailbox-auth import {}`", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the (encrypted) file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("cannot write {}", path.display()))
}

/// Whether the file is a hand-over (age) rather than a CSV.
pub fn is_handover(path: &Path) -> bool {
    let mut head = [0u8; 32];
    let n = std::fs::File::open(path).and_then(|mut f| std::io::Read::read(&mut f, &mut head)).unwrap_or(0);
    handover::is_age(&head[..n])
}

pub async fn import(app: &App, path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let bytes = handover::read_file(path)?;
    let pass = passphrase(false)?;
    let done = app.import_handover(&path.display().to_string(), bytes, pass).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        println!("imported {} mailbox(es) from {}", done.len(), path.display());
        for d in &done {
            let what = if d.replaced {
                "replaced the existing mailbox: its settings, sign-in dates and stored secrets"
            } else {
                "new"
            };
            let secrets = if d.secrets.is_empty() { "no secrets".to_string() } else { d.secrets.join(", ") };
            println!("  {}: {what}; {secrets}; {} history record(s) added", d.name, d.history_added);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn app_cert(app: &App, action: AppCertAction) -> anyhow::Result<ExitCode> {
    match action {
        AppCertAction::Create { name, days, output, json } => {
            let created = app.create_app_cert(&name, days).await?;
            let path = output.unwrap_or_else(|| PathBuf::from(format!("{}.cer", file_stem(&name))));
            // The certificate is public: a plain file, as the app registration's upload wants it.
            std::fs::write(&path, &created.certificate.der)
                .with_context(|| format!("cannot write the certificate to {}", path.display()))?;
            if json {
                let mut v = serde_json::to_value(&created)?;
                v["file"] = serde_json::Value::String(path.display().to_string());
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                if let Some(old) = &created.replaced {
                    println!("replaced the certificate with thumbprint {old}");
                }
                println!("private key stored in the OS keyring for {name}; certificate written to {}", path.display());
                println!("thumbprint: {}", created.certificate.thumbprint);
                println!("valid until: {}", created.certificate.not_after);
                println!(
                    "upload {} in Entra → App registrations → your app → Certificates & secrets → Certificates, \
                     check that the thumbprint shown there is the one above, then run `mailbox-auth authenticate {name}`",
                    path.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AppCertAction::Show { name, json } => {
            let cert = app.app_cert(&name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&cert)?);
            } else {
                match &cert {
                    Some(c) => {
                        println!("thumbprint: {}\nvalid until: {}\nsubject: {}", c.thumbprint, c.not_after, c.subject)
                    }
                    None => println!("{name} has no certificate; make one with `mailbox-auth app-cert create {name}`"),
                }
            }
            Ok(if cert.is_some() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

/// A file name from a mailbox name: letters, digits, `-`, `_` and `.` kept, the rest `_`.
fn file_stem(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "mailbox".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::file_stem;

    #[test]
    fn certificate_file_names_stay_in_the_folder() {
        assert_eq!(file_stem("support"), "support");
        assert_eq!(file_stem("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(file_stem(".."), "mailbox");
        assert_eq!(file_stem("a b/c"), "a_b_c");
    }
}
