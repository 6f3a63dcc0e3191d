import { describe, expect, it } from "vitest";
import { applySignInEvent, initialSignIn } from "./signin";

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
    const rec = { mailbox: "desk", at: "", check: "imap", ok: true, code: null, message: "", hint: null, server_words: null, messages: 3 };
    s = applySignInEvent(s, { step: "done", record: rec });
    expect(states(s)).toBe("browser:done waiting:done exchanging:done verifying:done");
    expect(s.position).toEqual({ index: 2, total: 10 });
  });

  it("keeps the URL and the reason when no browser could be opened", () => {
    const s = applySignInEvent(initialSignIn("d"), { step: "browser_opened", url: "https://idp/a", opened: false, error: "no $BROWSER" });
    expect(s).toMatchObject({ url: "https://idp/a", opened: false, openError: "no $BROWSER" });
  });
});
