#!/usr/bin/env node
// npm run build: compiles src/ and gen/ to dist/ (dist/src/cli.js is the command line), so that
// production runs plain `node` rather than tsx.
//
// esbuild, not tsc: tsx, which runs the source in development and in the tests, is esbuild
// underneath, so the build applies the very same per-file transform (the tsconfig's target,
// isolatedModules, verbatimModuleSyntax) and the compiled server behaves as the source does; it takes
// well under a second, so `npm start` can build every time. Type checking stays with `tsc --noEmit`.
//
// Every file is compiled on its own (no bundling), and dist/ keeps the repository's layout, so that
// the paths the code resolves with `new URL(..., import.meta.url)` still hold: the files that are not
// TypeScript under src/ and gen/ (the Redis scripts, the ledger migrations) are copied next to the
// compiled files, and web/ (the usage page, bundled at run time from ../../web/ of src/rpc/) is
// copied to dist/web/.
//
// Usage: node scripts/build.mjs [--outdir DIR]   (default: dist, relative to the repository)
import { chmod, cp, mkdir, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { build } from "esbuild";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const { values } = parseArgs({ options: { outdir: { type: "string" } } });
const outdir = path.resolve(ROOT, values.outdir ?? "dist");
if (outdir === path.resolve(ROOT) || !outdir.startsWith(ROOT)) {
  // Inside the repository, so that packages resolve from its node_modules.
  throw new Error(`--outdir must be a directory inside ${ROOT}`);
}

/** Every file under `dir` (relative to ROOT), as paths relative to ROOT. */
async function filesUnder(dir) {
  const entries = await readdir(path.join(ROOT, dir), { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.relative(ROOT, path.join(e.parentPath ?? e.path, e.name)));
}

const sources = [...(await filesUnder("src")), ...(await filesUnder("gen"))];
const typescript = sources.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"));
const assets = sources.filter((f) => !f.endsWith(".ts"));

await rm(outdir, { recursive: true, force: true });
await build({
  absWorkingDir: ROOT,
  entryPoints: typescript,
  outbase: ".",
  outdir,
  bundle: false,
  platform: "node",
  format: "esm",
  target: "node20",
  sourcemap: true,
  logLevel: "warning",
});
for (const file of assets) {
  await mkdir(path.dirname(path.join(outdir, file)), { recursive: true });
  await cp(path.join(ROOT, file), path.join(outdir, file));
}
await cp(path.join(ROOT, "web"), path.join(outdir, "web"), { recursive: true });
await chmod(path.join(outdir, "src/cli.js"), 0o755);
