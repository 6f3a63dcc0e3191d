// Runs one job per mailbox with bounded concurrency (1 for sign-ins: one browser at a time),
// reporting progress; stoppable between jobs.

export type ItemState = "queued" | "running" | "ok" | "failed" | "cancelled";

export interface QueueProgress {
  total: number;
  done: number;
  ok: number;
  failed: number;
  running: string[];
  states: Record<string, ItemState>;
}

export interface QueueOptions<T> {
  concurrency?: number;
  /** True when the job's result counts as a success (e.g. a record with ok). */
  isOk?: (result: T) => boolean;
  onProgress?: (p: QueueProgress) => void;
}

export class JobQueue<T> {
  private stopped = false;
  private progress: QueueProgress;

  constructor(
    private readonly names: string[],
    private readonly job: (name: string) => Promise<T>,
    private readonly opts: QueueOptions<T> = {},
  ) {
    const states: Record<string, ItemState> = {};
    for (const n of names) states[n] = "queued";
    this.progress = { total: names.length, done: 0, ok: 0, failed: 0, running: [], states };
  }

  /** No new job starts after this; the running ones finish (or are cancelled by the caller). */
  stop(): void {
    this.stopped = true;
  }

  get snapshot(): QueueProgress {
    return { ...this.progress, running: [...this.progress.running], states: { ...this.progress.states } };
  }

  private emit() {
    this.opts.onProgress?.(this.snapshot);
  }

  async run(): Promise<{ results: Map<string, T>; errors: Map<string, unknown>; progress: QueueProgress }> {
    const results = new Map<string, T>();
    const errors = new Map<string, unknown>();
    const pending = [...this.names];
    const isOk = this.opts.isOk ?? (() => true);
    const worker = async () => {
      while (!this.stopped && pending.length) {
        const name = pending.shift()!;
        this.progress.states[name] = "running";
        this.progress.running.push(name);
        this.emit();
        try {
          const r = await this.job(name);
          results.set(name, r);
          const ok = isOk(r);
          this.progress.states[name] = ok ? "ok" : "failed";
          if (ok) this.progress.ok++;
          else this.progress.failed++;
        } catch (e) {
          errors.set(name, e);
          const cancelled = (e as { code?: string })?.code === "cancelled";
          this.progress.states[name] = cancelled ? "cancelled" : "failed";
          if (!cancelled) this.progress.failed++;
        }
        this.progress.done++;
        this.progress.running = this.progress.running.filter((n) => n !== name);
        this.emit();
      }
    };
    const n = Math.max(1, Math.min(this.opts.concurrency ?? 1, this.names.length || 1));
    await Promise.all(Array.from({ length: n }, worker));
    for (const name of pending) this.progress.states[name] = "cancelled";
    this.emit();
    return { results, errors, progress: this.snapshot };
  }
}

/** Percentage for a progress bar. */
export function percent(p: { done: number; total: number }): number {
  return p.total === 0 ? 0 : Math.round((100 * p.done) / p.total);
}

/**
 * Counts one record of a Verify batch. The core sends each mailbox's incoming record, then its
 * SMTP record when it has an outgoing server: the mailbox is done at the first, and turns
 * failed if its SMTP check failed after an incoming success.
 */
export function countVerifyRecord(p: QueueProgress, r: { mailbox: string; check: string; ok: boolean }): void {
  if (r.check === "smtp") {
    if (!r.ok && p.states[r.mailbox] === "ok") {
      p.ok--;
      p.failed++;
      p.states[r.mailbox] = "failed";
    }
    return;
  }
  p.done++;
  if (r.ok) p.ok++;
  else p.failed++;
  p.states[r.mailbox] = r.ok ? "ok" : "failed";
  p.running = p.running.filter((n) => n !== r.mailbox);
}
