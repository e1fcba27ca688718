import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as coda from "@codahq/packs-sdk";
import { executeMetadataFormula } from "@codahq/packs-sdk/dist/testing/execution";
import { pack } from "../pack";
import { DaemonError } from "../src/daemon";
import { ENDPOINT, mockContext, statusError } from "./helpers/mock";

function connect(context: ReturnType<typeof mockContext>) {
  const auth = pack.defaultAuthentication;
  assert.ok(auth && auth.type === coda.AuthenticationType.HeaderBearerToken);
  const getConnectionName = auth.getConnectionName;
  assert.ok(getConnectionName);
  return executeMetadataFormula(getConnectionName, {}, context);
}

async function connectFailure(context: ReturnType<typeof mockContext>): Promise<DaemonError> {
  try {
    await connect(context);
  } catch (err) {
    assert.ok(err instanceof DaemonError, String(err));
    return err;
  }
  assert.fail("expected the connection to fail");
}

describe("Connecting the Pack", () => {
  it("checks the token with GET /runs/connection-check and names the connection after the host", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(404, { error: "unknown_run", message: "run 'connection-check' is not known" }));
    assert.equal(await connect(context), "coda-sync (coda-sync.hr.example.com)");
    const request = context.fetcher.fetch.firstCall.args[0];
    assert.equal(request.method, "GET");
    assert.equal(request.url, `${ENDPOINT}/runs/connection-check`);
  });

  it("fails at once for a wrong token", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(401, { error: "unauthorized", message: "bad token" }));
    const err = await connectFailure(context);
    assert.equal(err.reason, "unauthorized");
  });

  it("fails at once for an unreachable daemon", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(new Error("connect ETIMEDOUT"));
    assert.equal((await connectFailure(context)).reason, "unreachable");
  });

  it("fails at once for a URL where the daemon does not answer", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(404, "<html>Not Found</html>"));
    assert.equal((await connectFailure(context)).reason, "not_found");
  });

  it("accepts the connection when the daemon is merely busy", async () => {
    const context = mockContext();
    context.fetcher.fetch.rejects(statusError(503, { error: "busy", message: "try later" }));
    assert.equal(await connect(context), "coda-sync (coda-sync.hr.example.com)");
  });
});
