/**
 * A run's workflow DAG as inline SVG, laid out by dagre (left to right) and
 * coloured by each step's state through `data-status` and the stylesheet.
 *
 * @module
 */
import dagre from "@dagrejs/dagre";
import type { RunSnapshot, StepStatus } from "../mod.ts";
import type { HtmlEscapedString } from "hono/utils/html";

/** One placed step. Coordinates are the top-left corner, in SVG units. */
export interface PlacedNode {
  /** The step's name. */
  name: string;
  /** Its state. */
  status: StepStatus;
  /** Attempts started. */
  attempts: number;
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
}

const NODE_HEIGHT = 48;

/**
 * Lays out the steps of a run: one node per step, one edge per `needs`
 * entry. Steps that name a need the run does not have get no edge for it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { layoutDag } from "./dag.tsx";
 * const layout = layoutDag({
 *   a: { status: "succeeded", attempts: 1, needs: [], errors: [] },
 *   b: { status: "pending", attempts: 0, needs: ["a"], errors: [] },
 * });
 * const [a, b] = layout.nodes;
 * assert.ok(a.x + a.width <= b.x && layout.edges.length === 1);
 * ```
 */
export function layoutDag(steps: RunSnapshot["steps"]): DagLayout {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 24, ranksep: 56, marginx: 10, marginy: 10 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const [name] of Object.entries(steps)) {
    g.setNode(name, { width: Math.max(150, name.length * 8 + 40), height: NODE_HEIGHT });
  }
  for (const [name, step] of Object.entries(steps)) {
    for (const need of step.needs) if (need in steps) g.setEdge(need, name);
  }
  dagre.layout(g);
  const nodes = Object.entries(steps).map(([name, step]): PlacedNode => {
    const n = g.node(name);
    return {
      name,
      status: step.status,
      attempts: step.attempts,
      x: n.x - n.width / 2,
      y: n.y - n.height / 2,
      width: n.width,
      height: n.height,
    };
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

const round = (n: number) => Math.round(n * 10) / 10;

function pathOf(points: { x: number; y: number }[]): string {
  return points.map((p, i) => `${i === 0 ? "M" : "L"}${round(p.x)},${round(p.y)}`).join(" ");
}

/** The DAG of a run as an SVG element; each node links to its step's details. */
export function Dag(props: { run: RunSnapshot }): HtmlEscapedString | Promise<HtmlEscapedString> {
  const layout = layoutDag(props.run.steps);
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
        <a href={`#step-${n.name}`}>
          <g
            class="node"
            data-step={n.name}
            data-status={n.status}
            transform={`translate(${round(n.x)},${round(n.y)})`}
          >
            <title>{`${n.name}: ${n.status}`}</title>
            <rect width={round(n.width)} height={round(n.height)} rx="8" ry="8" />
            <text class="name" x={round(n.width / 2)} y="20">{n.name}</text>
            <text class="meta" x={round(n.width / 2)} y="37">
              {`${n.status} · ${n.attempts} attempt${n.attempts === 1 ? "" : "s"}`}
            </text>
          </g>
        </a>
      ))}
    </svg>
  );
}
