/**
 * A run's workflow DAG as inline SVG, laid out by dagre (left to right) and
 * coloured by each step's state through `data-status` and the stylesheet.
 * Each kind of step has its own shape (`data-kind`); compensations and the
 * `onFailure` handler are drawn in a lane of their own below the workflow's
 * steps.
 *
 * @module
 */
import dagre from "@dagrejs/dagre";
import type { RunSnapshot, StepSnapshot, StepStatus } from "../mod.ts";
import type { HtmlEscapedString } from "hono/utils/html";
import { formatDateTime } from "./format.ts";

/** A map step's progress: how many of its items ended which way. */
export interface MapCounts {
  /** Items in all. */
  total: number;
  /** Items whose result is committed. */
  succeeded: number;
  /** Items that failed for good. */
  failed: number;
  /** Items with an attempt in flight. */
  running: number;
}

/**
 * What the dashboard reads of a step beyond the fields every step has. The
 * `map` and `child` kinds, with `map` and `childRunId`, are read when the
 * snapshot carries them.
 */
export interface StepView {
  /** `task`, `sleep`, `wait`, `map` or `child`; a step without one is a `task`. */
  kind: string;
  /** `"compensation"` for compensations and `onFailure`, else `"forward"`. */
  phase: "forward" | "compensation";
  /** A map step's counts. */
  map?: MapCounts;
  /** A child step's run. */
  childRunId?: string;
}

/**
 * Reads a step's kind, phase and the kind-specific fields.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { stepView } from "./dag.tsx";
 * const view = stepView({ status: "pending", kind: "sleep", attempts: 0, needs: [], errors: [] });
 * assert.ok(view.kind === "sleep" && view.phase === "forward");
 * ```
 */
export function stepView(step: StepSnapshot): StepView {
  const s = step as StepSnapshot & { kind?: string; map?: unknown; childRunId?: unknown };
  const map = s.map as Partial<MapCounts> | undefined;
  const counts = map && typeof map === "object" &&
      [map.total, map.succeeded, map.failed, map.running].every((n) => typeof n === "number")
    ? map as MapCounts
    : undefined;
  return {
    kind: typeof s.kind === "string" ? s.kind : "task",
    phase: s.phase === "compensation" ? "compensation" : "forward",
    ...(counts ? { map: counts } : {}),
    ...(typeof s.childRunId === "string" ? { childRunId: s.childRunId } : {}),
  };
}

/** One placed step. Coordinates are the top-left corner, in SVG units. */
export interface PlacedNode {
  /** The step's name. */
  name: string;
  /** Its state. */
  status: StepStatus;
  /** Attempts started. */
  attempts: number;
  /** Its kind: `task`, `sleep`, `wait`, `map` or `child`. */
  kind: string;
  /** Whether it runs forward or as a compensation (lower lane). */
  phase: "forward" | "compensation";
  /** The lines under the name: state, resume time, event, counts, why it was skipped. */
  lines: string[];
  /** The tooltip: every line in full. */
  title: string;
  /** A map step's counts, for its progress bar. */
  map?: MapCounts;
  /** A child step's run, which the node links to. */
  childRunId?: string;
  /** Left edge. */
  x: number;
  /** Top edge. */
  y: number;
  /** Width. */
  width: number;
  /** Height. */
  height: number;
}

/** One dependency, drawn from the needed step to the step that needs it. */
export interface PlacedEdge {
  /** The needed step. */
  from: string;
  /** The step that needs it. */
  to: string;
  /** The polyline dagre routed, start to end. */
  points: { x: number; y: number }[];
}

/** A laid-out DAG. */
export interface DagLayout {
  /** Total width. */
  width: number;
  /** Total height. */
  height: number;
  /** The steps, in the run's step order. */
  nodes: PlacedNode[];
  /** The dependencies. */
  edges: PlacedEdge[];
  /** The compensation lane's top edge and height, when the run has compensations. */
  lane?: { y: number; height: number };
}

const LINE_HEIGHT = 16;
const LINE_CHARS = 40;
const LANE_HEADER = 26;

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
const clip = (line: string) =>
  line.length > LINE_CHARS ? `${line.slice(0, LINE_CHARS - 1)}…` : line;

/** The full text lines of a node, before clipping. */
function linesOf(step: StepSnapshot, view: StepView): string[] {
  const lines: string[] = [];
  const state = view.kind === "task"
    ? `${step.status} · ${plural(step.attempts, "attempt")}`
    : step.status;
  lines.push(state);
  if (view.kind === "wait") lines.push(`event ${step.event ?? "?"}`);
  if (step.resumeAt) {
    lines.push(`${view.kind === "wait" ? "timeout" : "until"} ${formatDateTime(step.resumeAt)}`);
  }
  if (view.kind === "map") {
    const m = view.map;
    lines.push(
      m
        ? `${m.succeeded}/${m.total} done · ${m.running} running · ${m.failed} failed`
        : "items not yet known",
    );
  }
  if (view.kind === "child") {
    lines.push(view.childRunId ? `child run ${view.childRunId}` : "child run not started");
  }
  if (step.status === "skipped" && step.skipReason) lines.push(`why: ${step.skipReason}`);
  return lines;
}

