import { describe, expect, it } from "vitest";
import { keepUnedited } from "./keep";
import type { Mailbox, MailboxView } from "./types";

const edited = { name: "support", email: "support@example.com", port: 993 } as unknown as Mailbox;
const stored = {
  name: "support", email: "old@example.com", port: 995, signin_max_age_days: 7,
  status: "verified", status_label: "Verified", authenticated: true, last_check: null, incoming_check: null,
  smtp_check: null, throttled: false, signin_expires_at: "2026-12-01T00:00:00Z",
} as unknown as MailboxView;

describe("saving from the editor keeps what it has no input for", () => {
  it("carries over stored settings, never the view's badge fields, and lets the editor's values win", () => {
    const m = keepUnedited(edited, stored) as unknown as Record<string, unknown>;
    expect(m.signin_max_age_days).toBe(7);
    expect(m.email).toBe("support@example.com");
    expect(m.port).toBe(993);
    for (const k of ["status", "throttled", "signin_expires_at", "last_check"]) expect(k in m).toBe(false);
  });
  it("a new mailbox or another name takes nothing", () => {
    expect(keepUnedited(edited, null)).toEqual(edited);
    expect(keepUnedited(edited, { ...stored, name: "other" } as MailboxView)).toEqual(edited);
  });
});
