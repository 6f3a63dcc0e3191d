import { describe, expect, it } from "vitest";
import { buildPreview, parseCsv } from "./csv";
import type { Mailbox } from "./types";

const mb = (name: string, over: Partial<Mailbox> = {}): Mailbox => ({
  name, email: `${name}@x.test`, login: null, protocol: "imap", host: "imap.x.test", port: 993, security: "tls",
  folder: "INBOX", provider: "generic", tenant: null, client_id: "c", scopes: ["s"], auth_url: "https://i/a",
  token_url: "https://i/t", auth_params: [], ca_file: null, flow: "auth_code", device_url: null, smtp: null,
  client_secret_expires: null, ...over,
});

describe("parseCsv", () => {
  it("handles quotes, doubled quotes, CRLF and a BOM", () => {
    const rows = parseCsv('\uFEFFname,email\r\n"a, b","x""y@z.test"\r\nc,d\r\n');
    expect(rows).toEqual([
      { line: 1, cells: ["name", "email"] },
      { line: 2, cells: ["a, b", 'x"y@z.test'] },
      { line: 3, cells: ["c", "d"] },
    ]);
  });

  it("numbers records by the line they start on, like the core's csv reader", () => {
    const rows = parseCsv('name,auth_params\n"multi\nline",x\nnext,y\n');
    expect(rows.map((r) => r.line)).toEqual([1, 2, 4]);
  });

  it("skips blank lines without shifting numbers", () => {
    expect(parseCsv("a\n\nb\n").map((r) => [r.line, r.cells[0]])).toEqual([[1, "a"], [3, "b"]]);
  });
});

describe("buildPreview", () => {
  const text = "name,email,provider,protocol\nhelp,help@x.test,microsoft,pop3\nbad,nope,generic,imap\nok2,ok2@x.test,,\n";

  it("joins raw rows with the core's errors by line and mailboxes by name", () => {
    const t = buildPreview(text, {
      mailboxes: [mb("help", { provider: "microsoft", protocol: "pop3", host: "outlook.office365.com", port: 995 }), mb("ok2")],
      errors: [
        { line: 3, field: "email", message: "must be an address like support@example.com" },
        { line: 3, field: "auth_url", message: "is required for a generic provider" },
      ],
    });
    expect(t.valid).toBe(2);
    expect(t.invalid).toBe(1);
    expect(t.rows.map((r) => [r.line, r.name, r.ok])).toEqual([[2, "help", true], [3, "bad", false], [4, "ok2", true]]);
    expect(t.rows[0].server).toBe("outlook.office365.com:995");
    expect(t.rows[0].provider).toBe("microsoft");
    expect(t.rows[1].errors.map((e) => e.field)).toEqual(["email", "auth_url"]);
    expect(t.orphanErrors).toEqual([]);
  });

  it("never hides an error whose line has no row", () => {
    const t = buildPreview("name,email,client_id\n", { mailboxes: [], errors: [{ line: 9, field: "row", message: "x" }] });
    expect(t.rows).toEqual([]);
    expect(t.orphanErrors).toHaveLength(1);
  });

  it("a row the core did not return is not counted as ready", () => {
    const t = buildPreview("name,email,client_id\nghost,g@x.test,c\n", { mailboxes: [], errors: [] });
    expect(t.rows[0].ok).toBe(false);
    expect(t.valid).toBe(0);
  });
});
