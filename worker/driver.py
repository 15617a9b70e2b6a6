# Capsule interpreter driver: carried inside the capsule-worker binary and run as `python3 -c`.
#
# It keeps one namespace and one asyncio event loop alive across executions and talks to the worker
# over length-prefixed JSON frames (u32 big-endian length + UTF-8 JSON) on private copies of fds 0
# and 1. fd 0 is then pointed at /dev/null and fd 1 at fd 2, so nothing the code or its child
# processes print can corrupt the frame stream: Python-level stdout/stderr go through `output`
# frames, raw fd writes land on stderr, which the worker drains without logging it.
#
# Worker -> driver: execute {id, code, transaction?} | cancel {id} | settle {promiseId, ok, value, kind, reason}
#                   | checkpoint {requestId, listNames} | enter {dir}
#                   | checkpointSave {requestId, path} | checkpointLoad {requestId, path}
# Driver -> worker: ready | output {id, stream, text} | inputRequest {id, inputId, prompt}
#                   | promiseCreate {id, promiseId, timeoutMs} | result | error
#                   | checkpoint | driverError {message}
#                   | checkpointSaved | checkpointLoaded | checkpointFailed {requestId, stage, message}
import ast
import asyncio
import builtins
import copy
import inspect
import io
import json
import linecache
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import time
import traceback
import types
import zlib

MAX_FRAME_BYTES = 16 * 1024 * 1024
# The worker compiles this file under this name, so its frames can be cut from users' tracebacks.
DRIVER_FILENAME = "<capsule-driver>"
RESULT_NAME = "__capsule_result__"
OUTPUT_CHUNK_BYTES = 64 * 1024
OUTPUT_FLUSH_SECONDS = 0.01
MAX_REPR_CHARS = 64 * 1024
# An input() prompt and a promise id travel in one frame each: bounded so the frame always fits.
MAX_PROMPT_CHARS = 64 * 1024
MAX_PROMISE_ID_CHARS = 256
MAX_TRACEBACK_CHARS = 256 * 1024
PICKLE_ESTIMATE_LIMIT = 64 * 1024 * 1024
BLOCKING_CALLS = {
    "time.sleep",
    "requests.get",
    "requests.post",
    "requests.request",
    "urllib.request.urlopen",
    "subprocess.run",
    "subprocess.call",
    "subprocess.check_output",
    "socket.create_connection",
}

_frames_in = os.fdopen(os.dup(0), "rb", buffering=1024 * 1024)
_frames_out_fd = os.dup(1)
try:
    import fcntl

    # A 1 MiB pipe (F_SETPIPE_SZ) lets a whole output chunk go in one write; best effort.
    fcntl.fcntl(_frames_out_fd, 1031, 1024 * 1024)
except (ImportError, OSError):
    pass
_devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(_devnull, 0)
os.close(_devnull)
os.dup2(2, 1)

_write_lock = threading.Lock()
_MAIN_THREAD = threading.get_ident()


class _State:
    running = False
    current_id = None
    cancel_for = None
    # An execution whose cancel arrived while its command still waited for the main thread.
    early_cancel = None
    critical = 0
    interrupt_pending = False
    txn = None
    cell_counter = 0
    input_counter = 0


state = _State()
# Orders a cancel against the start of its execution: exactly one of the reader (interrupting) and
# the main thread (cancelling before the code runs) acts on it.
_cancel_lock = threading.Lock()


def send(message):
    data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
    if len(data) > MAX_FRAME_BYTES:
        data = json.dumps(
            {"type": "driverError", "message": "driver frame of %d bytes exceeds the maximum" % len(data)}
        ).encode()
    _write_frame(data)


def _write_frame(*parts):
    size = sum(map(len, parts))
    header = struct.pack(">I", size)
    with _write_lock:
        # One writev: the parts are not joined into a copy first (an output chunk is 64 KiB).
        written = os.writev(_frames_out_fd, (header,) + parts)
        if written < size + 4:
            # Cut short (a signal while the pipe was full): the rest, whole, so no frame is cut.
            view = memoryview(b"".join((header,) + parts))[written:]
            while view:
                view = view[os.write(_frames_out_fd, view):]


_output_head = {}


