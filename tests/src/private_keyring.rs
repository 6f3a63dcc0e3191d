//! A D-Bus session bus of a test's own with a gnome-keyring-daemon on it, both the test's
//! children, in a temporary folder (keyrings under its XDG_DATA_HOME, unlocked with a throwaway
//! password). The test session's own keyring is shared by the other tests and is left alone.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Cli;

/// The throwaway password of the private login keyring.
pub const KEYRING_PASSWORD: &str = "private-keyring";

#[derive(Debug)]
pub struct PrivateKeyring {
    dir: tempfile::TempDir,
    bus: Child,
    daemon: Option<Child>,
    pub address: String,
}

impl PrivateKeyring {
    pub fn start() -> Result<PrivateKeyring, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        for d in ["data", "run", "services"] {
            std::fs::create_dir_all(dir.path().join(d)).map_err(|e| e.to_string())?;
        }
        std::fs::set_permissions(dir.path().join("run"), std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        let socket = dir.path().join("bus");
        // No service directories but an empty one: nothing is started on demand, so a killed
        // keyring daemon stays dead until the test starts it again.
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <servicedir>{}</servicedir>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display(),
                dir.path().join("services").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("dbus-daemon: {e}"))?;
        let address = format!("unix:path={}", socket.display());
        let mut k = PrivateKeyring { dir, bus, daemon: None, address };
        let end = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > end {
                return Err("the private D-Bus did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        k.start_daemon(true)?;
        Ok(k)
    }

    /// Starts gnome-keyring-daemon on the bus, unlocking the login keyring (creating it the
    /// first time) or leaving it locked.
    pub fn start_daemon(&mut self, unlock: bool) -> Result<(), String> {
        use std::io::Write;
        let mut c = Command::new("gnome-keyring-daemon");
        c.args(["--foreground", "--components=secrets"]);
        if unlock {
            c.arg("--unlock");
        }
        c.env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().map_err(|e| format!("gnome-keyring-daemon: {e}"))?;
        let mut stdin = child.stdin.take().unwrap();
        if unlock {
            let _ = stdin.write_all(KEYRING_PASSWORD.as_bytes());
        }
        drop(stdin);
        self.daemon = Some(child);
        // Ready when it owns the Secret Service name on the bus.
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if self
                .dbus_send(&[
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])?
                .contains("boolean true")
            {
                return Ok(());
            }
            if Instant::now() > end {
                return Err("gnome-keyring-daemon did not take the Secret Service name".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One `dbus-send --print-reply` on this bus; its output, or why it failed.
    pub fn dbus_send(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", self.address))
            .arg("--print-reply")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("dbus-send: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Locks the login keyring through the Secret Service API (`Service.Lock`), as a screen
    /// lock or "Lock" in seahorse does; gnome-keyring locks without a prompt.
    pub fn lock_login(&self) -> Result<(), String> {
        self.dbus_send(&[
            "--dest=org.freedesktop.secrets",
            "/org/freedesktop/secrets",
            "org.freedesktop.Secret.Service.Lock",
            "array:objpath:/org/freedesktop/secrets/collection/login",
        ])
        .map(|_| ())
    }

    /// Kills the keyring daemon (SIGKILL, our own child) and waits until it is gone.
    pub fn kill_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    pub fn env(&self) -> [(&str, &str); 1] {
        [("DBUS_SESSION_BUS_ADDRESS", self.address.as_str())]
    }

    /// `secret-tool` with these arguments on this bus; its stdout when it succeeded.
    fn secret_tool(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("secret-tool")
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The stored refresh token, read with `secret-tool` on this bus.
    pub fn lookup(&self, cli: &Cli, name: &str) -> Option<String> {
        let key = format!("refresh_token:{name}");
        self.secret_tool(&["lookup", "service", &cli.keyring_service, "username", &key]).filter(|v| !v.is_empty())
    }

    /// Deletes the stored refresh token with `secret-tool` (as a keyring reset would).
    pub fn clear(&self, cli: &Cli, name: &str) -> bool {
        let key = format!("refresh_token:{name}");
        self.secret_tool(&["clear", "service", &cli.keyring_service, "username", &key]).is_some()
    }
}

impl Drop for PrivateKeyring {
    fn drop(&mut self) {
        self.kill_daemon();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}
