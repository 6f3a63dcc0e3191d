// Builds the bulk-setup preview table from the core's import preview: every row of the CSV, in
// file order, with what the import would do (new, update with the changed fields and whether
// the mailbox is signed out, unchanged) or its errors. The CSV itself is parsed by the core only.
import type { ImportAction, ImportPreview, Mailbox, RowError } from "./types";

export interface PreviewRow {
  line: number;
  name: string;
  email: string;
  protocol: string;
  server: string;
  provider: string;
  ok: boolean;
  action: ImportAction;
  changedFields: string[];
  signsOut: boolean;
  errors: RowError[];
  mailbox: Mailbox | null;
}

export interface PreviewTable {
  rows: PreviewRow[];
  valid: number;
  invalid: number;
  /** Rows that update an existing mailbox (changed settings). */
  updates: number;
  /** Rows whose mailbox is signed out because where its secrets go changes. */
  signOuts: number;
  /** Errors not tied to a row (should not happen, but never hide one). */
  orphanErrors: RowError[];
}

export function buildPreview(preview: ImportPreview): PreviewTable {
  const rows: PreviewRow[] = preview.rows.map((r) => {
    const m = r.mailbox;
    const ok = r.action !== "refused" && r.errors.length === 0 && m !== null;
    return {
      line: r.line,
      name: r.name,
      email: m?.email ?? "",
      protocol: m?.protocol ?? "",
      server: m ? `${m.host}:${m.port}` : "",
      provider: m?.provider ?? "",
      ok,
      action: r.action,
      changedFields: r.changed_fields,
      signsOut: r.signs_out,
      errors: r.errors,
      mailbox: m,
    };
  });
  const lines = new Set(rows.map((r) => r.line));
  const orphanErrors = preview.errors.filter((e) => !lines.has(e.line));
  const valid = rows.filter((r) => r.ok).length;
  return {
    rows,
    valid,
    invalid: rows.length - valid,
    updates: rows.filter((r) => r.ok && r.action === "update").length,
    signOuts: rows.filter((r) => r.ok && r.signsOut).length,
    orphanErrors,
  };
}

/** The words for a row's action, e.g. "Updates: token_url, folder — signs out". */
export function describeAction(r: PreviewRow): string {
  switch (r.action) {
    case "new":
      return "New";
    case "unchanged":
      return "Unchanged";
    case "update":
      return `Updates: ${r.changedFields.join(", ")}${r.signsOut ? " — signs out" : ""}`;
    default:
      return "";
  }
}
