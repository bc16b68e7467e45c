/**
 * Claims due work from the due index. Unfinished runs that no worker holds
 * wait in `[p, "due", dueMs, runId]`; a claim round lists the head of the
 * index up to now (one ranged `list`, cheap when nothing is due), and claims
 * as many runs as this worker has room for, each in a write that checks the
 * due entry it read, deletes it and writes this worker's lease. Claims are
 * group-committed, so a round of 100 claims costs about one commit. Rounds
 * run when a slot frees, when a local timer for the earliest known due time
 * fires, when the KV queue's alarm arrives, and on a poll (other processes'
 * writes wake nobody here).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Activity } from "./activity.ts";
import type { Clock, TimerHandle } from "./clock.ts";
import type { CommitBatcher } from "./commit_batcher.ts";
import { FencedError } from "./errors.ts";
import { type KeyLayout, PARKED_MS } from "./keys.ts";

const log = getLogger(["weft", "dispatch"]);

/** What {@linkcode Dispatcher} works with. */
export interface DispatcherOptions {
  /** The KV. */
  kv: Deno.Kv;
  /** The key layout. */
  keys: KeyLayout;
  /** Claims go through it, under this worker's fence. */
  batcher: CommitBatcher;
  /** The source of time. */
  clock: Clock;
  /** This worker's id, the owner of what it claims. */
  owner(): string;
  /** How many runs this worker may claim now. */
  capacity(): number;
  /** Loads and carries on claimed runs. */
  claimed(claims: Claim[]): Promise<void>;
  /** Called on each poll, after the claim round (the inbox is read there). */
  onPoll?: () => Promise<void>;
  /** How often the index is polled. */
  pollIntervalMs: number;
  /** Most runs claimed in one round. @default {500} */
  maxClaims?: number;
  /** Counts rounds and polls in progress as work in flight. @default {undefined} */
  activity?: Activity;
}

/** A run just claimed, with what its due entry says of it. */
export interface Claim {
  /** The run. */
  runId: string;
  /** The `seq` of its next history event, when the entry carries it (saves a read). */
  nextSeq?: number;
  /** Its workflow, when the entry carries it (its records are read at once). */
  workflow?: string;
}

/** The claim's KV write for one due entry. */
export function claimOp(keys: KeyLayout, owner: string, entry: Deno.KvEntry<unknown>) {
  const runId = String(entry.key.at(-1));
  return {
    checks: [{ key: entry.key, versionstamp: entry.versionstamp }],
    deletes: [entry.key, keys.active(runId)],
    sets: [[keys.held(runId), { owner }]] as [Deno.KvKey, unknown][],
  };
}

/**
 * Claims due runs for one worker. Built by `createEngine`.
 */
export class Dispatcher {
  readonly #o: DispatcherOptions;
  readonly #maxClaims: number;
  #round: Promise<void> | undefined;
  #again = false;
  #wakeTimer: TimerHandle | undefined;
  #wakeAt = Infinity;
  #pollTimer: TimerHandle | undefined;
  #first: ReturnType<typeof setTimeout> | undefined;
  #endFirst: (() => void) | undefined;
  #stopped = true;
  /** The last round found nothing due, and nothing became due here since. */
  #nothingDue = false;
  /** Runs claimed so far. */
  claims = 0;
  /** Claims lost to another worker. */
  lost = 0;

  /** Creates the dispatcher, stopped. */
  constructor(options: DispatcherOptions) {
    this.#o = options;
    this.#maxClaims = options.maxClaims ?? 500;
  }

