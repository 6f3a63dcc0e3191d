//! One refresh per mailbox across processes: an advisory lock file per mailbox in the data
//! directory (`<home>/locks/<sha256 of the name>.lock`).
//!
//! Why: the window, a scheduled `mailbox-auth verify --all` and mail fetchers calling
//! `mailbox-auth token` are separate processes that share one refresh token per mailbox in the
//! OS keyring. Identity providers that rotate refresh tokens (Microsoft, Okta, Auth0,
//! Keycloak, oidc-provider) treat a refresh token presented twice as stolen and revoke the
//! whole grant (OAuth 2.0 Security BCP, RFC 9700 §4.14.2). An in-process mutex cannot stop two
//! processes from presenting the same token, so the lock must live where every process sees
//! it: the file system.
//!
//! The invariant, kept by [`crate::oauth::refresh::TokenCache`]: **a mailbox's refresh token
//! is read from the keyring, presented, and its successor written back, all while this lock
//! is held**, and so are the writes of a new sign-in and the deletes of `forget`/`remove`.
//! The keyring is read only *after* the lock is taken, so a process that waited sees the token
//! its predecessor stored (never the consumed one), and a missing entry means the mailbox was
//! forgotten meanwhile: nothing is written back.
//!
//! The lock is `flock(2)` (`LockFileEx` on Windows) through the `fs4` crate: the kernel drops
//! it when its file descriptor closes, so a crashed or killed process never leaves a stale
//! lock behind. Lock files are never deleted: removing one while another process waits on
//! it would let two processes hold "the" lock on two different files.
//! Waiting never blocks the async runtime (non-blocking attempts with a short sleep between)
//! and ends after a deadline with an error naming the mailbox.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a process waits for another one's refresh of the same mailbox. A refresh is one
/// token call (at most 30 s, see `oauth::http_client`) plus keyring writes; a queue of a few
/// waiting processes fits well within this.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another program has held the sign-in of mailbox `{mailbox}` for more than {waited_secs} s (lock file {path}); try again, or end the program that is stuck refreshing it")]
    Timeout { mailbox: String, waited_secs: u64, path: PathBuf },
    #[error("cannot {op} the lock file {path} of mailbox `{mailbox}`: {detail}")]
    Io { op: &'static str, mailbox: String, path: PathBuf, detail: String },
}

impl LockError {
    pub fn code(&self) -> &'static str {
        match self {
            LockError::Timeout { .. } => "refresh_busy",
            // The data directory is not writable (read-only, full): the store's fix applies.
            LockError::Io { .. } => "store",
        }
    }
}

/// The per-mailbox lock files of one data directory.
#[derive(Debug, Clone)]
pub struct Locks {
    dir: PathBuf,
    wait: Duration,
}

/// A held lock; released when dropped (closing the file releases the `flock`).
#[derive(Debug)]
pub struct MailboxLock {
    _file: File,
}

