// Helpers around the SDK's own testing mocks (newMockExecutionContext,
// newJsonFetchResponse) for the unit tests.
import * as assert from "node:assert/strict";
import * as coda from "@codahq/packs-sdk";
import { executeFormulaFromPackDef } from "@codahq/packs-sdk/dist/testing/execution";
import { newJsonFetchResponse, newMockExecutionContext } from "@codahq/packs-sdk/dist/testing/mocks";
import type { MockExecutionContext } from "@codahq/packs-sdk/dist/testing/mocks";
import { pack } from "../../pack";
import { DaemonError } from "../../src/daemon";
import type { FailureReason } from "../../src/daemon";
import type { RunStatus } from "../../src/status";

export const ENDPOINT = "https://coda-sync.hr.example.com";

export { newJsonFetchResponse };

/**
 * A mock context connected to ENDPOINT (as if the doc owner had connected the
 * Pack); `null` gives a context without an endpoint.
 */
export function mockContext(endpoint: string | null = ENDPOINT): MockExecutionContext {
  return newMockExecutionContext(endpoint === null ? {} : { endpoint });
}

/** The error Coda's fetcher throws for an HTTP status of 400 or more. */
export function statusError(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): coda.StatusCodeError {
  const rawBody = typeof body === "string" ? body : JSON.stringify(body);
  return new coda.StatusCodeError(status, body, { method: "GET", url: ENDPOINT }, { body: rawBody, headers });
}

export function syncNow(context: MockExecutionContext, ...params: unknown[]): Promise<string> {
  return executeFormulaFromPackDef<string>(pack, "SyncNow", params as never, context);
}

export function syncStatus(context: MockExecutionContext, runId: string): Promise<RunStatus> {
  return executeFormulaFromPackDef(pack, "SyncStatus", [runId] as never, context, {
    useDeprecatedResultNormalization: false,
  }) as Promise<RunStatus>;
}

/**
 * Awaits a formula that must fail and returns the Pack's own error. The SDK's
 * executeFormulaFromPackDef wraps what the Pack threw; the original is `cause`.
 */
export async function expectFailure(promise: Promise<unknown>, reason: FailureReason): Promise<DaemonError> {
  let thrown: unknown;
  try {
    await promise;
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown, "expected the formula to fail");
  const original = (thrown as { cause?: unknown }).cause ?? thrown;
  assert.ok(original instanceof DaemonError, `expected a DaemonError, got ${String(original)}`);
  assert.ok(original instanceof coda.UserVisibleError, "must be a coda.UserVisibleError");
  assert.equal(original.isUserVisible, true);
  assert.equal(original.reason, reason, `reason of: ${original.message}`);
  return original;
}
