// Deployment setting: the root domain under which the coda-sync daemon's public
// (TLS reverse proxy) endpoint lives.
//
// Coda only lets a Pack talk to the domains it declares, and the endpoint URL a
// doc owner types in when connecting must sit on (a subdomain of) this domain.
// Set it to your organisation's domain before `npm run upload`, e.g. if the
// daemon is published at https://coda-sync.hr.acme.example, "acme.example" or
// "hr.acme.example" both work. Do not include "https://" or a path.
//
// `npm run upload` refuses to upload while this still holds the placeholder.
export const DAEMON_DOMAIN = "example.com";

/** The placeholder value shipped in the repository (see scripts/check-config.ts). */
export const PLACEHOLDER_DOMAIN = "example.com";
