// Saving from the editor must lose nothing stored: settings the editor has no input for (such as
// `signin_max_age_days`, set from a CSV) are carried over from the stored mailbox.
import type { Mailbox, MailboxView } from "./types";

/** What a MailboxView has beyond the Mailbox: the badge and checks, never sent back. */
const VIEW_ONLY = new Set([
  "status", "status_label", "authenticated", "last_check", "incoming_check", "smtp_check", "throttled", "signin_expires_at",
]);

/** `edited`, plus every stored setting of `stored` the editor did not produce. */
export function keepUnedited(edited: Mailbox, stored: MailboxView | null | undefined): Mailbox {
  if (!stored || stored.name !== edited.name) return edited;
  const out: Record<string, unknown> = { ...edited };
  for (const [k, v] of Object.entries(stored)) {
    if (!(k in out) && !VIEW_ONLY.has(k)) out[k] = v;
  }
  return out as unknown as Mailbox;
}
