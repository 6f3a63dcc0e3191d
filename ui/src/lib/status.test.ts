import { describe, expect, it } from "vitest";
import coreContract from "./core.json";
import { badgeFor, badgeLabel, countByStatus, STATUSES } from "./status";

describe("badge mapping", () => {
  it("maps each core status to label, tone and a non-colour icon", () => {
    expect(badgeFor("verified")).toMatchObject({ label: "Verified", tone: "ok", icon: "✓" });
    expect(badgeFor("needs_attention")).toMatchObject({ label: "Needs attention", tone: "warn" });
    expect(badgeFor("failed")).toMatchObject({ label: "Failed", tone: "bad", icon: "✕" });
    expect(badgeFor("not_authenticated")).toMatchObject({ label: "Not authenticated", tone: "idle" });
  });

  it("labels match the core's Status::label for every status", () => {
    // core.json is written from the core (crates/core/src/contract.rs; a core test fails when
    // it is stale), so this compares with the core's own labels, not a copy.
    const core: Record<string, string> = coreContract.status_labels;
    expect(Object.keys(core).sort()).toEqual([...STATUSES].sort());
    for (const s of STATUSES) expect(badgeFor(s).label).toBe(core[s]);
    expect(new Set(STATUSES.map((s) => badgeFor(s).icon)).size).toBe(4);
  });

  it("an unknown status falls back to Not authenticated rather than crashing", () => {
    expect(badgeFor("bogus" as never).label).toBe("Not authenticated");
  });

  it("counts by status", () => {
    const c = countByStatus([{ status: "verified" }, { status: "failed" }, { status: "verified" }]);
    expect(c).toEqual({ verified: 2, needs_attention: 0, failed: 1, not_authenticated: 0 });
  });
});

describe("throttled", () => {
  it("reads Throttled when throttling is the only reason for amber, and never turns a badge red", () => {
    expect(badgeLabel("needs_attention", true)).toBe("Throttled");
    expect(badgeLabel("needs_attention", true)).toBe(coreContract.throttled_label);
    expect(badgeLabel("needs_attention", false)).toBe("Needs attention");
    // An earlier verdict stands: the badge keeps it (the row says "Throttled, retrying" beside it).
    expect(badgeLabel("verified", true)).toBe("Verified");
    expect(badgeLabel("failed", true)).toBe("Failed");
  });
});
