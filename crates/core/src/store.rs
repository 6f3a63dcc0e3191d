//! The SQLite store: mailboxes and their health history. Never secrets.
//!
//! One file, `mailbox-auth.sqlite3`, in the data directory (`$MAILBOX_AUTH_HOME`, default the
//! platform data dir). A mailbox row holds the validated [`Mailbox`] as JSON so new optional
//! fields need no migration; the health history is a plain table, newest last.
//!
//! The schema version is SQLite's `PRAGMA user_version` (0 = the first, unversioned layout);
//! [`migrate`] brings an older file up to [`SCHEMA_VERSION`] step by step, and a file written
//! by a newer version is refused and left untouched. So is a file that is not a SQLite
//! database at all (`SQLITE_NOTADB`, `SQLITE_CORRUPT`): the error names the file and what to do.
//!
//! The data directory is created `0700` and the database `0600` (SQLite gives its `-wal` and
//! `-shm` files the database's mode): mailbox addresses and server replies are nobody else's.
//!
//! Retention: routine green checks older than [`ROUTINE_RETENTION_DAYS`] are pruned (on open and
//! every [`PRUNE_EVERY`] records); every failure, every change of status and the newest record
//! of each check stay.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use crate::health::HealthRecord;
use crate::mailbox::Mailbox;

/// The schema this build writes.
pub const SCHEMA_VERSION: i64 = 5;
/// Green checks older than this are pruned unless they mark a change of status.
pub const ROUTINE_RETENTION_DAYS: i64 = 30;
/// Pruning also runs every this many new records (a window open for months).
const PRUNE_EVERY: i64 = 500;
const DB_FILE: &str = "mailbox-auth.sqlite3";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the data store at {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot create the data directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot create or open the data store file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error(
        "the data store {path} is damaged or is not a Mailbox Auth database ({source}); it was left \
         untouched: move it aside (or restore a backup) and start again, then import the mailboxes"
    )]
    Damaged { path: PathBuf, source: rusqlite::Error },
    #[error(
        "the data store {path} was written by a newer Mailbox Auth (schema {found}, this one knows \
         up to {supported}); it was left untouched: use the newer version"
    )]
    TooNew { path: PathBuf, found: i64, supported: i64 },
    #[error("data store {op} failed: {source}")]
    Sql { op: &'static str, source: rusqlite::Error },
    #[error("stored mailbox `{name}` cannot be read: {source}")]
    Corrupt { name: String, source: serde_json::Error },
    #[error("no mailbox named `{0}`")]
    NotFound(String),
}

impl StoreError {
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not_found",
            _ => "store",
        }
    }
}

/// A stored mailbox whose settings cannot be read: its name and why.
pub type Unreadable = (String, String);

#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

/// The data directory: `$MAILBOX_AUTH_HOME`, else the platform data dir.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("MAILBOX_AUTH_HOME") {
        return PathBuf::from(h);
    }
    directories::ProjectDirs::from("", "", "mailbox-auth")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".mailbox-auth"))
}

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { op, source }
}

/// Brings the schema from `from` up to [`SCHEMA_VERSION`], one step at a time, inside the
/// caller's transaction. Each step is one `if from < N` block, in order, so a file several
/// versions behind runs every step it lacks.
fn migrate(tx: &rusqlite::Transaction<'_>, from: i64) -> Result<(), StoreError> {
    // 0 → 1: the first layout (files from before versioning already have it).
    if from < 1 {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS mailboxes (
                 name TEXT PRIMARY KEY NOT NULL,
                 data TEXT NOT NULL,
                 updated_at TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS health (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 mailbox TEXT NOT NULL,
                 data TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS health_by_mailbox ON health (mailbox, id);",
        )
        .map_err(sql("migrate to schema 1"))?;
    }
    // 1 → 2: when each mailbox's sign-in was issued, last used and last rotated (the dates
    // only: the tokens live in the keyring).
    if from < 2 {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS signin (
                 mailbox TEXT PRIMARY KEY NOT NULL,
                 issued_at TEXT NOT NULL,
                 refreshed_at TEXT,
                 rotated_at TEXT,
                 idle_lifetime_secs INTEGER
             );",
        )
        .map_err(sql("migrate to schema 2"))?;
    }
    // 2 → 3: the badge the monitor last alerted each mailbox with (monitors before version 3
    // created this table themselves; `IF NOT EXISTS` keeps what they recorded), and the
    // monitor's settings that are not secrets (where alert emails go).
    if from < 3 {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS monitor_alert_state (
                 mailbox TEXT PRIMARY KEY NOT NULL,
                 badge TEXT NOT NULL,
                 at TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS settings (
                 key TEXT PRIMARY KEY NOT NULL,
                 value TEXT NOT NULL
             );",
        )
        .map_err(sql("migrate to schema 3"))?;
    }
    // 3 → 4: the transcript of each mailbox's latest failing check, per check (`imap`, `pop3`,
    // `smtp`), for support bundles. Transcripts carry no secret: the probe redacts the client's
    // lines before they are recorded (`probe/transcript.rs`).
    if from < 4 {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS failing_transcripts (
                 mailbox TEXT NOT NULL,
                 check_name TEXT NOT NULL,
                 at TEXT NOT NULL,
                 data TEXT NOT NULL,
                 PRIMARY KEY (mailbox, check_name)
             );",
        )
        .map_err(sql("migrate to schema 4"))?;
    }
    // 4 → 5: the mailboxes whose sign-in dates are complete: one listed here with no row in
    // `signin` is known to hold no sign-in, so the board reads no keyring entry for it. Listed:
    // every mailbox with dates, one signed out here, and one the keyring was once found to hold
    // no refresh token for (see `App::view`).
    if from < 5 {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS signin_known (mailbox TEXT PRIMARY KEY NOT NULL);
             INSERT OR IGNORE INTO signin_known (mailbox) SELECT mailbox FROM signin;",
        )
        .map_err(sql("migrate to schema 5"))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sql("set the schema version"))
}

