"""daphne, exactly as its own command line starts it, except that a WebSocket message over the size cap
is answered with a close frame 1009 ("message too big") instead of a dropped connection.

Why: daphne hands its caps (--websocket-max-message-size, --websocket-max-frame-size) to autobahn,
which checks them from a frame's header, before buffering its payload, and then "fails the
connection". By default autobahn fails a connection by dropping TCP (failByDrop), so the browser
sees 1006 and cannot tell a too-big message from a network fault; daphne has no option to change
that, and an application cannot send 1009 itself (autobahn's sendClose allows 1000 and 3000-4999
only). With failByDrop off, autobahn sends the close frame 1009 and drops TCP only if the peer does
not answer it within its close handshake timeout (1 s). Protocol errors and invalid UTF-8 get their
own close frames (1002, 1007) the same way.

The Procfile and tests/stack.py start daphne through this module with the frame cap at the
consumer's own visualizer.consumers.MAX_MESSAGE_BYTES, so a too-big command (one frame, as a
browser sends it) is refused before daphne buffers it. The message cap stays at 4 MB: autobahn
applies it to messages we send as well (sendMessage raises PayloadExceededError past it), and a
stage-6 frame is over 16 KB. A command split into many small frames is left to the consumer's own
check (close 4009).

Run: python -m core.daphne_serve [daphne's options] core.asgi:application
"""

from __future__ import annotations

from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server


class ClosingServer(Server):
    """daphne's Server with autobahn's failByDrop off on its WebSocket factory."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # daphne calls ready_callable in run(), once ws_factory is configured and before the reactor
        # runs, so before any connection exists: the one hook it offers after building the factory.
        self._then = self.ready_callable
        self.ready_callable = self._fail_by_close

    def _fail_by_close(self) -> None:
        self.ws_factory.setProtocolOptions(failByDrop=False)
        if self._then is not None:
            self._then()


class ClosingCommandLineInterface(CommandLineInterface):
    server_class = ClosingServer


if __name__ == "__main__":
    ClosingCommandLineInterface.entrypoint()
