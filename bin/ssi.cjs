#!/usr/bin/env node
// The `ssi` command. `npm run build` compiles the TypeScript sources to dist/ (tsc) and bundles the
// CLI into dist/cli-bundle/main.cjs (scripts/bundle-cli.mjs), which starts ~20 ms faster: one
// CommonJS file instead of ~30 ES modules. The bundle is used unless it is missing or older than
// dist/cli/main.js (tsc ran since, e.g. `tsc --watch`); SSI_CLI_BUNDLE=0 skips it.
//
// CommonJS on purpose: an ES module entry point costs Node ~6 ms more to start. bin/ssi.js is the
// ES module wrapper for package.json "bin" entries that point there.
//
// V8 code cache (what Node 22's module.enableCompileCache does, by hand for Node 20): the bundle is
// compiled with the bytecode V8 produced on an earlier run, kept in dist/cli-bundle/main.cjs.v8cache
// and written at exit by the first run that may write there (V8 rejects a cache made for another
// source or Node version; it is then written anew). A cache file is used only if it belongs to root
// or to the caller and nobody else may write it: it is code. SSI_CLI_CACHE=0 skips it.
//
// Where a plain `ssi run --node n2 -- true` spends its CPU (Node 20, 2 cores, process.cpuUsage()):
// Node's own start ~21 ms, then this file ~1, compiling the bundle from the cache ~2, its top level
// and argv ~2 (no commander: src/cli/fast-run.ts), loading the client and connecting ~4, the call
// ~2.5, exit ~0.5. A user-land start-up snapshot (node --snapshot-blob) does not pay here: an empty
// one already starts ~3.5 ms slower than Node's built-in one. bin/ssi (the launcher) keeps Node
// from loading NODE_EXTRA_CA_CERTS, which would cost ~40 ms more.
'use strict'
/* global require, module, __dirname -- CommonJS (the lint config treats bin/ as ES modules) */
/* eslint-disable @typescript-eslint/no-require-imports */
const { closeSync, fstatSync, openSync, readFileSync, renameSync, statSync, writeFileSync } = require('node:fs')
const Module = require('node:module')
const { dirname, join } = require('node:path')
const process = require('node:process')
const { pathToFileURL } = require('node:url')
const vm = require('node:vm')

// bin/ssi (the launcher) started Node without NODE_EXTRA_CA_CERTS: the caller's value goes back
// before anything reads process.env (`ssi run` passes this environment to the job).
if (process.env.SSI_SAVED_NODE_EXTRA_CA_CERTS !== undefined) {
  process.env.NODE_EXTRA_CA_CERTS = process.env.SSI_SAVED_NODE_EXTRA_CA_CERTS
  delete process.env.SSI_SAVED_NODE_EXTRA_CA_CERTS
}

const bundle = join(__dirname, '..', 'dist', 'cli-bundle', 'main.cjs')
const compiled = join(__dirname, '..', 'dist', 'cli', 'main.js')

function useBundle () {
  if (process.env.SSI_CLI_BUNDLE === '0') return false
  const bundled = statSync(bundle, { throwIfNoEntry: false })
  if (bundled === undefined) return false
  const plain = statSync(compiled, { throwIfNoEntry: false })
  return plain === undefined || plain.mtimeMs <= bundled.mtimeMs
}

function fail (err, path) {
  const notBuilt = err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes(path)
  process.stderr.write(notBuilt ? 'ssi: not built: run `npm run build` first\n' : `ssi: ${err?.stack ?? err}\n`)
  process.exit(1)
}

/** The cached bytecode if it exists and is trustworthy (owned by root or us, writable by no one else). */
function readTrustedCache (file) {
  let fd
  try {
    fd = openSync(file, 'r')
    const st = fstatSync(fd)
    const uid = process.geteuid()
    if ((st.uid !== 0 && st.uid !== uid) || (st.mode & 0o022) !== 0) return undefined
    return readFileSync(fd)
  } catch {
    return undefined
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

/** Writes the bytecode of everything compiled so far (best effort: dist may not be ours to write). */
function writeCache (script, file) {
  try {
    const tmp = `${file}.${process.pid}.tmp`
    writeFileSync(tmp, script.createCachedData(), { mode: 0o644 })
    renameSync(tmp, file)
  } catch { /* read-only install, another user's dist: run without a cache */ }
}

/** require(bundle), but compiled with the V8 code cache. */
function loadBundleCached () {
  const cacheFile = `${bundle}.v8cache`
  const cachedData = readTrustedCache(cacheFile)
  const script = new vm.Script(Module.wrap(readFileSync(bundle, 'utf8')), { filename: bundle, cachedData })
  // import() inside a vm.Script has no loader here: the bundle imports daemon code through this.
  globalThis.__ssiImport = async (specifier) => await import(pathToFileURL(join(dirname(bundle), specifier)).href)
  // At exit, so the cache holds the functions this run compiled lazily too.
  if (cachedData === undefined || script.cachedDataRejected === true) process.once('exit', () => { writeCache(script, cacheFile) })
  const mod = new Module(bundle, module)
  mod.filename = bundle
  mod.paths = Module._nodeModulePaths(dirname(bundle))
  script.runInThisContext().call(mod.exports, mod.exports, Module.createRequire(bundle), mod, bundle, dirname(bundle))
}

if (useBundle()) {
  try {
    if (process.env.SSI_CLI_CACHE === '0') require(bundle)
    else loadBundleCached()
  } catch (err) {
    fail(err, bundle)
  }
} else {
  import(pathToFileURL(compiled).href).catch((err) => { fail(err, compiled) })
}
