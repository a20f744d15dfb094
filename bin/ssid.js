#!/usr/bin/env node
/* global process */
import { runDaemon } from '../dist/node/main.js'

runDaemon(process.argv.slice(2)).then(() => process.exit(0), (err) => {
  process.stderr.write(`ssid: ${err.message}\n`)
  process.exit(1)
})
