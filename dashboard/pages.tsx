/**
 * The dashboard's server-rendered pages. Every value from a run, an input or
 * a query is rendered as JSX text or attribute, which Hono escapes.
 *
 * @module
 */
import { type Child, createContext, useContext } from "hono/jsx";
import type { HtmlEscapedString } from "hono/utils/html";
import { raw } from "hono/html";
import { isTerminalRun, type RunSnapshot, RunStatus, type RunSummary } from "../mod.ts";
import { Dag, stepView } from "./dag.tsx";
import {
  boundedJson,
  formatAge,
  formatDateTime,
  formatDuration,
  formatTime,
  formatUntil,
} from "./format.ts";

/** What a component renders to. */
export type Markup = HtmlEscapedString | Promise<HtmlEscapedString>;

/** One problem shown under a form, like a zod issue. */
export interface FormIssue {
  /** Where in the input; empty for the whole input. */
  path: readonly (string | number)[];
  /** What is wrong. */
  message: string;
}

const runHref = (id: string) => `/ui/runs/${encodeURIComponent(id)}`;

/**
 * Whether the request carries a browser session cookie, so that the page
 * frame shows a "Log out" button. Provided by the routes that render pages.
 */
export const SignedIn = createContext(false);

/**
 * The page frame: head, navigation (unless `nav` is false), content,
 * optional scripts.
 */
export function Layout(
  props: { title: string; children?: Child; script?: string; nav?: boolean },
): Markup {
  const signedIn = useContext(SignedIn);
  return (
    <>
      {raw("<!DOCTYPE html>")}
      <html lang="en">
        <head>
          <meta charset="utf-8" />
          <meta name="viewport" content="width=device-width, initial-scale=1" />
          <title>{`${props.title} · Weft`}</title>
          <link rel="icon" type="image/svg+xml" href="/ui/assets/favicon.svg" />
          <link rel="stylesheet" href="/ui/assets/style.css" />
          {props.script && <script src={props.script} defer></script>}
        </head>
        <body>
          <header class="top">
            <a class="brand" href="/">Weft</a>
            {props.nav !== false && (
              <>
                <a href="/">Runs</a>
                <a href="/ui/start">Start a run</a>
                <a href="/metrics">Metrics</a>
              </>
            )}
            {props.nav !== false && signedIn && (
              <form class="logout" method="post" action="/logout">
                <button type="submit">Log out</button>
              </form>
            )}
          </header>
          <main>{props.children}</main>
        </body>
      </html>
    </>
  );
}

