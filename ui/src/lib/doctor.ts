// What the banner shows for the keyring doctor's report.

import type { Report } from "./bindings";

/** The doctor's report, generated from `mailbox_auth_core::doctor::Report`. */
export type DoctorReport = Report;

export interface Banner {
  title: string;
  /** Mailboxes to authenticate again (their sign-in is missing from the keyring). */
  missing: string[];
}

/** The banner for a report; `null` when all is well. */
export function bannerFor(r: DoctorReport | null): Banner | null {
  if (!r || r.ok) return null;
  const missing = r.mailboxes.filter((m) => m.state === "signin_missing").map((m) => m.name);
  const backend = r.service.backend ? ` (${r.service.backend})` : "";
  const title =
    r.code === "keyring_unavailable"
      ? "No keyring is reachable: mailboxes cannot be signed in or checked"
      : r.code === "keyring_locked"
        ? `The keyring${backend} is locked: unlock it to use the stored sign-ins`
        : `Sign-in missing — Authenticate again: ${missing.length} mailbox${missing.length === 1 ? "" : "es"} lost ${missing.length === 1 ? "its" : "their"} stored sign-in`;
  return { title, missing };
}
