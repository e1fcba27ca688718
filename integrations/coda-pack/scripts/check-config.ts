// Run before `coda upload` (npm run upload): refuses to upload a Pack whose
// network domain is still the repository's placeholder or is malformed.
import { DAEMON_DOMAIN, PLACEHOLDER_DOMAIN } from "../src/config";

function fail(message: string): never {
  process.stderr.write(`check-config: ${message}\n`);
  process.exit(1);
}

const domain = DAEMON_DOMAIN.trim();
if (!domain || domain !== DAEMON_DOMAIN) {
  fail(`DAEMON_DOMAIN in src/config.ts must be a bare domain without spaces, got ${JSON.stringify(DAEMON_DOMAIN)}.`);
}
if (/^[a-z]+:|[/?#:@]/i.test(domain)) {
  fail(`DAEMON_DOMAIN in src/config.ts must be a bare domain like "acme.example" (no "https://", port or path), got "${domain}".`);
}
if (!/^([a-z0-9-]+\.)+[a-z0-9-]+$/i.test(domain)) {
  fail(`DAEMON_DOMAIN in src/config.ts does not look like a domain name: "${domain}".`);
}
if (domain === PLACEHOLDER_DOMAIN) {
  fail(
    `DAEMON_DOMAIN in src/config.ts is still the placeholder "${PLACEHOLDER_DOMAIN}". ` +
      "Set it to the domain of the daemon's public HTTPS endpoint (see README.md) before uploading.",
  );
}
process.stdout.write(`check-config: network domain is "${domain}".\n`);
