#!/usr/bin/env node
// Bundles the `ssi` CLI (src/cli/main.ts, every verb, the control-API client, commander and msgpackr)
// into one CommonJS file, dist/cli-bundle/main.cjs, which bin/ssi.cjs loads: reading and compiling one
// file instead of resolving ~30 ES modules saves ~20 ms of every `ssi` start. Run it after tsc.
//
// Daemon code that some verbs import on demand (`cluster`, `daemon` and `keygen` load src/node/*) is
// not bundled: those stay dynamic imports of the tsc output, dist/node/*.js (the bundle directory is a
// sibling of dist/node), so `npm run build`'s tsc step must have run too.
//
// Measured on a 2-core box (median wall time of `ssi nodes` against a local daemon): plain tsc output
// ~105 ms, this bundle ~85 ms, `node -e 0` ~62 ms. An ES-module bundle was ~8 ms slower than CommonJS,
// and splitting the verbs into lazily loaded chunks or minifying gained nothing measurable.
//
// Those imports go through `__ssiImport(specifier)`: bin/ssi.cjs compiles the bundle with a V8 code
// cache (vm.Script), where Node 20 loses the callback an `import()` needs; it defines
// globalThis.__ssiImport to import relative to the bundle. Loaded by plain require(), the bundle
// falls back to its own import().
//
// Usage: node scripts/bundle-cli.mjs [--outdir DIR] [--metafile]   (default DIR: dist/cli-bundle)
import { build } from 'esbuild'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const src = join(root, 'src')
const { values: args } = parseArgs({
  options: {
    outdir: { type: 'string', default: join(root, 'dist', 'cli-bundle') },
    metafile: { type: 'boolean', default: false }
  }
})
const outdir = resolve(args.outdir)

/** Imports of src/node/* stay imports, of the tsc output next to the bundle: ../node/x.js. */
const daemonCodeExternal = {
  name: 'daemon-code-external',
  setup (b) {
    b.onResolve({ filter: /\/node\/[^/]+\.js$/ }, ({ path, resolveDir }) => {
      const source = resolve(resolveDir, path)
      if (!source.startsWith(join(src, 'node') + '/')) return undefined
      return { path: `../${relative(src, source)}`, external: true }
    })
  }
}

/** src/cli/commander.ts require()s commander (cheapest for the plain build); the bundle inlines it. */
const inlineCommander = {
  name: 'inline-commander',
  setup (b) {
    b.onLoad({ filter: /\/src\/cli\/commander\.ts$/ }, () => ({
      contents: "export { Command, CommanderError } from 'commander'",
      loader: 'ts',
      resolveDir: join(src, 'cli')
    }))
  }
}

await rm(outdir, { recursive: true, force: true })
const result = await build({
  entryPoints: [join(src, 'cli', 'main.ts')],
  outfile: join(outdir, 'main.cjs'),
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  plugins: [daemonCodeExternal, inlineCommander],
  sourcemap: 'linked',
  legalComments: 'none',
  // "use strict" first: a banner before esbuild's directive would make the bundle sloppy-mode code.
  banner: { js: '"use strict";\nconst __ssiImport = globalThis.__ssiImport ?? (specifier => import(specifier));' },
  metafile: args.metafile,
  logLevel: 'warning'
})
if (result.errors.length > 0 || result.warnings.length > 0) process.exit(1) // e.g. import.meta, which CJS lacks
const outfile = join(outdir, 'main.cjs')
await writeFile(outfile, (await readFile(outfile, 'utf8')).replaceAll('import("../node/', '__ssiImport("../node/'))
if (args.metafile) {
  const { analyzeMetafile } = await import('esbuild')
  process.stdout.write(await analyzeMetafile(result.metafile))
}
process.stdout.write(`bundled the ssi CLI into ${relative(process.cwd(), join(outdir, 'main.cjs'))}\n`)
