import { STATUS_LABELS, THROTTLED_LABEL } from "./core";
import type { HealthRecord, Status } from "./types";

export interface Badge {
  status: Status;
  label: string;
  /** Colour role, used as a CSS class (`badge--ok` …): never the only cue, text and icon come too. */
  tone: "ok" | "warn" | "bad" | "idle";
  /** A glyph that reads without colour. */
  icon: string;
}

// The words are the core's (`Status::label`, through core.json); tone and icon are the window's.
const BADGES: Record<Status, Badge> = {
  verified: { status: "verified", label: STATUS_LABELS.verified, tone: "ok", icon: "✓" },
  needs_attention: { status: "needs_attention", label: STATUS_LABELS.needs_attention, tone: "warn", icon: "!" },
  failed: { status: "failed", label: STATUS_LABELS.failed, tone: "bad", icon: "✕" },
  not_authenticated: { status: "not_authenticated", label: STATUS_LABELS.not_authenticated, tone: "idle", icon: "○" },
};

export function badgeFor(status: Status): Badge {
  return BADGES[status] ?? BADGES.not_authenticated;
}

export const STATUSES: Status[] = ["verified", "needs_attention", "failed", "not_authenticated"];

/** The line shown under a badge for a record: what happened, and what to change if it failed. */
export function recordSummary(r: HealthRecord | null): string {
  if (!r) return "Never checked";
  if (r.ok) return r.messages != null ? `${r.message}` : r.message;
  return r.message;
}

/** Counts per status, for the board's filter chips and the bulk summary. */
export function countByStatus(items: { status: Status }[]): Record<Status, number> {
  const out: Record<Status, number> = { verified: 0, needs_attention: 0, failed: 0, not_authenticated: 0 };
  for (const i of items) out[i.status] = (out[i.status] ?? 0) + 1;
  return out;
}

/** The badge's words: amber only because a throttled check has no earlier verdict reads
 * "Throttled" (the server asked to come back later: not a failure, never red). */
export function badgeLabel(status: Status, throttled = false): string {
  return throttled && status === "needs_attention" ? THROTTLED_LABEL : badgeFor(status).label;
}
