# mypy: ignore-errors
# wait_for and gather.
from . import core


async def wait_for(aw, timeout, sleep=core.sleep):
    task = core._promote_to_task(aw)
    if timeout is None:
        return await task
    expired = []

    async def expire():
        await sleep(timeout)
        expired.append(True)
        task.cancel()

    timer = core.create_task(expire())
    try:
        return await task
    except core.CancelledError:
        if expired:
            raise core.TimeoutError from None
        raise
    finally:
        if not expired:
            timer.cancel()


def wait_for_ms(aw, timeout):
    return wait_for(aw, timeout, core.sleep_ms)


class _Gathering:
    """Marks the task running gather(); Task.cancel() calls remove()."""

    @staticmethod
    def remove(task):
        pass


async def gather(*aws, return_exceptions=False):
    if not aws:
        return []
    tasks = [core._promote_to_task(aw) for aw in aws]
    me = core.cur_task
    mark = _Gathering()
    state = [0, None]  # children still running, first failure

    def done(t, er):
        if me.data is not mark:
            return  # gather has already been resumed
        if not return_exceptions and not isinstance(er, StopIteration):
            state[1] = er
        else:
            state[0] -= 1
            if state[0]:
                return
        core._task_queue.push(me)

    for t in tasks:
        if t.state is True:
            t.state = done  # called by the run loop when t ends
            state[0] += 1
        elif t.state:
            raise RuntimeError("can't gather")
        elif not return_exceptions and not isinstance(t.data, StopIteration):
            raise t.data
    if state[0]:
        me.data = mark
        try:
            await core._suspend
        except core.CancelledError:
            for t in tasks:
                if t.state is done:
                    t.state = True
                    t.cancel()
            raise
    if state[1] is not None:
        raise state[1]
    return [t.data.value if isinstance(t.data, StopIteration) else t.data for t in tasks]
