// The editor's form state and its conversion to/from the core's Mailbox; where field errors go.
import { DEFAULT_TENANT, SMTP_PORTS } from "./core";
import type { FieldProblem, Flow, Mailbox, Preset, ProviderKind, Protocol, Security } from "./types";

/** Form values as typed (strings), so a half-typed port is not lost. */
export interface Draft {
  name: string;
  email: string;
  login: string;
  protocol: Protocol;
  host: string;
  port: string;
  security: Security;
  folder: string;
  provider: ProviderKind;
  tenant: string;
  client_id: string;
  scopes: string;
  auth_url: string;
  token_url: string;
  auth_params: { key: string; value: string }[];
  ca_file: string;
  flow: Flow;
  device_url: string;
  issuer: string;
  smtp_host: string;
  smtp_port: string;
  smtp_security: Security;
  client_secret_expires: string;
  redirect_port: string;
  check_interval_minutes: string;
}

/** The inputs of the editor, named like the core's `FieldError.field`. */
export const FIELDS = [
  "name", "email", "login", "protocol", "host", "port", "security", "folder", "provider", "tenant", "client_id",
  "scopes", "auth_url", "token_url", "auth_params", "ca_file", "flow", "device_url", "issuer", "smtp_host", "smtp_port",
  "smtp_security", "client_secret_expires", "redirect_port", "check_interval_minutes",
] as const;
export type FieldName = (typeof FIELDS)[number];

export function emptyDraft(): Draft {
  return {
    name: "", email: "", login: "", protocol: "imap", host: "", port: "993", security: "tls", folder: "INBOX",
    provider: "microsoft", tenant: DEFAULT_TENANT, client_id: "", scopes: "", auth_url: "", token_url: "",
    auth_params: [], ca_file: "", flow: "auth_code", device_url: "", issuer: "", smtp_host: "", smtp_port: "",
    smtp_security: "starttls", client_secret_expires: "", redirect_port: "", check_interval_minutes: "",
  };
}

export function draftFrom(m: Mailbox): Draft {
  return {
    name: m.name,
    email: m.email,
    login: m.login ?? "",
    protocol: m.protocol,
    host: m.host,
    port: String(m.port),
    security: m.security,
    folder: m.folder,
    provider: m.provider,
    tenant: m.tenant ?? "",
    client_id: m.client_id,
    scopes: m.scopes.join(" "),
    auth_url: m.auth_url ?? "",
    token_url: m.token_url ?? "",
    auth_params: m.auth_params.map(([key, value]) => ({ key, value })),
    ca_file: m.ca_file ?? "",
    // Always sent by the core; optional in the type because a saved mailbox may leave it out.
    flow: m.flow ?? "auth_code",
    device_url: m.device_url ?? "",
    issuer: m.issuer ?? "",
    smtp_host: m.smtp?.host ?? "",
    smtp_port: m.smtp ? String(m.smtp.port) : "",
    smtp_security: m.smtp?.security ?? "starttls",
    client_secret_expires: m.client_secret_expires ?? "",
    redirect_port: m.redirect_port ? String(m.redirect_port) : "",
    check_interval_minutes: m.check_interval_minutes ? String(m.check_interval_minutes) : "",
  };
}

const opt = (s: string): string | null => (s.trim() === "" ? null : s.trim());

function parsePort(s: string): number | null {
  const t = s.trim();
  if (!/^\d+$/.test(t)) return null;
  const n = Number(t);
  return n >= 1 && n <= 65535 ? n : null;
}

/**
 * Converts the form to a Mailbox. Problems the core cannot even receive (a port that is not a
 * number) are reported here, with the core's wording; everything else is
 * left to the core's validation so there is one source of truth.
 */
