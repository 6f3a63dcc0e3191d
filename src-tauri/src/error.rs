//! Errors as they cross IPC: `{code, message, hint, fields}`. The UI switches on `code` and
//! places `fields` next to their inputs; it never parses `message`.

use mailbox_auth_core::import::ImportError;
use mailbox_auth_core::AppError;
use serde::Serialize;

/// One field's problem, named like the core's `FieldError.field` (or a CSV column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, specta::Type)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error, specta::Type)]
#[error("{code}: {message}")]
pub struct IpcError {
    pub code: String,
    pub message: String,
    pub hint: String,
    /// Per-field problems (validation), empty otherwise.
    pub fields: Vec<FieldProblem>,
}

impl IpcError {
    pub fn new(code: &str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), hint: hint.into(), fields: vec![] }
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            code: "invalid".into(),
            message: format!("{field}: {message}"),
            hint: "Correct the named field and try again.".into(),
            fields: vec![FieldProblem { field: field.into(), message }],
        }
    }
}

impl From<AppError> for IpcError {
    fn from(e: AppError) -> Self {
        let f = e.failure();
        let fields = match &e {
            AppError::Invalid(errs) => errs
                .iter()
                .map(|fe| FieldProblem { field: fe.field.to_string(), message: fe.message.clone() })
                .collect(),
            AppError::Import(ImportError::Header(r)) => {
                vec![FieldProblem { field: r.field.clone(), message: r.message.clone() }]
            }
            _ => vec![],
        };
        Self { code: f.code, message: f.message, hint: f.hint, fields }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailbox_auth_core::mailbox::FieldError;

    #[test]
    fn validation_errors_keep_their_fields() {
        let e: IpcError =
            AppError::Invalid(vec![FieldError::new("email", "must be an address"), FieldError::new("port", "bad")])
                .into();
        assert_eq!(e.code, "invalid");
        assert_eq!(e.fields.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(), ["email", "port"]);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["fields"][0]["message"], "must be an address");
        assert!(json["hint"].as_str().unwrap().contains("Correct the named field"));
    }

    #[test]
    fn exchange_script_errors_name_their_fields() {
        let home = tempfile::tempdir().unwrap();
        let app = mailbox_auth_core::App::open(
            home.path(),
            std::sync::Arc::new(mailbox_auth_core::secret::MemoryStore::default()),
        )
        .unwrap();
        let e: IpcError = app.exchange_script(&[], "not-a-guid", " ").unwrap_err().into();
        assert_eq!(e.code, "invalid");
        let fields: Vec<&str> = e.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["mailboxes", "object_id", "display_name"]);
        assert!(e.fields[1].message.contains("GUID"), "{}", e.fields[1].message);
    }
}
