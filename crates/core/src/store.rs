//! The SQLite store: mailboxes and their health history. Never secrets.
//!
//! One file, `mailbox-auth.sqlite3`, in the data directory (`$MAILBOX_AUTH_HOME`, default the
//! platform data dir). A mailbox row holds the validated [`Mailbox`] as JSON so new optional
//! fields need no migration; the health history is a plain table, newest last.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::health::HealthRecord;
use crate::mailbox::Mailbox;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the data store at {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot create the data directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
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

impl Store {
    pub fn open(home: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(home).map_err(|source| StoreError::Dir { path: home.into(), source })?;
        let path = home.join("mailbox-auth.sqlite3");
        let conn = Connection::open(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(sql("configure"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS mailboxes (
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
        .map_err(sql("create tables"))?;
        Ok(Self { conn: Mutex::new(conn) })
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

    pub fn list(&self) -> Result<Vec<Mailbox>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, data FROM mailboxes ORDER BY name").map_err(sql("list"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(sql("list"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("list"))?;
        rows.into_iter()
            .map(|(name, data)| serde_json::from_str(&data).map_err(|source| StoreError::Corrupt { name, source }))
            .collect()
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
        tx.commit().map_err(sql("commit"))
    }

    pub fn record(&self, rec: &HealthRecord) -> Result<(), StoreError> {
        let data =
            serde_json::to_string(rec).map_err(|source| StoreError::Corrupt { name: rec.mailbox.clone(), source })?;
        self.conn()
            .execute("INSERT INTO health (mailbox, data) VALUES (?1, ?2)", params![rec.mailbox, data])
            .map_err(sql("record health"))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::sample;

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
                check: "imap".into(),
                ok,
                code: None,
                message: format!("run {i}"),
                hint: None,
                server_words: None,
                messages: Some(i as u32),
            })
            .unwrap();
        }
        let h = s.history("support", 2).unwrap();
        assert_eq!(h.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(), vec!["run 2", "run 1"]);
    }
}
