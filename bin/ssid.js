#!/usr/bin/env node
/* global process */
// Before anything uses libuv's thread pool (it reads this once): an image streamer's pipes hold a
// thread each while CRIU drains them (src/migration/image-streamer.ts), beside file I/O and crypto.
process.env.UV_THREADPOOL_SIZE ??= '8'
const { runDaemon } = await import('../dist/node/main.js')

runDaemon(process.argv.slice(2)).then(() => process.exit(0), (err) => {
  process.stderr.write(`ssid: ${err.message}\n`)
  process.exit(1)
})
