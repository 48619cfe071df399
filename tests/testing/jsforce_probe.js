// Drives the Salesforce emulator with jsforce, as an application would after getting a token.
// Reads {"instanceUrl", "accessToken", "version"} as JSON on stdin (never argv: the token is a
// secret) and prints one JSON object with what each call returned; never prints the token.
const jsforce = require('jsforce');

async function attempt(call) {
  try {
    return { ok: true, value: await call() };
  } catch (error) {
    return { ok: false, errorCode: error.errorCode || error.name, message: String(error.message) };
  }
}

async function main() {
  let input = '';
  for await (const chunk of process.stdin) input += chunk;
  const { instanceUrl, accessToken, version } = JSON.parse(input);
  // loginUrl: jsforce's revoke (logout) goes to the login host, which must be the emulator too
  const connect = () => new jsforce.Connection({ instanceUrl, accessToken, version, loginUrl: instanceUrl });
  const conn = connect();
  const out = {};
  out.organization = await attempt(() => conn.query(
    'SELECT Id, Name, InstanceName, IsSandbox, OrganizationType, NamespacePrefix FROM Organization'));
  out.count = await attempt(() => conn.query('SELECT COUNT() FROM User'));
  out.devHubProbe = await attempt(() => conn.query('SELECT Id FROM ScratchOrgInfo'));
  const global = await attempt(() => conn.describeGlobal());
  out.describeGlobal = global.ok
    ? { ok: true, names: global.value.sobjects.map((s) => s.name) } : global;
  const identity = await attempt(() => conn.identity());
  out.identity = identity.ok
    ? { ok: true, user_id: identity.value.user_id, organization_id: identity.value.organization_id,
        username: identity.value.username } : identity;
  out.limits = await attempt(() => conn.limits());
  out.userRecord = identity.ok
    ? await attempt(() => conn.sobject('User').retrieve(identity.value.user_id)) : null;
  out.logout = await attempt(() => conn.logout());  // POST /services/oauth2/revoke
  // a fresh connection with the same (now revoked) token
  out.afterLogout = await attempt(() => connect().query('SELECT Id FROM Organization'));
  process.stdout.write(JSON.stringify(out));
}

main().catch((error) => { process.stderr.write(String(error && error.stack)); process.exit(1); });