export function toMailbox(d: Draft): { mailbox: Mailbox | null; problems: FieldProblem[] } {
  const problems: FieldProblem[] = [];
  const port = parsePort(d.port);
  if (port === null) problems.push({ field: "port", message: "must be between 1 and 65535" });
  let smtp: Mailbox["smtp"] = null;
  if (opt(d.smtp_host) || opt(d.smtp_port)) {
    const sp = opt(d.smtp_port) ? parsePort(d.smtp_port) : SMTP_PORTS[d.smtp_security];
    if (sp === null) problems.push({ field: "smtp_port", message: "must be between 1 and 65535" });
    smtp = { host: d.smtp_host.trim(), port: sp ?? 0, security: d.smtp_security };
  }
  const redirectPort = opt(d.redirect_port) ? parsePort(d.redirect_port) : null;
  if (opt(d.redirect_port) && redirectPort === null) {
    problems.push({ field: "redirect_port", message: "must be between 1 and 65535" });
  }
  // A whole number is all the form checks; its range is the core's to judge (one wording).
  const interval = opt(d.check_interval_minutes);
  if (interval && !/^\d+$/.test(interval)) {
    problems.push({
      field: "check_interval_minutes",
      message: "must be a number of minutes from 1 to 10080 (a week), or empty for the monitor's interval",
    });
  }
  // Not checked here: this is the date the core sent (the editor's date input goes to
  // `setClientSecret`, where the core's `mailbox::parse_date` reads it and names the field).
  const expires = opt(d.client_secret_expires);
  const params = d.auth_params.filter((p) => p.key.trim() !== "" || p.value.trim() !== "");
  for (const p of params) {
    if (p.key.trim() === "") problems.push({ field: "auth_params", message: `a value (\`${p.value}\`) has no parameter name` });
  }
  if (problems.length) return { mailbox: null, problems };
  return {
    mailbox: {
      name: d.name.trim(),
      email: d.email.trim(),
      login: opt(d.login),
      protocol: d.protocol,
      host: d.host.trim(),
      port: port!,
      security: d.security,
      folder: d.folder.trim(),
      provider: d.provider,
      tenant: d.provider === "microsoft" ? opt(d.tenant) : null,
      client_id: d.client_id.trim(),
      scopes: d.scopes.split(/\s+/).filter(Boolean),
      auth_url: opt(d.auth_url),
      token_url: opt(d.token_url),
      auth_params: params.map((p) => [p.key.trim(), p.value.trim()] as [string, string]),
      ca_file: opt(d.ca_file),
      flow: d.flow,
      device_url: opt(d.device_url),
      issuer: d.provider === "generic" ? opt(d.issuer) : null,
      smtp,
      client_secret_expires: expires,
      redirect_port: redirectPort,
      check_interval_minutes: interval ? Number(interval) : null,
    },
    problems,
  };
}

/** Field problems by input; those naming no input of the editor go to `other` (shown on top). */
export function placeFieldErrors(problems: FieldProblem[]): { byField: Partial<Record<FieldName, string[]>>; other: FieldProblem[] } {
  const byField: Partial<Record<FieldName, string[]>> = {};
  const other: FieldProblem[] = [];
  for (const p of problems) {
    if ((FIELDS as readonly string[]).includes(p.field)) {
      const f = p.field as FieldName;
      const list = (byField[f] ??= []);
      if (!list.includes(p.message)) list.push(p.message);
    } else {
      other.push(p);
    }
  }
  return { byField, other };
}

/** Which preset values replace what is in the form after the admin changed `changed`. */
export function applyPreset(d: Draft, p: Preset, changed: "provider" | "protocol" | "security" | "tenant"): Draft {
  const next: Draft = { ...d, auth_params: [...d.auth_params] };
  if (changed !== "tenant") next.port = String(p.port);
  if (d.provider === "generic") {
    // A generic provider has no defaults for endpoints or scopes: keep what the admin typed.
    if (changed === "provider") next.tenant = "";
    return next;
  }
  if (p.host) next.host = p.host;
  next.scopes = p.scopes.join(" ");
  next.auth_url = p.auth_url ?? "";
  next.token_url = p.token_url ?? "";
  next.device_url = p.device_url ?? "";
  if (d.provider === "microsoft") next.tenant = p.tenant ?? DEFAULT_TENANT;
  else next.tenant = "";
  return next;
}

/**
 * The outgoing server from the provider's preset (the core's: Microsoft smtp.office365.com 587
 * STARTTLS, Google smtp.gmail.com 465 TLS). `changed` says what the admin did: picked the
 * provider's server (host, security and port replaced) or changed the security (only the port
 * follows, to the preset's port for that security; nothing when no outgoing server is entered).
 */
export function applySmtpPreset(d: Draft, p: Preset, changed: "server" | "security"): Draft {
  if (changed === "security") {
    // No outgoing server yet: a port alone would make one without a host.
    return d.smtp_host.trim() || d.smtp_port.trim() ? { ...d, smtp_port: String(p.smtp_port) } : d;
  }
  if (!p.smtp_host) return d;
  return { ...d, smtp_host: p.smtp_host, smtp_security: p.smtp_security, smtp_port: String(p.smtp_port) };
}

/** The inputs of the editor's "Outgoing mail (SMTP)" section. */
export const SMTP_FIELDS = ["smtp_host", "smtp_port", "smtp_security"] as const satisfies readonly FieldName[];

export function authParamsText(params: [string, string][]): string {
  return params.map(([k, v]) => `${k}=${v}`).join(" ");
}
