import { describe, expect, it } from "vitest";
import { FIRST_ROWS, renderInChunks, startRows } from "./chunks";

/** A scheduler run by hand: each `step()` runs what was scheduled so far. */
function manual() {
  let queue: (() => void)[] = [];
  return {
    schedule: (f: () => void) => void queue.push(f),
    step() {
      const q = queue;
      queue = [];
      q.forEach((f) => f());
      return q.length;
    },
    pending: () => queue.length,
  };
}

describe("rendering the board's rows in chunks", () => {
  it("puts the first screenful on at once and the rest in steps, each a bounded number of rows", () => {
    const s = manual();
    const seen: number[] = [];
    renderInChunks(startRows(0, 1000), 1000, (n) => seen.push(n), s.schedule, 100);
    expect(seen).toEqual([FIRST_ROWS]);
    while (s.step());
    expect(seen[seen.length - 1]).toBe(1000);
    for (let i = 1; i < seen.length; i++) expect(seen[i] - seen[i - 1]).toBeLessThanOrEqual(100);
    expect(seen.length).toBe(1 + Math.ceil((1000 - FIRST_ROWS) / 100));
  });

  it("renders a short list whole, with nothing left to schedule", () => {
    const s = manual();
    const seen: number[] = [];
    renderInChunks(startRows(0, 3), 3, (n) => seen.push(n), s.schedule);
    expect(seen).toEqual([3]);
    expect(s.pending()).toBe(0);
  });

  it("keeps the rows already on screen when the list changes, and stops the old steps", () => {
    expect(startRows(1000, 1000)).toBe(1000);
    expect(startRows(1000, 999)).toBe(999);
    expect(startRows(5, 1000)).toBe(FIRST_ROWS);
    expect(startRows(400, 1000)).toBe(400);
    const s = manual();
    const seen: number[] = [];
    const stop = renderInChunks(60, 1000, (n) => seen.push(n), s.schedule, 100);
    s.step();
    stop();
    s.step();
    expect(seen).toEqual([60, 160]);
  });
});
