/**
 * `GET /runs/:id/events`: a run's transitions as Server-Sent Events, pushed
 * from the engine's own notifications (`engine.subscribe`), never polled.
 *
 * The stream is:
 *
 * 1. `event: snapshot` with the run's current {@linkcode RunSnapshot}, so a
 *    client that connects late starts from the present;
 * 2. `event: transition` with each committed {@linkcode EngineEvent} of the
 *    run, its `id` being the event's `seq`;
 * 3. `event: end` with the terminal status, after which the server closes
 *    the stream (clients should then call `EventSource.close()`, or the
 *    browser reconnects and is sent the final snapshot and `end` again).
 *
 * @module
 */
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import {
  type Engine,
  type EngineEvent,
  isTerminalRun,
  RunNotFoundError,
  type RunSnapshot,
} from "../mod.ts";

/** What {@linkcode runEventsRoutes} needs of an engine. */
export type EventsEngine = Pick<Engine, "get" | "subscribe">;

/** Options of {@linkcode runEventsRoutes}. */
export interface RunEventsOptions {
  /**
   * Ends every open stream when it aborts, such as on server shutdown, so
   * that a graceful shutdown does not wait for runs to finish. Clients
   * reconnect and get a fresh snapshot. @default {undefined} (never)
   */
  signal?: AbortSignal;
}

/** The SSE event names of the stream. */
export const RunStreamEvent = {
  /** The run's state when the client connected. */
  Snapshot: "snapshot",
  /** One committed transition of the run or of one of its steps. */
  Transition: "transition",
  /** The run is terminal; the stream closes. */
  End: "end",
} as const;
/** One of the {@linkcode RunStreamEvent} values. */
export type RunStreamEvent = typeof RunStreamEvent[keyof typeof RunStreamEvent];

/**
 * A Hono app serving `GET /runs/:id/events`. An unknown id is a 404 with
 * the JSON error body `{ error: { code: "not_found", message } }`. The
 * subscription ends when the run is terminal or the client goes away.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { createEngine, workflow } from "../mod.ts";
 * import { runEventsRoutes } from "./events.ts";
 * const hello = workflow("hello", { input: z.object({}) }).step("greet", () => "hi");
 * const kv = await Deno.openKv(":memory:");
 * const engine = await createEngine({ kv, workflows: [hello] });
 * const app = runEventsRoutes(engine);
 * const run = await engine.start("hello", {});
 * const res = await app.request(`/runs/${run.id}/events`);
 * const text = await res.text(); // ends once the run is terminal
 * assert.ok(text.includes("event: end"));
 * await engine.close();
 * kv.close();
 * ```
 */
export function runEventsRoutes(engine: EventsEngine, options: RunEventsOptions = {}): Hono {
  const { signal } = options;
  const app = new Hono();
  app.get("/runs/:id/events", async (c) => {
    const runId = c.req.param("id");
    // Subscribe before reading the snapshot so that nothing committed in
    // between is lost; a transition already reflected in the snapshot may be
    // sent again, which is harmless as each one carries its target state.
    const pending: EngineEvent[] = [];
    let wake: (() => void) | undefined;
    const unsubscribe = engine.subscribe((e) => {
      if (e.runId !== runId) return;
      pending.push(e);
      wake?.();
    });
    if (signal?.aborted) {
      unsubscribe();
      return c.json(
        { error: { code: "unavailable", message: "The server is shutting down" } },
        503,
      );
    }
    let snapshot: RunSnapshot;
    try {
      snapshot = await engine.get(runId);
    } catch (error) {
      unsubscribe();
      if (error instanceof RunNotFoundError) {
        return c.json({ error: { code: "not_found", message: error.message } }, 404);
      }
      throw error;
    }
    c.header("X-Accel-Buffering", "no");
    return streamSSE(c, async (stream) => {
      let aborted = false;
      const stop = () => {
        aborted = true;
        wake?.();
      };
      stream.onAbort(stop);
      signal?.addEventListener("abort", stop);
      try {
        await stream.writeSSE({
          event: RunStreamEvent.Snapshot,
          data: JSON.stringify(snapshot),
        });
        let status = snapshot.status;
        while (!aborted && !isTerminalRun(status)) {
          if (pending.length === 0) {
            await new Promise<void>((resolve) => wake = resolve);
            wake = undefined;
            continue;
          }
          const e = pending.shift()!;
          await stream.writeSSE({
            event: RunStreamEvent.Transition,
            id: String(e.event.seq),
            data: JSON.stringify(e),
          });
          if (e.event.type === "run") status = e.event.to;
        }
        if (!aborted) {
          await stream.writeSSE({ event: RunStreamEvent.End, data: JSON.stringify({ status }) });
        }
      } finally {
        signal?.removeEventListener("abort", stop);
        unsubscribe();
      }
    });
  });
  return app;
}
