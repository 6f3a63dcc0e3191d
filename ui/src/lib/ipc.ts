// The only module that talks to the Tauri shell. Everything else calls these typed functions,
// so the rest of the UI (and its unit tests) never imports @tauri-apps/api.
//
// The commands and their argument and result types are generated from the Rust code into
// `bindings.ts` (see src-tauri/src/bindings.rs); this module gives them the window's names and
// turns every rejection into one `IpcError`. `bindings.ts` reaches Tauri through the `invoke`
// and `Channel` re-exported here, so this stays the one module that imports @tauri-apps.
import { Channel, invoke } from "@tauri-apps/api/core";
import { emit, listen } from "@tauri-apps/api/event";
import { commands } from "./bindings";
import type { HealthRecord, IpcError, MonitorState, Protocol, ProviderKind, Security, SignInEvent } from "./bindings";

/** For `bindings.ts` only: the rest of the UI calls the functions below. */
export { Channel, invoke };

/** Turns whatever a rejected invoke carried into an IpcError. */
export function toIpcError(e: unknown): IpcError {
  if (e && typeof e === "object" && "code" in e && "message" in e) {
    const o = e as Partial<IpcError>;
    return { code: String(o.code), message: String(o.message), hint: o.hint ?? "", fields: o.fields ?? [] };
  }
  // Argument deserialisation failures and the like come as plain strings.
  return { code: "ipc", message: String(e), hint: "Check the values entered and try again.", fields: [] };
}

/** A generated command whose rejection is always an IpcError. */
function call<A extends unknown[], T>(command: (...args: A) => Promise<T>): (...args: A) => Promise<T> {
  return async (...args: A) => {
    try {
      return await command(...args);
    } catch (e) {
      throw toIpcError(e);
    }
  };
}

export const listMailboxes = call(commands.listMailboxes);
export const getMailbox = call(commands.getMailbox);
export const saveMailbox = call(commands.saveMailbox);
export const deleteMailbox = call(commands.deleteMailbox);
export const forget = call(commands.forget);
export const history = (name: string, limit = 50) => call(commands.history)(name, limit);
/** Checks the incoming server and, when the mailbox has one, the SMTP server. */
export const verify = call(commands.verify);
/** Sends a real test message through the mailbox's SMTP server. Field errors: `to`, `smtp_host`. */
export const sendTestMessage = call(commands.sendTestMessage);

export function verifyMany(names: string[], onRecord: (r: HealthRecord) => void): Promise<HealthRecord[]> {
  const ch = new Channel<HealthRecord>();
  ch.onmessage = onRecord;
  return call(commands.verifyMany)(names, ch);
}

export function authenticate(name: string, onStep: (e: SignInEvent) => void): Promise<HealthRecord> {
  const ch = new Channel<SignInEvent>();
  ch.onmessage = onStep;
  // No timeout given: the core's default.
  return call(commands.authenticate)(name, null, ch);
}

export const cancelAuthentication = call(commands.cancelAuthentication);
export const openSignInUrl = call(commands.openSignInUrl);

export const importPreview = call(commands.importPreview);
export const importCommit = call(commands.importCommit);

/** The provider's defaults; `smtpSecurity` picks the SMTP port for that security (else the usual one). */
export const providerPreset = (
  provider: ProviderKind,
  protocol: Protocol,
  security: Security,
  tenant: string | null,
  smtpSecurity: Security | null = null,
) => call(commands.providerPreset)(provider, protocol, security, tenant, smtpSecurity);

/** Sends a client secret to the keyring. Nothing ever sends one back. */
export const setClientSecret = call(commands.setClientSecret);

/** The Exchange Online PowerShell granting the app of these app-only mailboxes access to them.
 * Field errors: `mailboxes`, `object_id`, `display_name`, `client_id`. */
export const exchangeScript = call(commands.exchangeScript);

/** Asks for a CSV file (the shell opens the dialog and reads only the file chosen there); null
 * when the admin cancels. */
export const chooseCsvFile = call(commands.readCsvFile);

/** Asks where to save the export (the shell opens the dialog and writes only there); the path
 * written, or null when the admin cancels. */
export const exportCsvToFile = call(commands.exportCsv);

/** Makes a certificate credential for an app-only mailbox; the shell asks where to save the
 * .cer first. Null when the admin cancels. Field errors: `flow`, `certificate`. */
export const createAppCert = call(commands.createAppCert);
/** The stored certificate's thumbprint and last day, or null. */
export const appCert = call(commands.appCert);
/** Exports everything, secrets included, encrypted with the passphrase, to a file the shell asks
 * for. The path written, or null when cancelled. Field error: `passphrase`. */
export const exportHandover = call(commands.exportHandover);
/** Imports a hand-over file the shell asks for. Null when cancelled. */
export const importHandover = call(commands.importHandover);

/** Uptime over 7 and 30 days and the up/down transitions of one mailbox. */
export const uptime = call(commands.uptime);

/** The background monitor (it runs while the app runs, also with the window closed to the tray). */
export const monitorState = call(commands.monitorState);
export const setMonitoringPaused = call(commands.setMonitoringPaused);
export const checkAllNow = call(commands.checkAllNow);
/** Turns "start at login" on or off; whether it is on. */
export const setStartAtLogin = call(commands.setStartAtLogin);

/** Calls `f` after every monitor pass (and pause/resume); returns the unsubscribe function. */
export function onMonitorPass(f: (s: MonitorState) => void): Promise<() => void> {
  return listen<MonitorState>("monitor-pass", (e) => f(e.payload));
}

/** Tells the shell the board is on screen with its handlers attached, and how many rows it shows
 * (with MAILBOX_AUTH_REPORT_READY=1 the shell writes it to stderr: `scripts/bench` times the cold
 * start with it). */
export const boardReady = (rows: number) => emit("board-ready", rows);

/** The keyring doctor: reachable, locked, backend, mailboxes whose sign-in is missing. */
export const keyringDoctor = call(commands.keyringDoctor);
/** Asks where to save a support bundle of these mailboxes and writes it; the path, or `null`
 * when the admin cancels. */
export const supportBundle = call(commands.supportBundle);
