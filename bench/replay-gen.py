#!/usr/bin/env python3
"""Writes a labelled traffic file for `smsguard replay` (bench/replay).

JSON lines shaped like Twilio's Bulk Export of Messages plus smsguard's own
fields: legitimate one-time codes to the US, Canada and the UK (a quarter
through Verify, most confirmed by their recipient), SMS pumping to a
+99899394... block and to four UK mobile blocks, and some inbound messages
(skipped by the replay). Deterministic for a seed.

    bench/replay-gen.py --records 1000000 --days 7 --out /tmp/replay-1m.jsonl
"""

import argparse
import json
import random
from datetime import datetime, timedelta, timezone

US_AREAS = [201, 212, 213, 305, 312, 404, 415, 503, 512, 617, 646, 702, 713,
            718, 773, 818, 917, 919, 972, 206]
CA_AREAS = [416, 604, 514, 403, 613, 647, 778, 905]
ACCOUNT = "AC5ef8732a3c49700934481addd5ce1659"


def legit_number(rng):
    pick = rng.randrange(100)
    if pick < 80:
        areas = US_AREAS
    elif pick < 90:
        areas = CA_AREAS
    else:
        return "+447%d%08d" % (rng.choice([4, 5, 8, 9]), rng.randrange(10**8))
    while True:
        exchange = rng.randrange(200, 1000)
        if exchange % 100 != 55 and exchange != 555:
            return "+1%d%d%04d" % (rng.choice(areas), exchange, rng.randrange(10**4))


def ip(rng):
    return "%d.%d.%d.%d" % (rng.randrange(11, 223), rng.randrange(256),
                            rng.randrange(256), rng.randrange(1, 255))


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--seed", type=int, default=20231122)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    rng = random.Random(a.seed)
    start = datetime(2023, 11, 20, tzinfo=timezone.utc)
    span = a.days * 86400.0
    uk_blocks = ["+4474%02d%02d" % (rng.randrange(100), rng.randrange(100)) for _ in range(4)]
    attack_ips = [ip(rng) for _ in range(20000)]
    # Attacks come in bursts: one hour a day.
    bursts = [start + timedelta(days=d, hours=rng.randrange(24)) for d in range(a.days)]

    with open(a.out, "w") as out:
        for i in range(a.records):
            kind = rng.randrange(100)
            rec = {"account_sid": ACCOUNT, "api_version": "2010-04-01",
                   "direction": "outbound-api", "from": "+15017122661",
                   "status": "delivered", "num_media": "0", "num_segments": "1"}
            if kind < 70:
                t = start + timedelta(seconds=rng.random() * span)
                rec["to"] = legit_number(rng)
                rec["client_ip"] = ip(rng)
                rec["user"] = "user-%d" % rng.randrange(10**7)
                rec["label"] = "legitimate"
                if rng.randrange(4) == 0:
                    rec["product"] = "verify"
                    rec["channel"] = "sms"
                else:
                    rec["body"] = "Your verification code is %06d" % rng.randrange(10**6)
                    rec["price"] = "-0.00790"
                if rng.randrange(100) < 85:
                    rec["confirmed_at"] = iso(t + timedelta(seconds=rng.uniform(15, 120)))
            elif kind < 90:
                t = rng.choice(bursts) + timedelta(seconds=rng.random() * 3600)
                rec["to"] = "+99899394%04d" % rng.randrange(10**4)
                rec["client_ip"] = rng.choice(attack_ips)
                rec["body"] = "Your verification code is %06d" % rng.randrange(10**6)
                rec["status"] = "undelivered"
                rec["label"] = "attack: +99899394 (UZ)"
            elif kind < 95:
                t = rng.choice(bursts) + timedelta(seconds=rng.random() * 3600)
                rec["to"] = "%s%04d" % (rng.choice(uk_blocks), rng.randrange(10**4))
                rec["client_ip"] = rng.choice(attack_ips)
                rec["body"] = "Your verification code is %06d" % rng.randrange(10**6)
                rec["label"] = "attack: UK mobile blocks"
            else:
                t = start + timedelta(seconds=rng.random() * span)
                rec["direction"] = "inbound"
                rec["status"] = "received"
                rec["from"], rec["to"] = legit_number(rng), "+15017122661"
                rec["body"] = "STOP"
            rec["date_created"] = iso(t)
            rec["sid"] = "SM%032x" % rng.getrandbits(128)
            out.write(json.dumps(rec, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
