# mypy: ignore-errors
# Event and ThreadSafeFlag.
import io

from . import core


class Event:
    def __init__(self):
        self.state = False
        self.waiting = core.TaskQueue()

    def is_set(self):
        return self.state

    def set(self):
        while self.waiting.peek():
            core._task_queue.push(self.waiting.pop())
        self.state = True

    def clear(self):
        self.state = False

    async def wait(self):
        if not self.state:
            self.waiting.push(core.cur_task)
            core.cur_task.data = self.waiting  # so Task.cancel() can take it out
            await core._suspend
        return True


class ThreadSafeFlag(io.IOBase):
    """Set from an IRQ callback; the waiting task wakes through select.poll."""

    def __init__(self):
        self.state = 0

    def ioctl(self, req, flags):
        if req == 3:  # stream poll
            return self.state * flags
        return -22

    def set(self):
        self.state = 1

    def clear(self):
        self.state = 0

    async def wait(self):
        if not self.state:
            core._io_queue.queue_read(self)
            await core._suspend
        self.state = 0
