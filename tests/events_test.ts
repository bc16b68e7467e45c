import assert from "node:assert/strict";
import { Hono } from "hono";
import { z } from "zod";
import { type EngineEvent, type RunSnapshot, workflow } from "../mod.ts";
import { type EventsEngine, mountObservability, runEventsRoutes } from "../observability/mod.ts";
import { deferred, testEngine, waitFor } from "./_helpers.ts";
import { sseMessages } from "./_sse.ts";

/** A workflow whose middle step runs until the test opens its gate. */
function gated() {
  const gate = deferred<string>();
  // Resolves once `held` runs, which is after its transitions were committed and emitted.
  const started = deferred();
  const wf = workflow("gated", { input: z.object({ n: z.number() }) })
    .step("first", () => "one")
    .step("held", { needs: ["first"] }, async () => {
      started.resolve();
      return await gate.promise;
    })
    .step("last", { needs: ["held"] }, ({ results }) => `${results.held}!`);
  return { gate, started, wf };
}

/** An engine whose subscriptions can be counted, to see them released. */
function counting(engine: EventsEngine) {
  let active = 0;
  const wrapped: EventsEngine = {
    get: (id) => engine.get(id),
    subscribe(listener) {
      active++;
      const off = engine.subscribe(listener);
      let done = false;
      return () => {
        if (!done) active--;
        done = true;
        off();
      };
    },
  };
  return { wrapped, active: () => active };
}

Deno.test("run events stream the snapshot, every transition in order, then end", async (t) => {
  const { gate, started, wf } = gated();
  await using te = await testEngine([wf]);
  const app = new Hono();
  mountObservability(app, { engine: te.engine, dashboard: false }).close();
  const run = await te.engine.start("gated", { n: 1 });
  await started.promise;

  const res = await app.request(`/runs/${run.id}/events`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/event-stream");
  const messages = sseMessages(res.body!);

  await t.step("the current state comes first", async () => {
    const first = (await messages.next()).value!;
    assert.equal(first.event, "snapshot");
    const snapshot: RunSnapshot = JSON.parse(first.data);
    assert.equal(snapshot.id, run.id);
    assert.equal(snapshot.status, "running");
    assert.equal(snapshot.steps.first.status, "succeeded");
    assert.equal(snapshot.steps.held.status, "running");
  });

  await t.step("then each committed transition, then end and close", async () => {
    gate.resolve("two");
    const transitions: EngineEvent[] = [];
    let end: unknown;
    for await (const m of messages) {
      if (m.event === "transition") {
        const e: EngineEvent = JSON.parse(m.data);
        assert.equal(m.id, String(e.event.seq));
        transitions.push(e);
      } else if (m.event === "end") end = JSON.parse(m.data);
      else assert.fail(`unexpected event ${m.event}`);
    }
    assert.deepEqual(end, { status: "succeeded" });
    assert.ok(transitions.every((e) => e.runId === run.id && e.workflow === "gated"));
    const seqs = transitions.map((e) => e.event.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
    const changes = transitions.map((e) =>
      e.event.type === "step" ? `${e.event.step}:${e.event.to}` : `run:${e.event.to}`
    );
    assert.deepEqual(changes, [
      "held:succeeded",
      "last:running",
      "last:succeeded",
      "run:succeeded",
    ]);
  });
});

Deno.test("run events of another run are not sent", async () => {
  const { gate, wf } = gated();
  await using te = await testEngine([wf]);
  const app = new Hono();
  mountObservability(app, { engine: te.engine, dashboard: false }).close();
  const a = await te.engine.start("gated", { n: 1 });
  const res = await app.request(`/runs/${a.id}/events`);
  const messages = sseMessages(res.body!);
  assert.equal((await messages.next()).value!.event, "snapshot");
  const b = await te.engine.start("gated", { n: 2 });
  gate.resolve("x");
  await te.engine.result(b.id);
  for await (const m of messages) {
    if (m.event === "transition") assert.equal(JSON.parse(m.data).runId, a.id);
  }
  assert.equal((await te.engine.get(a.id)).status, "succeeded");
});

Deno.test("run events of a finished run are its snapshot and end", async () => {
  const wf = workflow("quick", { input: z.object({}) }).step("only", () => 42);
  await using te = await testEngine([wf]);
  const app = new Hono();
  mountObservability(app, { engine: te.engine, dashboard: false }).close();
  const run = await te.engine.start("quick", {});
  await te.engine.result(run.id);
  const res = await app.request(`/runs/${run.id}/events`);
  const all = [];
  for await (const m of sseMessages(res.body!)) all.push(m);
  assert.deepEqual(all.map((m) => m.event), ["snapshot", "end"]);
  assert.equal(JSON.parse(all[0].data).steps.only.output, 42);
  assert.deepEqual(JSON.parse(all[1].data), { status: "succeeded" });
});

Deno.test("run events of an unknown run are a 404 JSON error and hold no subscription", async () => {
  const wf = workflow("quick", { input: z.object({}) }).step("only", () => 42);
  await using te = await testEngine([wf]);
  const { wrapped, active } = counting(te.engine);
  const res = await runEventsRoutes(wrapped).request("/runs/nope/events");
  assert.equal(res.status, 404);
  const body = await res.json();
  assert.equal(body.error.code, "not_found");
  assert.match(body.error.message, /nope/);
  assert.equal(active(), 0);
});

Deno.test("run events release the subscription when the client goes away", async () => {
  const { gate, wf } = gated();
  await using te = await testEngine([wf]);
  const { wrapped, active } = counting(te.engine);
  const app = runEventsRoutes(wrapped);
  const run = await te.engine.start("gated", { n: 1 });
  const res = await app.request(`/runs/${run.id}/events`);
  const messages = sseMessages(res.body!);
  assert.equal((await messages.next()).value!.event, "snapshot");
  assert.equal(active(), 1);
  await messages.return(undefined); // cancels the body, as a closed tab does
  await waitFor(() => active() === 0, "the subscription to be released");
  gate.resolve("done");
  await te.engine.result(run.id);
});

Deno.test("run events end open streams when the shutdown signal aborts", async () => {
  const { gate, started, wf } = gated();
  await using te = await testEngine([wf]);
  const shutdown = new AbortController();
  const { wrapped, active } = counting(te.engine);
  const app = runEventsRoutes(wrapped, { signal: shutdown.signal });
  const run = await te.engine.start("gated", { n: 1 });
  await started.promise;
  const res = await app.request(`/runs/${run.id}/events`);
  const events: string[] = [];
  const reading = (async () => {
    for await (const m of sseMessages(res.body!)) events.push(m.event);
  })();
  await waitFor(() => events.length === 1, "the snapshot");
  shutdown.abort();
  await reading;
  assert.deepEqual(events, ["snapshot"]);
  assert.equal(active(), 0);
  const late = await app.request(`/runs/${run.id}/events`);
  assert.equal(late.status, 503);
  await late.body?.cancel();
  gate.resolve("done");
  await te.engine.result(run.id);
});
