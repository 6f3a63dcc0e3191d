// The only module that talks to the Tauri shell. Everything else calls these typed functions,
// so the rest of the UI (and its unit tests) never imports @tauri-apps/api.
import { Channel, invoke } from "@tauri-apps/api/core";
import { emit, listen } from "@tauri-apps/api/event";
import type {
  AppCertificate,
  CreatedCert,
  CsvFile,
  HandoverImported,
  HealthRecord,
  ImportPreview,
  ImportReport,
  IpcError,
  Mailbox,
  MailboxView,
  MonitorState,
  Preset,
  ProviderKind,
  Protocol,
  Security,
  SignInEvent,
  Uptime,
  Verification,
} from "./types";

/** Turns whatever a rejected invoke carried into an IpcError. */
export function toIpcError(e: unknown): IpcError {
  if (e && typeof e === "object" && "code" in e && "message" in e) {
    const o = e as Partial<IpcError>;
    return { code: String(o.code), message: String(o.message), hint: o.hint ?? "", fields: o.fields ?? [] };
  }
  // Argument deserialisation failures and the like come as plain strings.
  return { code: "ipc", message: String(e), hint: "Check the values entered and try again.", fields: [] };
}

async function call<T>(cmd: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(cmd, args);
  } catch (e) {
    throw toIpcError(e);
  }
}

export const listMailboxes = () => call<MailboxView[]>("list_mailboxes");
export const getMailbox = (name: string) => call<MailboxView>("get_mailbox", { name });
export const saveMailbox = (mailbox: Mailbox, isNew: boolean) => call<MailboxView>("save_mailbox", { mailbox, isNew });
export const deleteMailbox = (name: string) => call<void>("delete_mailbox", { name });
export const forget = (name: string) => call<void>("forget", { name });
export const history = (name: string, limit = 50) => call<HealthRecord[]>("history", { name, limit });
/** Checks the incoming server and, when the mailbox has one, the SMTP server. */
export const verify = (name: string) => call<Verification>("verify", { name });
/** Sends a real test message through the mailbox's SMTP server. Field errors: `to`, `smtp_host`. */
export const sendTestMessage = (name: string, to: string) => call<HealthRecord>("send_test_message", { name, to });

export function verifyMany(names: string[], onRecord: (r: HealthRecord) => void): Promise<HealthRecord[]> {
  const ch = new Channel<HealthRecord>();
  ch.onmessage = onRecord;
  return call<HealthRecord[]>("verify_many", { names, onRecord: ch });
}

export function authenticate(name: string, onStep: (e: SignInEvent) => void): Promise<HealthRecord> {
  const ch = new Channel<SignInEvent>();
  ch.onmessage = onStep;
  return call<HealthRecord>("authenticate", { name, onProgress: ch });
}

export const cancelAuthentication = (name: string) => call<boolean>("cancel_authentication", { name });
export const openSignInUrl = (url: string) => call<void>("open_sign_in_url", { url });

export const importPreview = (text: string, base: string | null) => call<ImportPreview>("import_preview", { text, base });
export const importCommit = (text: string, base: string | null) => call<ImportReport>("import_commit", { text, base });

/** The provider's defaults; `smtpSecurity` picks the SMTP port for that security (else the usual one). */
export const providerPreset = (
  provider: ProviderKind,
  protocol: Protocol,
  security: Security,
  tenant: string | null,
  smtpSecurity: Security | null = null,
) => call<Preset>("provider_preset", { provider, protocol, security, tenant, smtpSecurity });

/** Sends a client secret to the keyring. Nothing ever sends one back. */
export const setClientSecret = (name: string, secret: string, expires: string | null) =>
  call<void>("set_client_secret", { name, secret, expires });

/** The Exchange Online PowerShell granting the app of these app-only mailboxes access to them.
 * Field errors: `mailboxes`, `object_id`, `display_name`, `client_id`. */
export const exchangeScript = (names: string[], objectId: string, displayName: string) =>
  call<string>("exchange_script", { names, objectId, displayName });

/** Asks for a CSV file (the shell opens the dialog and reads only the file chosen there); null
 * when the admin cancels. */
export const chooseCsvFile = () => call<CsvFile | null>("read_csv_file");

/** Asks where to save the export (the shell opens the dialog and writes only there); the path
 * written, or null when the admin cancels. */
export const exportCsvToFile = () => call<string | null>("export_csv");

/** Makes a certificate credential for an app-only mailbox; the shell asks where to save the
 * .cer first. Null when the admin cancels. Field errors: `flow`, `certificate`. */
export const createAppCert = (name: string, days: number) =>
  call<CreatedCert | null>("create_app_cert", { name, days });
/** The stored certificate's thumbprint and last day, or null. */
export const appCert = (name: string) => call<AppCertificate | null>("app_cert", { name });
/** Exports everything, secrets included, encrypted with the passphrase, to a file the shell asks
 * for. The path written, or null when cancelled. Field error: `passphrase`. */
export const exportHandover = (passphrase: string) => call<string | null>("export_handover", { passphrase });
/** Imports a hand-over file the shell asks for. Null when cancelled. */
export const importHandover = (passphrase: string) =>
  call<HandoverImported[] | null>("import_handover", { passphrase });

/** Uptime over 7 and 30 days and the up/down transitions of one mailbox. */
export const uptime = (name: string) => call<Uptime>("uptime", { name });

/** The background monitor (it runs while the app runs, also with the window closed to the tray). */
export const monitorState = () => call<MonitorState>("monitor_state");
export const setMonitoringPaused = (paused: boolean) => call<MonitorState>("set_monitoring_paused", { paused });
export const checkAllNow = () => call<void>("check_all_now");
/** Turns "start at login" on or off; whether it is on. */
export const setStartAtLogin = (on: boolean) => call<boolean>("set_start_at_login", { on });

/** Calls `f` after every monitor pass (and pause/resume); returns the unsubscribe function. */
export function onMonitorPass(f: (s: MonitorState) => void): Promise<() => void> {
  return listen<MonitorState>("monitor-pass", (e) => f(e.payload));
}

/** Tells the shell the board is on screen with its handlers attached, and how many rows it shows
 * (with MAILBOX_AUTH_REPORT_READY=1 the shell writes it to stderr: `scripts/bench` times the cold
 * start with it). */
export const boardReady = (rows: number) => emit("board-ready", rows);

/** The keyring doctor: reachable, locked, backend, mailboxes whose sign-in is missing. */
export const keyringDoctor = () => call<import("./doctor").DoctorReport>("keyring_doctor");
/** Asks where to save a support bundle of these mailboxes and writes it; the path, or `null`
 * when the admin cancels. */
export const supportBundle = (names: string[]) => call<string | null>("support_bundle", { names });
