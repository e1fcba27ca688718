// End-to-end test against a running coda-sync daemon (npm run test:e2e).
//
// Skipped unless both are set:
//   CODA_SYNC_CONTROL_URL    base URL of the control port, e.g. http://127.0.0.1:8787
//   CODA_SYNC_TRIGGER_TOKEN  the daemon's trigger token
// Optional:
//   CODA_SYNC_BINDING        binding to sync (default: none, i.e. all bindings)
//   CODA_SYNC_E2E_TIMEOUT_S  how long to wait for the run to succeed (default 60)
//
// SyncNow and SyncStatus run through the SDK's executeFormulaFromPackDef with a
// fetcher that forwards each request to that URL with Node's fetch, adding
// "Authorization: Bearer <token>" as Coda does for this Pack's connection.
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { runSyncNow, runSyncStatus, syncNowAndWait } from "../helpers/e2e_flow";
import { forwardingContext } from "../helpers/forwarding_fetcher";
import type { ForwardedRequest } from "../helpers/forwarding_fetcher";
import { expectFailure } from "../helpers/mock";

const url = process.env.CODA_SYNC_CONTROL_URL?.trim();
const token = process.env.CODA_SYNC_TRIGGER_TOKEN?.trim();
const binding = process.env.CODA_SYNC_BINDING?.trim() || undefined;
const timeoutSeconds = Number(process.env.CODA_SYNC_E2E_TIMEOUT_S ?? "60") || 60;
const skip = url && token ? false : "set CODA_SYNC_CONTROL_URL and CODA_SYNC_TRIGGER_TOKEN to run against a real daemon";

function log(line: string): void {
  process.stdout.write(`# ${line}\n`);
}

describe("coda-sync daemon end to end", () => {
  it(`SyncNow starts a run and SyncStatus reports it succeeded within ${timeoutSeconds} s`, { skip }, async () => {
    const seen: ForwardedRequest[] = [];
    const context = forwardingContext({ endpoint: url!, token: token!, onRequest: (r) => seen.push(r) });
    const outcome = await syncNowAndWait({ context, binding, timeoutMs: timeoutSeconds * 1000, pollMs: 1000, log });

    assert.match(outcome.runId, /\S/, "SyncNow returned a run id");
    assert.equal(seen[0].method, "POST");
    assert.ok(seen[0].url.endsWith("/sync"));
    assert.equal(
      outcome.timedOut,
      false,
      `run ${outcome.runId} did not finish within ${timeoutSeconds} s (last: ${outcome.status.summary})`,
    );
    assert.equal(outcome.status.state, "succeeded", `run ${outcome.runId}: ${outcome.status.summary}`);
    assert.equal(outcome.status.runId, outcome.runId);
    for (const key of ["pulled", "pushed", "deleted", "conflicts", "quarantined"] as const) {
      assert.equal(typeof outcome.status[key], "number", `result.${key} is a number`);
    }
  });

  it("rejects a wrong trigger token with 401", { skip }, async () => {
    const context = forwardingContext({ endpoint: url!, token: `${token}-wrong` });
    await expectFailure(runSyncNow(context, binding), "unauthorized");
  });

  it("answers 404 unknown_binding with the configured bindings", { skip }, async () => {
    const context = forwardingContext({ endpoint: url!, token: token! });
    const err = await expectFailure(runSyncNow(context, "no-such-binding-e2e"), "unknown_binding");
    log(err.message);
    assert.match(err.message, /Configured bindings: \S/);
  });

  it("answers 404 unknown_run for a run id it never issued", { skip }, async () => {
    const context = forwardingContext({ endpoint: url!, token: token! });
    await expectFailure(runSyncStatus(context, "r-does-not-exist-e2e"), "unknown_run");
  });
});
