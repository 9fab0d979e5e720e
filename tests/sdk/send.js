// Drives the official twilio-node SDK against smsguard for the tests.
//
// Environment: SMSGUARD_URL (base-URL mode) or nothing (environment-only
// mode: HTTP_PROXY and NODE_EXTRA_CA_CERTS set by the test), ALLOWED_TO,
// BLOCKED_TO, VERIFY_SERVICE, and END_USER_IP and END_USER to name the end
// user in the guard's context headers. Prints one JSON object with what the
// SDK returned.
const twilio = require("twilio");

const ACCOUNT = "AC0123456789abcdef0123456789abcdef";
const TOKEN = "planted-auth-token-7f3a";

// Names the end user behind every send (the README's example): in an app,
// the values come from the request being served.
class ContextRequestClient extends twilio.RequestClient {
  constructor(endUserIp, endUser) {
    super();
    this.context = { "X-SMSGuard-Client-IP": endUserIp, "X-SMSGuard-User": endUser };
  }
  request(opts) {
    return super.request({ ...opts, headers: { ...opts.headers, ...this.context } });
  }
}

async function main() {
  const client = process.env.END_USER_IP
    ? twilio(ACCOUNT, TOKEN, {
        httpClient: new ContextRequestClient(process.env.END_USER_IP, process.env.END_USER),
      })
    : twilio(ACCOUNT, TOKEN);
  const guard = process.env.SMSGUARD_URL;
  if (guard) {
    client.api.baseUrl = guard;
    client.verify.baseUrl = guard;
  }
  const out = {};
  for (const [name, to] of [["allowed", process.env.ALLOWED_TO], ["blocked", process.env.BLOCKED_TO]]) {
    const m = await client.messages.create({ to, from: "+15017122661", body: "Your code is 123456" });
    out[name] = { sid: m.sid, status: m.status, to: m.to, type: m.constructor.name };
  }
  const v = await client.verify.v2
    .services(process.env.VERIFY_SERVICE)
    .verifications.create({ to: process.env.BLOCKED_TO, channel: "sms" });
  out.verify = { sid: v.sid, status: v.status, to: v.to, type: v.constructor.name };
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(`${e.name}: ${e.message}`);
  process.exit(1);
});
