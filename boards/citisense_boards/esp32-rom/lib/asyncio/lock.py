# mypy: ignore-errors
# Lock.
from . import core


class Lock:
    def __init__(self):
        self.state = 0  # 0 unlocked, 1 locked, or the task it is being handed to
        self.waiting = core.TaskQueue()

    def locked(self):
        return self.state == 1

    def release(self):
        if self.state != 1:
            raise RuntimeError("Lock not acquired")
        if self.waiting.peek():
            self.state = self.waiting.pop()
            core._task_queue.push(self.state)
        else:
            self.state = 0

    async def acquire(self):
        if self.state != 0:
            self.waiting.push(core.cur_task)
            core.cur_task.data = self.waiting
            try:
                await core._suspend
            except core.CancelledError:
                if self.state == core.cur_task:
                    # Cancelled just as the lock was handed over: pass it on.
                    self.state = 1
                    self.release()
                raise
        self.state = 1
        return True

    async def __aenter__(self):
        return await self.acquire()

    async def __aexit__(self, exc_type, exc, tb):
        return self.release()
