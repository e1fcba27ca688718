// Coda Sync Pack: a "Sync now" button for the coda-sync daemon.
//
// The doc owner connects the Pack once with the daemon's public HTTPS URL and
// its trigger token. SyncNow() starts a sync (POST /sync) and returns the run id;
// SyncStatus(runId) reads that run's state (GET /runs/{run_id}).
import * as coda from "@codahq/packs-sdk";
import { DAEMON_DOMAIN } from "./src/config";
import { checkConnection, getRun, triggerSync } from "./src/daemon";
import { RunStatusSchema, toRunStatus } from "./src/status";

export const pack = coda.newPack();

// The endpoint URL typed in at connection time must be on DAEMON_DOMAIN (or a
// subdomain of it), and the fetcher may only call that domain.
pack.addNetworkDomain(DAEMON_DOMAIN);

pack.setUserAuthentication({
  // Sent as "Authorization: Bearer <trigger token>" on every request.
  type: coda.AuthenticationType.HeaderBearerToken,
  // Ask for the daemon's public base URL when connecting; formulas read it as context.endpoint.
  requiresEndpointUrl: true,
  endpointDomain: DAEMON_DOMAIN,
  // Checks the URL and token right away and names the connection after the host.
  getConnectionName: async function (context) {
    return checkConnection(context);
  },
});

pack.addFormula({
  name: "SyncNow",
  description:
    "Starts a sync between the Coda doc and the database right away and returns the run id " +
    "(use it with SyncStatus to follow the run).",
  isAction: true,
  parameters: [
    coda.makeParameter({
      type: coda.ParameterType.String,
      name: "binding",
      description: 'Which binding to sync, e.g. "participation". Leave empty to sync every binding.',
      optional: true,
    }),
    coda.makeParameter({
      type: coda.ParameterType.Boolean,
      name: "full",
      description: "True for a full sync instead of an incremental one. Default: false.",
      optional: true,
    }),
  ],
  resultType: coda.ValueType.String,
  execute: async function ([binding, full], context) {
    const started = await triggerSync(context, binding, full === true);
    return started.run_id;
  },
});

pack.addFormula({
  name: "SyncStatus",
  description:
    'Shows the state of a sync run started by SyncNow, e.g. "succeeded: 3 pulled, 1 pushed, 0 deleted, ' +
    '0 conflicts, 0 quarantined", or the daemon\'s error text for a failed run.',
  parameters: [
    coda.makeParameter({
      type: coda.ParameterType.String,
      name: "runId",
      description: 'The run id returned by SyncNow, e.g. "r-20240501-0001".',
    }),
  ],
  resultType: coda.ValueType.Object,
  schema: RunStatusSchema,
  // A run changes state from one minute to the next: never reuse an old answer.
  cacheTtlSecs: 0,
  execute: async function ([runId], context) {
    return toRunStatus(await getRun(context, runId));
  },
});