impl Locks {
    /// Lock files under `dir` (created on first use, mode 0700 on Unix).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), wait: DEFAULT_WAIT }
    }

    /// The same lock files with another wait deadline.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The lock file of a mailbox. Named by the SHA-256 of the name, so any mailbox name
    /// (slashes, dots, non-ASCII, up to 100 bytes) gives one short, safe file name.
    pub fn path(&self, mailbox: &str) -> PathBuf {
        let digest = ring::digest::digest(&ring::digest::SHA256, mailbox.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.lock"))
    }

    /// Takes the mailbox's lock, waiting (without blocking the runtime) up to the deadline.
    pub async fn acquire(&self, mailbox: &str) -> Result<MailboxLock, LockError> {
        let path = self.path(mailbox);
        let (dir, p, name) = (self.dir.clone(), path.clone(), mailbox.to_string());
        let file = tokio::task::spawn_blocking(move || open(&dir, &p, &name))
            .await
            .map_err(|e| io_error("open", mailbox, &path, e))??;
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            // Fully qualified: std's inherent `File::try_lock` (Rust 1.89) would shadow the
            // trait method on newer compilers, and the crate's MSRV is older.
            match fs4::FileExt::try_lock(&file) {
                Ok(()) => return Ok(MailboxLock { _file: file }),
                Err(fs4::TryLockError::WouldBlock) => {}
                Err(fs4::TryLockError::Error(e)) => return Err(io_error("lock", mailbox, &path, e)),
            }
            if started.elapsed() >= self.wait {
                return Err(LockError::Timeout {
                    mailbox: mailbox.to_string(),
                    waited_secs: self.wait.as_secs(),
                    path,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

fn open(dir: &Path, path: &Path, mailbox: &str) -> Result<File, LockError> {
    // `flock` needs no write access: on a data directory that became read-only, an existing
    // lock file still serves (read-only open), so refreshes stay one at a time.
    if let Ok(f) = File::open(path) {
        return Ok(f);
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| io_error("create the folder of", mailbox, path, e))?;
    let mut o = OpenOptions::new();
    // Never truncated: the file's content does not matter, only its lock.
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).map_err(|e| io_error("open", mailbox, path, e))
}

fn io_error(op: &'static str, mailbox: &str, path: &Path, e: impl std::fmt::Display) -> LockError {
    LockError::Io { op, mailbox: mailbox.to_string(), path: path.to_path_buf(), detail: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_short_distinct_and_stay_in_the_folder() {
        let l = Locks::new("/data/locks");
        let names = ["support", "Support", "../../etc/passwd", "a/b", "ü-mail ☃", &"x".repeat(100), ""];
        let paths: Vec<PathBuf> = names.iter().map(|n| l.path(n)).collect();
        for p in &paths {
            assert_eq!(p.parent(), Some(Path::new("/data/locks")), "{p:?}");
            let f = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(f.len(), 64 + ".lock".len(), "{f}");
            assert!(f.trim_end_matches(".lock").chars().all(|c| c.is_ascii_hexdigit()), "{f}");
        }
        let distinct: std::collections::HashSet<_> = paths.iter().collect();
        assert_eq!(distinct.len(), names.len());
        // Stable across runs and versions: another process must find the same file.
        assert_eq!(
            l.path("support").file_name().unwrap().to_str().unwrap(),
            "a18603086e5bdf9df88ccc9f5a083fed093e819976e87456b74dafcbd7011114.lock"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn any_two_names_get_distinct_safe_files_in_the_folder(a in "\\PC{0,100}", b in "\\PC{0,100}") {
            let l = Locks::new("/data/locks");
            let (pa, pb) = (l.path(&a), l.path(&b));
            proptest::prop_assert_eq!(pa.parent(), Some(Path::new("/data/locks")));
            let f = pa.file_name().unwrap().to_str().unwrap().to_string();
            proptest::prop_assert!(f.len() == 69 && f.ends_with(".lock"));
            proptest::prop_assert!(f[..64].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            proptest::prop_assert_eq!(a == b, pa == pb);
        }
    }

    #[tokio::test]
    async fn a_held_lock_makes_others_wait_and_ends_in_an_error_naming_the_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        // Two `Locks` over one folder behave like two processes: flock(2) locks belong to the
        // open file, so a second open in the same process conflicts too.
        let a = Locks::new(dir.path().join("locks"));
        let b = Locks::new(dir.path().join("locks")).with_wait(Duration::from_millis(300));
        let held = a.acquire("support").await.unwrap();
        let err = b.acquire("support").await.unwrap_err();
        assert_eq!(err.code(), "refresh_busy");
        assert!(err.to_string().contains("mailbox `support`"), "{err}");
        // Another mailbox is not affected.
        b.acquire("billing").await.unwrap();
        drop(held);
        b.acquire("support").await.unwrap();
    }

    #[tokio::test]
    async fn a_waiting_process_gets_the_lock_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let a = Locks::new(dir.path());
        let b = Locks::new(dir.path());
        let held = a.acquire("m").await.unwrap();
        let waiter = tokio::spawn(async move { b.acquire("m").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the lock is held");
        drop(held);
        waiter.await.unwrap().unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn lock_folder_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let l = Locks::new(dir.path().join("locks"));
        let _held = l.acquire("m").await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("locks")), 0o700);
        assert_eq!(mode(&l.path("m")), 0o600);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn an_existing_lock_file_still_locks_when_it_cannot_be_written() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = Locks::new(dir.path().join("locks"));
        drop(a.acquire("m").await.unwrap());
        std::fs::set_permissions(a.path("m"), std::fs::Permissions::from_mode(0o400)).unwrap();
        let held = a.acquire("m").await.unwrap();
        let b = Locks::new(dir.path().join("locks")).with_wait(Duration::from_millis(200));
        assert_eq!(b.acquire("m").await.unwrap_err().code(), "refresh_busy");
        drop(held);
        b.acquire("m").await.unwrap();
    }

    #[tokio::test]
    async fn an_unwritable_folder_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        std::fs::write(&file, b"x").unwrap();
        let err = Locks::new(&file).acquire("support").await.unwrap_err();
        assert_eq!(err.code(), "store");
        assert!(err.to_string().contains("mailbox `support`"), "{err}");
    }
}
