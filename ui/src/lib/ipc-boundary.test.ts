import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";

// ui/src/lib/ipc.ts is the only module that may import @tauri-apps/*.
function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? files(p) : [p];
  });
}

describe("IPC boundary", () => {
  it("only lib/ipc.ts imports @tauri-apps", () => {
    const src = path.resolve(__dirname, "..");
    const offenders = files(src)
      .filter((f) => /\.(ts|svelte)$/.test(f) && !f.endsWith(".test.ts"))
      .filter((f) => /from\s+["']@tauri-apps\//.test(readFileSync(f, "utf8")))
      .map((f) => path.relative(src, f));
    expect(offenders).toEqual(["lib/ipc.ts"]);
  });
});