def _send_output(stream, data):
    # Output frames are {"type":"output","id":..,"stream":..,"text":"<text>"} with the text escaped
    # by C-speed byte replaces (json.dumps escapes one character at a time). Backslash, quote,
    # newline, tab and carriage return are escaped here; the worker escapes any other control
    # character and replaces invalid UTF-8, so the text reaches clients as valid JSON.
    key = (state.current_id, stream)
    head = _output_head.get(key)
    if head is None:
        # The head is the same for every chunk of an execution's stream: encoded once.
        _output_head.clear()
        head = _output_head[key] = (
            json.dumps({"type": "output", "id": state.current_id, "stream": stream}, separators=(",", ":"))[
                :-1
            ].encode()
            + b',"text":"'
        )
    escaped = (
        data.replace(b"\\", b"\\\\")
        .replace(b'"', b'\\"')
        .replace(b"\n", b"\\n")
        .replace(b"\t", b"\\t")
        .replace(b"\r", b"\\r")
    )
    _write_frame(head, escaped, b'"}')


class _Critical:
    """Defers a cancel's KeyboardInterrupt while the main thread writes a frame, so a frame is never
    cut. The deferred interrupt is re-sent by the thread that keeps interrupting (see _reader)."""

    def __enter__(self):
        if threading.get_ident() == _MAIN_THREAD:
            state.critical += 1

    def __exit__(self, *exc):
        if threading.get_ident() == _MAIN_THREAD:
            state.critical -= 1
        return False


critical = _Critical()


def _on_sigint(signum, frame):
    if state.running and state.cancel_for is not None and state.cancel_for == state.current_id:
        if state.critical > 0:
            state.interrupt_pending = True
        else:
            state.interrupt_pending = False
            raise KeyboardInterrupt


def _keep_interrupting(execution_id):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    while state.running and state.current_id == execution_id:
        time.sleep(0.02)
        if state.interrupt_pending:
            signal.pthread_kill(_MAIN_THREAD, signal.SIGINT)


