/**
 * Lets a migration's target start `criu restore` before the images are there, so that CRIU's own
 * start (exec, then probing the kernel: ~40 ms of every run on a host whose /run is not tmpfs, and
 * CRIU's cache of those probes lives only on tmpfs) overlaps the dump and the transfer instead of
 * adding to the downtime.
 *
 * Of all the images CRIU reads `inventory.img` first. In the dir CRIU restores from it is at first
 * a FIFO that this hold keeps open read-write, so CRIU's open returns at once and its read waits.
 * `release` moves the received images in and hands CRIU the inventory: CRIU then restores as from
 * any complete dir. `abandon` gives it none: CRIU fails at once ("Unexpected EOF"), before it read
 * anything else or created any task.
 *
 * Both rename a regular file over the FIFO's name before they write to or close the FIFO: a CRIU
 * that comes to its open late finds that file, one that opened the FIFO reads through it, and none
 * ever waits in open() for a writer that is gone. Should this process die first (its fd closes), a
 * CRIU already reading sees EOF and fails; one not yet at its open (the first ~40 ms) waits there
 * until the daemon's next start kills it (src/node/stale-criu.ts).
 */
import { closeSync, constants, mkdirSync, openSync, readFileSync, readdirSync, renameSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { makeFifo } from '../native/fd-passing.js'

export const INVENTORY_IMAGE = 'inventory.img'
/** What one write to a pipe takes whole whatever the reader does (Linux's smallest pipe buffer). */
const PIPE_BYTES = 4096

export class InventoryHoldError extends Error {
  static override name = 'InventoryHoldError'
  override name = 'InventoryHoldError'
}

export class InventoryHold {
  private fd: number | undefined

  /** Creates `restoreDir` (it must not exist) holding only the FIFO. */
  constructor (readonly restoreDir: string) {
    mkdirSync(restoreDir, { mode: 0o700 })
    const fifo = join(restoreDir, INVENTORY_IMAGE)
    makeFifo(fifo, 0o600)
    this.fd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK)
  }

  /** True until released or abandoned. */
  get holding (): boolean { return this.fd !== undefined }

  /**
   * Moves every file of `receivedDir` into the restore dir (same filesystem: renames), the
   * inventory last, then lets CRIU read it.
   * @throws InventoryHoldError when the dir has no inventory or one too large for the pipe (CRIU's are ~100 bytes).
   */
  release (receivedDir: string): void {
    const fd = this.take()
    try {
      const inventory = join(receivedDir, INVENTORY_IMAGE)
      const bytes = readFileSync(inventory) // ENOENT: the images are not CRIU's
      if (bytes.byteLength > PIPE_BYTES) throw new InventoryHoldError(`${inventory} is ${bytes.byteLength} bytes, more than CRIU's inventory ever is`)
      for (const name of readdirSync(receivedDir)) {
        if (name !== INVENTORY_IMAGE) renameSync(join(receivedDir, name), join(this.restoreDir, name))
      }
      renameSync(inventory, join(this.restoreDir, INVENTORY_IMAGE))
      if (bytes.byteLength > 0 && writeSync(fd, bytes) !== bytes.byteLength) throw new InventoryHoldError('the inventory did not fit in the pipe')
    } catch (err) {
      this.emptyInventory()
      throw err
    } finally {
      closeSync(fd)
    }
  }

  /** CRIU gets no inventory and fails; no-op once released or abandoned. */
  abandon (): void {
    if (this.fd === undefined) return
    const fd = this.take()
    try {
      this.emptyInventory()
    } finally {
      closeSync(fd)
    }
  }

  private take (): number {
    const fd = this.fd
    if (fd === undefined) throw new InventoryHoldError('the inventory was already released or abandoned')
    this.fd = undefined
    return fd
  }

  /** An empty regular file over the FIFO's name (a CRIU opening it later fails reading it). */
  private emptyInventory (): void {
    const empty = join(this.restoreDir, `.${INVENTORY_IMAGE}.empty`)
    writeFileSync(empty, '', { mode: 0o600 })
    renameSync(empty, join(this.restoreDir, INVENTORY_IMAGE))
  }
}
