// The browser tests of the widget and the console (scripts/browser-test.sh runs them): Debian's
// Chromium, driven by Playwright, against a real `nexus up --demo` on spin.toml (global-setup.ts
// starts it on the real Redis and a fresh PostgreSQL database). Screenshots, traces and the
// report go to web/test-results, which CI keeps.
import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: "tests",
  outputDir: "test-results/artifacts",
  globalSetup: "./tests/global-setup.ts",
  // One nexus for every test; the tests are few and long, and CI has two cores.
  workers: 1,
  fullyParallel: false,
  // A failure is a bug (in the code or the test), never retried away.
  retries: 0,
  timeout: 120_000,
  expect: { timeout: 15_000 },
  reporter: [["list"], ["html", { outputFolder: "test-results/report", open: "never" }]],
  use: {
    browserName: "chromium",
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      // CI runs as root in a container, where Chromium's sandbox cannot start.
      args: ["--no-sandbox", "--disable-dev-shm-usage"],
    },
    viewport: { width: 1280, height: 800 },
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
  },
});