class _FrameSink(io.RawIOBase):
    """Raw end of the output streams: each write becomes one output frame."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def writable(self):
        return True

    def write(self, data):
        # One write of any size leaves as chunks of at most OUTPUT_CHUNK_BYTES (a large write skips
        # the BufferedWriter's buffer and arrives here whole). Each chunk is one uncut frame.
        view = memoryview(data).cast("B")
        size = len(view)
        start = 0
        while start < size:
            end = utf8_chunk_end(view, start, OUTPUT_CHUNK_BYTES)
            with critical:
                _send_output(self.stream, bytes(view[start:end]))
            start = end
        return size


def utf8_chunk_end(data, start, limit):
    """End of the chunk of at most `limit` bytes that starts at `start`, moved back so it does not
    split a UTF-8 character (continuation bytes are 10xxxxxx; a character has at most three)."""
    end = start + limit
    if end >= len(data):
        return len(data)
    cut = end
    while cut > end - 3 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if cut > start else end


def _text_stream(name):
    # print() goes through C-implemented TextIOWrapper + BufferedWriter: Python code runs only once
    # per chunk of OUTPUT_CHUNK_BYTES, which is what makes printing fast.
    raw = io.BufferedWriter(_FrameSink(name), buffer_size=OUTPUT_CHUNK_BYTES)
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", line_buffering=False, write_through=False)
    stream._CHUNK_SIZE = OUTPUT_CHUNK_BYTES
    return stream


_stdout = _text_stream("stdout")
_stderr = _text_stream("stderr")


class _StderrStream:
    """sys.stderr: flushes pending stdout before each write and itself after, so the order between
    the two streams is kept (stdout stays on the fast buffered path)."""

    encoding = "utf-8"
    errors = "replace"

    @property
    def buffer(self):
        return _stderr.buffer

    def write(self, text):
        _stdout.flush()
        size = _stderr.write(text)
        _stderr.flush()
        return size

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        _stdout.flush()
        _stderr.flush()

    def isatty(self):
        return False

    def readable(self):
        return False

    def writable(self):
        return True

    def fileno(self):
        raise io.UnsupportedOperation("capsule output streams have no file descriptor")


def flush_output():
    _stdout.flush()
    _stderr.flush()


_executing = threading.Event()


def _flusher():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    while True:
        _executing.wait()
        time.sleep(OUTPUT_FLUSH_SECONDS)
        try:
            _stdout.flush()
        except Exception:
            pass


class PromiseError(Exception):
    """A promise was rejected or cancelled through the worker."""


class PromiseTimeout(PromiseError, TimeoutError):
    """A promise (or an input request) was not settled within its timeout."""


class _Waiter:
    def __init__(self):
        self.event = threading.Event()
        self.outcome = None
        self.future = None


_waiters = {}
_waiters_lock = threading.Lock()


def _outcome_to_exception(outcome):
    kind = outcome.get("kind", "rejected")
    reason = outcome.get("reason") or kind
    if kind == "timedOut":
        return PromiseTimeout(reason)
    return PromiseError(reason)


def _settle_future(future, outcome):
    if future.done():
        return
    if outcome.get("ok"):
        future.set_result(outcome.get("value"))
    else:
        future.set_exception(_outcome_to_exception(outcome))


def _settle(message):
    with _waiters_lock:
        waiter = _waiters.pop(message.get("promiseId"), None)
    if waiter is None:
        return
    waiter.outcome = message
    waiter.event.set()
    if waiter.future is not None:
        waiter.future.get_loop().call_soon_threadsafe(_settle_future, waiter.future, message)


def _register(promise_id):
    waiter = _Waiter()
    with _waiters_lock:
        _waiters[promise_id] = waiter
    return waiter


def _wait_sync(waiter):
    while not waiter.event.wait(0.5):
        pass
    if waiter.outcome.get("ok"):
        return waiter.outcome.get("value")
    raise _outcome_to_exception(waiter.outcome)


class Promise:
    """A value that something outside the interpreter provides: `await capsule.promise("id")`."""

    def __init__(self, promise_id, timeout=None):
        if not isinstance(promise_id, str) or not promise_id:
            raise ValueError("promise id must be a non-empty string")
        if len(promise_id) > MAX_PROMISE_ID_CHARS:
            raise ValueError("promise id is longer than %d characters" % MAX_PROMISE_ID_CHARS)
        self.id = promise_id
        self._waiter = _register(promise_id)
        flush_output()
        timeout_ms = None if timeout is None else max(1, int(timeout * 1000))
        with critical:
            send({"type": "promiseCreate", "id": state.current_id, "promiseId": promise_id, "timeoutMs": timeout_ms})

    def __await__(self):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with _waiters_lock:
            self._waiter.future = future
            settled = self._waiter.outcome
        if settled is not None:
            _settle_future(future, settled)
        return (yield from future.__await__())

    def result(self):
        """Blocks until the promise settles (for code that is not async)."""
        return _wait_sync(self._waiter)


def _input(prompt=""):
    prompt = str(prompt)
    if len(prompt) > MAX_PROMPT_CHARS:
        prompt = prompt[:MAX_PROMPT_CHARS] + "...[truncated]"
    state.input_counter += 1
    input_id = "%s:input:%d" % (state.current_id, state.input_counter)
    waiter = _register(input_id)
    flush_output()
    with critical:
        send({"type": "inputRequest", "id": state.current_id, "inputId": input_id, "prompt": prompt})
    try:
        value = _wait_sync(waiter)
    except PromiseTimeout:
        raise TimeoutError("input request %s was not answered in time" % input_id) from None
    return "" if value is None else str(value)


class _Stdin:
    encoding = "utf-8"

    def readline(self, size=-1):
        return _input("") + "\n"

    def read(self, size=-1):
        return self.readline()

    def isatty(self):
        return False

    def fileno(self):
        raise OSError("capsule stdin has no file descriptor")


capsule = types.ModuleType("capsule")
capsule.__doc__ = "Capsule bridge: promises resolved through the worker's API."
capsule.Promise = Promise
capsule.PromiseError = PromiseError
capsule.PromiseTimeout = PromiseTimeout
capsule.promise = lambda promise_id, timeout=None: Promise(promise_id, timeout)
capsule.execution_id = lambda: state.current_id
sys.modules["capsule"] = capsule

main_module = types.ModuleType("__main__")
sys.modules["__main__"] = main_module
namespace = main_module.__dict__


def _fresh_namespace():
    namespace.clear()
    namespace["__name__"] = "__main__"
    namespace["__builtins__"] = builtins


_fresh_namespace()
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)


def namespace_size():
    # globals()[1] = ... makes a non-str key: counted, never crashed on.
    return sum(1 for name in list(namespace) if not (isinstance(name, str) and name.startswith("__")))


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _blocking_calls(tree, top_level_async):
    found = set()

    def visit(node, in_async):
        if isinstance(node, ast.AsyncFunctionDef):
            in_async = True
        elif isinstance(node, (ast.FunctionDef, ast.Lambda)):
            in_async = False
        if in_async and isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in BLOCKING_CALLS:
                found.add(name)
        for child in ast.iter_child_nodes(node):
            visit(child, in_async)

    visit(tree, top_level_async)
    return sorted(found)


def _run_code_object(code):
    result = eval(code, namespace)
    if code.co_flags & inspect.CO_COROUTINE:
        task = loop.create_task(result)
        try:
            result = loop.run_until_complete(task)
        except BaseException:
            if not task.done():
                task.cancel()
                try:
                    loop.run_until_complete(asyncio.wait([task], timeout=1.0))
                except BaseException:
                    pass
            raise
    return result


def _run_cell(source, transaction=False):
    state.cell_counter += 1
    filename = "<cell-%d>" % state.cell_counter
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    tree = ast.parse(source, filename, "exec")
    # Walking the tree costs more than running a small cell: without the word "async" in the source
    # there is no `async def` to find.
    has_async_def = "async" in source and any(
        isinstance(node, ast.AsyncFunctionDef) for node in ast.walk(tree)
    )
    # The last expression's value is captured by rewriting it into an assignment, so the whole
    # cell compiles to one code object: with top-level await it runs as one coroutine.
    captures = bool(tree.body) and isinstance(tree.body[-1], ast.Expr)
    if captures:
        last = tree.body[-1]
        # Both new nodes get the expression's location (what fix_missing_locations would give them
        # with a walk of the whole tree).
        target = ast.copy_location(ast.Name(id=RESULT_NAME, ctx=ast.Store()), last)
        tree.body[-1] = ast.copy_location(ast.Assign(targets=[target], value=last.value), last)
    code = compile(tree, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    awaits = bool(code.co_flags & inspect.CO_COROUTINE)
    mode = "topLevelAwait" if awaits else ("asyncDef" if has_async_def else "plain")
    # Blocking calls are reported only where they stall the event loop: in async code.
    blocking = _blocking_calls(tree, awaits) if awaits or has_async_def else []
    state.mode = mode
    state.blocking = blocking
    namespace.pop(RESULT_NAME, None)
    if transaction:
        state.txn = _txn_begin(code)
    try:
        _run_code_object(code)
        value = namespace.get(RESULT_NAME)
    finally:
        namespace.pop(RESULT_NAME, None)
    text = None
    if value is not None:
        text = repr(value)
        if len(text) > MAX_REPR_CHARS:
            text = text[:MAX_REPR_CHARS] + "...[truncated]"
    return text, mode, blocking


# ---- Transactions (`transaction: rollbackOnError`; worker/README.md "Transactions") ----
#
# Cost must not grow with values the code cannot reach. Before the code runs: a shallow copy of the
# name bindings (restores rebinding, deletion and new names), plus a backup of the contents of each
# mutable value the code can reach by name: names its code objects load (co_names, recursively
# through nested code), followed through the namespace's functions (their code and closure cells),
# bound methods, classes (their attributes, and the class of a `__main__` instance) and tuples.
# Reached lists, dicts, sets, bytearrays and instances are restored in place (other references see
# the restore); other values (e.g. numpy arrays) by rebinding their names to a deep copy.

_TXN_ATOMIC = frozenset(
    {int, float, complex, bool, str, bytes, type(None), range, type(Ellipsis), type(NotImplemented),
     types.BuiltinFunctionType, types.CodeType, types.ModuleType, types.GetSetDescriptorType,
     types.MemberDescriptorType, types.WrapperDescriptorType, types.MethodDescriptorType}
)
# Code naming one of these can reach any name: every name is then followed.
_TXN_DYNAMIC = frozenset({"globals", "vars", "locals", "eval", "exec"})
_TXN_MISSING = object()


class _Transaction:
    __slots__ = ("bindings", "backups", "rebinds", "uncopyable")

    def __init__(self):
        self.bindings = dict(namespace)
        self.backups = []  # (object, kind, saved contents): restored in place
        self.rebinds = {}  # name -> deep copy, for values that cannot be restored in place
        self.uncopyable = 0


def _txn_code_names(code, seen):
    stack = [code]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield from current.co_names
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))


def _txn_reach(code):
    """The mutable objects the code can reach through names of the namespace, by id."""
    seen_codes, reached, visited = set(), {}, set()
    codes = [code]
    dynamic = False
    while codes:
        for name in _txn_code_names(codes.pop(), seen_codes):
            dynamic = dynamic or name in _TXN_DYNAMIC
            value = namespace.get(name, _TXN_MISSING)
            if value is not _TXN_MISSING:
                _txn_follow(value, codes, reached, visited)
        if dynamic:
            for value in list(namespace.values()):
                _txn_follow(value, codes, reached, visited)
            dynamic = False
    return reached


def _txn_follow(value, codes, reached, visited):
    stack = [value]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind in _TXN_ATOMIC or id(value) in visited:
            continue
        visited.add(id(value))
        if kind is types.FunctionType:
            codes.append(value.__code__)
            stack.extend(_txn_cells(value))
            stack.extend(value.__defaults__ or ())
            stack.extend((value.__kwdefaults__ or {}).values())
        elif kind is types.MethodType:
            stack.extend((value.__func__, value.__self__))
        elif isinstance(value, (staticmethod, classmethod, property)):
            stack.extend(f for f in (getattr(value, "__func__", None), getattr(value, "fget", None),
                                     getattr(value, "fset", None)) if f is not None)
        elif isinstance(value, type):
            if value.__module__ == "__main__":
                reached[id(value)] = value
                stack.extend(vars(value).values())
        elif kind in (tuple, frozenset):
            if not set(map(type, value)) <= _TXN_ATOMIC:
                stack.extend(value)
        else:
            reached[id(value)] = value
            if kind.__module__ == "__main__":
                stack.append(kind)


def _txn_cells(function):
    for cell in function.__closure__ or ():
        try:
            yield cell.cell_contents
        except ValueError:
            pass


def _txn_contents(items, memo):
    """A copy of a container's items: shallow when every item is immutable (C speed), else deep,
    with the reached objects kept by identity (they are restored in place themselves)."""
    if set(map(type, items)) <= _TXN_ATOMIC:
        return list(items)
    return [copy.deepcopy(item, memo) for item in items]


def _txn_backup(obj, memo):
    if isinstance(obj, type):
        return "class", dict(vars(obj))
    if isinstance(obj, list):
        return "list", _txn_contents(obj, memo)
    if isinstance(obj, dict):
        return "dict", (list(obj.keys()), _txn_contents(obj.values(), memo))
    if isinstance(obj, (set, bytearray)):
        return type(obj).__name__, (obj.copy() if isinstance(obj, bytearray) else _txn_contents(obj, memo))
    attrs = getattr(obj, "__dict__", None)
    if type(attrs) is dict and type(obj).__module__ == "__main__":
        return "attrs", (list(attrs.keys()), _txn_contents(attrs.values(), memo))
    return None, None


def _txn_begin(code):
    txn = _Transaction()
    reached = _txn_reach(code)
    memo = dict(reached)
    for obj in reached.values():
        try:
            kind, saved = _txn_backup(obj, memo)
            if kind is not None:
                txn.backups.append((obj, kind, saved))
                continue
            del memo[id(obj)]
            duplicate = copy.deepcopy(obj, memo)
            memo[id(obj)] = obj
            for name, value in txn.bindings.items():
                if value is obj:
                    txn.rebinds[name] = duplicate
        except Exception:
            memo[id(obj)] = obj
            txn.uncopyable += 1
    return txn


def _txn_restore(obj, kind, saved):
    if kind == "list":
        obj[:] = saved
    elif kind == "dict":
        obj.clear()
        obj.update(zip(*saved))
    elif kind == "set":
        obj.clear()
        obj.update(saved)
    elif kind == "bytearray":
        obj[:] = saved
    elif kind == "attrs":
        obj.__dict__.clear()
        obj.__dict__.update(zip(*saved))
    elif kind == "class":
        current = vars(obj)
        for key in [k for k in current if k not in saved]:
            delattr(obj, key)
        for key, value in saved.items():
            if current.get(key, _TXN_MISSING) is not value:
                setattr(obj, key, value)


def _txn_rollback(txn):
    """Puts the namespace back. Returns how many reached values could not be backed up or restored
    (their names are restored, their contents are not)."""
    if txn is None:  # interrupted before the snapshot was done: no code ran
        return 0
    skipped = txn.uncopyable
    for obj, kind, saved in txn.backups:
        try:
            _txn_restore(obj, kind, saved)
        except Exception:
            skipped += 1
    namespace.clear()
    namespace.update(txn.bindings)
    namespace.update(txn.rebinds)
    return skipped


# ---- end of transactions ----


def _format_error(exc):
    if isinstance(exc, SyntaxError):
        lines = traceback.format_exception_only(type(exc), exc)
    else:
        tb = exc.__traceback__
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
            tb = tb.tb_next
        report = traceback.TracebackException(type(exc), exc, tb)
        report.stack = traceback.StackSummary.from_list(
            [frame for frame in report.stack if frame.filename != DRIVER_FILENAME]
        )
        lines = list(report.format())
    text_total = 0
    kept = []
    for line in lines:
        text_total += len(line)
        if text_total > MAX_TRACEBACK_CHARS:
            kept.append("...[traceback truncated]\n")
            break
        kept.append(line)
    evalue = str(exc)
    if len(evalue) > MAX_REPR_CHARS:
        evalue = evalue[:MAX_REPR_CHARS] + "...[truncated]"
    return type(exc).__name__, evalue, kept


def _start_running(execution_id):
    """Marks the execution running; true when its cancel came before it ran, so it is cancelled
    before any of its code runs instead of the cancel going unseen."""
    with _cancel_lock:
        state.running = True
        early = state.early_cancel == execution_id
        state.early_cancel = None
    if early:
        state.cancel_for = execution_id
    return early


def execute(execution_id, source, transaction=False):
    state.current_id = execution_id
    state.txn = None
    _executing.set()
    state.cancel_for = None
    state.interrupt_pending = False
    state.input_counter = 0
    state.mode = "plain"
    state.blocking = []
    outcome = None
    try:
        cancelled_early = _start_running(execution_id)
        try:
            if cancelled_early:
                raise KeyboardInterrupt
            text, mode, blocking = _run_cell(source, transaction)
        finally:
            state.running = False
        outcome = {"type": "result", "repr": text, "mode": mode, "blockingCalls": blocking}
    except BaseException as exc:
        state.running = False
        ename, evalue, tb = _format_error(exc)
        outcome = {
            "type": "error",
            "ename": ename,
            "evalue": evalue,
            "traceback": tb,
            "mode": state.mode,
            "blockingCalls": state.blocking,
            "interrupted": isinstance(exc, KeyboardInterrupt) and state.cancel_for == execution_id,
        }
        if transaction:
            # Not running any more: a cancel's interrupt cannot cut the rollback.
            outcome["rollbackSkipped"] = _txn_rollback(state.txn)
            outcome["rolledBack"] = True
    state.txn = None
    state.interrupt_pending = False
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    flush_output()
    _executing.clear()
    outcome["id"] = execution_id
    outcome["namespaceSize"] = namespace_size()
    send(outcome)
    state.current_id = None


def _estimate(value):
    try:
        if sys.getsizeof(value) > PICKLE_ESTIMATE_LIMIT:
            return sys.getsizeof(value), False
        return len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)), True
    except Exception:
        return sys.getsizeof(value), False


# Bounds of the name listing (GET /v1/namespace); the worker enforces them again.
MAX_NAMESPACE_ENTRIES = 1000
MAX_NAMESPACE_NAME_CHARS = 128
MAX_NAMESPACE_TYPE_CHARS = 64


def checkpoint(request_id, list_names=False):
    names = functions = classes = modules = estimated = unpicklable = 0
    entries = []
    for name, value in list(namespace.items()):
        # A non-str key (globals()[1] = ...) is skipped rather than str()-ed: its __str__ is user code.
        if not isinstance(name, str) or name.startswith("__"):
            continue
        names += 1
        if isinstance(value, types.ModuleType):
            modules += 1
            if list_names:
                entries.append((0, name, "module"))
            continue
        if isinstance(value, type):
            classes += 1
        elif callable(value) and isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
            functions += 1
        size, picklable = _estimate(value)
        estimated += size
        if not picklable:
            unpicklable += 1
        if list_names:
            entries.append((size, name, type(value).__name__))
    message = {
        "type": "checkpoint",
        "requestId": request_id,
        "names": names,
        "functions": functions,
        "classes": classes,
        "modules": modules,
        "estimatedBytes": estimated,
        "unpicklable": unpicklable,
    }
    if list_names:
        # Largest first: what an operator looking at a heavy namespace wants to see.
        entries.sort(key=lambda e: (-e[0], e[1]))
        message["truncated"] = len(entries) > MAX_NAMESPACE_ENTRIES
        message["entries"] = [
            {
                "name": name[:MAX_NAMESPACE_NAME_CHARS],
                "type": type_name[:MAX_NAMESPACE_TYPE_CHARS],
                "sizeBytes": size,
            }
            for size, name, type_name in entries[:MAX_NAMESPACE_ENTRIES]
        ]
    send(message)


# --- Checkpoints (issue #18): the namespace to a file and back. Kept in these functions so the
# execute path stays apart; the worker seals the file and keeps it (docs/checkpoints.md).

CHECKPOINT_FORMAT = 1
# zlib level 1: on session data (arrays, text rows) it stores 7% more than level 6 in half the
# time (docs/checkpoints.md), and a checkpoint sits on the path of every migration. Each name is compressed on its own, and not at all when a 64 KiB sample of its pickle
# does not shrink by 10% (random or already compressed data: images, archives, model weights).
CHECKPOINT_ZLIB_LEVEL = 1
CHECKPOINT_SAMPLE_BYTES = 64 * 1024
MAX_CHECKPOINT_NAMES = 1000
MAX_CHECKPOINT_SKIPPED = 100
MAX_CHECKPOINT_NAME_CHARS = 256
MAX_CHECKPOINT_REASON_CHARS = 200


class _SessionRefusingPickler(pickle.Pickler):
    """Plain pickle stores what the session defined as a reference to `__main__.<name>`, which a
    fresh interpreter lacks at load time: refused here, so the name is listed, not a broken file."""

    def reducer_override(self, obj):
        if isinstance(obj, (types.FunctionType, type)) and getattr(obj, "__module__", None) == "__main__":
            raise pickle.PicklingError("%s defined in the session: saving it needs cloudpickle" % type(obj).__name__)
        return NotImplemented


def _plain_dumps(value):
    buffer = io.BytesIO()
    _SessionRefusingPickler(buffer, protocol=5).dump(value)
    return buffer.getvalue()


def _checkpoint_dumps():
    # cloudpickle pickles what the session defined (functions, lambdas, closures, classes) by
    # value; without it those names are skipped (see _SessionRefusingPickler).
    try:
        import cloudpickle
    except ImportError:
        return _plain_dumps
    return lambda value: cloudpickle.dumps(value, protocol=5)


def _module_reimportable(module):
    name = getattr(module, "__name__", None)
    return isinstance(name, str) and sys.modules.get(name) is module and getattr(module, "__spec__", None) is not None


def _checkpoint_compress(data):
    """(raw size, compressed?, bytes) of one name's pickle."""
    sample = data[:CHECKPOINT_SAMPLE_BYTES]
    if len(data) > len(sample) and len(zlib.compress(sample, CHECKPOINT_ZLIB_LEVEL)) > 0.9 * len(sample):
        return len(data), False, data
    return len(data), True, zlib.compress(data, CHECKPOINT_ZLIB_LEVEL)