/// Creates the data directory (and its parents) `0700`.
fn create_home(home: &Path) -> Result<(), StoreError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(home).map_err(|source| StoreError::Dir { path: home.into(), source })
}

/// Creates the database file `0600` before SQLite does (it would use the umask, often
/// world-readable), and narrows an existing one (best effort: a file we cannot change stays
/// usable, read-only if need be).
fn restrict_db_file(path: &Path) -> Result<(), StoreError> {
    if !path.exists() {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        match o.open(path) {
            Ok(_) => {}
            // Another process created it meanwhile: narrowed below.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(StoreError::File { path: path.into(), source }),
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(md) = std::fs::metadata(path) {
            if md.is_file() && md.permissions().mode() & 0o077 != 0 {
                if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot narrow the data store's permissions");
                }
            }
        }
    }
    Ok(())
}

impl Store {
    pub fn open(home: &Path) -> Result<Self, StoreError> {
        create_home(home)?;
        let path = home.join(DB_FILE);
        restrict_db_file(&path)?;
        let conn = Connection::open(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(sql("configure"))?;
        // The first read of the file: a damaged one fails here, before anything is written.
        let damaged = |source: rusqlite::Error| match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
                StoreError::Damaged { path: path.clone(), source }
            }
            _ => StoreError::Open { path: path.clone(), source },
        };
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(damaged)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew { path, found, supported: SCHEMA_VERSION });
        }
        conn.execute_batch("PRAGMA journal_mode = WAL;").map_err(damaged)?;
        let mut conn = conn;
        {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql("begin migration"))?;
            // Read again inside the write lock: another process may have migrated meanwhile.
            let found: i64 =
                tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql("read the schema version"))?;
            if found > SCHEMA_VERSION {
                return Err(StoreError::TooNew { path, found, supported: SCHEMA_VERSION });
            }
            if found < SCHEMA_VERSION {
                migrate(&tx, found)?;
            }
            tx.commit().map_err(sql("commit migration"))?;
        }
        let store = Self { conn: Mutex::new(conn) };
        store.prune_history(chrono::Utc::now())?;
        Ok(store)
    }

    /// Deletes routine green checks older than [`ROUTINE_RETENTION_DAYS`] before `now`: a
    /// green record whose previous record of the same mailbox and check was green too and that
    /// is not the newest of its check. Failures and changes of status are kept for good.
    pub fn prune_history(&self, now: chrono::DateTime<chrono::Utc>) -> Result<usize, StoreError> {
        let cutoff =
            (now - chrono::Duration::days(ROUTINE_RETENTION_DAYS)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        self.conn()
            .execute(
                "DELETE FROM health WHERE id IN (
                     SELECT id FROM (
                         SELECT id,
                                json_extract(data, '$.ok') AS ok,
                                json_extract(data, '$.at') AS at,
                                LAG(json_extract(data, '$.ok')) OVER w AS prev_ok,
                                LEAD(id) OVER w AS next_id
                         FROM health
                         WINDOW w AS (PARTITION BY mailbox, json_extract(data, '$.check') ORDER BY id)
                     )
                     WHERE ok = 1 AND prev_ok = 1 AND next_id IS NOT NULL AND at < ?1
                 )",
                [cutoff],
            )
            .map_err(sql("prune history"))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every write is one statement
        // or one transaction), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts or replaces mailboxes, all or none.
    pub fn save_all(&self, mailboxes: &[Mailbox]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql("begin"))?;
        for m in mailboxes {
            let data =
                serde_json::to_string(m).map_err(|source| StoreError::Corrupt { name: m.name.clone(), source })?;
            tx.execute(
                "INSERT INTO mailboxes (name, data, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                params![m.name, data, chrono::Utc::now().to_rfc3339()],
            )
            .map_err(sql("save mailbox"))?;
        }
        tx.commit().map_err(sql("commit"))
    }

    pub fn save(&self, mailbox: &Mailbox) -> Result<(), StoreError> {
        self.save_all(std::slice::from_ref(mailbox))
    }

    pub fn get(&self, name: &str) -> Result<Mailbox, StoreError> {
        let data: Option<String> = self
            .conn()
            .query_row("SELECT data FROM mailboxes WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .map_err(sql("read mailbox"))?;
        let data = data.ok_or_else(|| StoreError::NotFound(name.into()))?;
        serde_json::from_str(&data).map_err(|source| StoreError::Corrupt { name: name.into(), source })
    }

    /// Every mailbox; fails on the first one that cannot be read (see [`Store::list_readable`]).
    pub fn list(&self) -> Result<Vec<Mailbox>, StoreError> {
        self.rows()?
            .into_iter()
            .map(|(name, data)| serde_json::from_str(&data).map_err(|source| StoreError::Corrupt { name, source }))
            .collect()
    }

    /// The mailboxes that can be read, and the names (with the reason) of those that cannot.
    pub fn list_readable(&self) -> Result<(Vec<Mailbox>, Vec<Unreadable>), StoreError> {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for (name, data) in self.rows()? {
            match serde_json::from_str(&data) {
                Ok(m) => good.push(m),
                Err(e) => bad.push((name, e.to_string())),
            }
        }
        Ok((good, bad))
    }

    fn rows(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, data FROM mailboxes ORDER BY name").map_err(sql("list"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(sql("list"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("list"))?;
        Ok(rows)
    }

    /// Removes a mailbox and its history.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql("begin"))?;
        let n = tx.execute("DELETE FROM mailboxes WHERE name = ?1", [name]).map_err(sql("remove"))?;
        if n == 0 {
            return Err(StoreError::NotFound(name.into()));
        }
        tx.execute("DELETE FROM health WHERE mailbox = ?1", [name]).map_err(sql("remove history"))?;
        tx.execute("DELETE FROM signin WHERE mailbox = ?1", [name]).map_err(sql("remove sign-in dates"))?;
        tx.execute("DELETE FROM signin_known WHERE mailbox = ?1", [name]).map_err(sql("remove sign-in dates"))?;
        tx.execute("DELETE FROM monitor_alert_state WHERE mailbox = ?1", [name]).map_err(sql("remove alert state"))?;
        tx.execute("DELETE FROM failing_transcripts WHERE mailbox = ?1", [name]).map_err(sql("remove transcripts"))?;
        tx.commit().map_err(sql("commit"))
    }

    /// A new sign-in was stored: its refresh token was issued now. `idle_lifetime` is what the
    /// token response said (`refresh_expires_in`), if anything.
    pub fn note_signin(
        &self,
        name: &str,
        at: chrono::DateTime<chrono::Utc>,
        idle_lifetime: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql("begin"))?;
        tx.execute(
            "INSERT OR REPLACE INTO signin (mailbox, issued_at, refreshed_at, rotated_at, idle_lifetime_secs)
             VALUES (?1, ?2, NULL, NULL, ?3)",
            params![name, at.to_rfc3339(), idle_lifetime.map(|s| s.min(i64::MAX as u64) as i64)],
        )
        .map_err(sql("record the sign-in date"))?;
        tx.execute("INSERT OR IGNORE INTO signin_known (mailbox) VALUES (?1)", [name])
            .map_err(sql("record the sign-in date"))?;
        tx.commit().map_err(sql("record the sign-in date"))
    }

    /// The sign-in was used for a refresh now; `rotated` when a new refresh token was stored.
    /// Nothing is written for a mailbox without a recorded sign-in (signed in before dates were
    /// kept): its issue date is unknown.
    pub fn note_refresh(
        &self,
        name: &str,
        at: chrono::DateTime<chrono::Utc>,
        rotated: bool,
        idle_lifetime: Option<u64>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE signin SET refreshed_at = ?2,
                     rotated_at = CASE WHEN ?3 THEN ?2 ELSE rotated_at END,
                     idle_lifetime_secs = COALESCE(?4, idle_lifetime_secs)
                 WHERE mailbox = ?1",
                params![name, at.to_rfc3339(), rotated, idle_lifetime.map(|s| s.min(i64::MAX as u64) as i64)],
            )
            .map_err(sql("record the refresh date"))?;
        Ok(())
    }

    /// Forgets the sign-in dates: the mailbox was signed out, so its sign-in is known (none).
    pub fn forget_signin(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql("begin"))?;
        tx.execute("DELETE FROM signin WHERE mailbox = ?1", [name]).map_err(sql("forget sign-in dates"))?;
        tx.execute("INSERT OR IGNORE INTO signin_known (mailbox) VALUES (?1)", [name])
            .map_err(sql("forget sign-in dates"))?;
        tx.commit().map_err(sql("forget sign-in dates"))
    }

    /// Whether the mailbox's sign-in dates are complete: then a mailbox without dates has no
    /// sign-in, and nobody needs to ask the keyring. Not known until the keyring was asked once:
    /// a mailbox just created or imported (the keyring may hold a sign-in from before, of a
    /// mailbox of that name whose data directory was replaced), one signed in before the dates
    /// were kept, and one whose refresh token was stored without its dates (a hand-over file
    /// from such a mailbox, a failed write of the date).
    pub fn signin_known(&self, name: &str) -> Result<bool, StoreError> {
        self.conn()
            .query_row("SELECT 1 FROM signin_known WHERE mailbox = ?1", [name], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(sql("read the sign-in dates"))
    }

    /// Records whether the mailbox's sign-in dates are complete (see [`Store::signin_known`]).
    pub fn set_signin_known(&self, name: &str, known: bool) -> Result<(), StoreError> {
        let sql_text = if known {
            "INSERT OR IGNORE INTO signin_known (mailbox) SELECT name FROM mailboxes WHERE name = ?1"
        } else {
            "DELETE FROM signin_known WHERE mailbox = ?1"
        };
        self.conn().execute(sql_text, [name]).map_err(sql("record the sign-in dates"))?;
        Ok(())
    }

    /// The sign-in dates of a mailbox, if a sign-in was recorded.
    pub fn signin(&self, name: &str) -> Result<Option<crate::health::SignInDates>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT issued_at, refreshed_at, rotated_at, idle_lifetime_secs FROM signin WHERE mailbox = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(sql("read the sign-in dates"))?;
        let date = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&chrono::Utc));
        Ok(row.and_then(|(issued, refreshed, rotated, idle)| {
            Some(crate::health::SignInDates {
                issued_at: date(&issued)?,
                refreshed_at: refreshed.as_deref().and_then(date),
                rotated_at: rotated.as_deref().and_then(date),
                idle_lifetime: idle.and_then(|s| u64::try_from(s).ok()).map(std::time::Duration::from_secs),
            })
        }))
    }

    pub fn record(&self, rec: &HealthRecord) -> Result<(), StoreError> {
        let data =
            serde_json::to_string(rec).map_err(|source| StoreError::Corrupt { name: rec.mailbox.clone(), source })?;
        let id = {
            let conn = self.conn();
            conn.execute("INSERT INTO health (mailbox, data) VALUES (?1, ?2)", params![rec.mailbox, data])
                .map_err(sql("record health"))?;
            conn.last_insert_rowid()
        };
        if id % PRUNE_EVERY == 0 {
            self.prune_history(chrono::Utc::now())?;
        }
        Ok(())
    }

    /// The newest `limit` records of a mailbox, newest first.
    pub fn history(&self, name: &str, limit: usize) -> Result<Vec<HealthRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT data FROM health WHERE mailbox = ?1 ORDER BY id DESC LIMIT ?2")
            .map_err(sql("history"))?;
        let rows = stmt
            .query_map(params![name, limit as i64], |r| r.get::<_, String>(0))
            .map_err(sql("history"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("history"))?;
        rows.into_iter()
            .map(|d| serde_json::from_str(&d).map_err(|source| StoreError::Corrupt { name: name.into(), source }))
            .collect()
    }

    /// The badge each mailbox was last alerted with by the monitor (badge names as serialised,
    /// e.g. `failed`).
    pub fn alert_states(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT mailbox, badge FROM monitor_alert_state").map_err(sql("alert state"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(sql("alert state"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("alert state"))?;
        Ok(rows)
    }

    /// Records the badge a mailbox was alerted with.
    pub fn set_alert_state(
        &self,
        mailbox: &str,
        badge: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO monitor_alert_state (mailbox, badge, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(mailbox) DO UPDATE SET badge = excluded.badge, at = excluded.at",
                params![mailbox, badge, at.to_rfc3339()],
            )
            .map_err(sql("save alert state"))?;
        Ok(())
    }

    /// A setting (never a secret: those live in the keyring).
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(sql("read a setting"))
    }

    /// Sets (`Some`) or removes (`None`) settings, all or none.
    pub fn set_settings(&self, values: &[(&str, Option<&str>)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql("begin"))?;
        for (key, value) in values {
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![key, v],
                ),
                None => tx.execute("DELETE FROM settings WHERE key = ?1", [key]),
            }
            .map_err(sql("save a setting"))?;
        }
        tx.commit().map_err(sql("commit"))
    }

    /// Forgets the alert state of mailboxes that are no longer stored.
    pub fn prune_alert_states(&self) -> Result<usize, StoreError> {
        self.conn()
            .execute("DELETE FROM monitor_alert_state WHERE mailbox NOT IN (SELECT name FROM mailboxes)", [])
            .map_err(sql("prune alert state"))
    }
}

