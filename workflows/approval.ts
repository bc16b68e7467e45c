/**
 * An approval with a deadline: the approver is asked, reminded after 24
 * hours if they have not answered, and the request expires 3 days after it
 * was made. The run waits on disk the whole time (no process holds it), and
 * the answer is an event sent to the run:
 *
 * ```sh
 * curl -X POST localhost:8000/runs/<id>/events/decision \
 *   -H 'content-type: application/json' -d '{"approved":true,"by":"ada"}'
 * ```
 *
 * or the "Send event" form on the run page.
 *
 * @module
 */
import { z } from "zod";
import { workflow } from "../mod.ts";

const HOUR = 3_600_000;

/** What the approver answers. */
const decision = z.object({
  approved: z.boolean(),
  by: z.string().min(1).max(100),
  comment: z.string().max(1_000).optional(),
});

/** The approval workflow of the README. */
export const approval = workflow("approval", {
  description: "Ask for an approval, remind after 24 h, expire after 3 days",
  input: z.object({
    documentId: z.string().min(1).max(100),
    approver: z.string().min(1).max(100),
  }),
})
  .step("request", ({ input, log }) => {
    log.info("Asked {approver} to approve {documentId}", input);
    return { askedAt: new Date().toISOString() };
  })
  .waitForEvent("answer", {
    needs: ["request"],
    event: "decision",
    schema: decision,
    timeoutMs: 24 * HOUR,
  })
  .step("reminder", {
    needs: ["answer"],
    // Only when the first day passed without an answer.
    when: ({ results }) => results.answer.timedOut,
  }, ({ input, log }) => {
    log.info("Reminded {approver} about {documentId}", input);
    return { remindedAt: new Date().toISOString() };
  })
  .waitForEvent("late-answer", {
    needs: ["reminder"],
    event: "decision",
    schema: decision,
    timeoutMs: 48 * HOUR,
  })
  .step("outcome", {
    needs: ["answer", "late-answer"],
    // Runs whichever way it went: one of the two waits was skipped.
    skippedNeeds: "run",
  }, ({ results }) => {
    const first = results.answer;
    const late = results["late-answer"];
    const answer = first && !first.timedOut ? first : late && !late.timedOut ? late : undefined;
    if (!answer) return { status: "expired" as const };
    return {
      status: answer.payload.approved ? "approved" as const : "rejected" as const,
      by: answer.payload.by,
      reminded: first?.timedOut ?? false,
    };
  });