def _checkpoint_collect():
    dumps = _checkpoint_dumps()
    values, modules, names, skipped = {}, {}, [], []
    skipped_total = 0
    for name, value in list(namespace.items()):
        if not isinstance(name, str) or name.startswith("__"):
            continue
        reason = None
        if isinstance(value, types.ModuleType):
            if _module_reimportable(value):
                modules[name] = value.__name__
            else:
                reason = "module without an import spec: it cannot be imported again"
        else:
            try:
                values[name] = _checkpoint_compress(dumps(value))
            except Exception as exc:
                reason = "%s: %s" % (type(exc).__name__, str(exc))
        if reason is None:
            names.append(name[:MAX_CHECKPOINT_NAME_CHARS])
            continue
        skipped_total += 1
        if len(skipped) < MAX_CHECKPOINT_SKIPPED:
            skipped.append({"name": name[:MAX_CHECKPOINT_NAME_CHARS], "reason": reason[:MAX_CHECKPOINT_REASON_CHARS]})
    return values, modules, names, skipped, skipped_total


def checkpoint_save(request_id, path):
    """Pickles and compresses each name separately (one that fails is listed, not fatal), writes."""
    stage = "pickle"
    try:
        values, modules, names, skipped, skipped_total = _checkpoint_collect()
        raw_bytes = sum(raw for raw, _, _ in values.values())
        values = {name: (compressed, data) for name, (_, compressed, data) in values.items()}
        container = pickle.dumps({"format": CHECKPOINT_FORMAT, "modules": modules, "values": values}, protocol=5)
        del values
        stage = "write"
        # Readable by the worker, whose uid may differ; the directory keeps others out.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(container)
    except BaseException as exc:
        send({"type": "checkpointFailed", "requestId": request_id, "stage": stage, "message": type(exc).__name__})
        return
    send({
        "type": "checkpointSaved",
        "requestId": request_id,
        "rawBytes": raw_bytes,
        "names": names[:MAX_CHECKPOINT_NAMES],
        "namesTotal": len(names),
        "skipped": skipped,
        "skippedTotal": skipped_total,
    })