interface Lane {
  width: number;
  height: number;
  nodes: PlacedNode[];
  edges: PlacedEdge[];
}

function layoutLane(names: string[], steps: RunSnapshot["steps"]): Lane {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 24, ranksep: 56, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  const built = new Map<string, Omit<PlacedNode, "x" | "y">>();
  for (const name of names) {
    const step = steps[name];
    const view = stepView(step);
    const full = linesOf(step, view);
    const lines = full.map(clip);
    const longest = Math.max(...lines.map((l) => l.length));
    const width = Math.min(
      Math.max(150, name.length * 8 + 40, Math.ceil(longest * 6.3) + 28),
      320,
    );
    const height = 32 + LINE_HEIGHT * lines.length + (view.map ? 6 : 0);
    const kindLabel = view.phase === "compensation" ? `${view.kind}, compensation` : view.kind;
    built.set(name, {
      name,
      status: step.status,
      attempts: step.attempts,
      kind: view.kind,
      phase: view.phase,
      lines,
      title: [`${name} (${kindLabel}): ${step.status}`, ...full.slice(1)].join("\n"),
      ...(view.map ? { map: view.map } : {}),
      ...(view.childRunId ? { childRunId: view.childRunId } : {}),
      width,
      height,
    });
    g.setNode(name, { width, height });
  }
  for (const name of names) {
    for (const need of steps[name].needs) if (built.has(need)) g.setEdge(need, name);
  }
  dagre.layout(g);
  const nodes = names.map((name): PlacedNode => {
    const n = g.node(name);
    return { ...built.get(name)!, x: n.x - n.width / 2, y: n.y - n.height / 2 };
  });
  const edges = g.edges().map((e): PlacedEdge => ({
    from: e.v,
    to: e.w,
    points: ((g.edge(e).points ?? []) as { x: number; y: number }[]).map((p) => ({
      x: p.x,
      y: p.y,
    })),
  }));
  const graph = g.graph();
  return { width: graph.width ?? 0, height: graph.height ?? 0, nodes, edges };
}

/**
 * Lays out the steps of a run: one node per step, one edge per `needs`
 * entry. The workflow's own steps come first; compensations and `onFailure`
 * (phase `"compensation"`) are laid out in a lane below them, with the edges
 * between them. Steps that name a need the run does not have get no edge for
 * it. A map step is one node, whatever its number of items.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { layoutDag } from "./dag.tsx";
 * const layout = layoutDag({
 *   a: { status: "succeeded", attempts: 1, needs: [], errors: [] },
 *   b: { status: "pending", attempts: 0, needs: ["a"], errors: [] },
 *   "a~compensate": { status: "skipped", phase: "compensation", attempts: 0, needs: [], errors: [] },
 * });
 * const [a, b, undo] = layout.nodes;
 * assert.ok(a.x + a.width <= b.x && layout.edges.length === 1);
 * assert.ok(layout.lane && undo.y >= layout.lane.y && undo.y > a.y + a.height);
 * ```
 */
export function layoutDag(steps: RunSnapshot["steps"]): DagLayout {
  const names = Object.keys(steps);
  const isCompensation = (n: string) => stepView(steps[n]).phase === "compensation";
  const forward = layoutLane(names.filter((n) => !isCompensation(n)), steps);
  const undo = names.filter(isCompensation);
  if (undo.length === 0) return forward;
  const lane = layoutLane(undo, steps);
  const top = forward.height + LANE_HEADER;
  const shifted = lane.nodes.map((n) => ({ ...n, y: n.y + top }));
  const edges = [
    ...forward.edges,
    ...lane.edges.map((e) => ({ ...e, points: e.points.map((p) => ({ x: p.x, y: p.y + top })) })),
  ];
  const placed = new Map([...forward.nodes, ...shifted].map((n) => [n.name, n]));
  // A compensation that needs a forward step (none do today) gets a straight edge across.
  for (const n of shifted) {
    for (const need of steps[n.name].needs) {
      const from = placed.get(need);
      if (!from || from.phase === "compensation") continue;
      edges.push({
        from: need,
        to: n.name,
        points: [
          { x: from.x + from.width / 2, y: from.y + from.height },
          { x: n.x + n.width / 2, y: n.y },
        ],
      });
    }
  }
  return {
    width: Math.max(forward.width, lane.width),
    height: top + lane.height,
    nodes: names.map((n) => placed.get(n)!),
    edges,
    lane: { y: forward.height + 4, height: top + lane.height - forward.height - 4 },
  };
}

const round = (n: number) => Math.round(n * 10) / 10;

