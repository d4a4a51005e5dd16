// A real OpenID Connect provider for the tests: oidc-provider (a certified OpenID
// provider implementation) with one confidential client and a few test accounts.
//
//   node provider.js --client-id ID --client-secret SECRET --redirect-uri URI
//                    [--fd N | --port N] [--host NAME] [--tls-cert PEM --tls-key PEM]
//
// It listens on the already bound socket of file descriptor N (the test binds it, so
// there is no port race), or on port N (0: a free one), serves http, or https with the
// given certificate, and prints one line when it answers: "issuer <issuer URL>".
//
// Sign-in is oidc-provider's own development login form (devInteractions): any
// password, and the login name picks one of ACCOUNTS below (another name is refused).
// The client is first-party: consent is granted without asking, as a hospital's
// identity provider does for its own applications.

import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

// login name -> claims; `groups` is the claim ainode maps to its roles
const ACCOUNTS = {
  alice: { name: 'Alice Admin', email: 'alice@hospital.test', groups: ['radiology', 'radiology-admins'] },
  oscar: { name: 'Oscar Operator', email: 'oscar@hospital.test', groups: ['radiology-ops'] },
  bob: { name: 'Bob Viewer', email: 'bob@hospital.test', groups: ['radiology'] },
  carol: { name: 'Carol Cardiology', email: 'carol@hospital.test', groups: ['cardiology'] },
};
const SCOPE = 'openid profile email groups';

const { values: args } = parseArgs({
  options: {
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string' },
    fd: { type: 'string' },
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: 'localhost' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
  },
});
for (const name of ['client-id', 'client-secret', 'redirect-uri']) {
  if (!args[name]) throw new Error(`--${name} is required`);
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-signing-key', use: 'sig', alg: 'RS256' };

function findAccount(ctx, id) {
  const claims = ACCOUNTS[id];
  if (!claims) return undefined;
  return {
    accountId: id,
    async claims() {
      return { sub: id, preferred_username: id, ...claims };
    },
  };
}

async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
  if (grantId) return oidc.provider.Grant.find(grantId);
  const grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
  grant.addOIDCScope(SCOPE);
  await grant.save();
  return grant;
}

const tls = Boolean(args['tls-cert']);
const server = tls
  ? https.createServer({ cert: readFileSync(args['tls-cert']), key: readFileSync(args['tls-key']) })
  : http.createServer();
const listening = args.fd ? { fd: Number(args.fd) } : { port: Number(args.port), host: '127.0.0.1' };

server.listen(listening, () => {
  const issuer = `${tls ? 'https' : 'http'}://${args.host}:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: args['client-id'],
      client_secret: args['client-secret'],
      redirect_uris: [args['redirect-uri']],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }],
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email'],
      groups: ['groups'],
    },
    scopes: ['openid', 'profile', 'email', 'groups'],
    cookies: { keys: ['test cookie key, not a secret'] },
    jwks: { keys: [signingKey] },
    features: { devInteractions: { enabled: true } },
    findAccount,
    loadExistingGrant,
  });
  server.on('request', provider.callback());
  process.stdout.write(`issuer ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
