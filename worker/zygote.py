# Capsule fork server: carried inside the capsule-worker binary and run as `python3 -c`, with the
# driver's source as the next argument.
#
# It makes itself non-dumpable before anything else (so code of a session, same uid, can neither
# ptrace it nor read its memory), imports what the driver imports, compiles the driver once, and
# then forks a fresh interpreter whenever the worker asks. A child starts in milliseconds with
# nothing of any session in it and inherits the non-dumpable flag from its first instruction; it
# never runs warm-up or session code in this process, and this process never runs any.
#
# Control channel (fd 0, a SOCK_SEQPACKET socket; one message per datagram):
#   worker -> zygote: {"op": "fork", "dir": <working directory>} with three fds attached
#                     (SCM_RIGHTS): the child's stdin, stdout and stderr
#                   | {"op": "sweep", "scratch": S, "keep": K}: after a reset, kill what the ended
#                     session left running outside its process group, then remove what it left
#                     in S besides K, and in /dev/shm (see _Sweep); answered with "swept" 
#                   | {"op": "kill", "pid": N}: SIGKILL to interpreter N's process group
#                   | {"op": "remove", "dir": D}: remove a working directory and all in it
#                   | {"op": "usage"}: report memory and CPU (answered with "usage")
#   zygote -> worker: {"op": "forked", "pid": N} | {"op": "refused", "reason": ...}
#                     | {"op": "exited", "pid": N, "code": <exit code, or null when signalled>}
#                     | {"op": "usage", "rssBytes": R, "cpuTicks": T} | {"op": "swept"}
# kill, remove and usage serve a fork server in a container of its own (`capsule-worker
# fork-server`), whose processes and files the worker, under another uid, cannot reach.
# The zygote exits when the worker closes the channel, or on SIGTERM (as a container's PID 1 it
# would otherwise ignore it).
import sys


def _non_dumpable():
    try:
        import ctypes

        return ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE
    except Exception:
        return False


def _subreaper():
    """Orphaned descendants of interpreters (a double fork, `setsid`) become this process's
    children instead of init's, so a sweep finds them."""
    try:
        import ctypes

        return ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except Exception:
        return False


PROTECTED = _non_dumpable()
SUBREAPER = _subreaper()

import array  # noqa: E402
import builtins  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402

# What the driver imports, loaded once here so that a forked interpreter does not import it again.
import ast  # noqa: E402,F401
import asyncio  # noqa: E402,F401
import fcntl  # noqa: E402,F401
import inspect  # noqa: E402,F401
import io  # noqa: E402,F401
import linecache  # noqa: E402,F401
import pickle  # noqa: E402,F401
import queue  # noqa: E402,F401
import struct  # noqa: E402,F401
import tempfile  # noqa: E402,F401
import threading  # noqa: E402,F401
import traceback  # noqa: E402,F401
import types  # noqa: E402,F401

DRIVER = compile(sys.argv.pop(1), "<capsule-driver>", "exec")
MAX_REQUEST_BYTES = 64 * 1024
CHILD_FDS = 3
# Exit code of a child that could not become an interpreter (EX_SOFTWARE).
CHILD_SETUP_FAILED = 70


def _control_socket():
    """The channel on fd 0, moved to an fd of its own; fd 0 becomes /dev/null."""
    control = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return control


def _send(control, message):
    try:
        control.send(json.dumps(message, separators=(",", ":")).encode())
    except OSError:
        os._exit(0)  # the worker is gone: so is the reason to run


def _received_fds(ancdata):
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % fds.itemsize
            fds.frombytes(data[:usable])
    return list(fds)


def _exit_code(status):
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return None


# Interpreters forked and not yet reaped; any other child is an orphan adopted as subreaper.
interpreters = set()
# Children removing a directory: this process's own helpers, never swept.
removers = set()
# Interpreters the worker had killed: their groups are not spared by a sweep.
doomed = set()
# The last interpreters reaped, whose groups the worker may still kill.
recently_reaped = collections.deque(maxlen=16)


def _reap(control):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        removers.discard(pid)
        doomed.discard(pid)
        if pid in interpreters:
            interpreters.discard(pid)
            recently_reaped.append(pid)
            _send(control, {"op": "exited", "pid": pid, "code": _exit_code(status)})


def _clock_ticks():
    """Now, in the unit of a process's start time in /proc/<pid>/stat (clock ticks since boot)."""
    return float(_read("/proc/uptime").split()[0]) * os.sysconf("SC_CLK_TCK")


