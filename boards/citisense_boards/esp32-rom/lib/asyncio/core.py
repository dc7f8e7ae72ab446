# mypy: ignore-errors
# The run loop. Tasks and their queue are the port's C implementation
# (_asyncio), which expects this module's globals: cur_task, _task_queue and
# CancelledError. A task's state is True while running and nobody awaits it,
# a TaskQueue of awaiting tasks, a callable to call when done, None when done
# and not awaited, and False when done and awaited.
import select
import sys
from _asyncio import Task, TaskQueue
from time import ticks_add, ticks_diff
from time import ticks_ms as ticks

__all__ = (
    "CancelledError",
    "Loop",
    "Task",
    "TaskQueue",
    "TimeoutError",
    "create_task",
    "current_task",
    "get_event_loop",
    "new_event_loop",
    "run",
    "run_until_complete",
    "sleep",
    "sleep_ms",
    "ticks",
    "ticks_add",
    "ticks_diff",
)


class CancelledError(BaseException):
    pass


class TimeoutError(Exception):
    pass


_exc_context = {"message": "Task exception wasn't retrieved", "exception": None, "future": None}


class _Sleep:
    """Awaited by sleep_ms: reschedules the current task once, allocating nothing."""

    def __init__(self):
        self.until = None
        self.stop = StopIteration()

    def __iter__(self):
        return self

    def __next__(self):
        if self.until is None:
            self.stop.__traceback__ = None
            raise self.stop
        _task_queue.push(cur_task, self.until)
        self.until = None


class _Yield:
    """Awaiting it suspends the task once; whoever queued the task resumes it."""

    def __init__(self):
        self.armed = False
        self.stop = StopIteration()

    def __iter__(self):
        self.armed = True
        return self

    def __next__(self):
        if self.armed:
            self.armed = False
            return
        self.stop.__traceback__ = None
        raise self.stop


_suspend = _Yield()


def sleep_ms(t, sgen=_Sleep()):  # noqa: B008 - one shared awaitable, as on MicroPython
    assert sgen.until is None
    sgen.until = ticks_add(ticks(), max(0, t))
    return sgen


def sleep(t):
    return sleep_ms(int(t * 1000))


class _IOQueue:
    """Tasks waiting for a stream to become readable or writable."""

    def __init__(self):
        self.poller = select.poll()
        self.waiting = {}  # id(stream) -> [reading task, writing task, stream]

    def _enqueue(self, s, idx):
        entry = self.waiting.get(id(s))
        if entry is None:
            entry = self.waiting[id(s)] = [None, None, s]
            entry[idx] = cur_task
            self.poller.register(s, _mask(entry))
        else:
            entry[idx] = cur_task
            self.poller.modify(s, _mask(entry))
        cur_task.data = self  # so Task.cancel() calls remove()

    def _update(self, entry):
        if entry[0] is None and entry[1] is None:
            del self.waiting[id(entry[2])]
            self.poller.unregister(entry[2])
        else:
            self.poller.modify(entry[2], _mask(entry))

    def queue_read(self, s):
        self._enqueue(s, 0)

    def queue_write(self, s):
        self._enqueue(s, 1)

    def remove(self, task):
        for entry in self.waiting.values():
            if task in (entry[0], entry[1]):
                entry[0 if entry[0] is task else 1] = None
                self._update(entry)
                return

    def wait_io_event(self, dt):
        for s, ev in self.poller.ipoll(dt):
            entry = self.waiting[id(s)]
            # Errors and hang-ups wake readers and writers alike.
            if ev & ~select.POLLOUT and entry[0] is not None:
                _task_queue.push(entry[0])
                entry[0] = None
            if ev & ~select.POLLIN and entry[1] is not None:
                _task_queue.push(entry[1])
                entry[1] = None
            self._update(entry)


def _mask(entry):
    return (select.POLLIN if entry[0] else 0) | (select.POLLOUT if entry[1] else 0)


def _promote_to_task(aw):
    return aw if isinstance(aw, Task) else create_task(aw)


def create_task(coro):
    if not hasattr(coro, "send"):
        raise TypeError("coroutine expected")
    t = Task(coro, globals())
    _task_queue.push(t)
    return t


def _finish(t, er):
    """Task t ended with er (StopIteration or an exception): wake who awaits it."""
    awaited = False
    if t.state is True:
        t.state = None  # done, not awaited (yet)
    elif callable(t.state):
        t.state(t, er)
        t.state = False
        awaited = True
    else:
        while t.state.peek():
            _task_queue.push(t.state.pop())
            awaited = True
        t.state = False
    if not awaited and not isinstance(er, (CancelledError, StopIteration)):
        # Nobody awaits it: run it once more so its exception reaches the handler.
        _task_queue.push(t)
    t.data = er


def _wait_until_runnable(main_task):
    """Poll I/O until the head of the run queue is due; False when the loop should end."""
    while not (main_task is None and _stopping):
        head = _task_queue.peek()
        if head is not None:
            wait = max(0, ticks_diff(head.ph_key, ticks()))
        elif _io_queue.waiting:
            wait = -1
        elif main_task is None or not main_task.state:
            return False
        else:
            wait = 3  # only an IRQ callback could wake a task now: look again soon
        _io_queue.wait_io_event(wait)
        if wait == 0:
            return True
    return False


def run_until_complete(main_task=None):
    """Run tasks until main_task ends (or, without one, until none is left or stop())."""
    global cur_task
    errors = (CancelledError, Exception)
    while _wait_until_runnable(main_task):
        t = _task_queue.pop()
        cur_task = t
        try:
            exc = t.data
            if not exc:
                t.coro.send(None)
            else:
                t.data = None
                t.coro.throw(exc)
        except errors as er:
            assert t.data is None
            if t is main_task:
                cur_task = None
                t.state = False
                if isinstance(er, StopIteration):
                    return er.value
                raise er
            if t.state:
                _finish(t, er)
            elif t.state is None:
                # It ended earlier and its exception was never retrieved: report it.
                t.data = exc
                _exc_context["exception"] = exc
                _exc_context["future"] = t
                Loop.call_exception_handler(_exc_context)
    cur_task = None
    return None


def run(coro):
    return run_until_complete(create_task(coro))


def current_task():
    if cur_task is None:
        raise RuntimeError("no running event loop")
    return cur_task


class Loop:
    _exc_handler = None

    def create_task(coro):
        return create_task(coro)

    def run_forever():
        global _stopping
        _stopping = False
        run_until_complete()

    def run_until_complete(aw):
        return run_until_complete(_promote_to_task(aw))

    def stop():
        global _stopping
        _stopping = True

    def close():
        pass

    def set_exception_handler(handler):
        Loop._exc_handler = handler

    def get_exception_handler():
        return Loop._exc_handler

    def default_exception_handler(loop, context):
        print(context["message"], file=sys.stderr)
        print("future:", context["future"], "coro=", context["future"].coro, file=sys.stderr)
        sys.print_exception(context["exception"], sys.stderr)

    def call_exception_handler(context):
        (Loop._exc_handler or Loop.default_exception_handler)(Loop, context)


def get_event_loop(runq_len=0, waitq_len=0):
    return Loop


def new_event_loop():
    global _task_queue, _io_queue, _stopping
    _task_queue = TaskQueue()
    _io_queue = _IOQueue()
    _stopping = False
    return Loop


cur_task = None
new_event_loop()
