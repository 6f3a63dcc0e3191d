import { describe, expect, it } from "vitest";
import { checkLabel, relativeTime } from "./format";

describe("format", () => {
  const now = new Date("2026-11-22T12:00:00Z");
  it("relative times", () => {
    expect(relativeTime("2026-11-22T11:59:50Z", now)).toBe("just now");
    expect(relativeTime("2026-11-22T11:55:00Z", now)).toBe("5 min ago");
    expect(relativeTime("2026-11-22T09:00:00Z", now)).toBe("3 h ago");
    expect(relativeTime("2026-11-21T10:00:00Z", now)).toBe("yesterday");
    expect(relativeTime("2026-10-01T10:00:00Z", now)).toBe("2026-10-01");
    expect(relativeTime(null, now)).toBe("—");
  });
  it("check labels", () => {
    expect(checkLabel("imap")).toBe("IMAP login");
    expect(checkLabel("authenticate")).toBe("Sign-in");
    expect(checkLabel("smtp")).toBe("smtp");
  });
});
