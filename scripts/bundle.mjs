// The overlay server, which every container's mount starts, as one file (bin/stratafs-overlay
// runs it): Node then reads one module instead of a hundred, 30 ms of a 200 ms mount. The native
// modules stay outside, found through node_modules; dist/bundle/ has the depth of dist/cli/, so
// the paths relative to a module (../../native) hold. Bundled CommonJS modules require through
// the banner's `require`.
import { build } from 'esbuild'

await build({
  entryPoints: ['dist/cli/overlay-main.js'],
  outfile: 'dist/bundle/overlay-main.js',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['koffi', 'classic-level'],
  banner: { js: "import { createRequire as createRequireForBundle } from 'node:module'; const require = createRequireForBundle(import.meta.url);" },
  logLevel: 'warning'
})