def _rebind(function):
    """A function unpickled by value got a private globals dict; it gets the namespace back, so
    it sees names defined after the restore as it did before."""
    if not isinstance(function, types.FunctionType) or function.__module__ != "__main__":
        return function
    rebound = types.FunctionType(function.__code__, namespace, function.__name__, function.__defaults__, function.__closure__)
    rebound.__kwdefaults__ = function.__kwdefaults__
    rebound.__qualname__ = function.__qualname__
    rebound.__doc__ = function.__doc__
    rebound.__annotations__ = function.__annotations__
    rebound.__dict__.update(function.__dict__)
    return rebound


def _rebind_globals(restored):
    for name, value in list(restored.items()):
        if isinstance(value, types.FunctionType):
            restored[name] = _rebind(value)
        elif isinstance(value, type) and value.__module__ == "__main__":
            for attr, member in list(vars(value).items()):
                if isinstance(member, types.FunctionType):
                    setattr(value, attr, _rebind(member))
                elif isinstance(member, (staticmethod, classmethod)):
                    setattr(value, attr, type(member)(_rebind(member.__func__)))


def checkpoint_load(request_id, path):
    """Loads a checkpoint the worker authenticated; the namespace changes only if all of it loads."""
    import importlib

    stage, current = "read", None
    try:
        with open(path, "rb") as source:
            data = source.read()
        os.unlink(path)
        stage = "unpickle"
        outer = pickle.loads(data)
        del data
        if not isinstance(outer, dict) or outer.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("unknown checkpoint format")
        restored = {}
        stage = "import"
        for current, module_name in outer["modules"].items():
            restored[current] = importlib.import_module(module_name)
        for current, (compressed, pickled) in outer["values"].items():
            stage = "decompress" if compressed else "unpickle"
            if compressed:
                pickled = zlib.decompress(pickled)
            stage = "unpickle"
            restored[current] = pickle.loads(pickled)
        current = None
        _rebind_globals(restored)
        namespace.update(restored)
    except BaseException as exc:
        # The exception type and the name that failed: never its message, which may hold values.
        where = "" if current is None else " of %s" % str(current)[:MAX_CHECKPOINT_NAME_CHARS]
        send({"type": "checkpointFailed", "requestId": request_id, "stage": stage + where, "message": type(exc).__name__})
        return
    names = [name[:MAX_CHECKPOINT_NAME_CHARS] for name in restored][:MAX_CHECKPOINT_NAMES]
    send({"type": "checkpointLoaded", "requestId": request_id, "names": names,
          "namesTotal": len(restored), "namespaceSize": namespace_size()})


