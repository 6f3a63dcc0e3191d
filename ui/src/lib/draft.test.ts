import { describe, expect, it } from "vitest";
import { applyPreset, applySmtpPreset, draftFrom, emptyDraft, FIELDS, placeFieldErrors, SMTP_FIELDS, toMailbox } from "./draft";
import type { Preset } from "./types";

describe("validation message placement", () => {
  it("puts each core FieldError next to its input, others on top", () => {
    const { byField, other } = placeFieldErrors([
      { field: "email", message: "must be an address like support@example.com" },
      { field: "port", message: "must be between 1 and 65535" },
      { field: "email", message: "must be an address like support@example.com" },
      { field: "auth_params", message: "`state` is set by the sign-in flow itself" },
      { field: "redirect", message: "weird" },
    ]);
    expect(byField.email).toEqual(["must be an address like support@example.com"]);
    expect(byField.port).toEqual(["must be between 1 and 65535"]);
    expect(byField.auth_params).toHaveLength(1);
    expect(other).toEqual([{ field: "redirect", message: "weird" }]);
  });
});

describe("draft <-> mailbox", () => {
  it("reports what the core could not even receive, with the core's wording", () => {
    const d = { ...emptyDraft(), port: "99999" };
    const r = toMailbox(d);
    expect(r.mailbox).toBeNull();
    expect(r.problems.map((p) => p.field)).toEqual(["port"]);
    expect(r.problems[0].message).toBe("must be between 1 and 65535");
  });

  it("converts strings, drops empty optionals and blank parameter rows, round-trips", () => {
    const d = {
      ...emptyDraft(), name: " desk ", email: "d@x.test", provider: "generic" as const, tenant: "ignored", port: "143",
      security: "starttls" as const, scopes: " openid  email ", auth_url: "https://i/a", token_url: "https://i/t",
      auth_params: [{ key: "prompt", value: "consent" }, { key: "", value: "" }], login: "  ",
    };
    const { mailbox } = toMailbox(d);
    expect(mailbox).toMatchObject({
      name: "desk", port: 143, login: null, tenant: null, scopes: ["openid", "email"], auth_params: [["prompt", "consent"]], smtp: null,
    });
    const again = toMailbox(draftFrom(mailbox!)).mailbox;
    expect(again).toEqual(mailbox);
  });

  it("keeps a generic provider's issuer (saving must not drop discovery)", () => {
    const d = { ...emptyDraft(), provider: "generic" as const, issuer: " https://idp.example/realms/x " };
    const { mailbox } = toMailbox(d);
    expect(mailbox?.issuer).toBe("https://idp.example/realms/x");
    expect(draftFrom(mailbox!).issuer).toBe("https://idp.example/realms/x");
    expect(toMailbox({ ...d, provider: "microsoft" }).mailbox?.issuer).toBeNull();
  });

  it("keeps a fixed redirect port through a save (dropping it would break exact-match providers)", () => {
    const { mailbox } = toMailbox({ ...emptyDraft(), redirect_port: " 53682 " });
    expect(mailbox?.redirect_port).toBe(53682);
    expect(draftFrom(mailbox!).redirect_port).toBe("53682");
    expect(toMailbox(emptyDraft()).mailbox?.redirect_port).toBeNull();
    expect(toMailbox({ ...emptyDraft(), redirect_port: "0" }).problems).toEqual([
      { field: "redirect_port", message: "must be between 1 and 65535" },
    ]);
  });

  it("a parameter value without a name is an auth_params problem", () => {
    const r = toMailbox({ ...emptyDraft(), auth_params: [{ key: "", value: "consent" }] });
    expect(r.problems).toEqual([{ field: "auth_params", message: "a value (`consent`) has no parameter name" }]);
  });
});

describe("provider presets", () => {
  const ms: Preset = {
    host: "outlook.office365.com", port: 995, scopes: ["https://outlook.office.com/POP.AccessAsUser.All", "offline_access"],
    auth_url: "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/authorize",
    token_url: "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token",
    device_url: "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/devicecode",
    auth_params: [["prompt", "select_account"]], tenant: "contoso.com",
    smtp_host: "smtp.office365.com", smtp_security: "starttls", smtp_port: 587,
  };

  it("fills host, port, scopes and endpoints for Microsoft 365", () => {
    const d = applyPreset({ ...emptyDraft(), provider: "microsoft", protocol: "pop3" }, ms, "protocol");
    expect(d).toMatchObject({ host: "outlook.office365.com", port: "995", tenant: "contoso.com" });
    expect(d.scopes).toBe("https://outlook.office.com/POP.AccessAsUser.All offline_access");
    expect(d.token_url).toContain("/contoso.com/oauth2/v2.0/token");
    // Preset parameters are added by the core; they are not copied into the editable list.
    expect(d.auth_params).toEqual([]);
  });

  it("a tenant change keeps the port the admin typed", () => {
    const d = applyPreset({ ...emptyDraft(), provider: "microsoft", port: "10993" }, ms, "tenant");
    expect(d.port).toBe("10993");
  });

  it("generic keeps typed endpoints and scopes, only the port follows protocol/security", () => {
    const generic: Preset = {
      host: null, port: 143, scopes: [], auth_url: null, token_url: null, device_url: null, auth_params: [], tenant: null,
      smtp_host: null, smtp_security: "starttls", smtp_port: 587,
    };
    const before = { ...emptyDraft(), provider: "generic" as const, host: "mail.x.test", scopes: "openid", auth_url: "https://i/a" };
    const d = applyPreset(before, generic, "security");
    expect(d).toMatchObject({ host: "mail.x.test", scopes: "openid", auth_url: "https://i/a", port: "143" });
  });
});

