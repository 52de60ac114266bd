"""`python -m tests.fakes`: the three vendor fakes on loopback, for trying the integrations
by hand beside `make run` (nothing here reaches the internet). Prints the settings to give
each connection, then, every few seconds, what each fake holds.

Handoff refuses loopback destinations unless the deployment allows them: start it with
`HANDOFF_EGRESS_ALLOW=127.0.0.0/8 make run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from tests.fakes.mailchimp import mailchimp_fake
from tests.fakes.sailthru import sailthru_fake
from tests.fakes.zapier import fake_zapier

MAILCHIMP_KEY = "0123456789abcdef0123456789abcdef-us1"
MAILCHIMP_LIST = "demo"
REPORT_EVERY_S = 5.0


async def main() -> None:
    """Run until interrupted."""
    async with mailchimp_fake() as mailchimp, sailthru_fake() as sailthru, fake_zapier() as zapier:
        mailchimp.add_key(MAILCHIMP_KEY)
        mailchimp.add_list(MAILCHIMP_LIST)
        hook = zapier.catch_hook()
        settings = {
            "mailchimp": {
                "base_url": mailchimp.base_url, "api_key": MAILCHIMP_KEY,
                "list_id": MAILCHIMP_LIST,
            },
            "sailthru": {
                "base_url": sailthru.url, "api_key": sailthru.api_key,
                "api_secret": sailthru.secret, "list_name": sorted(sailthru.lists)[0],
            },
            "zapier catch hook": {"url": hook.target_url},
        }  # fmt: skip
        print(json.dumps(settings, indent=2), flush=True)
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            members = len(mailchimp.lists[MAILCHIMP_LIST].members)
            print(
                f"mailchimp members: {members}; sailthru profiles: {len(sailthru.profiles)}; "
                f"catch hook bodies: {len(hook.received)}",
                flush=True,
            )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