# C-implemented: a command reaches the main thread without the Python-level locking of queue.Queue.
_commands = queue.SimpleQueue()


def _read_exactly(count):
    data = _frames_in.read(count)
    if data is None or len(data) < count:
        os._exit(0)
    return data


def _reader():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    while True:
        (length,) = struct.unpack(">I", _read_exactly(4))
        if length > MAX_FRAME_BYTES:
            remaining = length
            while remaining:
                remaining -= len(_read_exactly(min(remaining, 1024 * 1024)))
            send({"type": "driverError", "message": "worker frame of %d bytes exceeds the maximum" % length})
            continue
        try:
            message = json.loads(_read_exactly(length))
            kind = message["type"]
        except Exception as exc:
            send({"type": "driverError", "message": "malformed worker frame: %s" % type(exc).__name__})
            continue
        if kind == "cancel":
            with _cancel_lock:
                if state.running and state.current_id == message.get("id"):
                    state.cancel_for = message.get("id")
                    signal.pthread_kill(_MAIN_THREAD, signal.SIGINT)
                    threading.Thread(target=_keep_interrupting, args=(state.cancel_for,), daemon=True).start()
                else:
                    # The worker sends a cancel only after the execution's code: it runs next.
                    state.early_cancel = message.get("id")
        elif kind == "settle":
            _settle(message)
        elif kind == "checkpoint":
            try:
                checkpoint(message.get("requestId"), bool(message.get("listNames")))
            except Exception as exc:
                send({"type": "driverError", "message": "checkpoint failed: %s" % type(exc).__name__})
        else:
            _commands.put(message)


