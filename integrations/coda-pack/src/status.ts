// How a run's state is shown in a Coda doc: an object ("chip") whose display
// value is a one-line summary such as
//   "succeeded: 3 pulled, 1 pushed, 0 deleted, 0 conflicts, 0 quarantined".
import * as coda from "@codahq/packs-sdk";
import type { RunResponse } from "./daemon";

export const RunStatusSchema = coda.makeObjectSchema({
  properties: {
    summary: {
      type: coda.ValueType.String,
      description: 'One-line status, e.g. "succeeded: 3 pulled, 1 pushed, 0 deleted, 0 conflicts, 0 quarantined".',
    },
    runId: { type: coda.ValueType.String, description: "The daemon's run id (r-…)." },
    state: {
      type: coda.ValueType.String,
      description: "queued, running, succeeded or failed.",
    },
    finished: {
      type: coda.ValueType.Boolean,
      description: "True once the run has succeeded or failed.",
    },
    succeeded: { type: coda.ValueType.Boolean, description: "True if the run finished without error." },
    binding: {
      type: coda.ValueType.String,
      description: 'The binding that was synced, or "all" when every binding was.',
    },
    full: { type: coda.ValueType.Boolean, description: "True for a full (not incremental) sync." },
    startedAt: {
      type: coda.ValueType.String,
      codaType: coda.ValueHintType.DateTime,
      description: "When the run started.",
    },
    finishedAt: {
      type: coda.ValueType.String,
      codaType: coda.ValueHintType.DateTime,
      description: "When the run finished.",
    },
    pulled: { type: coda.ValueType.Number, description: "Rows pulled from Coda into the database." },
    pushed: { type: coda.ValueType.Number, description: "Rows pushed from the database to Coda." },
    deleted: { type: coda.ValueType.Number, description: "Rows deleted." },
    conflicts: { type: coda.ValueType.Number, description: "Rows changed on both sides (conflicts)." },
    quarantined: { type: coda.ValueType.Number, description: "Rows set aside because they could not be synced." },
    error: { type: coda.ValueType.String, description: "The daemon's error text, for a failed run." },
  },
  displayProperty: "summary",
  idProperty: "runId",
  featuredProperties: ["state", "pulled", "pushed", "conflicts", "error"],
});

export interface RunStatus {
  summary: string;
  runId: string;
  state: string;
  finished: boolean;
  succeeded: boolean;
  binding: string;
  full: boolean;
  startedAt?: string;
  finishedAt?: string;
  pulled?: number;
  pushed?: number;
  deleted?: number;
  conflicts?: number;
  quarantined?: number;
  error?: string;
}

/** "2024-05-01T10:01:02.345+00:00" -> "2024-05-01 10:01:02 UTC"; unparsable text is returned as is. */
function readableTime(iso: string): string {
  const time = Date.parse(iso);
  if (Number.isNaN(time)) {
    return iso;
  }
  return new Date(time).toISOString().replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC");
}

export function summarize(run: RunResponse): string {
  switch (run.state) {
    case "succeeded": {
      const r = run.result;
      if (!r) {
        return "succeeded";
      }
      return (
        `succeeded: ${r.pulled} pulled, ${r.pushed} pushed, ${r.deleted} deleted, ` +
        `${r.conflicts} conflicts, ${r.quarantined} quarantined`
      );
    }
    case "failed":
      return `failed: ${run.error ?? "the daemon gave no error text"}`;
    case "queued":
      return "queued: waiting to start";
    case "running":
      return run.started_at ? `running since ${readableTime(run.started_at)}` : "running";
    default:
      return run.error ? `${run.state}: ${run.error}` : run.state;
  }
}

export function toRunStatus(run: RunResponse): RunStatus {
  const status: RunStatus = {
    summary: summarize(run),
    runId: run.run_id,
    state: run.state,
    finished: run.state === "succeeded" || run.state === "failed",
    succeeded: run.state === "succeeded",
    binding: run.binding ?? "all",
    full: run.full,
  };
  // Absent values are left out rather than set to undefined/null.
  if (run.started_at) {
    status.startedAt = run.started_at;
  }
  if (run.finished_at) {
    status.finishedAt = run.finished_at;
  }
  if (run.result) {
    status.pulled = run.result.pulled;
    status.pushed = run.result.pushed;
    status.deleted = run.result.deleted;
    status.conflicts = run.result.conflicts;
    status.quarantined = run.result.quarantined;
  }
  if (run.error) {
    status.error = run.error;
  }
  return status;
}
