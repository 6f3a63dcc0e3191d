import { describe, expect, it } from "vitest";
import { countVerifyRecord, JobQueue, percent, type QueueProgress } from "./queue";

const defer = () => {
  let resolve!: (v: boolean) => void;
  const promise = new Promise<boolean>((r) => (resolve = r));
  return { promise, resolve };
};

describe("JobQueue", () => {
  it("runs one job at a time by default (one browser sign-in at a time), in order", async () => {
    let active = 0;
    let maxActive = 0;
    const order: string[] = [];
    const q = new JobQueue(["a", "b", "c"], async (n) => {
      active++;
      maxActive = Math.max(maxActive, active);
      order.push(n);
      await new Promise((r) => setTimeout(r, 5));
      active--;
      return n !== "b";
    }, { isOk: (ok) => ok });
    const { progress } = await q.run();
    expect(maxActive).toBe(1);
    expect(order).toEqual(["a", "b", "c"]);
    expect(progress).toMatchObject({ total: 3, done: 3, ok: 2, failed: 1 });
    expect(progress.states).toEqual({ a: "ok", b: "failed", c: "ok" });
  });

  it("respects a concurrency bound", async () => {
    let active = 0;
    let maxActive = 0;
    const q = new JobQueue(["a", "b", "c", "d", "e"], async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      await new Promise((r) => setTimeout(r, 5));
      active--;
      return true;
    }, { concurrency: 2 });
    await q.run();
    expect(maxActive).toBe(2);
  });

  it("reports progress as each job starts and ends", async () => {
    const seen: QueueProgress[] = [];
    await new JobQueue(["a", "b"], async () => true, { onProgress: (p) => seen.push(p) }).run();
    expect(seen.map((p) => `${p.done}/${p.total}:${p.running.join(",")}`)).toEqual(["0/2:a", "1/2:", "1/2:b", "2/2:", "2/2:"]);
  });

  it("a cancelled sign-in is not a failure; stop() leaves the rest cancelled", async () => {
    const first = defer();
    const q = new JobQueue(["a", "b", "c"], async (n) => {
      if (n === "a") {
        await first.promise;
        throw { code: "cancelled", message: "The sign-in was cancelled." };
      }
      return true;
    });
    const running = q.run();
    q.stop();
    first.resolve(true);
    const { progress, errors } = await running;
    expect(progress.states).toEqual({ a: "cancelled", b: "cancelled", c: "cancelled" });
    expect(progress.failed).toBe(0);
    expect(errors.size).toBe(1);
  });

  it("an error is a failure and the queue goes on", async () => {
    const q = new JobQueue(["a", "b"], async (n) => {
      if (n === "a") throw { code: "invalid_grant", message: "x" };
      return true;
    });
    const { progress } = await q.run();
    expect(progress).toMatchObject({ done: 2, ok: 1, failed: 1 });
  });

  it("percent", () => {
    expect(percent({ done: 0, total: 0 })).toBe(0);
    expect(percent({ done: 1, total: 3 })).toBe(33);
  });
});

describe("a Verify batch's records", () => {
  const start = (): QueueProgress => ({
    total: 2, done: 0, ok: 0, failed: 0, running: ["a", "b"], states: { a: "running", b: "running" },
  });
  const rec = (mailbox: string, check: string, ok: boolean) => ({ mailbox, check, ok });

  it("counts each mailbox once, and its SMTP failure turns it failed", () => {
    const p = start();
    countVerifyRecord(p, rec("a", "imap", true));
    countVerifyRecord(p, rec("a", "smtp", false));
    countVerifyRecord(p, rec("b", "pop3", true));
    countVerifyRecord(p, rec("b", "smtp", true));
    expect(p).toMatchObject({ done: 2, ok: 1, failed: 1, running: [], states: { a: "failed", b: "ok" } });
  });

  it("an SMTP record after an incoming failure changes nothing", () => {
    const p = start();
    countVerifyRecord(p, rec("a", "refresh", false));
    countVerifyRecord(p, rec("a", "smtp", false));
    expect(p).toMatchObject({ done: 1, ok: 0, failed: 1, states: { a: "failed" } });
  });
});
