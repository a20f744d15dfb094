#!/usr/bin/env node
// The `ssi` command. `npm run build` compiles the TypeScript sources to dist/ (tsc) and bundles the
// CLI into dist/cli-bundle/main.cjs (scripts/bundle-cli.mjs), which starts ~20 ms faster: one
// CommonJS file instead of ~30 ES modules. The bundle is used unless it is missing or older than
// dist/cli/main.js (tsc ran since, e.g. `tsc --watch`); SSI_CLI_BUNDLE=0 skips it.
//
// CommonJS on purpose: an ES module entry point costs Node ~6 ms more to start. bin/ssi.js is the
// ES module wrapper for package.json "bin" entries that point there.
'use strict'
/* global require, __dirname -- CommonJS (the lint config treats bin/ as ES modules) */
/* eslint-disable @typescript-eslint/no-require-imports */
const { statSync } = require('node:fs')
const { join } = require('node:path')
const process = require('node:process')
const { pathToFileURL } = require('node:url')

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

if (useBundle()) {
  try {
    require(bundle)
  } catch (err) {
    fail(err, bundle)
  }
} else {
  import(pathToFileURL(compiled).href).catch((err) => { fail(err, compiled) })
}
