"""Run `vidnas` commands in processes forked from one that has already imported torch, timm and vidnas.

The benchmark scripts' smoke tests (tests/test_benchmarks_*.py) run 5-15 `vidnas` commands each. A fresh
``python -m vidnas.cli.main`` spends about 3.5 s importing torch, torchvision (whose ops import torch._dynamo), timm,
matplotlib and onnxruntime before it does anything, which was a third of those tests' time. Here one server process
imports them once. Each command is then a process forked from it that runs the same ``vidnas.cli.main.main`` with the
caller's arguments, working directory, environment and standard streams (passed over a Unix socket), and whose exit
status (or signal) becomes the caller's.

What differs from a fresh process is only the import itself and the hash seed, which every forked command shares.
The import of each command is still covered by the tests that start real processes: tests/test_layout.py (the
layers imported in a fresh interpreter), the subprocess runs of `python -m vidnas.cli.main` in tests/test_engine.py
and tests/test_stnas_search.py, and the DDP tests under torchrun.

    python tests/forkserver.py serve SOCKET            # imports, prints "ready", then serves until killed
    python tests/forkserver.py run SOCKET ARGS...      # one `vidnas ARGS...` (what the tests set VIDNAS to)
    python tests/forkserver.py python SOCKET FILE|-... # one `python FILE ARGS...` or `python - ARGS...` (stdin), for
                                                       # the scripts' table makers (what the tests set PYTHON to)

Protocol (one connection per command): the client sends the fds 0, 1 and 2 with a length-prefixed JSON header
``{"argv", "cwd", "env", "python"}``; the server forks a waiter, which forks the command and sends back two lines: the
command's pid, then its ``os.waitpid`` status. The client forwards SIGINT and SIGTERM to the command.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

# What the commands of the benchmark scripts import (train, eval, search stnas and cells, latency, bench, export).
PRELOAD = (
    "vidnas.cli.main",
    "vidnas.engine.train",
    "vidnas.engine.evaluate",
    "vidnas.experiments.sweep",
    "vidnas.experiments.benchmark",
    "vidnas.search.stnas.search",
    "vidnas.search.cells.search",
    "vidnas.bench.protocol",
    "vidnas.export.exporter",
    "torchvision.ops",
    "onnxruntime",
    "matplotlib.pyplot",
    "vidnas.search.cells",  # benchmarks/cells_compare.py
)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf += chunk
    return buf


def _run_command(header: dict, fds: list[int]) -> None:
    """In the forked command process: become the caller's `vidnas ARGS` and never return."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(header["cwd"])
        os.environ.clear()
        os.environ.update(header["env"])
        try:
            if header.get("python"):
                _run_python(header["argv"])
            else:
                from vidnas.cli.main import main

                sys.argv = ["vidnas", *header["argv"]]
                main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - reported like an uncaught exception of a fresh process
            import traceback

            traceback.print_exc()
            code = 1
        import atexit

        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed pipe: nothing left to tell
                pass
        os._exit(code)


def _run_python(argv: list[str]) -> None:
    """``python FILE ARGS...`` or ``python - ARGS...`` (the program on stdin), as ``__main__``."""
    import runpy

    if not argv or (argv[0].startswith("-") and argv[0] != "-"):
        raise SystemExit(f"forkserver python: give a script path or - (stdin), got {argv[:1]}")
    sys.argv = list(argv)
    if argv[0] == "-":
        sys.path.insert(0, "")
        code = compile(sys.stdin.read(), "<stdin>", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})  # noqa: S102 - what `python -` does
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
        runpy.run_path(argv[0], run_name="__main__")


def _serve_one(conn: socket.socket) -> None:
    """In the forked waiter: fork the command, tell the client its pid, wait, send its status, exit."""
    try:
        raw, fds, _, _ = socket.recv_fds(conn, 4, 3)
        (size,) = struct.unpack("!I", raw + _recv_exact(conn, 4 - len(raw)))
        header = json.loads(_recv_exact(conn, size))
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        pid = os.fork()
        if pid == 0:
            conn.close()
            _run_command(header, fds)
        for fd in fds:
            os.close(fd)
        conn.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"{status}\n".encode())
    finally:
        os._exit(0)


def serve(path: str) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import importlib
    import threading

    for name in PRELOAD:
        importlib.import_module(name)
    if threading.active_count() != 1:  # a fork copies only the calling thread: refuse to serve a threaded parent
        raise SystemExit(f"forkserver: {threading.active_count()} threads after the imports; forking is unsafe")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # waiters are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            listener.close()
            _serve_one(conn)
        conn.close()


def run(path: str, argv: list[str], *, python: bool = False) -> int:
    header = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "python": python}).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    socket.send_fds(conn, [struct.pack("!I", len(header))], [0, 1, 2])
    conn.sendall(header)
    reader = conn.makefile("r")
    pid = int(reader.readline())

    def forward(signum: int, _frame: object) -> None:
        os.kill(pid, signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    line = reader.readline()
    if not line:
        print("forkserver: the waiter of `vidnas` died without a status", file=sys.stderr)
        return 1
    status = int(line)
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))  # die of the same signal, as the command did
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] in ("run", "python"):
        sys.exit(run(sys.argv[2], sys.argv[3:], python=sys.argv[1] == "python"))
    else:
        sys.exit(__doc__)
