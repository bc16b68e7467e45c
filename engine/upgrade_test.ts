import assert from "node:assert/strict";
import { CommitBatcher } from "./commit_batcher.ts";
import { keyLayout } from "./keys.ts";
import { LAYOUT_VERSION, upgradeLayout } from "./upgrade.ts";

const keys = keyLayout();

Deno.test("upgradeLayout turns layout 2's two lease keys into one 'held', for the same owner", async () => {
  using kv = await Deno.openKv(":memory:");
  const owned = (owner: string, runId: string) => [...keys.allOwned(), owner, runId];
  await kv.atomic()
    .set(keys.layoutVersion(), 2)
    // A run leased to w1, as layout 2 wrote it.
    .set(keys.active("r1"), { owner: "w1" })
    .set(owned("w1", "r1"), true)
    // A lease left behind: the run waits in the due index now.
    .set(keys.active("r2"), { dueAt: 9 })
    .set(keys.due(9, "r2"), true)
    .set(owned("w1", "r2"), true)
    .commit();
  assert.equal(await upgradeLayout(kv, keys, new CommitBatcher(kv), () => 5), 2);
  assert.deepEqual((await kv.get(keys.held("r1"))).value, { owner: "w1" });
  assert.equal((await kv.get(keys.active("r1"))).versionstamp, null);
  assert.equal((await kv.get(keys.held("r2"))).versionstamp, null);
  assert.deepEqual((await kv.get(keys.active("r2"))).value, { dueAt: 9 });
  assert.deepEqual(await Array.fromAsync(kv.list({ prefix: keys.allOwned() })), []);
  assert.equal((await kv.get(keys.layoutVersion())).value, LAYOUT_VERSION);
  assert.equal(await upgradeLayout(kv, keys, new CommitBatcher(kv), () => 5), 0);
});

Deno.test("upgradeLayout of a layout 2 file does not scan its due index for Weft 1 runs", async () => {
  using kv = await Deno.openKv(":memory:");
  let listed = 0;
  const counting = new Proxy(kv, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      if (name !== "list") return typeof value === "function" ? value.bind(target) : value;
      return (selector: Deno.KvListSelector, options?: Deno.KvListOptions) => {
        if ("prefix" in selector && selector.prefix.includes("active")) listed++;
        return target.list(selector, options);
      };
    },
  });
  await kv.set(keys.layoutVersion(), 2);
  await kv.set(keys.active("r1"), { dueAt: 9 });
  await upgradeLayout(counting, keys, new CommitBatcher(kv), () => 5);
  assert.equal(listed, 0);
  assert.deepEqual((await kv.get(keys.active("r1"))).value, { dueAt: 9 });
});
