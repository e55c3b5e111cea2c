// Bundle the streaming viewer into the Python package's assets: one minified script plus laz-perf's wasm.
// Run by `make viewer` (part of `make setup`); the outputs are git-ignored build products.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', '..', 'src', 'eotwin', 'pointcloud', 'assets', 'stream');
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, 'src', 'main.js')],
  outfile: join(out, 'viewer.js'),
  bundle: true,
  minify: true,
  format: 'iife',
  platform: 'browser',
  target: ['es2020'],
  legalComments: 'eof',
  logLevel: 'warning',
});
// laz-perf (LASzip compiled to WebAssembly) fetches its .wasm beside the page; the server serves it locally
copyFileSync(join(here, 'node_modules', 'laz-perf', 'lib', 'web', 'laz-perf.wasm'), join(out, 'laz-perf.wasm'));
console.log(`viewer bundle written to ${out}`);
