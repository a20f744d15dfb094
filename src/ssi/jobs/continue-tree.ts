/**
 * Lets a process tree restored stopped (`criu restore --leave-stopped`) run: SIGCONT to its root and
 * every descendant. A stopped tree cannot fork, so one walk of /proc finds all of it.
 */
import { readdirSync, readFileSync } from 'node:fs'

/** The pids of `root` and its descendants (children of every thread), root first. */
export function processTree (root: number): number[] {
  const pids: number[] = []
  const queue = [root]
  for (let pid = queue.shift(); pid !== undefined; pid = queue.shift()) {
    pids.push(pid)
    let tasks: string[]
    try { tasks = readdirSync(`/proc/${pid}/task`) } catch { continue } // gone meanwhile
    for (const tid of tasks) {
      try {
        const children = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim()
        if (children !== '') queue.push(...children.split(/\s+/).map(Number))
      } catch { /* the thread ended */ }
    }
  }
  return pids
}

/** SIGCONT to the whole tree under `root`; the number of processes signalled. */
export function continueTree (root: number): number {
  let signalled = 0
  for (const pid of processTree(root)) {
    try {
      process.kill(pid, 'SIGCONT')
      signalled++
    } catch { /* it ended meanwhile */ }
  }
  return signalled
}
