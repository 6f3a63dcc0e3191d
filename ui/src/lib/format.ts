import { CHECK_LABELS } from "./core";

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

/** A check's name, as the core names it (`Check::label`, through core.json). */
export function checkLabel(check: string): string {
  return (CHECK_LABELS as Record<string, string>)[check] ?? check;
}

export const PROVIDER_LABELS: Record<string, string> = {
  microsoft: "Microsoft 365",
  google: "Google",
  generic: "Generic OAuth2",
};

/** A sign-in this close to its end is shown amber (the core turns the badge amber too). */
export const SIGNIN_WARNING_DAYS = 14;

export interface Countdown {
  text: string;
  /** `warn` within SIGNIN_WARNING_DAYS, `bad` once it has ended, else `idle`. */
  tone: "idle" | "warn" | "bad";
  days: number;
}

/** "Sign-in expires in 5 days" from `signin_expires_at`; null when it is unknown or kept alive. */
export function signinCountdown(iso: string | null | undefined, now: Date = new Date()): Countdown | null {
  if (!iso) return null;
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return null;
  const ms = t.getTime() - now.getTime();
  if (ms <= 0) return { text: "Sign-in expired: sign in again", tone: "bad", days: 0 };
  const days = Math.round(ms / 86_400_000);
  const tone = ms <= SIGNIN_WARNING_DAYS * 86_400_000 ? "warn" : "idle";
  if (ms >= 86_400_000) return { text: `Sign-in expires in ${days} ${days === 1 ? "day" : "days"}`, tone, days };
  const hours = Math.max(1, Math.floor(ms / 3_600_000));
  return { text: `Sign-in expires in ${hours} h`, tone, days: 0 };
}

/** "99.5 %" for a fraction, "—" when nothing is known. Never rounds a down time up to 100 %. */
export function percent(f: number | null | undefined): string {
  if (f == null || Number.isNaN(f)) return "—";
  const p = Math.floor(f * 1000) / 10;
  return `${p.toFixed(p === 100 ? 0 : 1)} %`;
}