def _enter(directory):
    """Starts serving a session in `directory`, made for it after the previous session ended."""
    try:
        os.chdir(directory)
    except (OSError, TypeError) as exc:
        send({"type": "driverError", "message": "cannot enter the session directory: %s" % type(exc).__name__})
        return
    os.environ["HOME"] = directory
    os.environ["TMPDIR"] = directory
    import tempfile

    tempfile.tempdir = None
    # Serving now, with nothing of an earlier session left: its own /proc entries readable again.
    _set_dumpable(True)


def _set_dumpable(dumpable):
    """The worker's bootstrap made this process non-dumpable, so that while it waits as the standby,
    code of an earlier session (same uid) can neither ptrace it nor read its memory or its /proc
    entries (cwd, environ). Serving a session, it is dumpable again."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
        return prctl(4, 1 if dumpable else 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE
    except (ImportError, OSError, AttributeError):
        return False


def main():
    signal.signal(signal.SIGINT, _on_sigint)
    sys.stdout = _stdout
    sys.stderr = _StderrStream()
    sys.stdin = _Stdin()
    builtins.input = _input
    threading.Thread(target=_flusher, name="capsule-output-flusher", daemon=True).start()
    threading.Thread(target=_reader, name="capsule-frame-reader", daemon=True).start()
    send({"type": "ready", "pythonVersion": sys.version.split()[0]})
    while True:
        try:
            message = _commands.get()
            kind = message.get("type")
            if kind == "execute":
                execute(message.get("id"), message.get("code", ""), bool(message.get("transaction")))
            elif kind == "enter":
                _enter(message.get("dir"))
            elif kind == "checkpointSave":
                checkpoint_save(message.get("requestId"), message.get("path"))
            elif kind == "checkpointLoad":
                checkpoint_load(message.get("requestId"), message.get("path"))
            else:
                send({"type": "driverError", "message": "unknown frame type"})
        except KeyboardInterrupt:
            # A cancel that arrived after its execution ended: nothing to interrupt.
            continue


main()
