import { describe, expect, it } from "vitest";
import { checkLabel, percent, relativeTime, signinCountdown } from "./format";
import coreContract from "./core.json";

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
    expect(checkLabel("smtp")).toBe(coreContract.check_labels.smtp);
    expect(checkLabel("smtp")).toBe("SMTP login");
    expect(checkLabel("later")).toBe("later");
  });
});

describe("sign-in countdown and uptime", () => {
  const now = new Date("2026-11-22T12:00:00Z");
  const inDays = (d: number) => new Date(now.getTime() + d * 86_400_000).toISOString();
  it("counts days and turns amber 14 days before", () => {
    expect(signinCountdown(null, now)).toBeNull();
    expect(signinCountdown(inDays(5), now)).toEqual({ text: "Sign-in expires in 5 days", tone: "warn", days: 5 });
    expect(signinCountdown(inDays(4.99), now)?.text).toBe("Sign-in expires in 5 days");
    expect(signinCountdown(inDays(1), now)?.text).toBe("Sign-in expires in 1 day");
    expect(signinCountdown(inDays(14), now)?.tone).toBe("warn");
    expect(signinCountdown(inDays(14.1), now)?.tone).toBe("idle");
    expect(signinCountdown(inDays(80), now)).toEqual({ text: "Sign-in expires in 80 days", tone: "idle", days: 80 });
    expect(signinCountdown(inDays(0.25), now)?.text).toBe("Sign-in expires in 6 h");
    expect(signinCountdown(inDays(-1), now)).toEqual({ text: "Sign-in expired: sign in again", tone: "bad", days: 0 });
  });
  it("percentages never round a down time up to 100 %", () => {
    expect(percent(null)).toBe("—");
    expect(percent(1)).toBe("100 %");
    expect(percent(0.99999)).toBe("99.9 %");
    expect(percent(6 / 7)).toBe("85.7 %");
    expect(percent(0)).toBe("0.0 %");
  });
});
