//! The core used in-process against the sandbox stack: single-flight refresh under concurrency.

use std::sync::Arc;
use std::time::Duration;

use mailbox_auth_core::secret::KeyringStore;
use mailbox_auth_core::App;
use mailbox_auth_tests::{Cli, Sandbox, CSV_HEADER};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_token_requests_for_one_mailbox_share_one_refresh() {
    let sb = Sandbox::get();
    let cli = Cli::new();
    let app = App::open(cli.home.path(), Arc::new(KeyringStore::new(cli.keyring_service.clone()))).unwrap();
    let csv = format!(
        "{CSV_HEADER}\n{}\n",
        sb.csv_row("c", "bob@sandbox.test", "pop3", "SANDBOX_POP3S_PORT", "tls", "INBOX")
    );
    let report = app.import_csv(&csv, None).await.unwrap();
    assert_eq!(report.imported, vec!["c"]);

    let browser = sb.var("SANDBOX_BROWSER").to_string();
    let open = move |url: &url::Url| {
        std::process::Command::new(&browser)
            .arg(url.as_str())
            .env("SANDBOX_LOGIN_USER", "bob@sandbox.test")
            .env("SANDBOX_LOGIN_PASSWORD", "bob-password")
            .spawn()
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let rec = app.authenticate("c", None, Duration::from_secs(90), &open, &|_| {}).await.unwrap();
    assert!(rec.ok, "{rec:?}");
    assert_eq!(app.tokens().refresh_count(), 0, "sign-in itself needs no refresh");

    // A second App on the same store and keyring starts with an empty cache, as a new process does.
    let app = Arc::new(App::open(cli.home.path(), Arc::new(KeyringStore::new(cli.keyring_service.clone()))).unwrap());
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.access_token("c").await.unwrap().secret().clone() })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    assert_eq!(app.tokens().refresh_count(), 1, "six concurrent callers, one refresh");
    assert!(tokens.windows(2).all(|w| w[0] == w[1]), "all callers share the refreshed token");

    // The stored (rotated) refresh token still works: a fresh process can refresh and verify.
    let r = cli.run(&["verify", "c", "--json"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
}
