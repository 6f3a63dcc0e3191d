/** "just now", "5 min ago", "3 h ago", "2 days ago", else the date. */
export function relativeTime(iso: string | null | undefined, now: Date = new Date()): string {
  if (!iso) return "—";
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return "—";
  const s = Math.round((now.getTime() - t.getTime()) / 1000);
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  if (s < 7 * 86400) {
    const d = Math.round(s / 86400);
    return d === 1 ? "yesterday" : `${d} days ago`;
  }
  return t.toISOString().slice(0, 10);
}

export function fullTime(iso: string | null | undefined): string {
  if (!iso) return "";
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? "" : t.toLocaleString();
}

export const CHECK_LABELS: Record<string, string> = {
  authenticate: "Sign-in",
  refresh: "Token refresh",
  imap: "IMAP login",
  pop3: "POP3 login",
};

export function checkLabel(check: string): string {
  return CHECK_LABELS[check] ?? check;
}

export const PROVIDER_LABELS: Record<string, string> = {
  microsoft: "Microsoft 365",
  google: "Google",
  generic: "Generic OAuth2",
};
