import { describe, expect, it } from "vitest";
import { bannerFor, type DoctorReport } from "./doctor";

const base: DoctorReport = {
  ok: true,
  code: null,
  service: { reachable: true, locked: false, backend: "gnome-keyring-d", collection: "Login", detail: null },
  desktop: "GNOME",
  mailboxes: [
    { name: "kept", state: "ok", label: "Sign-in stored" },
    { name: "never", state: "not_signed_in", label: "Not signed in yet" },
  ],
  problems: [],
  fixes: [],
};

describe("keyring banner", () => {
  it("is hidden when all is well", () => {
    expect(bannerFor(base)).toBeNull();
    expect(bannerFor(null)).toBeNull();
  });

  it("names the mailboxes whose sign-in is missing, and only those", () => {
    const r: DoctorReport = {
      ...base,
      ok: false,
      code: "signin_missing",
      mailboxes: [...base.mailboxes, { name: "lost", state: "signin_missing", label: "Sign-in missing — Authenticate again" }],
    };
    const b = bannerFor(r)!;
    expect(b.missing).toEqual(["lost"]);
    expect(b.title).toContain("Sign-in missing — Authenticate again");
    expect(b.title).toContain("1 mailbox lost its");
  });

  it("says locked and unavailable in their own words", () => {
    expect(bannerFor({ ...base, ok: false, code: "keyring_locked" })!.title).toBe(
      "The keyring (gnome-keyring-d) is locked: unlock it to use the stored sign-ins",
    );
    const absent = { ...base, ok: false, code: "keyring_unavailable", service: { ...base.service, reachable: false, backend: null } };
    expect(bannerFor(absent)!.title).toContain("No keyring is reachable");
    expect(bannerFor(absent)!.missing).toEqual([]);
  });
});
