import { describe, expect, it } from "vitest";
import { applySignInEvent, expiresText, initialSignIn } from "./signin";
import type { HealthRecord } from "./types";

const states = (s: ReturnType<typeof initialSignIn>) => s.steps.map((x) => `${x.key}:${x.state}`).join(" ");

describe("sign-in steps", () => {
  it("walks browser -> waiting -> exchanging -> verifying -> done", () => {
    let s = initialSignIn("desk", { index: 2, total: 10 });
    expect(states(s)).toBe("browser:active waiting:pending exchanging:pending verifying:pending");
    s = applySignInEvent(s, { step: "browser_opened", url: "https://idp/auth?x", opened: true, error: null });
    expect(s.url).toBe("https://idp/auth?x");
    expect(states(s)).toBe("browser:done waiting:active exchanging:pending verifying:pending");
    expect(s.steps[1].label).toBe("Waiting for sign-in in your browser");
    s = applySignInEvent(s, { step: "waiting_for_sign_in" });
    s = applySignInEvent(s, { step: "exchanging" });
    expect(states(s)).toBe("browser:done waiting:done exchanging:active verifying:pending");
    s = applySignInEvent(s, { step: "verifying" });
    const rec: HealthRecord = { mailbox: "desk", at: "", check: "imap", ok: true, code: null, message: "", hint: null, fix: null, server_words: null, messages: 3, throttled: false };
    s = applySignInEvent(s, { step: "done", record: rec });
    expect(states(s)).toBe("browser:done waiting:done exchanging:done verifying:done");
    expect(s.position).toEqual({ index: 2, total: 10 });
  });

  it("keeps the URL and the reason when no browser could be opened", () => {
    const s = applySignInEvent(initialSignIn("d"), { step: "browser_opened", url: "https://idp/a", opened: false, error: "no $BROWSER" });
    expect(s).toMatchObject({ url: "https://idp/a", opened: false, openError: "no $BROWSER" });
  });
});

describe("sign-in steps per flow", () => {
  it("device flow: code, then waiting on the other device, then verifying", () => {
    let s = initialSignIn("d", null, "device");
    expect(states(s)).toBe("device:active waiting:pending verifying:pending");
    s = applySignInEvent(s, {
      step: "device_code", user_code: "ABCD-EFGH", verification_uri: "https://idp/device",
      verification_uri_complete: "https://idp/device?user_code=ABCD-EFGH", expires_in: 600,
    });
    expect(s.deviceCode).toEqual({ user_code: "ABCD-EFGH", verification_uri: "https://idp/device", verification_uri_complete: "https://idp/device?user_code=ABCD-EFGH", expires_in: 600 });
    expect(s.steps[1].label).toBe("Waiting for sign-in on the other device");
    expect(states(s)).toBe("device:done waiting:active verifying:pending");
    s = applySignInEvent(s, { step: "waiting_for_sign_in" });
    s = applySignInEvent(s, { step: "exchanging" }); // not a device-flow step: ignored
    expect(states(s)).toBe("device:done waiting:active verifying:pending");
    s = applySignInEvent(s, { step: "verifying" });
    expect(states(s)).toBe("device:done waiting:done verifying:active");
  });

  it("app-only: token with the client secret, then verifying; no browser step", () => {
    let s = initialSignIn("a", null, "client_credentials");
    expect(states(s)).toBe("token:active verifying:pending");
    expect(s.steps[0].label).toContain("client secret");
    s = applySignInEvent(s, { step: "verifying" });
    expect(states(s)).toBe("token:done verifying:active");
  });

  it("says how long a device code lasts", () => {
    expect(expiresText(600)).toBe("in 10 minutes");
    expect(expiresText(45)).toBe("in 45 seconds");
  });
});