def _children():
    """Pids of this process's children: from the kernel's list when it has one, else by a scan."""
    mine = os.getpid()
    try:
        return [int(p) for p in _read("/proc/%d/task/%d/children" % (mine, mine)).split()]
    except OSError:
        pass
    found = []
    for entry in os.listdir("/proc"):
        fields = _stat_fields(entry) if entry.isdigit() else None
        if fields and int(fields[1]) == mine:
            found.append(int(entry))
    return found


def _stat_fields(pid):
    """The fields of /proc/<pid>/stat after the command name (state is [0], ppid [1])."""
    try:
        return _read("/proc/%s/stat" % pid).rsplit(")", 1)[1].split()
    except OSError:
        return None


def _read(path):
    with open(path) as f:
        return f.read()


def _adopted_children():
    """(pid, start time) of this process's children that are neither interpreters nor removers."""
    found = []
    for pid in _children():
        fields = None if pid in interpreters or pid in removers else _stat_fields(pid)
        if fields:
            found.append((pid, int(fields[19])))
    return found


class _Sweep:
    """After a reset, kills every adopted orphan that started before the reset: whatever the ended
    session left outside its process group. Processes leaving the dying group are adopted over a
    few moments, so it looks again for SWEEP_SECONDS; anything the next session starts is newer
    and left alone. Then, with nothing of the ended session running, removes what it left in the
    scratch volume outside the working directories' folder, and, where this process is its
    container's PID 1 (a /dev/shm of the pod's own), its files in /dev/shm."""

    SWEEP_SECONDS = 1.0
    ROUND_SECONDS = 0.05

    def __init__(self):
        self.before = None
        self.until = 0.0
        self.scratch = None
        self.keep = None

    def start(self, scratch=None, keep=None):
        self.before = _clock_ticks()
        self.until = time.monotonic() + self.SWEEP_SECONDS
        self.scratch, self.keep = scratch, keep
        self.round()

    def timeout(self):
        return self.ROUND_SECONDS if time.monotonic() < self.until else None

    def wait_next_tick(self):
        """Returns once the clock tick of the reset has passed: a start time counts whole ticks, so
        a process the next session starts in the reset's own tick would pass for the ended
        session's and be killed."""
        if self.before is None:
            return
        next_tick = math.floor(self.before) + 1
        while _clock_ticks() < next_tick:
            time.sleep(0.001)

    def round(self):
        if self.before is None:
            return
        for pid, started in _adopted_children():
            if started <= self.before:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if time.monotonic() >= self.until:
            self.finish()

    def finish(self):
        self.before = None
        _remove_left_behind(self.scratch, self.keep)
        self.scratch = self.keep = None


def _remove_left_behind(scratch, keep):
    """Entries of this uid (what session code made; never the worker's) in the scratch volume
    besides `keep`, and in the pod's /dev/shm when this process is its container's PID 1."""
    uid = os.getuid()
    places = []
    if isinstance(scratch, str) and isinstance(keep, str):
        places.append((scratch, lambda name: name != keep))
    if os.getpid() == 1:
        places.append(("/dev/shm", lambda name: True))
    for folder, wanted in places:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if wanted(name) and _owner(folder, name) == uid:
                _remove_entry(os.path.join(folder, name))


def _end_the_rest():
    """As its container's PID 1: SIGKILL to every process of the container but this one, its
    removers and the groups of the interpreters still serving or waiting (the standby). Each scan
    sees the whole namespace, however deep a chain of processes, until one finds nothing but
    zombies, which the main loop reaps."""
    spared = interpreters - doomed
    me = os.getpid()
    for _ in range(50):
        victims = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me or int(entry) in removers:
                continue
            fields = _stat_fields(entry)
            if fields and fields[0] != "Z" and int(fields[2]) not in spared:
                victims.append(int(entry))
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _owner(folder, name):
    try:
        return os.lstat(os.path.join(folder, name)).st_uid
    except OSError:
        return None


def _remove_entry(path):
    if os.path.isdir(path) and not os.path.islink(path):
        _remove_in_child(path)
        return
    try:
        os.unlink(path)
    except OSError:
        pass