  /**
   * Starts polling, with a first round on the next turn of the event loop:
   * after whoever started it went on (`createEngine` reads nothing itself).
   */
  start(): void {
    this.#stopped = false;
    const end = this.#o.activity?.begin();
    this.#endFirst = end;
    this.#first = setTimeout(() => {
      this.#first = undefined;
      this.wake();
      end?.();
    }, 0);
    this.#schedulePoll();
  }

  /** Stops every timer; a round in flight finishes. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#first);
    this.#endFirst?.();
    if (this.#pollTimer) this.#o.clock.clearTimeout(this.#pollTimer);
    if (this.#wakeTimer) this.#o.clock.clearTimeout(this.#wakeTimer);
    this.#pollTimer = this.#wakeTimer = undefined;
    this.#wakeAt = Infinity;
    while (this.#round) await this.#round;
  }

  /** A slot is free: runs a round unless the last one found nothing due. */
  nudge(): void {
    if (!this.#nothingDue) this.wake();
  }

  /** Runs a claim round soon; rounds never overlap. */
  wake(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    this.#nothingDue = false;
    if (this.#round) {
      this.#again = true;
      return this.#round;
    }
    this.#round = this.#rounds().finally(() => this.#round = undefined);
    return this.#round;
  }

  /** Makes sure a round runs at `dueAt` (a run this worker made due then). */
  wakeAt(dueAt: number): void {
    if (this.#stopped) return;
    const now = this.#o.clock.now();
    if (dueAt <= now) {
      this.wake();
      return;
    }
    if (dueAt >= this.#wakeAt) return;
    if (this.#wakeTimer) this.#o.clock.clearTimeout(this.#wakeTimer);
    this.#wakeAt = dueAt;
    this.#wakeTimer = this.#o.clock.setTimeout(() => {
      this.#wakeTimer = undefined;
      this.#wakeAt = Infinity;
      this.wake();
    }, dueAt - now);
  }

  #schedulePoll(): void {
    if (this.#stopped) return;
    this.#pollTimer = this.#o.clock.setTimeout(async () => {
      this.#pollTimer = undefined;
      const end = this.#o.activity?.begin();
      try {
        await this.wake();
        await this.#o.onPoll?.();
      } catch (error) {
        log.error("Poll failed: {error}", { error });
      } finally {
        end?.();
      }
      this.#schedulePoll();
    }, this.#o.pollIntervalMs);
  }

  async #rounds(): Promise<void> {
    const end = this.#o.activity?.begin();
    try {
      do {
        this.#again = false;
        if (await this.#claimRound()) this.#again = true;
      } while (this.#again && !this.#stopped);
    } catch (error) {
      if (!(error instanceof FencedError)) log.error("Claim round failed: {error}", { error });
    } finally {
      end?.();
    }
  }

  /** One round; resolves whether more may be due. */
  async #claimRound(): Promise<boolean> {
    const { kv, keys, clock } = this.#o;
    const room = Math.min(this.#o.capacity(), this.#maxClaims);
    const now = clock.now();
    if (room <= 0) return false;
    const listed: Deno.KvEntry<unknown>[] = [];
    // Twice the room, taken at random: workers polling together rarely pick the same run.
    const limit = room * 2;
    for await (
      const e of kv.list({ prefix: keys.dueIndex(), end: keys.dueBefore(now + 1) }, { limit })
    ) listed.push(e);
    if (listed.length === 0) {
      this.#nothingDue = true;
      await this.#armNext(now);
      return false;
    }
    const picked = listed.length <= room ? listed : sample(listed, room);
    const owner = this.#o.owner();
    // Every claim that landed is carried on, even if another write of the
    // round failed: a lease of this live worker is reaped by nobody.
    const results = await Promise.allSettled(
      picked.map((e) => this.#o.batcher.write(claimOp(keys, owner, e))),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    const claims: Claim[] = [];
    results.forEach((result, i) => {
      if (result.status === "rejected") return;
      if (!result.value) return void this.lost++;
      const value = picked[i].value as { seq?: unknown; wf?: unknown } | null;
      const claim: Claim = { runId: String(picked[i].key.at(-1)) };
      if (typeof value?.seq === "number") claim.nextSeq = value.seq;
      if (typeof value?.wf === "string") claim.workflow = value.wf;
      claims.push(claim);
    });
    this.claims += claims.length;
    if (claims.length > 0) await this.#o.claimed(claims);
    if (failed) throw failed.reason;
    return listed.length === limit || picked.length < listed.length ||
      claims.length < picked.length;
  }

  /** Arms the local timer for the earliest entry due after `now`. */
  async #armNext(now: number): Promise<void> {
    const { kv, keys } = this.#o;
    for await (
      const e of kv.list({ start: keys.dueBefore(now + 1), end: keys.dueBefore(PARKED_MS) }, {
        limit: 1,
      })
    ) {
      const dueAt = e.key.at(-2);
      if (typeof dueAt === "number") this.wakeAt(dueAt);
    }
  }
}

/** `n` entries of `list` at random, in their order. */
function sample<T>(list: T[], n: number): T[] {
  const idx = list.map((_, i) => i);
  for (let i = idx.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, n).sort((a, b) => a - b).map((i) => list[i]);
}
