// Builds what components/assets serves into web/dist:
//   dist/widget/nexus-chat.js   the web chat widget, one script (widget/src/main.ts)
//   dist/console/               the agent console (console/index.html, console.css, console/src/main.ts)
//   dist/demo/                  the demo page that embeds the widget (every file of demo/)
// `node build.mjs widget` (or console, or demo) builds only that part. Every file also gets a
// gzip twin (.gz), which the component serves to clients that take it. The widget must stay
// under WIDGET_GZIP_LIMIT bytes gzipped: the build fails above it.
import { build } from "esbuild";
import { copyFile, mkdir, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");
const WIDGET_GZIP_LIMIT = 50 * 1024;
const parts = process.argv.length > 2 ? process.argv.slice(2) : ["widget", "console", "demo"];

const common = {
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  legalComments: "none",
  logLevel: "warning",
};

const builders = {
  async widget(out) {
    await build({ ...common, entryPoints: [join(root, "widget/src/main.ts")], outfile: join(out, "nexus-chat.js") });
  },
  async console(out) {
    await build({ ...common, entryPoints: [join(root, "console/src/main.ts")], outfile: join(out, "console.js") });
    for (const file of ["index.html", "console.css"]) await copyFile(join(root, "console", file), join(out, file));
  },
  async demo(out) {
    for (const file of await readdir(join(root, "demo"))) await copyFile(join(root, "demo", file), join(out, file));
  },
};

async function* files(dir) {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* files(path);
    else if (!entry.name.endsWith(".gz")) yield path;
  }
}

for (const part of parts) {
  if (!builders[part]) {
    console.error(`no such part: ${part} (widget, console, demo)`);
    process.exit(2);
  }
  const out = join(dist, part);
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  await builders[part](out);
  // The gzip twins, and the sizes.
  for await (const path of files(out)) {
    const gzipped = gzipSync(await readFile(path), { level: 9 });
    await writeFile(`${path}.gz`, gzipped);
    const shown = path.slice(root.length + 1);
    console.log(`${shown}: ${(await stat(path)).size} bytes, ${gzipped.length} gzipped`);
    if (shown === "dist/widget/nexus-chat.js" && gzipped.length > WIDGET_GZIP_LIMIT) {
      console.error(`the widget is ${gzipped.length} bytes gzipped, over its limit of ${WIDGET_GZIP_LIMIT}`);
      process.exit(1);
    }
  }
}