/// The transcript of a mailbox's latest failing check (schema 4).
impl Store {
    /// Keeps `transcript` as the latest failing one of the mailbox's `check`, replacing the
    /// previous one.
    pub fn keep_failing_transcript(
        &self,
        mailbox: &str,
        check: &str,
        at: chrono::DateTime<chrono::Utc>,
        transcript: &crate::probe::Transcript,
    ) -> Result<(), StoreError> {
        let data = serde_json::to_string(transcript)
            .map_err(|source| StoreError::Corrupt { name: mailbox.to_string(), source })?;
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO failing_transcripts (mailbox, check_name, at, data) VALUES (?1, ?2, ?3, ?4)",
                params![mailbox, check, at.to_rfc3339(), data],
            )
            .map_err(sql("keep the failing transcript"))?;
        Ok(())
    }

    /// The latest failing transcripts of a mailbox, newest first: `(check, at, transcript)`. One
    /// that cannot be read is left out.
    pub fn failing_transcripts(
        &self,
        mailbox: &str,
    ) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>, crate::probe::Transcript)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT check_name, at, data FROM failing_transcripts WHERE mailbox = ?1 ORDER BY at DESC")
            .map_err(sql("read the failing transcripts"))?;
        let rows = stmt
            .query_map([mailbox], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
            .map_err(sql("read the failing transcripts"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read the failing transcripts"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(check, at, data)| {
                let at = chrono::DateTime::parse_from_rfc3339(&at).ok()?.with_timezone(&chrono::Utc);
                Some((check, at, serde_json::from_str(&data).ok()?))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::sample;

    #[test]
    fn sign_in_dates_are_kept_updated_and_removed_with_the_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let m = sample();
        s.save(&m).unwrap();
        let t0 = "2026-11-01T10:00:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        assert_eq!(s.signin(&m.name).unwrap(), None);
        s.note_refresh(&m.name, t0, true, None).unwrap();
        assert_eq!(s.signin(&m.name).unwrap(), None, "no issue date, nothing invented");
        s.note_signin(&m.name, t0, Some(1800)).unwrap();
        let t1 = t0 + chrono::Duration::hours(1);
        s.note_refresh(&m.name, t1, false, None).unwrap();
        let d = s.signin(&m.name).unwrap().unwrap();
        assert_eq!((d.issued_at, d.refreshed_at, d.rotated_at), (t0, Some(t1), None));
        assert_eq!(d.idle_lifetime, Some(std::time::Duration::from_secs(1800)));
        let t2 = t1 + chrono::Duration::hours(1);
        s.note_refresh(&m.name, t2, true, Some(3600)).unwrap();
        let d = s.signin(&m.name).unwrap().unwrap();
        assert_eq!(
            (d.refreshed_at, d.rotated_at, d.idle_lifetime),
            (Some(t2), Some(t2), Some(std::time::Duration::from_secs(3600)))
        );
        s.remove(&m.name).unwrap();
        assert_eq!(s.signin(&m.name).unwrap(), None);
    }

    #[test]
    fn a_signed_out_mailbox_has_a_known_sign_in_a_new_or_older_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        // A schema 4 file: one mailbox with sign-in dates, one without (never signed in, or
        // signed in before the dates were kept: only the keyring can tell).
        let mut conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let tx = conn.transaction().unwrap();
        migrate(&tx, 0).unwrap();
        tx.execute_batch("DROP TABLE signin_known; PRAGMA user_version = 4;").unwrap();
        tx.commit().unwrap();
        for name in ["dated", "undated"] {
            let mut m = sample();
            m.name = name.into();
            conn.execute("INSERT INTO mailboxes VALUES (?1, ?2, '')", [name, &serde_json::to_string(&m).unwrap()])
                .unwrap();
        }
        conn.execute("INSERT INTO signin (mailbox, issued_at) VALUES ('dated', '2026-11-01T10:00:00Z')", []).unwrap();
        drop(conn);
        let s = Store::open(dir.path()).unwrap();
        assert!(s.signin_known("dated").unwrap());
        assert!(!s.signin_known("undated").unwrap());
        // Saving does not make a sign-in known, for an older mailbox or a new one: only the
        // keyring can tell whether a sign-in of that name is stored there.
        let mut undated = s.get("undated").unwrap();
        undated.folder = "Archive".into();
        let mut new = sample();
        new.name = "new".into();
        s.save_all(&[undated, new]).unwrap();
        assert!(!s.signin_known("undated").unwrap());
        assert!(!s.signin_known("new").unwrap());
        s.set_signin_known("new", true).unwrap();
        assert!(s.signin_known("new").unwrap());
        // Signing out makes it known; a token stored without dates makes it unknown again.
        s.forget_signin("undated").unwrap();
        assert!(s.signin_known("undated").unwrap());
        s.set_signin_known("undated", false).unwrap();
        assert!(!s.signin_known("undated").unwrap());
        s.note_signin("undated", chrono::Utc::now(), None).unwrap();
        assert!(s.signin_known("undated").unwrap());
        // Removed with its mailbox, and never recorded for a name that is not stored.
        s.remove("new").unwrap();
        assert!(!s.signin_known("new").unwrap());
        s.set_signin_known("nobody", true).unwrap();
        assert!(!s.signin_known("nobody").unwrap());
    }

    #[test]
    fn save_update_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut m = sample();
        s.save(&m).unwrap();
        m.port = 1993;
        s.save(&m).unwrap();
        assert_eq!(s.list().unwrap(), vec![m.clone()]);
        assert_eq!(s.get("support").unwrap().port, 1993);
        s.remove("support").unwrap();
        assert!(matches!(s.get("support"), Err(StoreError::NotFound(_))));
        assert!(matches!(s.remove("support"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn history_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for (i, ok) in [true, false, true].into_iter().enumerate() {
            s.record(&HealthRecord {
                mailbox: "support".into(),
                at: chrono::Utc::now(),
                check: crate::health::Check::Imap,
                ok,
                code: None,
                message: format!("run {i}"),
                hint: None,
                fix: None,
                server_words: None,
                messages: Some(i as u32),
            })
            .unwrap();
        }
        let h = s.history("support", 2).unwrap();
        assert_eq!(h.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(), vec!["run 2", "run 1"]);
    }

    fn rec(mailbox: &str, check: &str, ok: bool, days_ago: i64, n: u32) -> HealthRecord {
        HealthRecord {
            mailbox: mailbox.into(),
            at: chrono::Utc::now() - chrono::Duration::days(days_ago),
            check: check.parse().unwrap(),
            ok,
            code: None,
            message: format!("r{n}"),
            hint: None,
            fix: None,
            server_words: None,
            messages: None,
        }
    }

    #[cfg(unix)]
    #[test]
    fn data_dir_is_0700_and_database_files_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("new").join("home");
        let s = Store::open(&home).unwrap();
        s.save(&sample()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home), 0o700);
        for f in ["mailbox-auth.sqlite3", "mailbox-auth.sqlite3-wal", "mailbox-auth.sqlite3-shm"] {
            assert_eq!(mode(&home.join(f)), 0o600, "{f}");
        }
        drop(s);
        // A file from before is narrowed.
        std::fs::set_permissions(home.join(DB_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        Store::open(&home).unwrap();
        assert_eq!(mode(&home.join(DB_FILE)), 0o600);
    }

    #[test]
    fn a_damaged_database_is_named_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &garbage).unwrap();
        let e = Store::open(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()) && msg.contains("left untouched"), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
        assert!(!dir.path().join("mailbox-auth.sqlite3-wal").exists());
    }

    #[test]
    fn schema_version_is_set_and_a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.save(&sample()).unwrap();
        let v: i64 = s.conn().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        s.conn().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(s);
        let before = std::fs::read(dir.path().join(DB_FILE)).unwrap();
        let e = Store::open(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::TooNew { found, .. } if found == SCHEMA_VERSION + 1), "{e:?}");
        assert!(e.to_string().contains("newer Mailbox Auth"), "{e}");
        assert_eq!(std::fs::read(dir.path().join(DB_FILE)).unwrap(), before);
    }

    #[test]
    fn an_unversioned_database_is_migrated_keeping_its_mailboxes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "CREATE TABLE mailboxes (name TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE health (id INTEGER PRIMARY KEY AUTOINCREMENT, mailbox TEXT NOT NULL, data TEXT NOT NULL);",
        )
        .unwrap();
        conn.execute("INSERT INTO mailboxes VALUES ('support', ?1, '')", [serde_json::to_string(&sample()).unwrap()])
            .unwrap();
        drop(conn);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.list().unwrap(), vec![sample()]);
        let v: i64 = s.conn().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn a_schema_1_database_gains_the_sign_in_dates_table() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "CREATE TABLE mailboxes (name TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE health (id INTEGER PRIMARY KEY AUTOINCREMENT, mailbox TEXT NOT NULL, data TEXT NOT NULL);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        conn.execute("INSERT INTO mailboxes VALUES ('support', ?1, '')", [serde_json::to_string(&sample()).unwrap()])
            .unwrap();
        drop(conn);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.list().unwrap(), vec![sample()]);
        let v: i64 = s.conn().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        s.note_signin("support", chrono::Utc::now(), None).unwrap();
        assert!(s.signin("support").unwrap().is_some());
    }

    #[test]
    fn a_schema_2_database_is_upgraded_keeping_its_data_and_the_monitors_alert_state() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        // A version 2 file as it was written, including the alert state table monitors of that
        // version created on their own.
        conn.execute_batch(
            "CREATE TABLE mailboxes (name TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE health (id INTEGER PRIMARY KEY AUTOINCREMENT, mailbox TEXT NOT NULL, data TEXT NOT NULL);
             CREATE INDEX health_by_mailbox ON health (mailbox, id);
             CREATE TABLE signin (mailbox TEXT PRIMARY KEY NOT NULL, issued_at TEXT NOT NULL, refreshed_at TEXT,
                                  rotated_at TEXT, idle_lifetime_secs INTEGER);
             CREATE TABLE monitor_alert_state (mailbox TEXT PRIMARY KEY NOT NULL, badge TEXT NOT NULL, at TEXT NOT NULL);
             INSERT INTO signin VALUES ('support', '2026-11-01T10:00:00+00:00', NULL, NULL, 1800);
             INSERT INTO monitor_alert_state VALUES ('support', 'failed', '2026-11-02T10:00:00+00:00');
             PRAGMA user_version = 2;",
        )
        .unwrap();
        conn.execute("INSERT INTO mailboxes VALUES ('support', ?1, '')", [serde_json::to_string(&sample()).unwrap()])
            .unwrap();
        conn.execute(
            "INSERT INTO health (mailbox, data) VALUES ('support', ?1)",
            [serde_json::to_string(&rec("support", "imap", false, 3, 7)).unwrap()],
        )
        .unwrap();
        drop(conn);
        let s = Store::open(dir.path()).unwrap();
        let v: i64 = s.conn().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        assert_eq!(s.list().unwrap(), vec![sample()]);
        assert_eq!(s.history("support", 10).unwrap().iter().map(|r| r.message.as_str()).collect::<Vec<_>>(), ["r7"]);
        assert_eq!(s.signin("support").unwrap().unwrap().idle_lifetime, Some(std::time::Duration::from_secs(1800)));
        assert_eq!(s.alert_states().unwrap(), [("support".to_string(), "failed".to_string())]);
        drop(s);
        // A version 2 file whose monitor never ran gains the table too.
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "CREATE TABLE mailboxes (name TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE health (id INTEGER PRIMARY KEY AUTOINCREMENT, mailbox TEXT NOT NULL, data TEXT NOT NULL);
             CREATE TABLE signin (mailbox TEXT PRIMARY KEY NOT NULL, issued_at TEXT NOT NULL, refreshed_at TEXT,
                                  rotated_at TEXT, idle_lifetime_secs INTEGER);
             PRAGMA user_version = 2;",
        )
        .unwrap();
        drop(conn);
        let s = Store::open(dir.path()).unwrap();
        s.set_alert_state("support", "verified", chrono::Utc::now()).unwrap();
        assert_eq!(s.alert_states().unwrap().len(), 1);
        s.set_settings(&[("a", Some("1")), ("b", Some("2"))]).unwrap();
        s.set_settings(&[("a", Some("3")), ("b", None)]).unwrap();
        assert_eq!((s.setting("a").unwrap(), s.setting("b").unwrap()), (Some("3".into()), None));
    }

    /// Health rows as every earlier version wrote them (the check a plain string, no `fix`)
    /// read back as the typed [`crate::health::Check`], and a new record writes the same string.
    #[test]
    fn health_rows_written_with_check_strings_read_as_typed_checks() {
        use crate::health::Check;
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.save(&sample()).unwrap();
        let old = |check: &str| {
            format!(
                r#"{{"mailbox":"support","at":"2026-01-01T00:00:00Z","check":"{check}","ok":false,"code":"connect_refused","message":"m","hint":"h","server_words":null,"messages":null}}"#
            )
        };
        for check in ["authenticate", "refresh", "imap", "pop3", "smtp"] {
            s.conn().execute("INSERT INTO health (mailbox, data) VALUES ('support', ?1)", [old(check)]).unwrap();
        }
        let h = s.history("support", 10).unwrap();
        let checks: Vec<Check> = h.iter().map(|r| r.check).collect();
        assert_eq!(checks, [Check::Smtp, Check::Pop3, Check::Imap, Check::Refresh, Check::Authenticate]);
        assert!(h.iter().all(|r| r.fix.is_none()), "no fix in rows stored before it existed");

        s.record(&HealthRecord { fix: Some(crate::diagnose::Fix::SignInAgain), ..h[0].clone() }).unwrap();
        let data: String =
            s.conn().query_row("SELECT data FROM health ORDER BY id DESC LIMIT 1", [], |r| r.get(0)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!((v["check"].as_str(), v["fix"]["kind"].as_str()), (Some("smtp"), Some("sign_in_again")));
    }

    #[test]
    fn alert_state_survives_a_reopen_and_goes_with_its_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut other = sample();
        other.name = "other".into();
        s.save_all(&[sample(), other]).unwrap();
        let now = chrono::Utc::now();
        s.set_alert_state("support", "failed", now).unwrap();
        s.set_alert_state("other", "needs_attention", now).unwrap();
        s.set_alert_state("support", "verified", now).unwrap();
        s.set_alert_state("gone", "failed", now).unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        let mut all = s.alert_states().unwrap();
        all.sort();
        assert_eq!(all.len(), 3);
        assert_eq!(s.prune_alert_states().unwrap(), 1, "only the state of a mailbox that is not stored goes");
        s.remove("other").unwrap();
        assert_eq!(s.alert_states().unwrap(), [("support".to_string(), "verified".to_string())]);
    }

    #[test]
    fn the_latest_failing_transcript_per_check_is_kept_and_goes_with_the_mailbox() {
        use crate::probe::transcript::{Line, Side};
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.save(&sample()).unwrap();
        let t = |text: &str| crate::probe::Transcript {
            lines: vec![Line { ms: 3, from: Side::Server, text: text.into() }],
            ..Default::default()
        };
        let t0 = chrono::Utc::now() - chrono::Duration::minutes(5);
        s.keep_failing_transcript("support", "imap", t0, &t("first")).unwrap();
        s.keep_failing_transcript("support", "smtp", t0 + chrono::Duration::minutes(1), &t("smtp")).unwrap();
        s.keep_failing_transcript("support", "imap", t0 + chrono::Duration::minutes(2), &t("second")).unwrap();
        let kept = s.failing_transcripts("support").unwrap();
        let texts: Vec<(&str, &str)> = kept.iter().map(|(c, _, t)| (c.as_str(), t.lines[0].text.as_str())).collect();
        assert_eq!(texts, [("imap", "second"), ("smtp", "smtp")], "one per check, the newest first");
        s.remove("support").unwrap();
        assert!(s.failing_transcripts("support").unwrap().is_empty());
    }

    #[test]
    fn old_routine_green_checks_are_pruned_failures_and_transitions_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        // Oldest first: green, green, green (all 60 days old), red, green (transition), green, green.
        let plan = [(true, 60), (true, 59), (true, 58), (false, 50), (true, 45), (true, 40), (true, 1)];
        for (n, (ok, days)) in plan.into_iter().enumerate() {
            s.record(&rec("support", "imap", ok, days, n as u32)).unwrap();
        }
        // Another check and another mailbox: their newest record stays however old.
        s.record(&rec("support", "smtp", true, 90, 100)).unwrap();
        s.record(&rec("support", "smtp", true, 80, 101)).unwrap();
        s.record(&rec("other", "imap", true, 70, 200)).unwrap();
        let removed = s.prune_history(chrono::Utc::now()).unwrap();
        let kept: Vec<String> = s.history("support", 100).unwrap().into_iter().rev().map(|r| r.message).collect();
        // r1, r2 (routine greens after a green) and r5 (green after green, 40 days) go; r6 is
        // recent; r0 is the first; r3 failed; r4 is the change back to green.
        assert_eq!(kept, ["r0", "r3", "r4", "r6", "r100", "r101"]);
        assert_eq!(removed, 3);
        assert_eq!(s.history("other", 10).unwrap().len(), 1);
        // Pruning again removes nothing more.
        assert_eq!(s.prune_history(chrono::Utc::now()).unwrap(), 0);
    }
}
