#!/usr/bin/env node
// The `ssi` command as an ES module (package.json "type": "module"): hands over to bin/ssi.cjs, which
// picks the bundled or the plain tsc build. Pointing "bin" at bin/ssi.cjs directly starts ~6 ms faster.
import { createRequire } from 'node:module'

createRequire(import.meta.url)('./ssi.cjs')
