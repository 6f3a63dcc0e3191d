import { describe, expect, it } from "vitest";
import { buildPreview, describeAction } from "./csv";
import type { ImportRow, Mailbox } from "./types";

const mb = (name: string, over: Partial<Mailbox> = {}): Mailbox => ({
  name, email: `${name}@x.test`, login: null, protocol: "imap", host: "imap.x.test", port: 993, security: "tls",
  folder: "INBOX", provider: "generic", tenant: null, client_id: "c", scopes: ["s"], auth_url: "https://i/a",
  token_url: "https://i/t", auth_params: [], ca_file: null, flow: "auth_code", device_url: null, smtp: null,
  client_secret_expires: null, ...over,
});

const row = (line: number, name: string, over: Partial<ImportRow> = {}): ImportRow => ({
  line, name, action: "new", changed_fields: [], routing_changes: [], signs_out: false, errors: [], mailbox: mb(name), ...over,
});

describe("buildPreview", () => {
  it("shows the core's rows in order: new, update with its changes and sign-out, refused", () => {
    const errors = [
      { line: 3, field: "email", message: "must be an address like support@example.com" },
      { line: 3, field: "auth_url", message: "is required for a generic provider" },
    ];
    const t = buildPreview({
      rows: [
        row(2, "help", { mailbox: mb("help", { provider: "microsoft", protocol: "pop3", host: "outlook.office365.com", port: 995 }) }),
        row(3, "bad", { action: "refused", errors, mailbox: null }),
        row(4, "moved", { action: "update", changed_fields: ["folder", "token_url"], routing_changes: ["token_url"], signs_out: true }),
        row(5, "same", { action: "unchanged" }),
      ],
      errors,
    });
    expect(t.valid).toBe(3);
    expect(t.invalid).toBe(1);
    expect(t.updates).toBe(1);
    expect(t.signOuts).toBe(1);
    expect(t.rows.map((r) => [r.line, r.name, r.ok])).toEqual([[2, "help", true], [3, "bad", false], [4, "moved", true], [5, "same", true]]);
    expect(t.rows[0].server).toBe("outlook.office365.com:995");
    expect(t.rows[0].provider).toBe("microsoft");
    expect(t.rows[1].errors.map((e) => e.field)).toEqual(["email", "auth_url"]);
    expect(describeAction(t.rows[2])).toBe("Updates: folder, token_url — signs out");
    expect(describeAction(t.rows[3])).toBe("Unchanged");
    expect(describeAction(t.rows[0])).toBe("New");
    expect(t.orphanErrors).toEqual([]);
  });

  it("never hides an error whose line has no row", () => {
    const t = buildPreview({ rows: [], errors: [{ line: 9, field: "row", message: "x" }] });
    expect(t.rows).toEqual([]);
    expect(t.orphanErrors).toHaveLength(1);
  });

  it("a row without a mailbox is not counted as ready", () => {
    const t = buildPreview({ rows: [row(2, "ghost", { mailbox: null })], errors: [] });
    expect(t.rows[0].ok).toBe(false);
    expect(t.valid).toBe(0);
  });
});
