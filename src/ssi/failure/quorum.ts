/**
 * Majority agreement on dead nodes: a node is dead for job purposes only when more than half of the
 * configured cluster sees it dead, counting each voter's own local view. A partition's minority can
 * never reach that count, so it never declares the other side's jobs lost.
 */

/** Votes needed out of `clusterSize` configured nodes. */
export function majorityOf (clusterSize: number): number {
  return Math.floor(clusterSize / 2) + 1
}

/**
 * Votes for each of `candidates` (nodes this node sees dead): this node's own vote plus every
 * reachable peer whose view lists the candidate dead.
 */
export function tallyVotes (candidates: readonly string[], peerViews: ReadonlyArray<readonly string[]>): Map<string, number> {
  const votes = new Map<string, number>()
  for (const c of candidates) votes.set(c, 1 + peerViews.filter(v => v.includes(c)).length)
  return votes
}

/** The candidates with a majority of `clusterSize`. */
export function confirmedDead (votes: ReadonlyMap<string, number>, clusterSize: number): string[] {
  const need = majorityOf(clusterSize)
  return [...votes].filter(([, n]) => n >= need).map(([name]) => name)
}
