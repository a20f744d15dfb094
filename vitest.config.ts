import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests start real daemons bound to fixed loopback ports and cgroups: run files one at a time.
    fileParallelism: false,
    setupFiles: ['test/setup.ts']
  }
})
