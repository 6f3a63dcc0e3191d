import { describe, expect, it } from "vitest";

// The UI has no @types/node: the one Node API used here is typed by hand.
type ExecFileSync = (cmd: string, args: string[], options: { encoding: "utf8" }) => string;
const childProcess = "node:child_process";
const { execFileSync } = (await import(/* @vite-ignore */ childProcess)) as { execFileSync: ExecFileSync };

// Every character the window can show must render with the fonts a plain Debian desktop has:
// fonts-dejavu-core (DejaVu Sans, regular and bold). A fullwidth "＋" (U+FF0B) once showed as a
// box on the board. The sources are read through Vite's glob import; the fonts' coverage comes
// from fontconfig (`fc-query`), read once per font file.
const sources = import.meta.glob<string>(["../**/*.svelte", "../**/*.ts", "../**/*.css", "!../**/*.test.ts"], {
  query: "?raw",
  import: "default",
  eager: true,
});

const FONTS = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"];

/** The code points a font file covers, from fontconfig's charset ("20-7e a0-2e9 …"). */
function charset(file: string): (cp: number) => boolean {
  const text = execFileSync("fc-query", ["--format", "%{charset}\n", file], { encoding: "utf8" });
  const ranges = text
    .trim()
    .split(/\s+/)
    .map((r: string) => r.split("-").map((h: string) => parseInt(h, 16)))
    .map(([a, b]: number[]) => [a, b ?? a] as const);
  expect(ranges.length, `fc-query read no charset from ${file}`).toBeGreaterThan(10);
  return (cp: number) => ranges.some(([a, b]: readonly [number, number]) => cp >= a && cp <= b);
}

describe("glyphs", () => {
  const fonts = FONTS.map((f) => [f, charset(f)] as const);
  const covered = (cp: number) => fonts.every(([, has]) => has(cp));

  it("every non-ASCII character of the UI is in DejaVu Sans (regular and bold)", () => {
    const used = new Map<string, string>();
    for (const [file, text] of Object.entries(sources)) {
      for (const ch of text) if (ch.codePointAt(0)! > 0x7e && !used.has(ch)) used.set(ch, file);
    }
    expect(used.size, "the sources have some non-ASCII characters (…, ✓)").toBeGreaterThan(3);
    const missing = [...used].filter(([ch]) => !covered(ch.codePointAt(0)!))
      .map(([ch, file]) => `U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")} ${ch} in ${file}`);
    expect(missing).toEqual([]);
  });

  it("would catch the fullwidth plus and a pause symbol", () => {
    expect(covered("+".codePointAt(0)!)).toBe(true);
    expect(covered("✓".codePointAt(0)!)).toBe(true);
    expect(covered(0xff0b)).toBe(false); // ＋
    expect(covered(0x23f8)).toBe(false); // ⏸
  });
});
