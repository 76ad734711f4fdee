// The CLI (bin/stratafs, the daemon included) and the overlay server, which every container's
// mount starts (bin/stratafs-overlay), each as one file: Node then reads one module instead of a
// hundred, 30 ms of a 200 ms mount and of a 95 ms command. The native modules stay outside,
// found through node_modules; dist/bundle/ has the depth of dist/cli/, so the paths relative to
// a module (../../native, ../../bin, ../../src/bench/probe.c) hold. Bundled CommonJS modules
// require through the banner's `require`.
import { build } from 'esbuild'

await build({
  entryPoints: ['dist/cli/main.js', 'dist/cli/overlay-main.js'],
  outdir: 'dist/bundle',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['koffi', 'classic-level'],
  banner: { js: "import { createRequire as createRequireForBundle } from 'node:module'; const require = createRequireForBundle(import.meta.url);" },
  logLevel: 'warning'
})
