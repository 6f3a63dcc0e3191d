// The keyring doctor's report (mailbox_auth_core::doctor::Report) and what the banner shows.

export interface DoctorService {
  reachable: boolean;
  locked: boolean | null;
  backend: string | null;
  collection: string | null;
  detail: string | null;
}

export interface DoctorMailbox {
  name: string;
  state: string;
  label: string;
}

export interface DoctorProblem {
  code: string;
  message: string;
  fix: string;
}

export interface DoctorFix {
  setting: string;
  steps: string[];
}

export interface DoctorReport {
  ok: boolean;
  code: string | null;
  service: DoctorService;
  desktop: string | null;
  mailboxes: DoctorMailbox[];
  problems: DoctorProblem[];
  fixes: DoctorFix[];
}

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
