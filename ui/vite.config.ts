import { defineConfig } from "vitest/config";
import { svelte } from "@sveltejs/vite-plugin-svelte";

// Tauri loads ui/dist (tauri.conf.json build.frontendDist); no dev server is configured there.
export default defineConfig({
  plugins: [svelte()],
  clearScreen: false,
  server: { port: 1420, strictPort: true },
  build: { outDir: "dist", target: "safari15", emptyOutDir: true },
  test: { include: ["src/**/*.test.ts"], environment: "node" },
});
