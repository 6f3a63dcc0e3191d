// Builds the bulk-setup preview table: the raw rows of the CSV as the admin wrote them, each
// with the core's verdict (its per-row errors, or the mailbox it would become).
import type { ImportPreview, Mailbox, RowError } from "./types";

export interface CsvRow {
  /** 1-based line where the record starts (as the core's csv reader counts). */
  line: number;
  cells: string[];
}

/** RFC 4180 parsing, enough to show rows: quotes, doubled quotes, CRLF, newlines in quotes. */
export function parseCsv(text: string): CsvRow[] {
  const rows: CsvRow[] = [];
  let line = 1;
  let cells: string[] = [];
  let cell = "";
  let quoted = false;
  let start = 1;
  let any = false;
  const src = text.replace(/^\uFEFF/, "");
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (quoted) {
      if (c === '"' && src[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') {
        quoted = false;
      } else {
        if (c === "\n") line++;
        cell += c;
      }
      continue;
    }
    if (c === '"') {
      quoted = true;
      any = true;
    } else if (c === ",") {
      cells.push(cell);
      cell = "";
      any = true;
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && src[i + 1] === "\n") i++;
      cells.push(cell);
      if (any || cell !== "") rows.push({ line: start, cells });
      cells = [];
      cell = "";
      any = false;
      line++;
      start = line;
    } else {
      cell += c;
      any = true;
    }
  }
  if (any || cell !== "") {
    cells.push(cell);
    rows.push({ line: start, cells });
  }
  return rows.map((r) => ({ line: r.line, cells: r.cells.map((c) => c.trim()) }));
}

export interface PreviewRow {
  line: number;
  name: string;
  email: string;
  protocol: string;
  server: string;
  provider: string;
  ok: boolean;
  errors: RowError[];
  mailbox: Mailbox | null;
}

export interface PreviewTable {
  header: string[];
  rows: PreviewRow[];
  valid: number;
  invalid: number;
  /** Errors not tied to a data row of the text (should not happen, but never hide one). */
  orphanErrors: RowError[];
}

/** Joins the raw rows with the core's parse: errors by line, good mailboxes by name. */
export function buildPreview(text: string, preview: ImportPreview): PreviewTable {
  const [head, ...data] = parseCsv(text);
  const header = (head?.cells ?? []).map((h) => h.toLowerCase());
  const col = (cells: string[], name: string) => {
    const i = header.indexOf(name);
    return i >= 0 ? (cells[i] ?? "") : "";
  };
  const byName = new Map(preview.mailboxes.map((m) => [m.name, m]));
  const errorsByLine = new Map<number, RowError[]>();
  for (const e of preview.errors) errorsByLine.set(e.line, [...(errorsByLine.get(e.line) ?? []), e]);
  const seen = new Set<number>();
  const rows: PreviewRow[] = data
    .filter((r) => r.cells.some((c) => c !== ""))
    .map((r) => {
      seen.add(r.line);
      const errors = errorsByLine.get(r.line) ?? [];
      const name = col(r.cells, "name");
      const mailbox = errors.length === 0 ? (byName.get(name) ?? null) : null;
      return {
        line: r.line,
        name,
        email: col(r.cells, "email"),
        protocol: mailbox?.protocol ?? (col(r.cells, "protocol") || "imap"),
        server: mailbox ? `${mailbox.host}:${mailbox.port}` : [col(r.cells, "host"), col(r.cells, "port")].filter(Boolean).join(":"),
        provider: mailbox?.provider ?? (col(r.cells, "provider") || "generic"),
        ok: errors.length === 0 && mailbox !== null,
        errors,
        mailbox,
      };
    });
  const orphanErrors = preview.errors.filter((e) => !seen.has(e.line));
  const valid = rows.filter((r) => r.ok).length;
  return { header, rows, valid, invalid: rows.length - valid, orphanErrors };
}
