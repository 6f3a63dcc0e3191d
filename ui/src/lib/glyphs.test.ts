import { describe, expect, it } from "vitest";

// Every string the window shows must render with the fonts a plain Debian desktop has (DejaVu):
// fullwidth forms such as "＋" (U+FF0B) are missing there and showed as a box on the board.
const sources = import.meta.glob<string>(["../**/*.svelte", "../**/*.ts", "!../**/*.test.ts"], {
  query: "?raw",
  import: "default",
  eager: true,
});

// Halfwidth and fullwidth forms, and the private use area: no default Debian font covers them.
const missing = /[\uFF00-\uFFEF\uE000-\uF8FF]/u;

describe("glyphs", () => {
  it("uses no character the default Debian fonts lack", () => {
    const offenders = Object.entries(sources).flatMap(([file, text]) =>
      text.split("\n").flatMap((line, i) => (missing.test(line) ? [`${file}:${i + 1}: ${line.trim()}`] : [])),
    );
    expect(offenders).toEqual([]);
  });

  it("would catch the fullwidth plus", () => {
    expect(missing.test("＋ Add mailbox")).toBe(true);
    expect(missing.test("+ Add mailbox")).toBe(false);
  });
});
