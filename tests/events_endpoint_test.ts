/**
 * Handler tests of `POST /runs/:id/events/:event` through `app.request()`:
 * what it answers for a good event, a repeated key, bad payloads and bodies,
 * unknown runs and events, finished and compensating runs, a missing token
 * and a cross-origin browser; and that the event it stores ends the wait,
 * while a refused one stores nothing.
 */
import assert from "node:assert/strict";
import { NonRetryableError, workflow } from "../mod.ts";
import { keyLayout } from "../engine/keys.ts";
import type { AppOptions } from "../http/app.ts";
import { RunSnapshotSchema, SignalResultSchema } from "../http/schemas.ts";
import { waitFor } from "./_helpers.ts";
import { approvalWorkflow, lateWaitWorkflow } from "./fixtures/wait_workflows.ts";
import { type AppHarness as Harness, appHarness, fails, ok, TOKEN, UNKNOWN_ID } from "./_app.ts";

const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/** Workflows made per test, so no test shares a gate with another. */
function testWorkflows() {
  const gate = Promise.withResolvers<void>();
  // Its wait begins only once the gate opens.
  const late = lateWaitWorkflow("late", gate.promise);
  // Fails at once and stays compensating until the gate opens.
  const undo = workflow("undo")
    .step("book", { compensate: async () => await gate.promise }, () => "booked")
    .waitForEvent("confirm", { needs: ["book"], event: "confirmed" })
    .step("charge", { needs: ["book"], retry: { maxAttempts: 1 } }, () => {
      throw new NonRetryableError("card declined");
    });
  return { gate, workflows: [approvalWorkflow(), late, undo] };
}

/** The app over this file's workflows; the gate holds their slow steps and compensations. */
function setup(options: Omit<AppOptions, "engine"> = {}): Promise<Harness> {
  return appHarness(testWorkflows(), options);
}

function send(
  h: Harness,
  runId: string,
  event: string,
  body: BodyInit | undefined,
  headers: Record<string, string> = {},
): Promise<Response> {
  return Promise.resolve(h.app.request(`/runs/${runId}/events/${event}`, {
    method: "POST",
    body,
    headers: { "content-type": "application/json", ...headers },
  }));
}

/** Starts an `approval` run and waits until it waits for its event. */
async function awaiting(h: Harness, doc = "d1"): Promise<string> {
  const { id } = await h.engine.start("approval", { doc });
  await waitFor(
    async () => (await h.engine.get(id)).steps.decision.status === "awaiting",
    "the run to wait for its event",
  );
  return id;
}

/** The events stored in a run's mailbox and not yet taken. */
async function mailbox(h: Harness, runId: string): Promise<unknown[]> {
  const entries = await Array.fromAsync(h.kv.list({ prefix: keyLayout().events(runId) }));
  return entries.map((e) => e.value);
}

/** Asserts the run still waits, with nothing stored for it: a refused request changed nothing. */
async function untouched(h: Harness, runId: string): Promise<void> {
  const run = await h.engine.get(runId);
  assert.equal(run.status, "running");
  assert.equal(run.steps.decision.status, "awaiting");
  assert.deepEqual(await mailbox(h, runId), []);
}

Deno.test("POST /runs/:id/events/:event stores the event with 202, and it ends the wait", async (t) => {
  await using h = await setup();
  const id = await awaiting(h);
  const payload = { approved: true, by: "ada" };
  let eventId = "";
  await t.step("202 with the event's id", async () => {
    const res = await send(h, id, "decided", JSON.stringify(payload), { "idempotency-key": "k1" });
    const sent = await ok(res, 202, SignalResultSchema);
    assert.equal(sent.runId, id);
    assert.equal(sent.event, "decided");
    assert.equal(sent.duplicate, false);
    assert.match(sent.eventId, ULID);
    eventId = sent.eventId;
  });
  await t.step("the run's result carries the payload", async () => {
    const res = await h.app.request(`/runs/${id}/wait?timeoutMs=5000`);
    const run = await ok(res, 200, RunSnapshotSchema);
    assert.equal(run.status, "succeeded");
    assert.equal(run.output, "approved by ada");
    const decision = run.steps.decision.output as { timedOut: boolean; payload: unknown };
    assert.equal(decision.timedOut, false);
    assert.deepEqual(decision.payload, payload);
    assert.deepEqual(await mailbox(h, id), [], "the event was taken");
  });
  await t.step(
    "the same Idempotency-Key again is 200 duplicate, and delivers nothing",
    async () => {
      const res = await send(h, id, "decided", JSON.stringify({ approved: false, by: "bo" }), {
        "idempotency-key": "k1",
      });
      const again = await ok(res, 200, SignalResultSchema);
      assert.deepEqual(again, { runId: id, event: "decided", eventId, duplicate: true });
      assert.deepEqual(await mailbox(h, id), []);
      const run = await h.engine.get(id);
      assert.equal(run.output, "approved by ada");
    },
  );
  await t.step("a new event for the finished run is 409", async () => {
    const error = await fails(
      await send(h, id, "decided", JSON.stringify(payload), { "idempotency-key": "k2" }),
      409,
      "conflict",
    );
    assert.match(error.message, /Cannot send event 'decided' to run .* already finished/);
    assert.deepEqual(await mailbox(h, id), []);
  });
});

