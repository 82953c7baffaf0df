// Starts what the browser tests talk to, as a newcomer would have it: `nexus up --demo` on the
// repository's own spin.toml, on the real Redis and a fresh PostgreSQL database. What the tests
// need (its URL, the demo's key and tokens) goes to them through process.env; the function it
// returns stops it and drops the database.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const repo = fileURLToPath(new URL("../..", import.meta.url));
const results = fileURLToPath(new URL("../test-results", import.meta.url));

function random(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}

/// The PostgreSQL server the Rust tests use (NEXUS_TEST_POSTGRES_URL), with a database of our own.
function freshDatabase(): { url: string; drop: () => void } {
  const admin = process.env.NEXUS_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";
  const name = `nexus_browser_${random(6)}`;
  execFileSync("psql", ["-q", admin, "-c", `CREATE DATABASE ${name}`], { stdio: "inherit" });
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: () => {
      try {
        execFileSync("psql", ["-q", admin, "-c", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]);
      } catch {
        // Left for the next cleanup: a leftover database breaks nothing.
      }
    },
  };
}

/// Waits for nexus to print its address and the demo page (stdout), or fails with its log.
function serving(nexus: ChildProcess, log: string): Promise<{ base: string; demo: string }> {
  return new Promise((resolve, reject) => {
    let base = "";
    let buffered = "";
    const fail = (why: string) => {
      clearTimeout(timer);
      let tail = "";
      try {
        tail = readFileSync(log, "utf8").split("\n").slice(-40).join("\n");
      } catch {
        tail = "(no log)";
      }
      reject(new Error(`${why}\n--- nexus log ---\n${tail}`));
    };
    // Compiling every component from cold takes a while on two cores; the tests' shared cache
    // usually holds them.
    const timer = setTimeout(() => fail("nexus did not serve the demo within 300 s"), 300_000);
    nexus.on("exit", (code) => fail(`nexus exited (${code}) before serving the demo`));
    nexus.stdout?.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      for (const line of lines) {
        const address = /^nexus is serving (http:\/\/\S+)/.exec(line);
        if (address) base = address[1];
        const demo = /^demo: (http:\/\/\S+)/.exec(line);
        if (demo && base) {
          clearTimeout(timer);
          nexus.removeAllListeners("exit");
          resolve({ base, demo: demo[1] });
        }
      }
    });
  });
}

export default async function globalSetup(): Promise<() => Promise<void>> {
  mkdirSync(results, { recursive: true });
  const target = process.env.CARGO_TARGET_DIR ?? join(repo, "target");
  const binary = process.env.NEXUS_BIN ?? join(target, "debug", "nexus");
  const work = mkdtempSync(join(tmpdir(), "nexus-browser-"));
  // The repository's manifest, with the components where this build put them.
  const manifest = readFileSync(join(repo, "spin.toml"), "utf8").replaceAll(
    '"target/wasm32-wasip2/release/',
    `"${join(target, "wasm32-wasip2", "release")}/`,
  );
  writeFileSync(join(work, "spin.toml"), manifest);
  const database = freshDatabase();
  const log = join(results, "nexus.log");
  const nexus = spawn(
    binary,
    ["up", "--manifest", join(work, "spin.toml"), "--listen", "127.0.0.1:0", "--data-dir", join(work, "data"), "--demo"],
    {
      env: {
        ...process.env,
        REDIS_URL: process.env.REDIS_URL ?? "redis://127.0.0.1:6379",
        DATABASE_URL: database.url,
        SPIN_VARIABLE_REDIS_KEY_PREFIX: `browser-${random(6)}:`,
        SPIN_VARIABLE_ADMIN_TOKEN: random(24),
        SPIN_VARIABLE_CREDENTIALS_KEY: randomBytes(32).toString("base64"),
        NEXUS_CACHE_DIR: process.env.NEXUS_CACHE_DIR ?? join(target, "nexus-test-compile-cache"),
        CARGO_TARGET_DIR: target,
        RUST_LOG: "info",
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  nexus.stderr?.pipe(createWriteStream(log));
  const stop = async () => {
    nexus.kill("SIGTERM");
    await new Promise((resolve) => (nexus.exitCode === null ? nexus.once("exit", resolve) : resolve(null)));
    database.drop();
    rmSync(work, { recursive: true, force: true });
  };
  try {
    const { base, demo } = await serving(nexus, log);
    const fragment = new URLSearchParams(new URL(demo).hash.slice(1));
    process.env.NEXUS_URL = base;
    process.env.DEMO_URL = demo;
    process.env.API_KEY = fragment.get("key") ?? "";
    process.env.AGENT_TOKEN = fragment.get("agent") ?? "";
    process.env.SUPERVISOR_TOKEN = fragment.get("supervisor") ?? "";
  } catch (err) {
    await stop();
    throw err;
  }
  return stop;
}
