package bgpool

import (
	"context"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// Do submits task like Submit and waits for it to end. It returns the
// task's own error, a *PanicError if it panicked, ErrDropped if the pool
// discarded it without running it (Drop, DropOldest, WithMaxQueueWait), an
// error matching the cause of Shutdown's deadline (see Shutdown) if Shutdown
// abandoned it, or Submit's error if the task was not admitted.
//
// Do blocks until the task ends, or until ctx ends: then it returns
// ctx.Err() at once, and the task, queued or running, goes on (its context
// is not cancelled, see Task) and is counted in Stats as usual. ctx also
// bounds the wait for room under Block and BlockFor, as in Submit. A task
// that ends is reported to Do before Stats counts it, so a Stats taken just
// after Do returns may still show it Running.
//
// The task runs like any other: on a worker, under the pool's cap, policy,
// rate limit, task timeout and observer, and its error also goes to the
// error handler. Do costs one allocation. Do from inside a task of the
// same pool waits for a worker that may never come if every worker does
// the same: give such calls a ctx with a deadline. Do is safe for
// concurrent use.
func (p *Pool) Do(ctx context.Context, task Task) error { return p.do(ctx, task, "", false) }

// do is Do for a task of kind (see TaskInfo), empty for a plain task. A
// bound task is Job.Do's: ctx's end withdraws it if it has not started and
// cancels it if it has, and do returns only once it has ended or will never
// start.
func (p *Pool) do(ctx context.Context, task Task, kind string, bound bool) error {
	if ctx == nil || task == nil {
		return p.Submit(ctx, task) // counted, and refused with Submit's error
	}
	c := &awaited{ctx: ctx, pool: p, task: task, kind: kind, bound: bound}
	if bound {
		c.done = make(chan struct{})
	} else {
		c.done, c.signal = p.signals.Get().(chan struct{}), true
	}
	if err := p.submit(ctx, c, applyPolicy); err != nil {
		return err
	}
	if bound {
		return c.waitBound(ctx)
	}
	return c.waitDo(ctx)
}

// newSignal makes a channel on which Do's waiter hears that its task
// ended. Do's one allocation is its record, the awaited, with a task value
// made once; its channel is recycled. Each pool recycles its own (Pool.signals): one value is sent on
// each, once, so that it can serve again, and a Do allocates nothing but
// its record. Per pool, not per process, because a channel belongs to the
// testing/synctest bubble it was made in: a pool made in a bubble then
// recycles only channels of that bubble, on which its waiters block
// durably, and never hands one to code outside it.
func newSignal() any { return make(chan struct{}, 1) }

// waitDo is Do's wait: until c ends, or ctx does. Shutdown's deadline ends
// c (for a running task, from the worker's slot), so no channel shared by
// every waiter is needed, and with a ctx that never ends (Background) the
// wait is a single receive.
func (c *awaited) waitDo(ctx context.Context) error {
	if done := ctx.Done(); done != nil {
		select {
		case <-c.done: // the task ended
		case <-done: // the caller stopped waiting; the task goes on
			select {
			case <-c.done: // it had ended too
			default:
				return ctx.Err() // the signal may still come: the channel is not reused
			}
		}
	} else {
		<-c.done
	}
	c.pool.signals.Put(c.done)
	return c.err
}

// An awaited is a task that someone waits for: Do's, a Group's or a
// Future's. It is its item's runner (see item), so the pool knows from the
// record in the queue that someone waits, and tells it of a task that ends
// without running (see awaited.unrun).
type awaited struct {
	ctx context.Context // the submitter's context, or the group's

	pool   *Pool
	task   Task       // the task of Do or of a Group
	future futureTask // the task of a Future
	group  *Group     // the Group it reports to; nil for Do and Future
	state  atomic.Uint32
	tc     taskContext   // the task's context, made in place (see taskContext)
	kind   string        // the Job's kind, for Job.Do (see TaskInfo)
	bound  bool          // Job.Do's: the submitter's ctx withdraws or cancels the task (see Pool.do)
	signal bool          // Do's: done is a recycled channel that end sends one value on (see waitDo)
	at     time.Duration // the admission time, when the pool stamps its tasks (see runner.stamp)

	// Do's and a Future's. The ending writes err and returned, then closes
	// done; waiters read them after done.
	done     chan struct{}
	err      error
	returned bool // the task returned err; false when it panicked, called runtime.Goexit or did not run
}

// The states of an awaited. It ends exactly once: when its task returns,
// panics or calls runtime.Goexit, when the pool tells it that the task will
// not run (dropped, expired, abandoned), or, for a Future, at Shutdown's
// abandonment.
const (
	awaitQueued    uint32 = iota // submitted, not started
	awaitRunning                 // a worker has claimed it (see claim), or its run has started
	awaitEnded                   // settled; later endings are ignored
	awaitWithdrawn               // its waiter took it back before it started (Job.Do): it never runs
)

func (c *awaited) stamp() *time.Duration { return &c.at }

// futureTask is what a Future runs; see Future.run.
type futureTask interface {
	run(ctx context.Context) error
	ended()
}

// taskContext returns the pool's context for c's task, which newTaskContext
// would otherwise allocate: made inside c, it costs nothing more. The pool
// calls it once, when the task starts.
func (c *awaited) taskContext(pool context.Context) context.Context {
	c.tc = taskContext{pool: pool, values: c.ctx}
	return &c.tc
}

// unrun ends c for a task that the pool settled without running it.
func (c *awaited) unrun(err error) { c.end(err, false) }

// end settles c with err, once: it reports to c's group, or records err and
// closes done. returned tells whether the task itself returned err.
func (c *awaited) end(err error, returned bool) {
	for {
		s := c.state.Load()
		if s >= awaitEnded {
			return
		}
		if c.state.CompareAndSwap(s, awaitEnded) {
			break
		}
	}
	if c.group != nil {
		c.group.taskEnded(c, err)
		return
	}
	if c.future != nil {
		c.future.ended()
	}
	c.err, c.returned = err, returned
	if c.signal {
		c.done <- struct{}{} // Do's one waiter, on a channel it reuses
		return
	}
	close(c.done)
}

// wait blocks until c ends, ctx ends, or Shutdown abandons the pool's tasks,
// and returns c's error, ctx's or the abandonment's. ended tells whether c
// ended, so that c.returned may be read.
func (c *awaited) wait(ctx context.Context) (err error, ended bool) {
	select {
	case <-c.done: // ended already: do not let a ctx that has ended too win the select below
		return c.err, true
	default:
	}
	select {
	case <-c.done: // the task ended
		return c.err, true
	case <-ctx.Done(): // the caller stopped waiting; the task goes on
		return ctx.Err(), false
	case <-c.pool.life.abandoned: // Shutdown's deadline passed: a running task may never return
		c.end(c.pool.abandonErr(), false) // unless it has ended meanwhile
		<-c.done
		return c.err, true
	}
}

// waitBound is Job.Do's wait: until c ends. When ctx ends first, it takes
// c back if its task has not started, so that it never runs, and returns
// ctx's error; otherwise the task's context is cancelled (see awaited.run)
// and it waits for the task to return, however long that takes: a queue
// such as River that runs the job again once Do returns must not see it
// run twice.
func (c *awaited) waitBound(ctx context.Context) error {
	select {
	case <-c.done: // the task ended, or will never run
		return c.err
	case <-ctx.Done(): // the caller stopped waiting: take the task back, or cancel it
	}
	if c.state.CompareAndSwap(awaitQueued, awaitWithdrawn) {
		return ctx.Err()
	}
	<-c.done
	return c.err
}

// claim marks c's task as started, and reports false when its waiter has
// taken it back (see waitBound): then it must not run.
func (c *awaited) claim() bool {
	return c.state.CompareAndSwap(awaitQueued, awaitRunning) || c.state.Load() != awaitWithdrawn
}

// runBound runs Job.Do's task with a context that the submitter's ctx
// cancels too, with its cause.
func (c *awaited) runBound(ctx context.Context) error {
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(c.ctx, func() { cancel(context.Cause(c.ctx)) })
	defer stop()
	return c.task(tctx)
}

// run runs the awaited task and ends c with its outcome.
//
// A panic in the task ends c with a *PanicError and goes on to the pool,
// which counts it Panicked and makes its own *PanicError for the error
// handler, with the same Value; a runtime.Goexit ends it with an error and
// goes on too. Recovering and panicking again keeps the original frames on
// the stack that the pool records.
func (c *awaited) run(ctx context.Context) error {
	c.state.CompareAndSwap(awaitQueued, awaitRunning) // fails only if a waiter has ended c at Shutdown's abandonment
	returned := false
	defer func() {
		if returned {
			return
		}
		if v := recover(); v != nil {
			c.end(&PanicError{Value: v, Stack: debug.Stack()}, false)
			panic(v)
		}
		c.end(errGoexit, false)
	}()
	var err error
	switch {
	case c.group != nil:
		err = c.group.run(ctx, c.task)
	case c.future != nil:
		err = c.future.run(ctx)
	case c.bound:
		err = c.runBound(ctx)
	default:
		err = c.task(ctx)
	}
	returned = true
	c.end(err, true)
	return err
}