/** A red box with a title and, optionally, a list of issues. */
export function Notice(props: { title: string; issues?: readonly FormIssue[] }): Markup {
  return (
    <div class="notice" role="alert">
      <strong>{props.title}</strong>
      {props.issues && props.issues.length > 0 && (
        <ul class="issues">
          {props.issues.map((i) => (
            <li>
              <code>{i.path.length === 0 ? "(input)" : i.path.join(".")}</code>: {i.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function StatusBadge(props: { status: string; step?: string; run?: boolean }) {
  return (
    <span
      class="badge"
      data-status={props.status}
      data-step={props.step}
      data-run-status={props.run ? "run" : undefined}
    >
      {props.status}
    </span>
  );
}

/** What the run list shows and links to. */
export interface RunsPageProps {
  /** This page of runs. */
  runs: readonly RunSummary[];
  /** Names of the workflows the engine runs, for the filter. */
  workflows: readonly string[];
  /** The workflow filter, if any. */
  workflow?: string;
  /** The status filter, if any. */
  status?: string;
  /** The cursor of this page, if not the first. */
  cursor?: string;
  /** The cursor of the next page, or `null` on the last. */
  nextCursor: string | null;
  /** Now, in epoch milliseconds, for ages. */
  nowMs: number;
  /** A problem with the query. */
  error?: string;
}

function listHref(params: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `/?${s}` : "/";
}

/** `GET /`: the runs, newest first, with filters and paging. */
export function RunsPage(props: RunsPageProps): Markup {
  return (
    <Layout title="Runs">
      <h1>Runs</h1>
      <form class="filters" method="get" action="/">
        <label>
          Workflow
          <select name="workflow">
            <option value="">all</option>
            {props.workflows.map((w) => (
              <option value={w} selected={w === props.workflow}>{w}</option>
            ))}
          </select>
        </label>
        <label>
          Status
          <select name="status">
            <option value="">all</option>
            {Object.values(RunStatus).map((s) => (
              <option value={s} selected={s === props.status}>{s}</option>
            ))}
          </select>
        </label>
        <button type="submit">Filter</button>
        <span class="muted">
          Start: {props.workflows.map((w) => (
            <>
              <a href={`/ui/start?workflow=${encodeURIComponent(w)}`}>{w}</a>
              {" "}
            </>
          ))}
        </span>
      </form>
      {props.error && <Notice title={props.error} />}
      <table class="runs">
        <thead>
          <tr>
            <th>Run</th>
            <th>Workflow</th>
            <th>Status</th>
            <th>Age</th>
            <th>Duration</th>
          </tr>
        </thead>
        <tbody>
          {props.runs.length === 0 && (
            <tr>
              <td colspan={5} class="muted">No runs.</td>
            </tr>
          )}
          {props.runs.map((r) => (
            <tr data-run-id={r.id}>
              <td>
                <a href={runHref(r.id)}>
                  <code>{r.id}</code>
                </a>
              </td>
              <td>{r.workflow}</td>
              <td>
                <StatusBadge status={r.status} />
              </td>
              <td>
                <time datetime={r.createdAt}>{formatAge(r.createdAt, props.nowMs)}</time>
              </td>
              <td>{r.durationMs === undefined ? "—" : formatDuration(r.durationMs)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <nav class="pager">
        {props.cursor && (
          <a href={listHref({ workflow: props.workflow, status: props.status })}>First page</a>
        )}
        {props.nextCursor && (
          <a
            rel="next"
            href={listHref({
              workflow: props.workflow,
              status: props.status,
              cursor: props.nextCursor,
            })}
          >
            Next page →
          </a>
        )}
      </nav>
    </Layout>
  );
}

/** The form that sends an event to a run, for an event one of its steps is `awaiting`. */
export interface EventFormProps {
  /** The event's name, pre-filled from the waiting step. */
  event: string;
  /** The step that waits for it. */
  step: string;
  /** The text of the payload box. */
  payloadText: string;
  /** The idempotency key box. */
  idempotencyKey?: string;
  /** The JSON Schema of the payload, if it has one. */
  schema?: unknown;
  /** Why the last submission was refused. */
  error?: string;
  /** What the schema found wrong with it. */
  issues?: readonly FormIssue[];
}

/** What the run page shows: the run, and what the routes looked up for it. */
export interface RunBodyProps {
  /** The run. */
  run: RunSnapshot;
  /** Now, in epoch milliseconds, for ages and resume times. */
  nowMs: number;
  /** One form per event that a step of the run is `awaiting`. */
  events?: readonly EventFormProps[];
  /** The status of each child run, by id, where it could be read. */
  childStatuses?: Readonly<Record<string, string>>;
}

/** The event form; `data-keep` lets the page's script keep it, as typed, across refreshes. */
function EventForm(props: { runId: string; form: EventFormProps }): Markup {
  const { form } = props;
  return (
    <form
      class="send-event"
      method="post"
      action={`${runHref(props.runId)}/events`}
      data-keep={`event:${form.event}`}
    >
      <strong>
        Step <code>{form.step}</code> waits for event <code>{form.event}</code>
      </strong>
      {form.error && <Notice title={form.error} issues={form.issues} />}
      <div class="row">
        <label>
          Event
          <input type="text" name="event" value={form.event} required />
        </label>
        <label>
          Idempotency key (optional)
          <input type="text" name="key" value={form.idempotencyKey ?? ""} />
        </label>
      </div>
      <label>
        Payload (JSON)
        <textarea name="payload" spellcheck={false}>{form.payloadText}</textarea>
      </label>
      {form.schema !== undefined && (
        <details>
          <summary>Payload schema</summary>
          <pre class="schema">{boundedJson(form.schema).text}</pre>
        </details>
      )}
      <p>
        <button type="submit">Send event</button>
      </p>
    </form>
  );
}

/** What a step's row says under its status: retries, resume times, why it was skipped. */
function StepNotes(props: { step: RunSnapshot["steps"][string]; nowMs: number }): Markup {
  const s = props.step;
  const view = stepView(s);
  const at = (iso: string) => `${formatDateTime(iso)} (${formatUntil(iso, props.nowMs)})`;
  return (
    <>
      {s.nextAttemptAt && <div class="muted">next attempt at {formatTime(s.nextAttemptAt)}</div>}
      {view.kind === "wait" && s.event && (
        <div class="step-note wait-event">
          event <code>{s.event}</code>
          {s.status === "awaiting" && !s.resumeAt && ", no timeout"}
        </div>
      )}
      {s.resumeAt && (
        <div class="step-note resume-at">
          {view.kind === "wait" ? "times out at " : "resumes at "}
          <time datetime={s.resumeAt}>{at(s.resumeAt)}</time>
        </div>
      )}
      {view.map && (
        <div class="step-note map-counts">
          {`${view.map.succeeded} of ${view.map.total} done, ${view.map.running} running, ${view.map.failed} failed`}
        </div>
      )}
      {view.childRunId && (
        <div class="step-note child-run">
          child run{" "}
          <a href={runHref(view.childRunId)}>
            <code>{view.childRunId}</code>
          </a>
        </div>
      )}
      {s.status === "skipped" && s.skipReason && (
        <div class="step-note skip-reason">skipped: {s.skipReason}</div>
      )}
    </>
  );
}

/** Where the raw JSON of a run is: the API's `GET /runs/:id`. */
const rawHref = (id: string) => `/runs/${encodeURIComponent(id)}`;

/**
 * A JSON value in a `<pre>`, bounded (see {@linkcode boundedJson}): levels
 * past the eighth on one line, and cut past 20,000 characters with a link
 * to the raw JSON.
 */
export function JsonBlock(props: { value: unknown; class: string; rawHref: string }): Markup {
  const shown = boundedJson(props.value);
  return (
    <>
      <pre class={props.class}>{shown.text}</pre>
      {(shown.truncated || shown.collapsed) && (
        <p class="muted json-note">
          {shown.truncated ? "Cut short here" : "Deep levels are shown on one line"}: see the{" "}
          <a href={props.rawHref}>raw JSON</a>.
        </p>
      )}
    </>
  );
}

type StepView = RunSnapshot["steps"][string];

/** A run's status line, its error and its parent: what a run transition changes. */
export function RunHead(props: { run: RunSnapshot; nowMs: number }): Markup {
  const { run } = props;
  const terminal = isTerminalRun(run.status);
  const parent = (run as RunSnapshot & { parent?: { runId?: unknown; step?: unknown } }).parent;
  return (
    <div id="run-head">
      <div class="run-head">
        <StatusBadge status={run.status} run />
        <span>
          workflow <a href={listHref({ workflow: run.workflow })}>{run.workflow}</a>
        </span>
        <span class="muted">
          created <time datetime={run.createdAt}>{formatAge(run.createdAt, props.nowMs)}</time>
        </span>
        {run.durationMs !== undefined && (
          <span class="muted">took {formatDuration(run.durationMs)}</span>
        )}
        {parent && typeof parent.runId === "string" && (
          <span class="parent-run">
            child of run{" "}
            <a href={runHref(parent.runId)}>
              <code>{parent.runId}</code>
            </a>
            {typeof parent.step === "string" && (
              <>
                {" "}(step{" "}
                <a href={`${runHref(parent.runId)}#step-${parent.step}`}>{parent.step}</a>)
              </>
            )}
          </span>
        )}
        {!terminal && (
          <form method="post" action={`${runHref(run.id)}/cancel`}>
            <button class="danger" type="submit" name="cancel" value="1">Cancel run</button>
          </form>
        )}
        <span class="live"></span>
      </div>
      {run.error && (
        <Notice
          title={`${run.error.name}: ${run.error.message}${
            run.failedStep ? ` (step ${run.failedStep})` : ""
          }`}
        />
      )}
    </div>
  );
}

/** The run's output, once it has one. */
export function RunOutput(props: { run: RunSnapshot }): Markup {
  const { run } = props;
  return (
    <div id="run-output">
      {run.output !== undefined && (
        <>
          <h2>Output</h2>
          <JsonBlock value={run.output} class="run-output" rawHref={rawHref(run.id)} />
        </>
      )}
    </div>
  );
}

/** One step's row in the steps table. */
export function StepRow(props: { name: string; step: StepView; nowMs: number }): Markup {
  const { name, step: s } = props;
  const view = stepView(s);
  return (
    <tr id={`step-${name}`} data-step-row={name} data-kind={view.kind} data-phase={view.phase}>
      <td>
        <strong>{name}</strong>
        {view.kind !== "task" && <span class="kind-tag">{view.kind}</span>}
        {view.phase === "compensation" && <span class="kind-tag">compensation</span>}
      </td>
      <td>
        <StatusBadge status={s.status} step={name} />
        <StepNotes step={s} nowMs={props.nowMs} />
      </td>
      <td>{s.attempts}</td>
      <td>{s.needs.length === 0 ? "—" : s.needs.join(", ")}</td>
      <td>{formatTime(s.startedAt)}</td>
      <td>{formatTime(s.finishedAt)}</td>
      <td>{s.durationMs === undefined ? "—" : formatDuration(s.durationMs)}</td>
    </tr>
  );
}

/**
 * One step's event form (while it is `awaiting` an event), failed attempts
 * and output, in a slot that is there even while it is empty.
 */
export function StepSlot(
  props: { runId: string; name: string; step: StepView; events?: readonly EventFormProps[] },
): Markup {
  const { name, step: s } = props;
  const forms = s.status === "awaiting" ? props.events?.filter((f) => f.step === name) ?? [] : [];
  return (
    <div class="step-slot" data-step-slot={name}>
      {forms.map((form) => <EventForm key={form.event} runId={props.runId} form={form} />)}
      {(s.errors.length > 0 || s.output !== undefined) && (
        <details class="step-detail" data-step-detail={name} open={s.status !== "succeeded"}>
          <summary>
            <strong>{name}</strong> — {[
              s.errors.length > 0 &&
              `${s.errors.length} failed attempt${s.errors.length === 1 ? "" : "s"}`,
              s.output !== undefined && "output",
            ].filter(Boolean).join(", ")}
          </summary>
          {s.errors.length > 0 && (
            <ol class="step-errors">
              {s.errors.map((e) => (
                <li>
                  attempt {e.attempt} at {formatTime(e.at)}: <code>{e.error.name}</code>{" "}
                  {e.error.message}
                  {e.error.stack && (
                    <details class="stack">
                      <summary>stack trace</summary>
                      <pre>{e.error.stack}</pre>
                    </details>
                  )}
                </li>
              ))}
            </ol>
          )}
          {s.output !== undefined && (
            <JsonBlock value={s.output} class="output" rawHref={rawHref(props.runId)} />
          )}
        </details>
      )}
    </div>
  );
}

/**
 * The live part of the run page, also served alone as a fragment that the
 * page's script swaps in on the stream's first and last events; between
 * them it fetches only the part a transition changed (see
 * {@linkcode RunPart}). The input, which never changes, is outside it.
 */
export function RunBody(props: RunBodyProps): Markup {
  const { run } = props;
  const steps = Object.entries(run.steps);
  const children = steps.flatMap(([name, s]) => {
    const id = stepView(s).childRunId;
    return id ? [{ step: name, runId: id, status: s.status }] : [];
  });
  return (
    <section id="run-body" data-run-id={run.id}>
      <RunHead run={run} nowMs={props.nowMs} />
      <figure class="dag">
        <Dag run={run} childHref={runHref} />
      </figure>
      {children.length > 0 && (
        <>
          <h2>Child runs</h2>
          <ul class="children">
            {children.map((child) => (
              <li data-child-run={child.runId}>
                <a href={runHref(child.runId)}>
                  <code>{child.runId}</code>
                </a>{" "}
                from step <a href={`#step-${child.step}`}>{child.step}</a>{" "}
                <StatusBadge status={props.childStatuses?.[child.runId] ?? child.status} />
              </li>
            ))}
          </ul>
        </>
      )}
      <h2>Steps</h2>
      <table class="steps">
        <thead>
          <tr>
            <th>Step</th>
            <th>Status</th>
            <th>Attempts</th>
            <th>Needs</th>
            <th>Started</th>
            <th>Finished</th>
            <th>Duration</th>
          </tr>
        </thead>
        <tbody>
          {steps.map(([name, s]) => (
            <StepRow
              key={name}
              name={name}
              step={s}
              nowMs={props.nowMs}
            />
          ))}
        </tbody>
      </table>
      {steps.map(([name, s]) => (
        <StepSlot key={name} runId={run.id} name={name} step={s} events={props.events} />
      ))}
      <RunOutput run={run} />
    </section>
  );
}

/**
 * What one transition changes on the run page: a step's row and slot and
 * the DAG (whose node shows the step's notes, such as why it was skipped or
 * a map's counts), or (`step` undefined) the run's head and output.
 */
export function RunPart(props: RunBodyProps & { step?: string }): Markup {
  const { run, step } = props;
  const s = step === undefined ? undefined : run.steps[step];
  return (
    <section id="run-part" data-run-id={run.id}>
      {s
        ? (
          <>
            <table>
              <tbody>
                <StepRow name={step!} step={s} nowMs={props.nowMs} />
              </tbody>
            </table>
            <StepSlot runId={run.id} name={step!} step={s} events={props.events} />
            <figure class="dag">
              <Dag run={run} childHref={runHref} />
            </figure>
          </>
        )
        : (
          <>
            <RunHead run={run} nowMs={props.nowMs} />
            <RunOutput run={run} />
          </>
        )}
    </section>
  );
}

/** `GET /ui/runs/:id`: a run's DAG and steps, following the event stream. */
export function RunPage(props: RunBodyProps & { notice?: string; info?: string }): Markup {
  const { notice, info, ...body } = props;
  return (
    <Layout title={`Run ${props.run.id}`} script="/ui/assets/run.js">
      <h1>
        Run <code>{props.run.id}</code>
      </h1>
      {notice && <Notice title={notice} />}
      {info && (
        <div class="notice info" role="status">
          <strong>{info}</strong>
        </div>
      )}
      <RunBody {...body} />
      <h2>Input</h2>
      <JsonBlock value={props.run.input} class="input" rawHref={rawHref(props.run.id)} />
    </Layout>
  );
}

/** What the start form shows. */
export interface StartPageProps {
  /** Every workflow the engine runs, with its description. */
  workflows: readonly { name: string; description?: string }[];
  /** The workflow the form starts, if one is chosen. */
  workflow?: string;
  /** The JSON Schema of its input, if it has one. */
  schema?: unknown;
  /** The text of the input box. */
  inputText: string;
  /** The idempotency key box. */
  idempotencyKey?: string;
  /** Why the last submission was refused. */
  error?: string;
  /** What the schema found wrong with it. */
  issues?: readonly FormIssue[];
}

/** `GET /ui/start`: pick a workflow, write its input as JSON, start a run. */
export function StartPage(props: StartPageProps): Markup {
  const chosen = props.workflows.find((w) => w.name === props.workflow);
  return (
    <Layout title="Start a run">
      <h1>Start a run</h1>
      <p>
        Workflow: {props.workflows.map((w) => (
          <>
            {w.name === props.workflow
              ? <strong>{w.name}</strong>
              : <a href={`/ui/start?workflow=${encodeURIComponent(w.name)}`}>{w.name}</a>}
            {" "}
          </>
        ))}
      </p>
      {props.error && <Notice title={props.error} issues={props.issues} />}
      {chosen && (
        <form class="start" method="post" action="/ui/runs">
          {chosen.description && <p class="muted">{chosen.description}</p>}
          <input type="hidden" name="workflow" value={chosen.name} />
          <label>
            Input (JSON)
            <textarea name="input" spellcheck={false}>{props.inputText}</textarea>
          </label>
          <label>
            Idempotency key (optional)
            <input type="text" name="idempotencyKey" value={props.idempotencyKey ?? ""} />
          </label>
          <p>
            <button type="submit">Start run</button>
          </p>
          {props.schema !== undefined && (
            <details>
              <summary>Input schema</summary>
              <pre class="schema">{boundedJson(props.schema).text}</pre>
            </details>
          )}
        </form>
      )}
    </Layout>
  );
}

/** A page for an error such as an unknown run. */
export function ErrorPage(props: { title: string; message: string }): Markup {
  return (
    <Layout title={props.title}>
      <h1>{props.title}</h1>
      <Notice title={props.message} />
      <p>
        <a href="/">Back to the runs</a>
      </p>
    </Layout>
  );
}