describe("outgoing mail (SMTP)", () => {
  const google: Preset = {
    host: "imap.gmail.com", port: 993, scopes: ["https://mail.google.com/"], auth_url: null, token_url: null, device_url: null,
    auth_params: [], tenant: null, smtp_host: "smtp.gmail.com", smtp_security: "tls", smtp_port: 465,
  };

  it("no SMTP host and port: the mailbox has no outgoing server", () => {
    expect(toMailbox({ ...emptyDraft(), smtp_security: "tls" }).mailbox?.smtp).toBeNull();
  });

  it("converts host, port and security, trimmed, and round-trips", () => {
    const { mailbox } = toMailbox({ ...emptyDraft(), smtp_host: " smtp.example.com ", smtp_port: " 2525 ", smtp_security: "tls" });
    expect(mailbox?.smtp).toEqual({ host: "smtp.example.com", port: 2525, security: "tls" });
    expect(draftFrom(mailbox!)).toMatchObject({ smtp_host: "smtp.example.com", smtp_port: "2525", smtp_security: "tls" });
    expect(toMailbox(draftFrom(mailbox!)).mailbox).toEqual(mailbox);
  });

  it("a port that is not a number is an smtp_port problem, placed next to the SMTP port input", () => {
    const r = toMailbox({ ...emptyDraft(), smtp_host: "smtp.example.com", smtp_port: "five" });
    expect(r.mailbox).toBeNull();
    expect(r.problems).toEqual([{ field: "smtp_port", message: "must be between 1 and 65535" }]);
    const { byField, other } = placeFieldErrors([
      ...r.problems,
      { field: "smtp_host", message: "must be a host name like smtp.office365.com" },
      { field: "smtp_security", message: "must be tls or starttls" },
    ]);
    expect(byField.smtp_port).toEqual(["must be between 1 and 65535"]);
    expect(byField.smtp_host).toEqual(["must be a host name like smtp.office365.com"]);
    expect(byField.smtp_security).toHaveLength(1);
    expect(other).toEqual([]);
  });

  it("every SMTP input is one the editor places errors next to", () => {
    for (const f of SMTP_FIELDS) expect(FIELDS).toContain(f);
  });

  it("the provider's server fills host, security and port from the core's preset", () => {
    const d = applySmtpPreset({ ...emptyDraft(), provider: "google" }, google, "server");
    expect(d).toMatchObject({ smtp_host: "smtp.gmail.com", smtp_security: "tls", smtp_port: "465" });
    expect(toMailbox(d).mailbox?.smtp).toEqual({ host: "smtp.gmail.com", port: 465, security: "tls" });
  });

  it("a security change moves only the port; a generic provider has no server to fill in", () => {
    const typed = { ...emptyDraft(), smtp_host: "mail.x.test", smtp_port: "465", smtp_security: "starttls" as const };
    const d = applySmtpPreset(typed, { ...google, smtp_security: "starttls", smtp_port: 587 }, "security");
    expect(d).toMatchObject({ smtp_host: "mail.x.test", smtp_port: "587", smtp_security: "starttls" });
    expect(applySmtpPreset(typed, { ...google, smtp_host: null }, "server")).toEqual(typed);
    const none = { ...emptyDraft(), smtp_security: "tls" as const };
    expect(applySmtpPreset(none, google, "security")).toEqual(none);
    expect(toMailbox(applySmtpPreset(none, google, "security")).mailbox?.smtp).toBeNull();
  });
});

describe("check interval", () => {
  it("keeps a mailbox's check interval through a save and leaves its range to the core", () => {
    const { mailbox } = toMailbox({ ...emptyDraft(), check_interval_minutes: " 5 " });
    expect(mailbox?.check_interval_minutes).toBe(5);
    expect(draftFrom(mailbox!).check_interval_minutes).toBe("5");
    expect(toMailbox(emptyDraft()).mailbox?.check_interval_minutes).toBeNull();
    // 0 is a number: the core answers it, naming the same field.
    expect(toMailbox({ ...emptyDraft(), check_interval_minutes: "0" }).mailbox?.check_interval_minutes).toBe(0);
    expect(toMailbox({ ...emptyDraft(), check_interval_minutes: "5m" }).problems.map((p) => p.field)).toEqual([
      "check_interval_minutes",
    ]);
    expect(FIELDS).toContain("check_interval_minutes");
  });
});
