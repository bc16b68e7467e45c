/**
 * Carries a KV file written by an earlier Weft over to this layout, once per
 * KV, in the background, in bounded batches; a marker key says it is done,
 * so later starts read one key.
 *
 * - Weft 1 kept every unfinished run in memory and marked it with
 *   `active = true`; it had no due index. Each such run is put in the due
 *   index, due now, so a worker claims it.
 * - Layout 2 wrote a held run's lease twice: `active = { owner }` and
 *   `owned[owner, runId]`. Each becomes one `held = { owner }`, for the same
 *   owner, so a live holder keeps its run and a dead one's is reaped.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { CommitBatcher } from "./commit_batcher.ts";
import type { KeyLayout } from "./keys.ts";

const log = getLogger(["weft", "engine"]);

/** The layout version this engine writes. */
export const LAYOUT_VERSION = 3;

/**
 * Upgrades the leases of earlier layouts (see the module's text). Resolves
 * how many runs it moved.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CommitBatcher } from "./commit_batcher.ts";
 * import { keyLayout } from "./keys.ts";
 * import { upgradeLayout } from "./upgrade.ts";
 * const kv = await Deno.openKv(":memory:");
 * const keys = keyLayout();
 * await kv.set(keys.active("r1"), true);
 * assert.equal(await upgradeLayout(kv, keys, new CommitBatcher(kv), () => 5), 1);
 * assert.deepEqual((await kv.get(keys.active("r1"))).value, { dueAt: 5 });
 * assert.equal(await upgradeLayout(kv, keys, new CommitBatcher(kv), () => 5), 0);
 * kv.close();
 * ```
 */
export async function upgradeLayout(
  kv: Deno.Kv,
  keys: KeyLayout,
  batcher: CommitBatcher,
  now: () => number,
): Promise<number> {
  const marker = keys.layoutVersion();
  const version = (await kv.get(marker)).value;
  if (version === LAYOUT_VERSION) return 0;
  let moved = 0;
  let batch: Promise<boolean>[] = [];
  const flush = async () => {
    moved += (await Promise.all(batch)).filter(Boolean).length;
    batch = [];
  };
  const add = async (write: Promise<boolean>) => {
    batch.push(write);
    if (batch.length >= 50) await flush();
  };
  // A file marked as layout 2 has no Weft 1 runs: its (maybe long) due index is not scanned.
  if (version !== 2) {
    for await (const entry of kv.list({ prefix: keys.actives() })) {
      if (entry.value !== true) continue;
      const runId = String(entry.key.at(-1));
      const dueAt = now();
      await add(batcher.write({
        checks: [{ key: entry.key, versionstamp: entry.versionstamp }],
        sets: [[entry.key, { dueAt }], [keys.due(dueAt, runId), true]],
      }));
    }
  }
  // Layout 2's leases: few, as each was a run in a worker's memory.
  for await (const owned of kv.list({ prefix: keys.allOwned() })) {
    const owner = String(owned.key.at(-2));
    const runId = String(owned.key.at(-1));
    const active = await kv.get(keys.active(runId));
    const names = (active.value as { owner?: unknown } | null)?.owner === owner;
    await add(batcher.write({
      checks: [owned, active],
      deletes: names ? [owned.key, active.key] : [owned.key],
      // A lease whose `active` no longer names its owner was left behind: dropped.
      sets: names ? [[keys.held(runId), { owner }]] : [],
    }));
  }
  await flush();
  await batcher.write({ sets: [[marker, LAYOUT_VERSION]] });
  if (moved > 0) log.info("Moved {moved} runs' leases of an earlier layout", { moved });
  return moved;
}
