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
});
