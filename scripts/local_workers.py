"""Runs one command as N workers of a multi-worker job on this machine.

    python scripts/local_workers.py --workers=2 -- \\
        python -m ssm_keras.train --strategy=multi_worker_mirrored --model_dir=runs/mw ...

Each worker is the same command with its own `TF_CONFIG`: the cluster is N
workers on free localhost ports, and worker `i` has `task.index = i`
(worker 0 is the chief). Every output line is prefixed with `[worker i]`.
When a worker fails, the others are stopped (so are all when the launcher
gets Ctrl-C or SIGTERM); the exit status is 0 when every worker exited 0,
else the first failing worker's status (1 if it was killed by a signal). Run the same command again to resume an interrupted job.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_ports(count):
    """`count` distinct TCP ports on localhost that are free now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("localhost", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_configs(ports):
    """The `TF_CONFIG` of each worker of a cluster on localhost `ports`."""
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            for index in range(len(ports))]


def _relay(index, stream):
    for line in stream:
        sys.stdout.write(f"[worker {index}] {line}")
        sys.stdout.flush()


def run_workers(command, count, poll_seconds=0.2):
    """Runs `command` as `count` workers; returns the job's exit status."""
    processes, relays = [], []
    try:
        for index, tf_config in enumerate(tf_configs(free_ports(count))):
            process = subprocess.Popen(
                command, env={**os.environ, "TF_CONFIG": tf_config}, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            processes.append(process)
            relays.append(threading.Thread(target=_relay, args=(index, process.stdout)))
            relays[-1].start()
        failure = None
        while failure is None and any(process.poll() is None for process in processes):
            failure = next((p.returncode for p in processes if p.poll() not in (None, 0)), None)
            time.sleep(poll_seconds)
        failure = next((p.returncode for p in processes if p.poll() not in (None, 0)), failure)
    finally:  # a failure or Ctrl-C stops the workers still running
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            process.wait()
        for relay in relays:
            relay.join()
    if failure is None:
        return 0
    return failure if failure > 0 else 1


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], allow_abbrev=False,
        usage="%(prog)s [--workers=N] -- COMMAND [ARGUMENTS ...]",
    )
    parser.add_argument("--workers", type=int, default=2, help="number of workers (>= 1)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command of each worker")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.workers < 1:
        parser.exit(1, f"error: --workers must be >= 1. Received: --workers={args.workers}\n")
    if not command:
        parser.exit(1, "error: no command given; put it after --, e.g. -- python -m ssm_keras.train ...\n")
    # SIGTERM, like Ctrl-C, stops the workers before the launcher ends.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    try:
        return run_workers(command, args.workers)
    except OSError as error:
        parser.exit(1, f"error: cannot start {command[0]!r}: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