Deno.test("POST /runs/:id/events/:event repeats a key's answer while the run still waits", async () => {
  await using h = await setup();
  // Its wait has not begun: the event is kept, and the key is already taken.
  const { id } = await h.engine.start("late", null);
  const first = await ok(
    await send(h, id, "go", '{"n":7}', { "idempotency-key": "g" }),
    202,
    SignalResultSchema,
  );
  const again = await ok(
    await send(h, id, "go", '{"n":8}', { "idempotency-key": "g" }),
    200,
    SignalResultSchema,
  );
  assert.equal(again.duplicate, true);
  assert.equal(again.eventId, first.eventId);
  assert.equal((await mailbox(h, id)).length, 1);
  assert.notEqual((await h.engine.get(id)).steps.go.status, "succeeded");
  h.openGate();
  const done = await h.engine.result(id);
  assert.equal(done.status, "succeeded");
  assert.equal(done.output, 7);
  assert.deepEqual(await mailbox(h, id), []);
});

Deno.test("POST /runs/:id/events/:event answers 400 for a bad payload or body, storing nothing", async (t) => {
  await using h = await setup();
  const id = await awaiting(h);
  await t.step("a payload that does not match the schema: zod's issues", async () => {
    const error = await fails(
      await send(h, id, "decided", '{"approved":"yes"}'),
      400,
      "invalid_input",
    );
    assert.match(error.message, /payload for event 'decided' of workflow 'approval'/);
    assert.deepEqual(error.issues?.map((i) => [i.code, i.path]), [
      ["invalid_type", ["approved"]],
      ["invalid_type", ["by"]],
    ]);
    await fails(await send(h, id, "decided", "[1,2]"), 400, "invalid_input");
  });
  await t.step("a body that is not JSON", async () => {
    for (const body of ["{", '{"approved": tru}', "", "   "]) {
      const error = await fails(await send(h, id, "decided", body), 400, "invalid_json");
      assert.match(error.message, /not valid JSON|empty/);
    }
    await fails(
      await send(h, id, "decided", "<x/>", { "content-type": "application/xml" }),
      400,
      "invalid_json",
    );
  });
  await t.step("a malformed event name or Idempotency-Key", async () => {
    const body = '{"approved":true,"by":"x"}';
    const badEvent = await fails(await send(h, id, "a%20b", body), 400, "invalid_input");
    assert.deepEqual(badEvent.issues?.[0].path, ["event"]);
    const badKey = await fails(
      await send(h, id, "decided", body, { "idempotency-key": "k".repeat(513) }),
      400,
      "invalid_input",
    );
    assert.deepEqual(badKey.issues?.[0].path, ["Idempotency-Key"]);
  });
  await t.step("a payload over the size limit is 413", async () => {
    const big = JSON.stringify({ approved: true, by: "x".repeat(3000) });
    await fails(await send(h, id, "decided", big), 413, "payload_too_large");
    await fails(await send(h, id, "decided", "x".repeat(9000)), 413, "payload_too_large");
  });
  await t.step("none of them reached the run", () => untouched(h, id));
});

Deno.test("POST /runs/:id/events/:event answers 404 for an unknown or malformed run id, or an event nobody waits for", async () => {
  await using h = await setup();
  const id = await awaiting(h);
  const body = '{"approved":true,"by":"x"}';
  const unknownRun = await fails(await send(h, UNKNOWN_ID, "decided", body), 404, "not_found");
  assert.match(unknownRun.message, new RegExp(UNKNOWN_ID));
  // An id that is no run id names no run either, whatever it looks like.
  for (const bad of ["not-a-run", id.toLowerCase(), `..%2F${id}`]) {
    const error = await fails(await send(h, bad, "decided", body), 404, "not_found");
    assert.match(error.message, /run ids are 26-character ULIDs/);
  }
  const unknownEvent = await fails(await send(h, id, "approved", body), 404, "not_found");
  assert.match(unknownEvent.message, /no step that waits for event 'approved'/);
  await untouched(h, id);
});

Deno.test("POST /runs/:id/events/:event answers 409 for a run that is compensating", async () => {
  await using h = await setup();
  const { id } = await h.engine.start("undo", null);
  await waitFor(async () => (await h.engine.get(id)).status === "compensating", "compensating");
  const error = await fails(await send(h, id, "confirmed", "true"), 409, "conflict");
  assert.match(error.message, /compensating/);
  assert.deepEqual(await mailbox(h, id), []);
  h.openGate();
  assert.equal((await h.engine.result(id)).status, "failed");
});

Deno.test("POST /runs/:id/events/:event requires the token, like the other routes", async () => {
  await using h = await setup({ token: TOKEN });
  const id = await awaiting(h);
  const body = '{"approved":false,"by":"cy"}';
  for (const authorization of [undefined, "Bearer wrong", TOKEN, `Basic ${btoa(`u:${TOKEN}`)}`]) {
    const res = await send(h, id, "decided", body, authorization ? { authorization } : {});
    await fails(res, 401, "unauthorized");
    assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="weft"');
  }
  await untouched(h, id);
  const res = await send(h, id, "decided", body, { authorization: `Bearer ${TOKEN}` });
  await ok(res, 202, SignalResultSchema);
  assert.equal((await h.engine.result(id)).output, "rejected by cy");
});

Deno.test("POST /runs/:id/events/:event refuses a cross-origin browser request with 403", async () => {
  await using h = await setup();
  const id = await awaiting(h);
  const body = '{"approved":true,"by":"mallory"}';
  for (
    const headers of [
      { origin: "https://evil.example" } as Record<string, string>,
      { "sec-fetch-site": "cross-site" },
      { origin: "null" },
    ]
  ) {
    await fails(await send(h, id, "decided", body, headers), 403, "forbidden");
  }
  await untouched(h, id);
  const same = await send(h, id, "decided", '{"approved":true,"by":"ada"}', {
    origin: "http://localhost",
  });
  await ok(same, 202, SignalResultSchema);
  assert.equal((await h.engine.result(id)).output, "approved by ada");
});
