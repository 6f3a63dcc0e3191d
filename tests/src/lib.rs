//! Shared parts of the end-to-end tests: the sandbox stack's coordinates and a runner for the
//! real `mailbox-auth` binary with its own data directory and keyring namespace.
//!
//! The tests expect `scripts/with-sandbox` to have started the stack (OAuth2 server, Dovecot,
//! gnome-keyring in a private D-Bus session) and exported `SANDBOX_ENV_FILE`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

pub mod fault_proxy;
pub mod private_keyring;

/// The sandbox's `env` file, parsed.
#[derive(Debug, Clone)]
pub struct Sandbox {
    vars: HashMap<String, String>,
}

impl Sandbox {
    /// Reads `$SANDBOX_ENV_FILE`. Panics with a clear message when the stack is not up.
    pub fn get() -> Sandbox {
        let path = std::env::var("SANDBOX_ENV_FILE")
            .expect("SANDBOX_ENV_FILE is not set: run the end-to-end tests through scripts/test");
        Self::from_file(&path)
    }

    /// Reads the `env` file of a sandbox a test started itself (`sandbox/up STATE_DIR`).
    pub fn from_file(path: &str) -> Sandbox {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches(|c| c == '"' || c == '\'').to_string()))
            .collect();
        Sandbox { vars }
    }

    pub fn var(&self, key: &str) -> &str {
        self.vars.get(key).unwrap_or_else(|| panic!("sandbox env has no {key}"))
    }

    /// The sandbox's app-only client (id, secret), as the IdP wrote them to its state folder.
    pub fn app_client(&self) -> (String, String) {
        let path = format!("{}/idp.json", self.var("SANDBOX_STATE_DIR"));
        let idp: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("idp.json")).expect("idp.json");
        (idp["appClient"]["id"].as_str().unwrap().into(), idp["appClient"]["secret"].as_str().unwrap().into())
    }

    pub fn port(&self, key: &str) -> u16 {
        self.var(key).parse().unwrap_or_else(|_| panic!("{key} is not a port"))
    }

    /// A CSV row for a sandbox mailbox.
    pub fn csv_row(
        &self,
        name: &str,
        email: &str,
        protocol: &str,
        port_key: &str,
        security: &str,
        folder: &str,
    ) -> String {
        format!(
            "{name},{email},{protocol},{host},{port},{security},{folder},generic,{cid},{scopes},{auth},{token},{params},{ca}",
            host = self.var("SANDBOX_MAIL_HOST"),
            port = self.port(port_key),
            cid = self.var("SANDBOX_CLIENT_ID"),
            scopes = self.var("SANDBOX_SCOPES"),
            auth = self.var("SANDBOX_AUTH_URL"),
            token = self.var("SANDBOX_TOKEN_URL"),
            params = self.var("SANDBOX_AUTH_PARAMS"),
            ca = self.var("SANDBOX_CA_FILE"),
        )
    }
}

impl Sandbox {
    /// The same row with the authorization and token URLs left empty: with an `issuer` column,
    /// the app reads them from the IdP's OpenID configuration.
    pub fn without_endpoints(&self, row: &str) -> String {
        let urls = format!(",{},{},", self.var("SANDBOX_AUTH_URL"), self.var("SANDBOX_TOKEN_URL"));
        assert!(row.contains(&urls), "not a sandbox row: {row}");
        row.replace(&urls, ",,,")
    }
}

pub const CSV_HEADER: &str =
    "name,email,protocol,host,port,security,folder,provider,client_id,scopes,auth_url,token_url,auth_params,ca_file";

/// The result of one CLI run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One isolated user of the CLI: its own data directory and keyring service name.
#[derive(Debug)]
pub struct Cli {
    pub home: tempfile::TempDir,
    pub keyring_service: String,
    /// Everything the CLI printed, to search for leaked secrets.
    pub transcript: Mutex<String>,
}

impl Default for Cli {
    fn default() -> Self {
        Self::new()
    }
}

impl Cli {
    pub fn new() -> Cli {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        Cli {
            home: tempfile::tempdir().expect("tempdir"),
            keyring_service: format!("mailbox-auth-test-{}-{n}", std::process::id()),
            transcript: Mutex::new(String::new()),
        }
    }

