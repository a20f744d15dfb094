/**
 * commander, loaded the cheapest way. It is CommonJS: require() skips the ESM wrapper and
 * cjs-module-lexer (~6 ms of start-up). The bundle (scripts/bundle-cli.mjs) replaces this module
 * with a plain re-export, so there commander is inlined and no CommonJS loading happens at all.
 */
import { createRequire } from 'node:module'
import type * as CommanderModule from 'commander'

export const { Command, CommanderError } = createRequire(import.meta.url)('commander') as typeof CommanderModule
