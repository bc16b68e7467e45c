/**
 * Carries a KV file written by Weft 1 over to this layout. Weft 1 kept every
 * unfinished run in memory and marked it with `active = true`; it had no due
 * index. Each such run is put in the due index, due now, so a worker claims
 * it. This runs once per KV, in the background, in bounded batches; a marker
 * key says it is done, so later starts read one key.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { CommitBatcher } from "./commit_batcher.ts";
import type { KeyLayout } from "./keys.ts";

const log = getLogger(["weft", "engine"]);

/** The layout version this engine writes. */
export const LAYOUT_VERSION = 2;

/**
 * Puts every run that Weft 1 left unfinished in the due index. Resolves how
 * many it moved.
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
  if ((await kv.get(marker)).value === LAYOUT_VERSION) return 0;
  let moved = 0;
  let batch: Promise<boolean>[] = [];
  const flush = async () => {
    moved += (await Promise.all(batch)).filter(Boolean).length;
    batch = [];
  };
  for await (const entry of kv.list({ prefix: keys.actives() })) {
    if (entry.value !== true) continue;
    const runId = String(entry.key.at(-1));
    const dueAt = now();
    batch.push(batcher.write({
      checks: [{ key: entry.key, versionstamp: entry.versionstamp }],
      sets: [[entry.key, { dueAt }], [keys.due(dueAt, runId), true]],
    }));
    if (batch.length >= 50) await flush();
  }
  await flush();
  await batcher.write({ sets: [[marker, LAYOUT_VERSION]] });
  if (moved > 0) log.info("Moved {moved} unfinished runs of Weft 1 to the due index", { moved });
  return moved;
}
