/**
 * One KV queue listener per KV handle, shared by the engines that use it in
 * turn. Deno allows a single `listenQueue` per handle (a second one
 * mis-delivers, see KV_FACTS) and a listener cannot be stopped without
 * closing the handle, so an engine that is closed and replaced on the same
 * handle (a restart in tests, a reload in an app) must reuse the listener.
 * The map is keyed weakly by the handle, which is exactly the runtime
 * resource whose single listener it tracks.
 *
 * @module
 */

type Handler = (message: unknown) => void;

const listeners = new WeakMap<Deno.Kv, { handler: Handler | undefined }>();

/**
 * Routes `kv`'s queue messages to `handler` until the returned function is
 * called. Messages that arrive with no handler attached are acknowledged and
 * dropped: everything they could wake is found again by recovery at start-up.
 *
 * @throws {Error} when another handler is attached to the same handle.
 *
 * @example
 * ```ts
 * import { attachQueueHandler } from "./queue_listener.ts";
 * const kv = await Deno.openKv(":memory:");
 * const detach = attachQueueHandler(kv, () => {}, () => {});
 * detach();
 * kv.close();
 * ```
 */
export function attachQueueHandler(
  kv: Deno.Kv,
  handler: Handler,
  onListenerError: (error: unknown) => void,
): () => void {
  let slot = listeners.get(kv);
  if (!slot) {
    const created: { handler: Handler | undefined } = { handler: undefined };
    slot = created;
    listeners.set(kv, created);
    kv.listenQueue((message) => created.handler?.(message)).catch(onListenerError);
  }
  if (slot.handler) {
    throw new Error("Cannot attach a second engine to this KV handle's queue: close the first one");
  }
  slot.handler = handler;
  const owned = slot;
  return () => {
    if (owned.handler === handler) owned.handler = undefined;
  };
}