function pathOf(points: { x: number; y: number }[]): string {
  return points.map((p, i) => `${i === 0 ? "M" : "L"}${round(p.x)},${round(p.y)}`).join(" ");
}

/** The outline of a node: its kind's shape, filled and stroked by its status. */
function Shape(props: { node: PlacedNode }) {
  const { kind } = props.node;
  const w = round(props.node.width);
  const h = round(props.node.height);
  switch (kind) {
    case "sleep":
      return <rect class="shape" width={w} height={h} rx={round(h / 2)} ry={round(h / 2)} />;
    case "wait":
      return (
        <polygon
          class="shape"
          points={`14,0 ${round(w - 14)},0 ${w},${round(h / 2)} ${round(w - 14)},${h} 14,${h} 0,${
            round(h / 2)
          }`}
        />
      );
    case "map":
      return (
        <>
          <rect class="shape stack" x="8" y="-8" width={w} height={h} rx="8" ry="8" />
          <rect class="shape stack" x="4" y="-4" width={w} height={h} rx="8" ry="8" />
          <rect class="shape" width={w} height={h} rx="8" ry="8" />
        </>
      );
    case "child":
      return (
        <>
          <rect class="shape" width={w} height={h} rx="2" ry="2" />
          <path class="shape-detail" d={`M9,0 L9,${h} M${round(w - 9)},0 L${round(w - 9)},${h}`} />
        </>
      );
    default:
      return <rect class="shape" width={w} height={h} rx="8" ry="8" />;
  }
}

/** A map node's progress bar: succeeded, running and failed items, out of the total. */
function MapBar(props: { node: PlacedNode; map: MapCounts }) {
  const { node, map } = props;
  const full = node.width - 24;
  const part = (n: number) => map.total > 0 ? round(full * Math.min(n, map.total) / map.total) : 0;
  const y = round(node.height - 12);
  const ok = part(map.succeeded);
  const run = part(map.running);
  const bad = part(map.failed);
  return (
    <g class="map-bar" data-total={map.total}>
      <rect class="bar-track" x="12" y={y} width={round(full)} height="5" />
      <rect class="bar-succeeded" x="12" y={y} width={ok} height="5" />
      <rect class="bar-running" x={round(12 + ok)} y={y} width={run} height="5" />
      <rect class="bar-failed" x={round(12 + ok + run)} y={y} width={bad} height="5" />
    </g>
  );
}

/**
 * The DAG of a run as an SVG element. Each node links to its step's row, a
 * child step's node to its child run's page (`childHref`).
 */
export function Dag(
  props: { run: RunSnapshot; childHref?: (runId: string) => string },
): HtmlEscapedString | Promise<HtmlEscapedString> {
  const layout = layoutDag(props.run.steps);
  const childHref = props.childHref ?? ((id: string) => `/ui/runs/${encodeURIComponent(id)}`);
  return (
    <svg
      class="dag"
      xmlns="http://www.w3.org/2000/svg"
      viewBox={`0 0 ${round(layout.width)} ${round(layout.height)}`}
      width={round(layout.width)}
      height={round(layout.height)}
      role="img"
      aria-label={`Steps of workflow ${props.run.workflow}`}
    >
      <defs>
        <marker
          id="arrow"
          viewBox="0 0 10 10"
          refX="9"
          refY="5"
          markerWidth="7"
          markerHeight="7"
          orient="auto-start-reverse"
        >
          <path class="arrow" d="M0,0 L10,5 L0,10 z" />
        </marker>
      </defs>
      {layout.lane && (
        <g class="lane" data-lane="compensation">
          <rect
            x="2"
            y={round(layout.lane.y)}
            width={round(layout.width - 4)}
            height={round(layout.lane.height - 2)}
            rx="6"
            ry="6"
          />
          <text x="10" y={round(layout.lane.y + 16)}>
            compensation: runs only if the run fails or is cancelled
          </text>
        </g>
      )}
      {layout.edges.map((e) => (
        <path
          class="edge"
          data-from={e.from}
          data-to={e.to}
          d={pathOf(e.points)}
          marker-end="url(#arrow)"
        />
      ))}
      {layout.nodes.map((n) => (
        <a href={n.childRunId ? childHref(n.childRunId) : `#step-${n.name}`}>
          <g
            class="node"
            data-step={n.name}
            data-status={n.status}
            data-kind={n.kind}
            data-phase={n.phase}
            transform={`translate(${round(n.x)},${round(n.y)})`}
          >
            <title>{n.title}</title>
            <Shape node={n} />
            <text class="name" x={round(n.width / 2)} y="20">{n.name}</text>
            {n.lines.map((line, i) => (
              <text
                class={i === 0 ? "meta" : "meta detail"}
                x={round(n.width / 2)}
                y={37 + LINE_HEIGHT * i}
              >
                {line}
              </text>
            ))}
            {n.map && <MapBar node={n} map={n.map} />}
          </g>
        </a>
      ))}
    </svg>
  );
}
