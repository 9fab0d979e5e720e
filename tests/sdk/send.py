"""Drives the official twilio-python SDK against smsguard for the tests.

Environment: SMSGUARD_URL (base-URL mode) or nothing (environment-only mode:
HTTPS_PROXY and REQUESTS_CA_BUNDLE set by the test), ALLOWED_TO, BLOCKED_TO,
VERIFY_SERVICE, and END_USER_IP and END_USER to name the end user in the
guard's context headers. Prints one JSON object with what the SDK returned.
"""
import json
import os
import sys

from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

ACCOUNT = "AC0123456789abcdef0123456789abcdef"
TOKEN = "planted-auth-token-7f3a"


class ContextHttpClient(TwilioHttpClient):
    """Names the end user behind every send (the README's example): in an
    app, the values come from the request being served."""

    def __init__(self, end_user_ip, end_user):
        super().__init__()
        self.context = {"X-SMSGuard-Client-IP": end_user_ip, "X-SMSGuard-User": end_user}

    def request(self, method, url, params=None, data=None, headers=None, *args, **kwargs):
        headers = {**(headers or {}), **self.context}
        return super().request(method, url, params, data, headers, *args, **kwargs)


def main():
    if os.environ.get("END_USER_IP"):
        http = ContextHttpClient(os.environ["END_USER_IP"], os.environ["END_USER"])
        client = Client(ACCOUNT, TOKEN, http_client=http)
    else:
        client = Client(ACCOUNT, TOKEN)
    guard = os.environ.get("SMSGUARD_URL")
    if guard:
        client.api.base_url = guard
        client.verify.base_url = guard
    out = {}
    for name, to in (("allowed", os.environ["ALLOWED_TO"]), ("blocked", os.environ["BLOCKED_TO"])):
        m = client.messages.create(to=to, from_="+15017122661", body="Your code is 123456")
        out[name] = {"sid": m.sid, "status": m.status, "to": m.to, "type": type(m).__name__}
    v = client.verify.v2.services(os.environ["VERIFY_SERVICE"]).verifications.create(
        to=os.environ["BLOCKED_TO"], channel="sms"
    )
    out["verify"] = {"sid": v.sid, "status": v.status, "to": v.to, "type": type(v).__name__}
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the test reads the reason from stderr
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
