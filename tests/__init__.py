"""Handoff's tests.

The test process uses gRPC channels while it starts and restarts services as
subprocesses (tests/e2e). With gRPC core's fork handlers on, a fork that happens while
another thread is inside gRPC can leave gRPC's poller running in the child between fork
and exec, which then aborts on a descriptor the child has already closed ("epoll_wait
error: Bad file descriptor", exit -6) — seen when the crash test restarts a delivery
process under load. The tests fork only to exec, so the handlers are switched off here,
before anything imports grpc.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
