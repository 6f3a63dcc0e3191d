#!/usr/bin/env python3
"""The sequential script help desks use today, as the benchmark's baseline.

    sequential.py KEYRING_SERVICE MAILBOXES.tsv

Per mailbox, one after another, exactly what `mutt_oauth2.py --test` does: read the refresh
token, refresh it at the token endpoint (a new HTTPS/HTTP connection each time), store the
rotated refresh token, then IMAPS `AUTHENTICATE XOAUTH2`, `EXAMINE` the folder and `LOGOUT`
with Python's imaplib. The refresh token lives in the same Secret Service entry as the app's
(`secret-tool`, as mutt_oauth2.py runs gpg for its token file), so the app and the script take
turns on one rotating token without revoking each other's grant.

MAILBOXES.tsv: one mailbox a line, tab-separated: name, login, token URL, client id, host,
port, CA file, folder. Prints `ok failed` at the end; exits 1 if any failed.
"""
import imaplib
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request


def secret(service: str, name: str, value: str | None = None) -> str:
    attrs = ["service", service, "username", f"refresh_token:{name}"]
    if value is None:
        return subprocess.run(
            ["secret-tool", "lookup", *attrs], check=True, capture_output=True, text=True
        ).stdout.strip()
    subprocess.run(
        ["secret-tool", "store", "--label", f"Mailbox Auth refresh token for {name}", *attrs],
        input=value, check=True, capture_output=True, text=True,
    )
    return value


def check(service: str, row: list[str]) -> None:
    name, login, token_url, client_id, host, port, ca_file, folder = row
    refresh = secret(service, name)
    body = urllib.parse.urlencode(
        {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id}
    ).encode()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(token_url, data=body, timeout=30) as r:
        tokens = json.load(r)
    if tokens.get("refresh_token") and tokens["refresh_token"] != refresh:
        secret(service, name, tokens["refresh_token"])
    ctx = ssl.create_default_context(cafile=ca_file or None)
    imap = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx, timeout=30)
    sasl = f"user={login}\x01auth=Bearer {tokens['access_token']}\x01\x01".encode()
    imap.authenticate("XOAUTH2", lambda _: sasl)
    imap.select(folder, readonly=True)  # EXAMINE
    imap.logout()


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    service = sys.argv[1]
    rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[2]) if l.strip()]
    ok = failed = 0
    for row in rows:
        try:
            check(service, row)
            ok += 1
        except urllib.error.HTTPError as e:
            failed += 1
            body = e.read().decode(errors="replace")[:200]
            print(f"{row[0]}: HTTP {e.code} from the token endpoint: {body}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 — counted, named, never the token
            failed += 1
            print(f"{row[0]}: {type(e).__name__}", file=sys.stderr)
    print(ok, failed)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
