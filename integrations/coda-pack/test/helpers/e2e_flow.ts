// The end-to-end flow: run SyncNow through the SDK, then poll SyncStatus until
// the run has finished or the time is up. Shared by the fake-daemon tests and
// the real-daemon test (npm run test:e2e).
import { executeFormulaFromPackDef } from "@codahq/packs-sdk/dist/testing/execution";
import type { ExecutionContext } from "@codahq/packs-sdk";
import { pack } from "../../pack";
import type { RunStatus } from "../../src/status";

export interface FlowOptions {
  context: ExecutionContext;
  binding?: string;
  full?: boolean;
  timeoutMs?: number;
  pollMs?: number;
  log?: (line: string) => void;
}

export interface FlowResult {
  runId: string;
  status: RunStatus;
  polls: number;
  timedOut: boolean;
}

export async function runSyncNow(context: ExecutionContext, binding?: string, full?: boolean): Promise<string> {
  const params: unknown[] = [];
  if (binding !== undefined || full !== undefined) {
    params.push(binding ?? "");
  }
  if (full !== undefined) {
    params.push(full);
  }
  return executeFormulaFromPackDef<string>(pack, "SyncNow", params as never, context);
}

export async function runSyncStatus(context: ExecutionContext, runId: string): Promise<RunStatus> {
  return executeFormulaFromPackDef(pack, "SyncStatus", [runId] as never, context, {
    // Return the properties under the Pack's own names (runId, state, ...).
    useDeprecatedResultNormalization: false,
  }) as Promise<RunStatus>;
}

export async function syncNowAndWait(options: FlowOptions): Promise<FlowResult> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const pollMs = options.pollMs ?? 1_000;
  const runId = await runSyncNow(options.context, options.binding, options.full);
  options.log?.(`SyncNow -> ${runId}`);
  const deadline = Date.now() + timeoutMs;
  let polls = 0;
  for (;;) {
    const status = await runSyncStatus(options.context, runId);
    polls += 1;
    options.log?.(`SyncStatus(${runId}) -> ${status.summary}`);
    if (status.finished) {
      return { runId, status, polls, timedOut: false };
    }
    if (Date.now() + pollMs > deadline) {
      return { runId, status, polls, timedOut: true };
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
