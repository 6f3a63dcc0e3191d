// Shapes of what crosses IPC, mirroring mailbox_auth_core's serde output.

export type Protocol = "imap" | "pop3";
export type Security = "tls" | "starttls";
export type ProviderKind = "microsoft" | "google" | "generic";
export type Flow = "auth_code" | "device" | "client_credentials";
export type Status = "verified" | "needs_attention" | "failed" | "not_authenticated";

export interface Smtp {
  host: string;
  port: number;
  security: Security;
}

export interface Mailbox {
  name: string;
  email: string;
  login: string | null;
  protocol: Protocol;
  host: string;
  port: number;
  security: Security;
  folder: string;
  provider: ProviderKind;
  tenant: string | null;
  client_id: string;
  scopes: string[];
  auth_url: string | null;
  token_url: string | null;
  auth_params: [string, string][];
  ca_file: string | null;
  flow: Flow;
  device_url: string | null;
  /** OpenID Connect issuer (generic provider): empty endpoints are discovered from it. */
  issuer?: string | null;
  smtp: Smtp | null;
  client_secret_expires: string | null;
  /** A fixed loopback port for the browser sign-in's redirect (providers that match it exactly). */
  redirect_port?: number | null;
  /** How often the monitor checks this mailbox, in minutes; null = the monitor's interval. */
  check_interval_minutes?: number | null;
}

/** Which check a record is of (`health::Check`). */
export type Check = "authenticate" | "refresh" | "imap" | "pop3" | "smtp" | "store";

/** The action that carries out a record's fix, decided by the core (`diagnose::Fix`). */
export type Fix = { kind: "exchange_script" } | { kind: "sign_in_again" } | { kind: "edit_field"; field: string };

export interface HealthRecord {
  mailbox: string;
  at: string;
  check: Check;
  ok: boolean;
  code: string | null;
  message: string;
  hint: string | null;
  /** What the window offers for the hint; null when ok or when the fix is outside the app. */
  fix: Fix | null;
  server_words: string | null;
  messages: number | null;
}

export interface MailboxView extends Mailbox {
  status: Status;
  status_label: string;
  authenticated: boolean;
  last_check: HealthRecord | null;
  /** The newest check of the incoming server (IMAP/POP3) since the last sign-in. */
  incoming_check: HealthRecord | null;
  /** The newest check of the outbound SMTP server since the last sign-in (null without SMTP). */
  smtp_check: HealthRecord | null;
  /** A check's newest attempt was throttled and waits for its back-off: not a verdict. */
  throttled?: boolean;
  /** When the sign-in expires (RFC 3339), or null when kept alive or unknown. */
  signin_expires_at?: string | null;
}

/** One change between up and down in a mailbox's history. */
export interface StateChange {
  at: string;
  from: "up" | "down" | null;
  to: "up" | "down";
  check: Check;
  code: string | null;
  message: string;
}

/** Uptime over 7 and 30 days (fractions, null when nothing is known) and the transitions, newest first. */
export interface Uptime {
  days_7: number | null;
  days_30: number | null;
  transitions: StateChange[];
}

/** The background monitor of the desktop app. */
export interface MonitorState {
  paused: boolean;
  worst: "idle" | "ok" | "warn" | "bad";
  interval_secs: number;
  last_pass: string | null;
  start_at_login: boolean;
}

/** One verification: the incoming server, and the SMTP server when the mailbox has one. */
export interface Verification {
  incoming: HealthRecord;
  smtp: HealthRecord | null;
}

export interface FieldProblem {
  field: string;
  message: string;
}

/** Every failure from the shell: switch on `code`, never on `message`. */
export interface IpcError {
  code: string;
  message: string;
  hint: string;
  fields: FieldProblem[];
}

export interface RowError {
  line: number;
  field: string;
  message: string;
}

/** What an import does with one row (decided by the core). */
export type ImportAction = "new" | "update" | "unchanged" | "refused";

/** One row of the file as the core read it: its cells, and the mailbox or the errors. */
export interface ImportRow {
  line: number;
  name: string;
  /** The row's cells by column, as typed (trimmed). */
  cells: Record<string, string>;
  action: ImportAction;
  /** Columns whose value differs from the stored mailbox (update only). */
  changed_fields: string[];
  /** Those that decide where its secrets go. */
  routing_changes: string[];
  /** Its stored sign-in is deleted: it must sign in again. */
  signs_out: boolean;
  errors: RowError[];
  mailbox: Mailbox | null;
}

/** The counts the preview shows (decided by the core). */
export interface ImportSummary {
  ready: number;
  refused: number;
  updates: number;
  sign_outs: number;
}

export interface ImportPreview {
  rows: ImportRow[];
  errors: RowError[];
  summary: ImportSummary;
}

export interface ImportReport {
  imported: string[];
  errors: RowError[];
  rows: ImportRow[];
  signed_out: string[];
}

export interface CsvFile {
  text: string;
  base: string | null;
}

export interface Preset {
  host: string | null;
  port: number;
  scopes: string[];
  auth_url: string | null;
  token_url: string | null;
  device_url: string | null;
  auth_params: [string, string][];
  tenant: string | null;
  /** The provider's SMTP submission server (null for a generic provider). */
  smtp_host: string | null;
  /** Its usual security, or the one asked for. */
  smtp_security: Security;
  /** The submission port for `smtp_security`. */
  smtp_port: number;
}

export type SignInEvent =
  | { step: "browser_opened"; url: string; opened: boolean; error: string | null }
  | { step: "waiting_for_sign_in" }
  | { step: "device_code"; user_code: string; verification_uri: string; verification_uri_complete: string | null; expires_in: number }
  | { step: "exchanging" }
  | { step: "verifying" }
  | { step: "done"; record: HealthRecord };

/** A certificate credential's public facts (the private key never leaves the keyring). */
export interface AppCertificate {
  thumbprint: string;
  x5t: string;
  not_after: string;
  subject: string;
}

export interface CreatedCert {
  thumbprint: string;
  not_after: string;
  replaced: string | null;
  path: string;
}

/** What importing a hand-over did to one mailbox. */
export interface HandoverImported {
  name: string;
  replaced: boolean;
  secrets: string[];
  history_added: number;
}
