#!/usr/bin/env python3
"""Writes tests/data/pii_corpus.jsonl: a labelled corpus for the privacy detector (src/pii.c).

Each line is {"text": ..., "pii": [{"type": ..., "value": ...}, ...]}: sentences with zero to
two items of personal data or secrets, and look-alikes that must not be taken (version
numbers, dates, times, order ids, ISBNs, hashes, UUIDs, MAC addresses, amounts, numbers that
fail the card or IBAN checksums). Deterministic (fixed seed). Run from the repository root:
    python3 tests/data/make_pii_corpus.py > tests/data/pii_corpus.jsonl
"""
import json
import random
import string

R = random.Random(20261203)


def luhn_complete(prefix, length):
    digits = [int(c) for c in prefix]
    while len(digits) < length - 1:
        digits.append(R.randrange(10))
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    digits.append((10 - total % 10) % 10)
    return "".join(map(str, digits))


def luhn_broken(prefix, length):
    good = luhn_complete(prefix, length)
    last = (int(good[-1]) + 1 + R.randrange(8)) % 10
    return good[:-1] + str(last)


def group(s, sizes, sep):
    out, i = [], 0
    for n in sizes:
        if i < len(s):
            out.append(s[i:i + n])
        i += n
    if i < len(s):
        out.append(s[i:])
    return sep.join(out)


def card():
    kind = R.choice(["visa", "mc", "amex"])
    if kind == "amex":
        num = luhn_complete(R.choice(["34", "37"]), 15)
        sizes = [4, 6, 5]
    else:
        num = luhn_complete("4" if kind == "visa" else str(R.randint(51, 55)), 16)
        sizes = [4, 4, 4, 4]
    sep = R.choice(["", " ", "-"])
    return group(num, sizes, sep) if sep else num


def iban_check(country, bban):
    s = bban + country + "00"
    n = "".join(str(int(c, 36)) for c in s)
    return "%02d" % (98 - int(n) % 97)


def iban():
    country, bban = R.choice([
        ("DE", "".join(R.choice(string.digits) for _ in range(18))),
        ("GB", "".join(R.choice(string.ascii_uppercase) for _ in range(4)) +
         "".join(R.choice(string.digits) for _ in range(14))),
        ("FR", "".join(R.choice(string.digits) for _ in range(23))),
        ("NL", "".join(R.choice(string.ascii_uppercase) for _ in range(4)) +
         "".join(R.choice(string.digits) for _ in range(10))),
        ("ES", "".join(R.choice(string.digits) for _ in range(20))),
    ])
    s = country + iban_check(country, bban) + bban
    return group(s, [4] * 9, " ") if R.random() < 0.5 else s


def bad_iban():
    s = iban().replace(" ", "")
    d = (int(s[2]) + 1) % 10
    return s[:2] + str(d) + s[3:]


def email():
    first = R.choice(["anna", "bob", "chen", "dmitri", "eve", "f.lopez", "grace.hopper", "h_ito",
                      "ines+news", "jo"])
    dom = R.choice(["example.com", "mail.example.org", "corp.example.co.uk", "uni-example.edu",
                    "example.io"])
    return "%s%d@%s" % (first, R.randrange(100), dom)


def phone():
    f = R.randrange(8)
    if f == 0:
        return "+1415555%04d" % R.randrange(10000)
    if f == 1:
        return "+44 20 7946 %04d" % R.randrange(10000)
    if f == 2:
        return "+49 30 %07d" % R.randrange(10**7)
    if f == 3:
        return "(415) 555-%04d" % R.randrange(10000)
    if f == 4:
        return "415-555-%04d" % R.randrange(10000)
    if f == 5:
        return "212.555.%04d" % R.randrange(10000)
    if f == 6:
        return "020 7946 %04d" % R.randrange(10000)
    return "+33 1 23 45 %02d %02d" % (R.randrange(100), R.randrange(100))


def ssn():
    a = R.choice([x for x in range(1, 900) if x != 666])
    return "%03d-%02d-%04d" % (a, R.randint(1, 99), R.randint(1, 9999))


def ipv4():
    return R.choice([
        "192.168.%d.%d" % (R.randrange(256), R.randint(1, 254)),
        "10.%d.%d.%d" % (R.randrange(256), R.randrange(256), R.randint(1, 254)),
        "203.0.113.%d" % R.randint(1, 254),
        "8.8.%d.%d" % (R.randrange(9), R.randrange(9)),
    ])


