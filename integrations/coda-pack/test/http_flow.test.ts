// The end-to-end flow over real HTTP, against an in-process fake daemon that
// implements the control-port contract, through the same forwarding fetcher
// that `npm run test:e2e` uses against the real daemon.
import * as assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { runSyncNow, runSyncStatus, syncNowAndWait } from "./helpers/e2e_flow";
import { startFakeDaemon } from "./helpers/fake_daemon";
import type { FakeDaemon } from "./helpers/fake_daemon";
import { forwardingContext } from "./helpers/forwarding_fetcher";
import { expectFailure } from "./helpers/mock";

const TOKEN = "test-trigger-token-0123456789";

describe("SyncNow + SyncStatus over HTTP (fake daemon)", () => {
  let daemon: FakeDaemon;

  before(async () => {
    daemon = await startFakeDaemon({
      token: TOKEN,
      bindings: ["participation", "absences"],
      failing: { binding: "absences", error: "database is locked" },
    });
  });

  after(async () => {
    await daemon.close();
  });

  it("starts a sync and polls it until it succeeded", async () => {
    const context = forwardingContext({ endpoint: daemon.url, token: TOKEN });
    const outcome = await syncNowAndWait({ context, binding: "participation", timeoutMs: 10_000, pollMs: 25 });

    assert.equal(outcome.timedOut, false);
    assert.equal(outcome.status.state, "succeeded");
    assert.equal(outcome.status.summary, "succeeded: 3 pulled, 1 pushed, 0 deleted, 0 conflicts, 0 quarantined");
    assert.equal(outcome.status.binding, "participation");
    assert.ok(outcome.polls >= 2, "saw the run before it finished");

    const trigger = daemon.requests.find((r) => r.method === "POST");
    assert.ok(trigger);
    assert.equal(trigger.path, "/sync");
    assert.equal(trigger.authorization, `Bearer ${TOKEN}`);
    assert.equal(trigger.contentType, "application/json");
    assert.deepEqual(JSON.parse(trigger.body), { binding: "participation", full: false });
    assert.ok(daemon.requests.some((r) => r.method === "GET" && r.path === `/runs/${outcome.runId}`));
  });

  it("syncs every binding when none is given", async () => {
    const context = forwardingContext({ endpoint: daemon.url, token: TOKEN });
    const runId = await runSyncNow(context);
    assert.equal(daemon.runs.get(runId)?.binding, null);
    assert.equal((await runSyncStatus(context, runId)).binding, "all");
  });

  it("shows a failed run with the daemon's error text", async () => {
    const context = forwardingContext({ endpoint: daemon.url, token: TOKEN });
    const outcome = await syncNowAndWait({ context, binding: "absences", full: true, timeoutMs: 10_000, pollMs: 25 });
    assert.equal(outcome.status.state, "failed");
    assert.equal(outcome.status.summary, "failed: database is locked");
    assert.equal(outcome.status.full, true);
  });

  it("reports a wrong token", async () => {
    const context = forwardingContext({ endpoint: daemon.url, token: "wrong" });
    await expectFailure(runSyncNow(context, "participation"), "unauthorized");
    await expectFailure(runSyncStatus(context, "r-0001"), "unauthorized");
  });

  it("lists the configured bindings for an unknown one", async () => {
    const context = forwardingContext({ endpoint: daemon.url, token: TOKEN });
    const err = await expectFailure(runSyncNow(context, "payroll"), "unknown_binding");
    assert.match(err.message, /Configured bindings: participation, absences\./);
  });

  it("reports an unknown run", async () => {
    const context = forwardingContext({ endpoint: daemon.url, token: TOKEN });
    await expectFailure(runSyncStatus(context, "r-9999"), "unknown_run");
  });

  it("reports a daemon that is not running", async () => {
    const gone = await startFakeDaemon({ token: TOKEN });
    await gone.close();
    const context = forwardingContext({ endpoint: gone.url, token: TOKEN, timeoutMs: 5_000 });
    const err = await expectFailure(runSyncNow(context, "participation"), "unreachable");
    assert.match(err.message, /^Could not reach the sync daemon at 127\.0\.0\.1:\d+/);
  });
});
