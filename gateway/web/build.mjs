// Builds src/ into dist/: one minified, content-hashed script and
// stylesheet under dist/static, the page shell dist/index.html naming them,
// and a gzip copy of each for the gateway to serve as is.
//
//   node build.mjs          build into dist/
//   node build.mjs --check  build into a temporary directory and fail when
//                           dist/ differs (the committed assets are stale)
import * as esbuild from "esbuild";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { gzipSync, constants } from "node:zlib";

const here = new URL(".", import.meta.url).pathname;
const check = process.argv.includes("--check");
const out = check ? mkdtempSync(join(tmpdir(), "cryptostream-web-")) : join(here, "dist");

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "static"), { recursive: true });

const result = await esbuild.build({
  entryPoints: [join(here, "src/main.jsx")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022"],
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: join(out, "static"),
  entryNames: "app-[hash]",
  assetNames: "[name]-[hash]",
  metafile: true,
  legalComments: "linked",
  logLevel: "warning",
  // Reproducible: the same sources give the same bytes, so --check can
  // compare.
  sourcemap: false,
  charset: "utf8",
});

let js = "", css = "";
for (const f of Object.keys(result.metafile.outputs)) {
  const name = relative(join(out, "static"), f);
  if (name.endsWith(".js")) js = name;
  if (name.endsWith(".css")) css = name;
}
const shell = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cryptostream</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/${css}">
<script type="module" src="/static/${js}"></script>
</head>
<body>
<div id="app"><noscript>The cryptostream dashboard needs JavaScript. The API is described at <a href="/openapi.json">/openapi.json</a>.</noscript></div>
</body>
</html>
`;
writeFileSync(join(out, "index.html"), shell);

function walk(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}
for (const f of walk(out)) {
  if (f.endsWith(".gz")) continue;
  writeFileSync(f + ".gz", gzipSync(readFileSync(f), { level: constants.Z_BEST_COMPRESSION}));
}

if (check) {
  const dist = join(here, "dist");
  const list = (d) => walk(d).map((f) => relative(d, f)).sort();
  let stale = [];
  let have = [];
  try { have = list(dist); } catch { have = []; }
  const want = list(out);
  if (have.join("\n") !== want.join("\n")) stale.push(`files differ: built ${want.join(", ")}; committed ${have.join(", ")}`);
  else for (const f of want) if (!readFileSync(join(out, f)).equals(readFileSync(join(dist, f)))) stale.push(f);
  rmSync(out, { recursive: true, force: true });
  if (stale.length) {
    console.error("gateway/web/dist is stale; run: (cd gateway/web && npm ci && npm run build)\n  " + stale.join("\n  "));
    process.exit(1);
  }
  console.log("gateway/web/dist is current");
} else {
  const sizes = walk(out).filter((f) => f.endsWith(".gz")).map((f) => `${relative(out, f)} ${statSync(f).size} B`);
  console.log("built " + sizes.join(", "));
}
