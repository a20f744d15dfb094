#!/usr/bin/env node
// The `ssi` command. The TypeScript sources are compiled to dist/ by `npm run build`.
import process from 'node:process'

import('../dist/cli/main.js').catch((err) => {
  const notBuilt = err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/cli/main.js')
  process.stderr.write(notBuilt ? 'ssi: not built: run `npm run build` first\n' : `ssi: ${err?.stack ?? err}\n`)
  process.exit(1)
})
