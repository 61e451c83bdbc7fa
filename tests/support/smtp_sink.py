"""A local SMTP server for the tests: aiosmtpd storing every message in a Maildir.

Usage: python smtp_sink.py MAILDIR [REFUSE_ADDRESS]

Listens on 127.0.0.1, port 0 (the system picks a free port), prints the port on stdout, and
serves until its stdin closes (the test that started it stopped or died). A recipient equal to
REFUSE_ADDRESS is refused with a permanent 550.
"""

import asyncio
import sys
import threading

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP


class Sink(Mailbox):
    def __init__(self, maildir, refuse):
        super().__init__(maildir)
        self.refuse = refuse

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse and address == self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def main():
    handler = Sink(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    closed = loop.create_future()
    threading.Thread(
        target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(closed.set_result, None)),
        daemon=True,
    ).start()
    await closed
    server.close()


asyncio.run(main())
