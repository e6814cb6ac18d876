# Included by _batch.pyx (one extension module): the per-model job queue.

cdef class Job:
    """One request for one model: its input, priority and the slot its answer lands in.

    ``queued`` is True exactly while the job sits in a JobQueue; ``discard`` clears it so
    that a job whose client went away costs nothing more (spec §5.5 step 5).
    """

    cdef public object input
    cdef public int priority
    cdef public bint queued
    cdef public bint cancelled
    cdef public object done      # trio.Event set once result or error is filled in
    cdef public object result    # Output
    cdef public object error     # DjlError
    cdef public double enqueued_at  # trio.current_time() at submit (QueueTime metric)

    def __init__(self, input, int priority=DEFAULT_PRIORITY, done=None):
        self.input = input
        self.priority = priority
        self.queued = False
        self.cancelled = False
        self.done = done
        self.result = None
        self.error = None
        self.enqueued_at = 0.0

    cpdef bint finished(self):
        return self.result is not None or self.error is not None

    cpdef set_result(self, result):
        if self.result is None and self.error is None:
            self.result = result
            if self.done is not None:
                self.done.set()

    cpdef set_error(self, error):
        if self.result is None and self.error is None:
            self.error = error
            if self.done is not None:
                self.done.set()


cdef class JobQueue:
    """Priority queue of Jobs with a capacity (spec §5.1, §5.3).

    Jobs of equal priority leave in arrival order. ``len()`` counts live jobs only.
    """

    cdef dict _lanes          # priority -> deque of Jobs (may hold discarded jobs)
    cdef list _priorities     # sorted priorities that have a lane
    cdef Py_ssize_t _live     # jobs with queued == True
    cdef readonly Py_ssize_t capacity
    cdef readonly str model_id

    def __init__(self, Py_ssize_t capacity, str model_id=""):
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self._lanes = {}
        self._priorities = []
        self._live = 0
        self.capacity = capacity
        self.model_id = model_id

    def __len__(self):
        return self._live

    cpdef put_nowait(self, Job job, bint worker_idle=True):
        """Enqueue ``job`` or raise ``Capacity``.

        The last free slot is only usable while some worker is idle (spec §5.3), so a
        burst never parks a request behind a queue that no worker will drain in time.
        """
        cdef Py_ssize_t remaining = self.capacity - self._live
        if remaining < 1 or (remaining == 1 and not worker_idle):
            raise Capacity.queue_full(self.model_id)
        self._lane(job.priority).append(job)
        job.queued = True
        self._live += 1

    cpdef put_front(self, list jobs):
        """Put already-admitted jobs back at the head of their lanes, in the given order
        (a dead worker's batches it never started). Capacity is not checked: they were
        counted when they were first queued."""
        cdef Job job
        for job in reversed(jobs):
            self._lane(job.priority).appendleft(job)
            job.queued = True
            self._live += 1

    cdef object _lane(self, int priority):
        """The deque of ``priority``, made (and its priority ordered in) on first use."""
        lane = self._lanes.get(priority)
        if lane is None:
            lane = deque()
            self._lanes[priority] = lane
            self._priorities.append(priority)
            self._priorities.sort()
        return lane

    cpdef bint discard(self, Job job):
        """Forget a queued job (its client went away). O(1); True if it was queued."""
        if not job.queued:
            return False
        job.queued = False
        self._live -= 1
        return True

    cpdef list take(self, Py_ssize_t max_items):
        """Remove and return up to ``max_items`` live jobs, best priority first."""
        cdef list out = []
        cdef list emptied = None
        cdef Job job
        if self._live == 0 or max_items <= 0:
            return out
        for priority in self._priorities:
            lane = self._lanes[priority]
            while lane and len(out) < max_items:
                job = lane.popleft()
                if job.queued:
                    job.queued = False
                    self._live -= 1
                    out.append(job)
            if not lane and priority != DEFAULT_PRIORITY:
                # Lanes come from a client header: drop empty ones so they cannot pile up.
                if emptied is None:
                    emptied = []
                emptied.append(priority)
            if len(out) >= max_items:
                break
        if emptied is not None:
            for priority in emptied:
                del self._lanes[priority]
                self._priorities.remove(priority)
        return out

    cpdef list drain(self):
        """Remove and return every live job (unregister, shutdown)."""
        return self.take(self._live)

    cpdef fail_all(self, error):
        """Remove every live job and answer each with ``error`` (a DjlError)."""
        cdef Job job
        for job in self.take(self._live):
            job.set_error(error)