    pub fn bin() -> PathBuf {
        if let Some(p) = std::env::var_os("MAILBOX_AUTH_BIN") {
            return p.into();
        }
        // target/<profile>/deps/<test binary> → target/<profile>/mailbox-auth
        let exe = std::env::current_exe().expect("current exe");
        let p = exe.parent().and_then(Path::parent).expect("target dir").join("mailbox-auth");
        assert!(p.exists(), "{} is missing: build the workspace first (scripts/test does)", p.display());
        p
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(Self::bin());
        c.args(args)
            .env("MAILBOX_AUTH_HOME", self.home.path())
            .env("MAILBOX_AUTH_KEYRING_SERVICE", &self.keyring_service)
            .env("MAILBOX_AUTH_LOG", "debug")
            .env_remove("BROWSER");
        c
    }

    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let run = Run::from(c.output().expect("run mailbox-auth"));
        let mut t = self.transcript.lock().unwrap();
        t.push_str(&format!("$ mailbox-auth {}\n{}\n{}\n", args.join(" "), run.stdout, run.stderr));
        run
    }

    /// Like [`Cli::run`], with `input` on its standard input (a pipe, not a terminal).
    pub fn run_with_input(&self, args: &[&str], env: &[(&str, &str)], input: &str) -> Run {
        use std::io::Write;
        use std::process::Stdio;
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child =
            c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run mailbox-auth");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let run = Run::from(child.wait_with_output().unwrap());
        let mut t = self.transcript.lock().unwrap();
        t.push_str(&format!("$ mailbox-auth {}\n{}\n{}\n", args.join(" "), run.stdout, run.stderr));
        run
    }

    /// Writes a CSV (header + rows) and imports it; panics unless every row was imported.
    pub fn import(&self, rows: &[String]) {
        self.import_with("", rows);
    }

    /// Like [`Cli::import`], with extra columns after the standard ones (`",flow,device_url"`);
    /// each row carries their values the same way.
    pub fn import_with(&self, extra_columns: &str, rows: &[String]) {
        let path = self.home.path().join("import.csv");
        std::fs::write(&path, format!("{CSV_HEADER}{extra_columns}\n{}\n", rows.join("\n"))).unwrap();
        let r = self.run(&["import", path.to_str().unwrap()], &[]);
        assert_eq!(r.code, 0, "import failed: {r:?}");
    }

    /// Signs in through the sandbox's scripted browser as `user`.
    pub fn authenticate(&self, sb: &Sandbox, name: &str, user: &str, password: &str, extra: &[(&str, &str)]) -> Run {
        let log = self.home.path().join("browser.log");
        let mut env = vec![
            ("BROWSER", sb.var("SANDBOX_BROWSER")),
            ("SANDBOX_LOGIN_USER", user),
            ("SANDBOX_LOGIN_PASSWORD", password),
            ("SANDBOX_BROWSER_LOG", log.to_str().unwrap()),
        ];
        env.extend_from_slice(extra);
        self.run(&["authenticate", name, "--timeout", "90", "--json"], &env)
    }

    /// The refresh token stored for a mailbox, read straight from the Secret Service with
    /// `secret-tool` (not through our own code).
    pub fn stored_refresh_token(&self, name: &str) -> Option<String> {
        let out = Command::new("secret-tool")
            .args(["lookup", "service", &self.keyring_service, "username", &format!("refresh_token:{name}")])
            .output()
            .expect("run secret-tool");
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !v.is_empty()).then_some(v)
    }

    /// Replaces the stored refresh token, straight in the Secret Service.
    pub fn store_refresh_token(&self, name: &str, value: &str) {
        use std::io::Write;
        let mut child = Command::new("secret-tool")
            .args([
                "store",
                "--label",
                "test",
                "service",
                &self.keyring_service,
                "username",
                &format!("refresh_token:{name}"),
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run secret-tool");
        child.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
    }
}

/// Every regular file under `dir` (sockets and FIFOs are skipped: reading one would block), as
/// bytes, with its path.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                stack.push(p);
            } else if kind.is_file() {
                if let Ok(b) = std::fs::read(&p) {
                    out.push((p, b));
                }
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Copies bytes both ways between a test relay's client and its upstream until either side
/// closes (a thread per direction; each half-closes the other side when its source ends).
pub fn relay(client: std::net::TcpStream, server: std::net::TcpStream) {
    for (mut from, mut to) in
        [(client.try_clone().expect("clone client"), server.try_clone().expect("clone server")), (server, client)]
    {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}