def ipv6():
    return R.choice([
        "2001:db8::%x" % R.randrange(1, 65535),
        "fe80::1ff:fe23:4567:%x" % R.randrange(4096, 65535),
        "2001:0db8:85a3:0000:0000:8a2e:0370:%04x" % R.randrange(65536),
        "2001:db8:%x:%x::1" % (R.randrange(1, 65535), R.randrange(1, 65535)),
    ])


def rand(chars, n):
    return "".join(R.choice(chars) for _ in range(n))


def secret():
    an = string.ascii_letters + string.digits
    f = R.randrange(7)
    if f == 0:
        return "sk-proj-" + rand(an + "_-", 48)
    if f == 1:
        return "sk-" + rand(an, 48)
    if f == 2:
        return "AKIA" + rand(string.ascii_uppercase + string.digits, 16)
    if f == 3:
        return "ghp_" + rand(an, 36)
    if f == 4:
        return "xoxb-" + rand(string.digits, 12) + "-" + rand(an, 24)
    if f == 5:
        return "Bearer eyJ" + rand(an, 30) + "." + rand(an, 40)
    return ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + rand(an + "+/", 60) + "\n" +
            rand(an + "+/", 40) + "\n-----END RSA PRIVATE KEY-----")


GEN = {"email": email, "phone": phone, "card": card, "iban": iban, "ipv4": ipv4, "ipv6": ipv6,
       "ssn": ssn, "secret": secret}

TEMPLATES = {
    "email": ["Please write to {} about the refund.", "My address is {}, reply there.",
              "cc: {}", "Contact ({}) for access.", "Send the invoice to {}."],
    "phone": ["Call me on {} after six.", "Her number: {}.", "Reach support at {} any time.",
              "Phone {} (mobile)", "You can text {} tomorrow."],
    "card": ["My card number is {} and it expires 09/27.", "Charge {} for the order.",
             "card: {}", "Use the card {} please.", "The payment card {} was declined."],
    "iban": ["Transfer it to {} by Friday.", "IBAN: {}", "Our account {} is in Berlin.",
             "Pay the rent into {} each month."],
    "ipv4": ["The server at {} is down.", "ssh admin@{} failed.", "Blocked client {} again.",
             "Set the DNS to {}."],
    "ipv6": ["Ping {} from the router.", "The host resolves to {} now.",
             "Allow {} in the firewall."],
    "ssn": ["SSN {} on the form.", "My social security number is {}.", "ssn: {} (do not share)"],
    "secret": ["Here is my key {} - why does it fail?", "export OPENAI_API_KEY={}",
               "Authorization: {}", "token={}", "the key is {}"],
}

LOOKALIKES = [
    "We upgraded from 1.2.3 to 1.2.10 last week.", "Release v2.10.4.1 fixes the crash.",
    "Tested with version 10.0.0.1 of the driver.", "The meeting is on 2024-01-15 at 10:30.",
    "Deadline: 15/01/2024, 23:59.", "It ran for 12:30:45 hours.", "Order ORD-2024-000123 shipped.",
    "Invoice INV-555-123-4567 is overdue.", "ISBN 978-3-16-148410-0 is the second edition.",
    "Tracking 1Z999AA10123456784 arrives Monday.", "The total was $1,234.56 including tax.",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b broke the build",
    "request id 123e4567-e89b-12d3-a456-426614174000", "MAC 00:1A:2B:3C:4D:5E on eth0",
    "Coordinates 48.8566, 2.3522 are Paris.", "The ratio is 16:9 and 4:3.",
    "Use sk-learn, not task-12345.", "We sold 4111 units in 1111 stores.",
    "Reference 1234 5678 9012 3456 is not a card.", "Room 2.04.1 on floor 2.",
    "Reach @anna_dev on the forum.", "The file is at /usr/share/doc/README.",
    "Python 3.11.7 and gcc 12.2.0 are installed.", "Score 98.6 percent, up from 97.2.",
    "Flight LH 400 departs 10:45.", "Part number AB12-3456-7890 is discontinued.",
    "Call extension 4521 for the lab.", "It costs 0.000123 BTC.", "Chapter 3.2.1 explains it.",
    "The bug is #12345 in the tracker.", "Latitude -33.8688 is Sydney.",
    "Download size 1.234.567 bytes.", "Error 0x80070005 means access denied.",
    "Postcode SW1A 1AA is Westminster.", "Build 20240115.3 passed.",
    "Temperature 21.5 C at 06:00.", "Pages 123-456 of the report.",
    "The year range 1999-2004 matters.", "x = 3.14159 * r ** 2",
]


