"""The `capsule` CLI: `run` on files and stdin, `sessions`, and `shell` driven through a pseudo-terminal."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pexpect

CAPSULE = str(Path(sys.executable).parent / "capsule")


def capsule(*args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CAPSULE, *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def test_run_file_and_stdin(cluster, connection, pool, tmp_path):
    gw = ["--gateway", connection] if connection else []
    f = tmp_path / "job.py"
    f.write_text("import sys\nprint('from a file')\nprint('warn', file=sys.stderr)\n6 * 7\n")
    out = capsule("run", "--pool", pool, *gw, str(f))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "from a file\n42\n" and "warn" in out.stderr

    out = capsule("run", "--pool", pool, *gw, "-", stdin="print('from stdin')")
    assert out.returncode == 0 and out.stdout == "from stdin\n"

    # the code raises: its remote traceback, exit code 1
    out = capsule("run", "--pool", pool, *gw, "-", stdin="def f():\n    1/0\nf()\n")
    assert out.returncode == 1 and "ZeroDivisionError" in out.stderr and "in f" in out.stderr

    # every session it made is gone (being deleted at most)
    listing = capsule("sessions")
    assert listing.returncode == 0, listing.stderr


def test_run_errors_are_one_line(cluster, pool, tmp_path):
    out = capsule("run", "--pool", "nope", "-", stdin="1")
    assert out.returncode == 3
    assert out.stderr.strip().count("\n") == 0
    assert out.stderr.startswith("capsule: error: PoolNotFound: CapsulePool 'nope' does not exist")

    out = capsule("run", "--pool", pool, str(tmp_path / "missing.py"))
    assert out.returncode == 3 and "cannot read" in out.stderr and "missing.py" in out.stderr

    out = capsule("run", "-", stdin="1")  # no --pool
    assert out.returncode == 2 and "--pool" in out.stderr

    out = capsule("run", "--pool", pool, "--gateway", "http://127.0.0.1:9", "-", stdin="1")
    assert out.returncode == 3 and "GatewayUnreachable" in out.stderr


def test_sessions_lists_phase_pool_worker(cluster, connection, pool):
    import capsule_client as cc

    with cc.Session.create(pool, gateway_url=connection) as s:
        out = capsule("sessions")
        assert out.returncode == 0, out.stderr
        header, *rows = out.stdout.splitlines()
        assert header.split() == ["NAME", "PHASE", "POOL", "WORKER", "REASON"]
        row = next(r.split() for r in rows if r.startswith(s.name + " "))
        assert row[1:4] == ["Bound", pool, s.worker]
        out = capsule("sessions", "-A")
        assert out.stdout.splitlines()[0].split()[0] == "NAMESPACE" and s.name in out.stdout


def test_shell_in_a_pty(cluster, connection, pool):
    gw = ["--gateway", connection] if connection else []
    child = pexpect.spawn(CAPSULE, ["shell", "--pool", pool, *gw], env=dict(os.environ, TERM="dumb"),
                          encoding="utf-8", timeout=60)
    try:
        child.expect(r"Capsule shell on default/(\S+) ")
        name = child.match.group(1)
        child.expect(">>> ")
        child.sendline("x = 20")
        child.expect(">>> ")
        child.sendline("x + 22")
        child.expect("42\r?\n>>> ")
        # a compound statement over several lines
        child.sendline("for i in range(2):")
        child.expect(r"\.\.\. ")
        child.sendline("    print('line', i)")
        child.expect(r"\.\.\. ")
        child.sendline("")
        child.expect("line 0\r?\nline 1\r?\n>>> ")
        # input() reads the terminal
        child.sendline("input('name? ').upper()")
        child.expect("name\\? ")
        child.sendline("ada")
        child.expect("'ADA'\r?\n>>> ")
        # an error prints the remote traceback and the shell goes on
        child.sendline("1/0")
        child.expect("ZeroDivisionError")
        child.expect(">>> ")
        # Ctrl-C cancels the running code on the worker; the namespace survives
        child.sendline("import time; print('sleeping', flush=True); time.sleep(60)")
        child.expect("\nsleeping")  # the output line, not the echo of the typed one
        child.sendintr()
        child.expect("KeyboardInterrupt")
        child.expect(">>> ")
        child.sendline("x")
        child.expect("20\r?\n>>> ")
        # Ctrl-C at an empty prompt exits and deletes the session
        child.sendintr()
        child.expect("deleting session default/" + name)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    phase = cluster.kubectl("get", "csess", "-o", "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{'\\n'}{end}")
    assert all(not line.startswith(name + " ") or line.split()[1:] for line in phase.splitlines()), phase


def test_shell_eof_exits(cluster, pool):
    child = pexpect.spawn(CAPSULE, ["shell", "--pool", pool], env=dict(os.environ, TERM="dumb"),
                          encoding="utf-8", timeout=60)
    try:
        child.expect(">>> ")
        child.sendeof()
        child.expect("deleting session")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_sdk_demo_example(cluster, connection, pool):
    gw = ["--gateway", connection] if connection else []
    demo = Path(__file__).resolve().parents[3] / "examples" / "sdk_demo.py"
    out = subprocess.run([sys.executable, str(demo), "--pool", pool, *gw], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "hello from a warm Capsule worker" in out.stdout and "=> 42" in out.stdout
