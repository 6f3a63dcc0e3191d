// The Exchange Online script dialog's model: which mailboxes it is for, and where the core's
// field errors go (`mailboxes`, `object_id`, `display_name`, `client_id`).
import type { FieldProblem, Mailbox } from "./types";

export const DEFAULT_DISPLAY_NAME = "Mailbox Auth";

/** Of the chosen mailboxes, those that use app-only access (the script is for them), and the rest. */
export function exchangeTargets(mailboxes: Pick<Mailbox, "name" | "flow">[], names: string[]): { appOnly: string[]; other: string[] } {
  const flows = new Map(mailboxes.map((m) => [m.name, m.flow]));
  const appOnly = names.filter((n) => flows.get(n) === "client_credentials");
  return { appOnly, other: names.filter((n) => !appOnly.includes(n)) };
}

export type ExchangeField = "object_id" | "display_name" | "mailboxes";

/** The core's field problems by the dialog's inputs; `client_id` (mailboxes of different apps)
 * belongs to the mailbox list, anything unknown goes to `other`. */
export function placeExchangeErrors(problems: FieldProblem[]): { byField: Record<ExchangeField, string[]>; other: string[] } {
  const byField: Record<ExchangeField, string[]> = { object_id: [], display_name: [], mailboxes: [] };
  const other: string[] = [];
  for (const p of problems) {
    const f = p.field === "client_id" ? "mailboxes" : p.field;
    if (f === "object_id" || f === "display_name" || f === "mailboxes") byField[f].push(p.message);
    else other.push(`${p.field}: ${p.message}`);
  }
  return { byField, other };
}

/** How many `Add-MailboxPermission` lines a script has (shown as a check under the script). */
export function permissionCount(script: string): number {
  return script.split("\n").filter((l) => l.startsWith("Add-MailboxPermission ")).length;
}
