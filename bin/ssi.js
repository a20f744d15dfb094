#!/usr/bin/env node
// The `ssi` command as an ES module (package.json "type": "module"): hands over to bin/ssi.cjs, which
// picks the bundled or the plain tsc build. package.json "bin" points at bin/ssi, the sh launcher (faster).
import { createRequire } from 'node:module'

createRequire(import.meta.url)('./ssi.cjs')
