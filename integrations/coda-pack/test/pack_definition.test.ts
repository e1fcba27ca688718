import * as assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import * as coda from "@codahq/packs-sdk";
import { compilePackMetadata } from "@codahq/packs-sdk/dist/helpers/metadata";
import { validatePackVersionMetadata } from "@codahq/packs-sdk/dist/testing/upload_validation";
import { pack } from "../pack";
import { DAEMON_DOMAIN } from "../src/config";

function formula(name: string) {
  const found = pack.formulas.find((f) => f.name === name);
  assert.ok(found, `formula ${name} is defined`);
  return found;
}

describe("Pack definition", () => {
  it("passes the SDK's upload validation", async () => {
    const sdkVersion = JSON.parse(
      readFileSync(require.resolve("@codahq/packs-sdk/package.json"), "utf8"),
    ).version as string;
    const metadata = compilePackMetadata({ ...pack, version: pack.version ?? "1" });
    await validatePackVersionMetadata(metadata, sdkVersion);
  });

  it("asks for the daemon's endpoint URL and sends the token as a bearer header", () => {
    const auth = pack.defaultAuthentication;
    assert.ok(auth && auth.type === coda.AuthenticationType.HeaderBearerToken);
    assert.equal(auth.requiresEndpointUrl, true);
    assert.equal(auth.endpointDomain, DAEMON_DOMAIN);
    assert.ok(auth.getConnectionName, "names (and checks) the connection");
    assert.deepEqual(pack.networkDomains, [DAEMON_DOMAIN]);
  });

  it("has SyncNow as an action with optional binding and full", () => {
    const syncNow = formula("SyncNow");
    assert.equal(syncNow.isAction, true);
    assert.equal(syncNow.resultType, coda.Type.string);
    assert.deepEqual(
      syncNow.parameters.map((p) => [p.name, p.type, p.optional]),
      [
        ["binding", coda.Type.string, true],
        ["full", coda.Type.boolean, true],
      ],
    );
  });

  it("has SyncStatus as an uncached formula returning an object shown by its summary", () => {
    const syncStatus = formula("SyncStatus");
    assert.ok(!syncStatus.isAction);
    assert.equal(syncStatus.cacheTtlSecs, 0);
    assert.equal(syncStatus.resultType, coda.Type.object);
    assert.deepEqual(
      syncStatus.parameters.map((p) => [p.name, p.type, p.optional ?? false]),
      [["runId", coda.Type.string, false]],
    );
    const schema = (syncStatus as { schema?: coda.ObjectSchema<string, string> }).schema;
    // The SDK normalises property names (summary -> Summary) when the schema is made.
    assert.equal(schema?.displayProperty?.toLowerCase(), "summary");
    assert.equal(schema?.idProperty?.toLowerCase(), "runid");
  });
});