# Hand-written lines: real-world shapes (ports, brackets, JSON, URLs, upper case, line ends)
# and harder look-alikes. Labels as a careful human would give them.
HARD = [
    ("Connect to 10.0.0.12:8080 for the dashboard.", [("ipv4", "10.0.0.12")]),
    ("Open https://[2001:db8::7]:443/ in the browser.", [("ipv6", "2001:db8::7")]),
    ('{"api_key": "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123456789"}',
     [("secret", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123456789")]),
    ("Mail JANE.DOE@EXAMPLE.COM today.", [("email", "JANE.DOE@EXAMPLE.COM")]),
    ("mailto:ops@status.example.net", [("email", "ops@status.example.net")]),
    ("Card 4111-1111-1111-1111, exp 12/29, cvc 123.", [("card", "4111-1111-1111-1111")]),
    ("Call +1 (415) 555-0132 or +44 7700 900123.",
     [("phone", "+1 (415) 555-0132"), ("phone", "+44 7700 900123")]),
    ("IP list: 192.0.2.1, 192.0.2.2 and 198.51.100.7.",
     [("ipv4", "192.0.2.1"), ("ipv4", "192.0.2.2"), ("ipv4", "198.51.100.7")]),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", [("secret", "AKIAIOSFODNN7EXAMPLE")]),
    ("curl -H 'Authorization: Bearer abcdefghijklmnopqrstuvwxyz123456' url",
     [("secret", "Bearer abcdefghijklmnopqrstuvwxyz123456")]),
    ("SSN: 078-05-1120.", [("ssn", "078-05-1120")]),
    ("IBAN DE89 3704 0044 0532 0130 00 belongs to the club.",
     [("iban", "DE89 3704 0044 0532 0130 00")]),
    ("iban=GB82WEST12345698765432;", [("iban", "GB82WEST12345698765432")]),
    ("Loopback ::1 and 127.0.0.1 are local.", [("ipv4", "127.0.0.1")]),
    ("Upgrade to 2.4.1.0 tonight.", []),
    ("The SHA-256 is e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.", []),
    ("Totals: 1,234,567.89 EUR and 9.876.543,21 EUR.", []),
    ("Meeting 09:00-10:30, room 4.12.", []),
    ("Lot 2023-11-07-0042 was recalled.", []),
    ("The code 000-00-0000 is a placeholder.", []),
    ("Test card 0000 0000 0000 0000 is not real.", []),
    ("Use port 8080 and 443.", []),
    ("Equation 3:4:5 triangle.", []),
    ("Phone extension x4455 at desk 12.", []),
    ("Stock AAPL rose 1.2% to 189.55.", []),
    ("ghp_ prefix alone is not a token.", []),
    ("The word sk-ate is not a key.", []),
    ("Serial SN-4412-8876-1290 is registered.", []),
    ("Version string 10.0.19045.3693 from Windows.", []),
    ("Coordinates 40.7128, -74.0060.", []),
]


def main():
    lines = []
    kinds = list(GEN)
    for i in range(40):
        for k in kinds:
            if i >= 30 and k in ("ipv6", "ssn"):
                continue
            v = GEN[k]()
            text = R.choice(TEMPLATES[k]).format(v)
            pii = [{"type": k, "value": v}]
            if R.random() < 0.25:  # a second item in the same line
                k2 = R.choice(kinds)
                v2 = GEN[k2]()
                text += " Also " + R.choice(TEMPLATES[k2]).format(v2)
                pii.append({"type": k2, "value": v2})
            lines.append({"text": text, "pii": pii})
    for text, labels in HARD:
        lines.append({"text": text, "pii": [{"type": k, "value": v} for k, v in labels]})
    for t in LOOKALIKES:
        lines.append({"text": t, "pii": []})
    for _ in range(20):  # checksum failures
        n = luhn_broken("4", 16)
        lines.append({"text": "Card %s was typed wrong." % group(n, [4, 4, 4, 4], " "),
                      "pii": []})
        lines.append({"text": "Account %s has a typo." % bad_iban(), "pii": []})
    R.shuffle(lines)
    for line in lines:
        print(json.dumps(line, ensure_ascii=False))


if __name__ == "__main__":
    main()