def _become_interpreter(control, wakeup, fds, directory):
    """In the child: takes the three fds as stdio, its own process group and working directory,
    then runs the driver. Never returns."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd in wakeup:
            os.close(fd)
        control.close()
        os.setpgid(0, 0)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(directory)
        os.environ["HOME"] = directory
        os.environ["TMPDIR"] = directory
        frame = b'{"type":"protected","ok":' + (b"true}" if PROTECTED else b"false}")
        os.write(1, len(frame).to_bytes(4, "big") + frame)
        sys.argv = ["-c"]
        exec(DRIVER, {"__name__": "__capsule_driver__", "__builtins__": builtins})
    except BaseException:
        os._exit(CHILD_SETUP_FAILED)
    os._exit(0)


def _serve_control(control, request, sweep):
    """Serves a request that carries no fds; False when it is none of these."""
    op = request.get("op")
    if op == "sweep":
        sweep.start(request.get("scratch"), request.get("keep"))
        if os.getpid() == 1:
            # Its own PID namespace: everything of the ended session is in sight; end it now.
            _end_the_rest()
            sweep.finish()
        sweep.wait_next_tick()
        _send(control, {"op": "swept"})
    elif op == "kill":
        _kill_group(request.get("pid"))
    elif op == "remove" and isinstance(request.get("dir"), str):
        _remove_in_child(request["dir"])
    elif op == "usage":
        _send(control, _usage())
    else:
        return False
    return True


def _kill_group(pid):
    """SIGKILL to the group of an interpreter this process forked (alive, or reaped lately: what it
    left in its group goes too); any other pid is ignored."""
    if pid in interpreters or pid in recently_reaped:
        if pid in interpreters:
            doomed.add(pid)
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def _remove_in_child(directory):
    """Removes a working directory in a short-lived child, so a large tree never holds up a fork.
    Entries session code made unwritable are made writable first."""
    pid = os.fork()
    if pid != 0:
        removers.add(pid)
        return
    try:
        for root, dirs, _files in os.walk(directory):
            for name in dirs:
                try:
                    os.chmod(os.path.join(root, name), 0o700)
                except OSError:
                    pass
        shutil.rmtree(directory, ignore_errors=True)
    finally:
        os._exit(0)


class _Usage:
    """Ticks only grow: a child's count moves to this process's cumulative count when it is reaped,
    and a reading in between must not look like less."""

    ticks = 0


def _usage():
    """RSS of this process and its children, and CPU ticks of all it ran (reaped ones included)."""
    rss_pages = 0
    ticks = 0
    for pid in [os.getpid()] + _children():
        fields = _stat_fields(pid)
        if fields:
            rss_pages += int(fields[21])
            ticks += int(fields[11]) + int(fields[12])
            if pid == os.getpid():
                ticks += int(fields[13]) + int(fields[14])
    _Usage.ticks = max(_Usage.ticks, ticks)
    return {"op": "usage", "rssBytes": rss_pages * os.sysconf("SC_PAGE_SIZE"), "cpuTicks": _Usage.ticks}


def _serve_one(control, wakeup, sweep):
    message, ancdata, _flags, _address = control.recvmsg(
        MAX_REQUEST_BYTES, socket.CMSG_SPACE(CHILD_FDS * array.array("i").itemsize)
    )
    if not message:
        os._exit(0)
    fds = _received_fds(ancdata)
    try:
        request = json.loads(message)
        if not fds and _serve_control(control, request, sweep):
            return
        directory = request["dir"]
        if request.get("op") != "fork" or len(fds) != CHILD_FDS or not isinstance(directory, str):
            raise ValueError("a fork request carries a directory and three fds")
    except (ValueError, KeyError, TypeError) as exc:
        for fd in fds:
            os.close(fd)
        _send(control, {"op": "refused", "reason": str(exc)[:200]})
        return
    pid = os.fork()
    if pid == 0:
        _become_interpreter(control, wakeup, fds, directory)
    interpreters.add(pid)
    for fd in fds:
        os.close(fd)
    _send(control, {"op": "forked", "pid": pid})


def main():
    control = _control_socket()
    wakeup = os.pipe()
    os.set_blocking(wakeup[1], False)
    signal.set_wakeup_fd(wakeup[1])
    # A handler (not SIG_IGN) so children stay waitable and their exit codes reach the worker.
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: os._exit(0))
    sweep = _Sweep()
    while True:
        ready, _, _ = select.select([control, wakeup[0]], [], [], sweep.timeout())
        if wakeup[0] in ready:
            os.read(wakeup[0], 4096)
            _reap(control)
        if control in ready:
            _serve_one(control, wakeup, sweep)
        sweep.round()


main()
