import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ENDPOINT, expectFailure, mockContext, newJsonFetchResponse, statusError, syncNow } from "./helpers/mock";

const ACCEPTED = { run_id: "r-0001", binding: "participation", full: false, state: "queued" };

describe("SyncNow", () => {
  it("POSTs a JSON body to <endpoint>/sync and returns the run id", async () => {
    const context = mockContext();
    context.fetcher.fetch.resolves(newJsonFetchResponse(ACCEPTED, 202));

    const runId = await syncNow(context, "participation", false);

    assert.equal(runId, "r-0001");
    assert.equal(context.fetcher.fetch.callCount, 1);
    const request = context.fetcher.fetch.firstCall.args[0];
    assert.equal(request.method, "POST");
    assert.equal(request.url, `${ENDPOINT}/sync`);
    assert.equal(request.headers?.["Content-Type"], "application/json");
    assert.equal(request.headers?.Accept, "application/json");
    assert.deepEqual(JSON.parse(String(request.body)), { binding: "participation", full: false });
    assert.equal(request.cacheTtlSecs, 0);
    // The token is added by Coda from the connection, never by the Pack code.
    assert.equal(request.headers?.Authorization, undefined);
  });

  it("sends full=true when asked for a full sync", async () => {
    const context = mockContext();
    context.fetcher.fetch.resolves(newJsonFetchResponse({ ...ACCEPTED, full: true }, 202));
    await syncNow(context, "participation", true);
    assert.deepEqual(JSON.parse(String(context.fetcher.fetch.firstCall.args[0].body)), {
      binding: "participation",
      full: true,
    });
  });

  it("leaves the binding out (all bindings) when none or a blank one is given", async () => {
    for (const params of [[], [""], ["   ", false]]) {
      const context = mockContext();
      context.fetcher.fetch.resolves(newJsonFetchResponse({ ...ACCEPTED, binding: null }, 202));
      assert.equal(await syncNow(context, ...params), "r-0001");
      assert.deepEqual(JSON.parse(String(context.fetcher.fetch.firstCall.args[0].body)), { full: false });
    }
  });

  it("trims the binding name and the endpoint's trailing slash", async () => {
    const context = mockContext(`${ENDPOINT}/`);
    context.fetcher.fetch.resolves(newJsonFetchResponse(ACCEPTED, 202));
    await syncNow(context, "  participation ");
    const request = context.fetcher.fetch.firstCall.args[0];
    assert.equal(request.url, `${ENDPOINT}/sync`);
    assert.deepEqual(JSON.parse(String(request.body)), { binding: "participation", full: false });
  });

  it("keeps a path prefix of the endpoint URL", async () => {
    const context = mockContext("https://hr.example.com/coda-sync");
    context.fetcher.fetch.resolves(newJsonFetchResponse(ACCEPTED, 202));
    await syncNow(context, "participation");
    assert.equal(context.fetcher.fetch.firstCall.args[0].url, "https://hr.example.com/coda-sync/sync");
  });

  it("accepts a JSON answer that the fetcher left as text", async () => {
    const context = mockContext();
    context.fetcher.fetch.resolves({ status: 202, headers: {}, body: JSON.stringify(ACCEPTED) });
    assert.equal(await syncNow(context, "participation"), "r-0001");
  });

  it("reports a wrong token (401)", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(401, { error: "unauthorized", message: "bad token" }));
    const err = await expectFailure(syncNow(context, "participation"), "unauthorized");
    assert.match(err.message, /rejected the trigger token \(HTTP 401\)/);
    assert.match(err.message, /Reconnect the Coda Sync Pack/);
    assert.equal(err.status, 401);
  });

  it("reports a wrong token also when a fetcher returns the 401 instead of throwing", async () => {
    const context = mockContext();
    context.fetcher.fetch.resolves(newJsonFetchResponse({ error: "unauthorized", message: "bad token" }, 401));
    await expectFailure(syncNow(context, "participation"), "unauthorized");
  });

  it("lists the configured bindings for an unknown binding (404 unknown_binding)", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(
      statusError(404, {
        error: "unknown_binding",
        message: "binding 'payroll' is not configured",
        bindings: ["participation", "absences"],
      }),
    );
    const err = await expectFailure(syncNow(context, "payroll"), "unknown_binding");
    assert.equal(
      err.message,
      'Binding "payroll" is not configured on the sync daemon. Configured bindings: participation, absences.',
    );
  });

  it("reports a 404 without the daemon's JSON as a wrong endpoint URL", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(404, "<html><body><h1>404 Not Found</h1></body></html>"));
    const err = await expectFailure(syncNow(context, "participation"), "not_found");
    assert.match(err.message, /Nothing answers at https:\/\/coda-sync\.hr\.example\.com\/sync \(HTTP 404\)/);
    assert.match(err.message, /Check the endpoint URL/);
  });

  it("reports rate limiting (429) with the proxy's Retry-After", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(429, "<html>429 Too Many Requests</html>", { "Retry-After": "30" }));
    const err = await expectFailure(syncNow(context, "participation"), "rate_limited");
    assert.match(err.message, /rate-limiting/);
    assert.match(err.message, /Try again in 30 seconds\./);
  });

  it("reports a busy daemon (503 busy) with its message", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(
      statusError(503, { error: "busy", message: "a sync of participation is already running" }),
    );
    const err = await expectFailure(syncNow(context, "participation"), "busy");
    assert.equal(
      err.message,
      "The sync daemon is busy: a sync of participation is already running (HTTP 503). Try again in a minute.",
    );
  });

  it("reports a busy daemon (429 busy)", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(429, { error: "busy", message: "queue is full" }, { "retry-after": "5" }));
    const err = await expectFailure(syncNow(context, "participation"), "busy");
    assert.match(err.message, /busy: queue is full \(HTTP 429\)\. Try again in 5 seconds\./);
  });

  for (const status of [502, 503, 504]) {
    it(`reports an unreachable daemon behind the proxy (${status})`, async () => {
      const context = mockContext();
      context.fetcher.fetch.rejects(statusError(status, "<html>Bad Gateway</html>"));
      const err = await expectFailure(syncNow(context, "participation"), "unreachable");
      assert.match(err.message, new RegExp(`not reachable \\(HTTP ${status} from the proxy\\)`));
    });
  }

  it("reports a network failure as an unreachable daemon", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(new Error("connect ECONNREFUSED 203.0.113.7:443"));
    const err = await expectFailure(syncNow(context, "participation"), "unreachable");
    assert.match(err.message, /^Could not reach the sync daemon at coda-sync\.hr\.example\.com: connect ECONNREFUSED/);
    assert.match(err.message, /HTTPS proxy are running/);
  });

  it("reports a malformed request (400 bad_request) with the daemon's message", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(400, { error: "bad_request", message: "full must be a boolean" }));
    const err = await expectFailure(syncNow(context, "participation"), "bad_request");
    assert.match(err.message, /HTTP 400: full must be a boolean/);
  });

  it("reports a too large request (413)", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(413, "<html>413 Request Entity Too Large</html>"));
    await expectFailure(syncNow(context, "participation"), "too_large");
  });

  it("refuses an over-long binding name without calling the daemon", async () => {
    const context = mockContext();
    await expectFailure(syncNow(context, "x".repeat(201)), "invalid_input");
    assert.equal(context.fetcher.fetch.callCount, 0);
  });

  it("reports a daemon error (500)", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(500, { error: "internal", message: "database is locked" }));
    const err = await expectFailure(syncNow(context, "participation"), "server_error");
    assert.match(err.message, /internal error \(HTTP 500: database is locked\)/);
  });

  it("reports any other status as unexpected", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(418, { error: "teapot", message: "short and stout" }));
    const err = await expectFailure(syncNow(context, "participation"), "unexpected");
    assert.match(err.message, /Unexpected response from the sync daemon at coda-sync\.hr\.example\.com \(HTTP 418: short and stout\)/);
  });

  it("reports a 2xx answer without a run id as unexpected", async () => {
    const context = mockContext();
    context.fetcher.fetch.resolves(newJsonFetchResponse({ state: "queued" }, 202));
    const err = await expectFailure(syncNow(context, "participation"), "unexpected");
    assert.match(err.message, /no run_id in the answer to POST \/sync/);
  });

  it("asks to reconnect when the connection has no endpoint URL", async () => {
    const context = mockContext(null);
    const err = await expectFailure(syncNow(context, "participation"), "no_endpoint");
    assert.match(err.message, /Reconnect the Coda Sync Pack/);
    assert.equal(context.fetcher.fetch.callCount, 0);
  });
});
