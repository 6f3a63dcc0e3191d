import { describe, expect, it } from "vitest";

// ui/src/lib/ipc.ts is the only module that may import @tauri-apps/*. The sources are read
// through Vite's glob import, so the check needs no Node APIs.
const sources = import.meta.glob<string>(["../**/*.ts", "../**/*.svelte", "!../**/*.test.ts"], {
  query: "?raw",
  import: "default",
  eager: true,
});

describe("IPC boundary", () => {
  it("reads the front end's sources", () => {
    expect(Object.keys(sources)).toContain("./ipc.ts");
    expect(Object.keys(sources).length).toBeGreaterThan(10);
  });

  it("only lib/ipc.ts imports @tauri-apps", () => {
    const offenders = Object.entries(sources)
      .filter(([, text]) => /from\s+["']@tauri-apps\//.test(text))
      .map(([file]) => file);
    expect(offenders).toEqual(["./ipc.ts"]);
  });

  it("the generated bindings reach Tauri only through ipc.ts, and only ipc.ts calls them", () => {
    expect(sources["./bindings.ts"]).toMatch(/^\/\/ Generated from the Rust commands and types/);
    expect(sources["./bindings.ts"]).toMatch(/import \{ invoke as __TAURI_INVOKE, Channel \} from "\.\/ipc";/);
    // Elsewhere only types come from the bindings (`import type`): every call goes through ipc.ts.
    const callers = Object.entries(sources)
      .filter(([file, text]) => file !== "./ipc.ts" && /^\s*import\s+(?!type\b)[^;]*from\s+["'](\.\.?\/)+(lib\/)?bindings["']/m.test(text))
      .map(([file]) => file);
    expect(callers).toEqual([]);
  });
});
