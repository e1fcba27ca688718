import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ENDPOINT, expectFailure, mockContext, newJsonFetchResponse, statusError, syncStatus } from "./helpers/mock";

const SUCCEEDED = {
  run_id: "r-0001",
  state: "succeeded",
  binding: "participation",
  full: false,
  started_at: "2024-05-01T10:00:00+00:00",
  finished_at: "2024-05-01T10:00:04+00:00",
  result: { pulled: 3, pushed: 1, deleted: 0, conflicts: 0, quarantined: 0 },
  error: null,
};

describe("SyncStatus", () => {
  it("GETs <endpoint>/runs/<runId> uncached and summarises a succeeded run", async () => {
    const context = mockContext();
    context.fetcher.fetch.resolves(newJsonFetchResponse(SUCCEEDED));

    const status = await syncStatus(context, "r-0001");

    const request = context.fetcher.fetch.firstCall.args[0];
    assert.equal(request.method, "GET");
    assert.equal(request.url, `${ENDPOINT}/runs/r-0001`);
    assert.equal(request.body, undefined);
    assert.equal(request.cacheTtlSecs, 0);
    assert.deepEqual(status, {
      summary: "succeeded: 3 pulled, 1 pushed, 0 deleted, 0 conflicts, 0 quarantined",
      runId: "r-0001",
      state: "succeeded",
      finished: true,
      succeeded: true,
      binding: "participation",
      full: false,
      startedAt: "2024-05-01T10:00:00+00:00",
      finishedAt: "2024-05-01T10:00:04+00:00",
      pulled: 3,
      pushed: 1,
      deleted: 0,
      conflicts: 0,
      quarantined: 0,
    });
  });

  it("shows a queued run", async () => {
    const context = mockContext();
    context.fetcher.fetch.resolves(
      newJsonFetchResponse({ ...SUCCEEDED, state: "queued", binding: null, started_at: null, finished_at: null, result: null }),
    );
    const status = await syncStatus(context, "r-0001");
    assert.equal(status.summary, "queued: waiting to start");
    assert.equal(status.finished, false);
    assert.equal(status.binding, "all");
    assert.equal(status.pulled, undefined);
  });

  it("shows a running run with its start time", async () => {
    const context = mockContext();
    context.fetcher.fetch.resolves(
      newJsonFetchResponse({ ...SUCCEEDED, state: "running", started_at: "2024-05-01T10:00:00.123456+00:00", finished_at: null, result: null }),
    );
    const status = await syncStatus(context, "r-0001");
    assert.equal(status.summary, "running since 2024-05-01 10:00:00 UTC");
    assert.equal(status.finished, false);
  });

  it("shows a failed run with the daemon's error text", async () => {
    const context = mockContext();
    context.fetcher.fetch.resolves(
      newJsonFetchResponse({
        ...SUCCEEDED,
        state: "failed",
        result: null,
        error: "Coda API answered 429 Too Many Requests three times",
      }),
    );
    const status = await syncStatus(context, "r-0001");
    assert.equal(status.summary, "failed: Coda API answered 429 Too Many Requests three times");
    assert.equal(status.error, "Coda API answered 429 Too Many Requests three times");
    assert.equal(status.finished, true);
    assert.equal(status.succeeded, false);
  });

  it("escapes the run id in the URL", async () => {
    const context = mockContext();
    context.fetcher.fetch.resolves(newJsonFetchResponse({ ...SUCCEEDED, run_id: "r 1/x?y" }));
    await syncStatus(context, " r 1/x?y ");
    assert.equal(context.fetcher.fetch.firstCall.args[0].url, `${ENDPOINT}/runs/r%201%2Fx%3Fy`);
  });

  it("reports an unknown run (404 unknown_run)", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(404, { error: "unknown_run", message: "run 'r-9' is not known" }));
    const err = await expectFailure(syncStatus(context, "r-9"), "unknown_run");
    assert.match(err.message, /^Sync run "r-9" is not known to the sync daemon\./);
  });

  it("reports a wrong token (401)", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(401, { error: "unauthorized", message: "bad token" }));
    await expectFailure(syncStatus(context, "r-0001"), "unauthorized");
  });

  it("reports an unreachable daemon", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(new Error("getaddrinfo ENOTFOUND coda-sync.hr.example.com"));
    const err = await expectFailure(syncStatus(context, "r-0001"), "unreachable");
    assert.match(err.message, /ENOTFOUND/);
  });

  it("reports a busy daemon", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(503, { error: "busy", message: "shutting down" }));
    await expectFailure(syncStatus(context, "r-0001"), "busy");
  });

  it("refuses an empty run id without calling the daemon", async () => {
    const context = mockContext();
    await expectFailure(syncStatus(context, "  "), "invalid_input");
    assert.equal(context.fetcher.fetch.callCount, 0);
  });

  it("reports an answer without a state as unexpected", async () => {
    const context = mockContext();
    context.fetcher.fetch.resolves(newJsonFetchResponse({ run_id: "r-0001" }));
    await expectFailure(syncStatus(context, "r-0001"), "unexpected");
  });

  it("shows a state this Pack does not know yet as is", async () => {
    const context = mockContext();
    context.fetcher.fetch.resolves(newJsonFetchResponse({ ...SUCCEEDED, state: "cancelled", result: null, error: "stopped by admin" }));
    const status = await syncStatus(context, "r-0001");
    assert.equal(status.summary, "cancelled: stopped by admin");
    assert.equal(status.finished, false);
  });
});
