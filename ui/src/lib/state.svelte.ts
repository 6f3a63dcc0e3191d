// Application state shared by the screens, and the actions that change it through ipc.ts.
import * as ipc from "./ipc";
import { exchangeTargets } from "./exchange";
import { countVerifyRecord, JobQueue, type QueueProgress } from "./queue";
import { applySignInEvent, initialSignIn, type SignInState } from "./signin";
import type { HealthRecord, IpcError, MailboxView } from "./types";

export type View = "board" | "editor" | "bulk";
export type RowBusy = "queued" | "verifying" | "authenticating";

export interface Toast {
  id: number;
  tone: "ok" | "bad" | "info";
  text: string;
  hint?: string;
}

export interface Batch {
  kind: "verify" | "authenticate";
  progress: QueueProgress;
  finished: boolean;
}

export const ui = $state({
  view: "board" as View,
  /** Mailbox open in the editor; null for a new one. */
  editing: null as string | null,
  mailboxes: [] as MailboxView[],
  loaded: false,
  /** The first list is on screen (the work that can wait, e.g. the keyring doctor, starts then). */
  shown: false,
  loadError: null as IpcError | null,
  busy: {} as Record<string, RowBusy>,
  batch: null as Batch | null,
  signIn: null as SignInState | null,
  toasts: [] as Toast[],
  /** The Exchange Online script dialog, open for these (app-only) mailboxes. */
  exchange: null as { names: string[]; skipped: string[] } | null,
  /** Bumped when a mailbox's history may have changed (the editor reloads it). */
  historyTick: 0,
  /** Bumped on every navigation, so a screen opened again starts fresh (and saving a new
   * mailbox, which sets `editing`, does not remount the editor). */
  nav: 0,
});

let toastId = 0;
export function toast(tone: Toast["tone"], text: string, hint?: string) {
  const id = ++toastId;
  ui.toasts.push({ id, tone, text, hint });
  setTimeout(() => dismissToast(id), tone === "bad" ? 12000 : 5000);
}
export function dismissToast(id: number) {
  ui.toasts = ui.toasts.filter((t) => t.id !== id);
}
export function toastError(e: unknown) {
  const err = e as IpcError;
  toast("bad", err?.message ?? String(e), err?.hint);
}

/** Copies `text` to the clipboard; where the clipboard is not available, says how to copy by
 * hand (`manual`). Whether it copied, for the caller's "Copied" feedback. */
export async function copyText(text: string, manual: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    toast("info", manual);
    return false;
  }
}

export function go(view: View, editing: string | null = null) {
  ui.view = view;
  ui.editing = editing;
  ui.nav++;
}

export async function refresh() {
  try {
    ui.mailboxes = await ipc.listMailboxes();
    ui.loadError = null;
  } catch (e) {
    ui.loadError = e as IpcError;
  } finally {
    ui.loaded = true;
  }
}

/** Re-reads one mailbox (its badge is derived by the core from its newest record). */
export async function refreshOne(name: string) {
  try {
    const v = await ipc.getMailbox(name);
    const i = ui.mailboxes.findIndex((m) => m.name === name);
    if (i >= 0) ui.mailboxes[i] = v;
    else ui.mailboxes.push(v);
  } catch {
    await refresh();
  }
  ui.historyTick++;
}

function setBusy(name: string, b: RowBusy | null) {
  if (b) ui.busy[name] = b;
  else delete ui.busy[name];
}

/** Verifies mailboxes (several at once, in the core); rows update as each record arrives. */
export async function verifyNames(names: string[]): Promise<HealthRecord[]> {
  if (!names.length) return [];
  for (const n of names) setBusy(n, "verifying");
  const progress: QueueProgress = {
    total: names.length, done: 0, ok: 0, failed: 0, running: [...names],
    states: Object.fromEntries(names.map((n) => [n, "running"])),
  };
  ui.batch = { kind: "verify", progress, finished: false };
  try {
    const records = await ipc.verifyMany(names, (r) => {
      // Each mailbox's incoming record, then its SMTP record when it has an outgoing server.
      countVerifyRecord(ui.batch!.progress, r);
      setBusy(r.mailbox, null);
      void refreshOne(r.mailbox);
    });
    return records;
  } catch (e) {
    toastError(e);
    return [];
  } finally {
    for (const n of names) setBusy(n, null);
    if (ui.batch) ui.batch.finished = true;
    await refresh();
  }
}

let currentQueue: JobQueue<HealthRecord> | null = null;

/** Signs in to each mailbox in turn: one browser sign-in at a time. */
export async function authenticateNames(names: string[]): Promise<QueueProgress | null> {
  if (!names.length || currentQueue) return null;
  for (const n of names) setBusy(n, "queued");
  let index = 0;
  const queue = new JobQueue<HealthRecord>(
    names,
    async (name) => {
      index++;
      setBusy(name, "authenticating");
      const flow = ui.mailboxes.find((m) => m.name === name)?.flow ?? "auth_code";
      ui.signIn = initialSignIn(name, names.length > 1 ? { index, total: names.length } : null, flow);
      try {
        return await ipc.authenticate(name, (ev) => {
          if (ui.signIn?.name === name) ui.signIn = applySignInEvent(ui.signIn, ev);
        });
      } finally {
        setBusy(name, null);
        await refreshOne(name);
      }
    },
    {
      concurrency: 1,
      isOk: (r) => r.ok,
      onProgress: (p) => {
        if (names.length > 1) ui.batch = { kind: "authenticate", progress: p, finished: false };
      },
    },
  );
  currentQueue = queue;
  try {
    const { errors, progress } = await queue.run();
    for (const [name, e] of errors) {
      const err = e as IpcError;
      if (err?.code !== "cancelled") toast("bad", `${name}: ${err?.message ?? e}`, err?.hint);
    }
    if (names.length > 1 && ui.batch) ui.batch.finished = true;
    return progress;
  } finally {
    currentQueue = null;
    ui.signIn = null;
    for (const n of names) setBusy(n, null);
    await refresh();
  }
}

export function signInRunning(): boolean {
  return currentQueue !== null;
}

/** Cancel: aborts the running sign-in; `all` also drops the rest of the queue. */
export async function cancelSignIn(all: boolean) {
  if (all) currentQueue?.stop();
  const name = ui.signIn?.name;
  if (name) await ipc.cancelAuthentication(name).catch(toastError);
}

/** Opens the Exchange Online script dialog for the app-only mailboxes among `names`. */
export function openExchangeScript(names: string[]) {
  const { appOnly, other } = exchangeTargets(ui.mailboxes, names);
  if (appOnly.length) ui.exchange = { names: appOnly, skipped: other };
}

export function closeExchangeScript() {
  ui.exchange = null;
}
