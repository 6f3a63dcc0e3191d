// The board's rows are put on screen a screenful first and the rest in chunks: creating 1,000
// table rows in one go blocks the window (input, paint) for hundreds of milliseconds, and the
// rows below the first screenful are out of sight anyway. Every row is in the page a few frames
// later (the keyboard and screen readers reach them all; the table says it is busy until then).

/** Rows rendered at once: more than a full-height window shows. */
export const FIRST_ROWS = 60;
/** Rows added per step after that. */
export const STEP_ROWS = 100;

/** After the next frame is painted: each chunk is on screen, and input is handled, before the
 * next one is made. */
export function afterPaint(f: () => void) {
  requestAnimationFrame(() => setTimeout(f, 0));
}

/** Where rendering starts when the list changes: the rows already on screen stay (so an update
 * of a badge never collapses the table), at least the first screenful, at most the list. */
export function startRows(rendered: number, total: number, first = FIRST_ROWS): number {
  return Math.min(total, Math.max(first, rendered));
}

/** Calls `set` with `from`, then with `step` more rows per `schedule`d step until `total`.
 * Returns a function that stops the remaining steps (the list changed again). */
export function renderInChunks(
  from: number,
  total: number,
  set: (rows: number) => void,
  schedule: (f: () => void) => void = afterPaint,
  step = STEP_ROWS,
): () => void {
  let stopped = false;
  let rows = Math.min(from, total);
  set(rows);
  const next = () => {
    if (stopped) return;
    rows = Math.min(total, rows + step);
    set(rows);
    if (rows < total) schedule(next);
  };
  if (rows < total) schedule(next);
  return () => {
    stopped = true;
  };
}
