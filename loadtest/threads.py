"""CPU per thread of a running process, from /proc/PID/task/*/stat.

Usage: python -m loadtest.threads PID [SECONDS]

Pantau runs its event loop in the main thread and writes recordings from one writer thread.
This shows how a load splits between them. The load test reports only the total, and py-spy
also counts the time a thread waits in a system call.
"""

from __future__ import annotations

import argparse
import os
import time


def thread_times(pid: int) -> dict[int, tuple[str, int, int]]:
    """Return thread id -> (name, user ticks, system ticks) for every thread of ``pid``."""
    times = {}
    for entry in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{entry}/comm") as handle:
                name = handle.read().strip()
        except OSError:
            continue  # the thread ended between listing and reading
        times[int(entry)] = (name, int(fields[11]), int(fields[12]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.threads", description=__doc__.split("\n\n")[0])
    parser.add_argument("pid", type=int, help="process id, for example of `pantau serve`")
    parser.add_argument("seconds", type=float, nargs="?", default=30.0, help="measurement window (default 30)")
    args = parser.parse_args()

    ticks = os.sysconf("SC_CLK_TCK")
    before = thread_times(args.pid)
    time.sleep(args.seconds)
    after = thread_times(args.pid)
    for thread_id, (name, user, system) in sorted(after.items()):
        _, user_before, system_before = before.get(thread_id, (name, 0, 0))
        user_percent = (user - user_before) / ticks / args.seconds * 100
        system_percent = (system - system_before) / ticks / args.seconds * 100
        if user_percent + system_percent < 0.05:
            continue
        role = "main" if thread_id == args.pid else "thread"
        print(f"{role} {thread_id} {name}: user {user_percent:.2f} %, system {system_percent:.2f} % of a core")


if __name__ == "__main__":
    main()
