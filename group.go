package bgpool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// A Group is a set of tasks that run on a Pool and are waited for together,
// with the semantics of errgroup.WithContext: the first task that fails
// cancels the group's context, and Wait returns that first error. Unlike an
// errgroup with SetLimit, whose limit holds for one group, a Group's tasks
// share the pool with every other task: one cap, queue, policy, rate limit,
// task timeout, shutdown deadline and Stats for the whole service, so that a
// request can fan out without letting many requests together exceed the
// pool.
//
// Make a Group with Pool.NewGroup; the zero Group is not usable (its methods
// return an error). A Group is safe for concurrent use: tasks may submit
// more tasks to their own group while Wait waits. After Wait has returned,
// Submit and TrySubmit return an error; make a new Group for new work.
//
// A task that returns the group's cancellation after a sibling failed
// (context.Canceled, or the first error) is counted Failed in Stats, like
// any task that returns an error, but is not passed to the error handler:
// it failed because a sibling did, and the sibling's error is the one
// logged.
//
// A Group task costs one allocation, the record Wait counts, with a task
// value made once; NewGroup and Wait together cost eight, about 0.8 a task
// in a fan-out of 10.
type Group struct {
	pool *Pool
	// ctx is the group's context, returned by NewGroup: cancelled on the
	// first failure, at Shutdown's abandonment, and when Wait returns. The
	// Group keeps it, against the usual rule, because its tasks are started
	// later by the pool and need it then; taskCtx is ctx with the pool's key
	// (see Shutdown), the context every task runs with.
	ctx     context.Context
	taskCtx context.Context
	cancel  context.CancelCauseFunc
	unhook  func() bool // stops the pool's cancellation from reaching ctx

	state atomic.Uint64 // tasks admitted and not ended, plus groupWaiting and groupClosed
	done  chan struct{} // closed when state becomes groupClosed: Wait may return

	mu      sync.Mutex // guards err and firstBy
	err     error      // the first error of a task
	firstBy *awaited   // the task that failed first; nil for the abandonment
}

// The flags of Group.state; the low bits count the tasks.
const (
	groupWaiting = 1 << 62 // Wait has been called: the count reaching zero closes the group
	groupClosed  = 1 << 63 // Wait may return; Submit refuses
)

var (
	errZeroGroup = errors.New("bgpool: zero Group; make one with Pool.NewGroup")
	errGroupDone = errors.New("bgpool: Group.Submit after Wait returned")
)

// NewGroup returns an empty Group of tasks to run on p, and its context,
// derived from ctx. That context is cancelled, with the error as its cause
// (context.Cause), when the first task of the group fails (returns an error,
// panics, or is dropped or abandoned without running); when Shutdown's
// deadline passes; when ctx is cancelled; and when Wait returns.
//
// Every task of the group runs with that context (plus, with
// WithTaskTimeout, its own deadline): it has the values of ctx and is
// cancelled by the group as well as by the pool. That differs from Submit,
// whose tasks outlive the submitter's context: a Group is for work whose
// results someone waits for, such as one request's fan-out.
//
// NewGroup does not block. It panics if ctx is nil.
func (p *Pool) NewGroup(ctx context.Context) (*Group, context.Context) {
	if ctx == nil {
		panic("bgpool: NewGroup: nil context")
	}
	gctx, cancel := context.WithCancelCause(ctx)
	g := &Group{
		pool:    p,
		ctx:     gctx,
		taskCtx: context.WithValue(gctx, poolKey{}, p),
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	g.unhook = context.AfterFunc(p.base, func() { cancel(context.Cause(p.base)) })
	return g, gctx
}

// Submit submits task to the group's pool like Pool.Submit, with the group's
// context: Submit returns nil once the task is admitted (or was dropped, or
// ran on the caller with CallerRuns), and the task's outcome goes to Wait.
// When the pool has no room, the pool's Policy decides; under Block and
// BlockFor, Submit waits until the task is admitted or the group's context
// ends (after a failure of a sibling, say).
//
// Submit returns the error of a task that was not admitted (ErrOverloaded,
// ErrClosed, or bad input): that task never runs, and Wait neither waits for
// it nor reports its error. After Wait has returned, Submit returns an error
// and submits nothing.
func (g *Group) Submit(task Task) error { return g.submit(task, applyPolicy) }

// TrySubmit is like Submit but never waits, whatever the pool's policy: when
// no worker is free and the queue is full it returns ErrOverloaded, and the
// task, counted Rejected, is not part of the group.
func (g *Group) TrySubmit(task Task) error { return g.submit(task, neverWait) }

func (g *Group) submit(task Task, mode submitMode) error {
	if g.pool == nil {
		return errZeroGroup
	}
	if task == nil {
		return g.pool.submit(g.ctx, nil, mode) // counted, and refused with Submit's error
	}
	if !g.add() {
		return errGroupDone
	}
	c := &awaited{ctx: g.ctx, pool: g.pool, task: task, group: g}
	var err error
	returned := false
	defer func() {
		// Not admitted (an error, or a policy that panicked): c will not
		// end by itself. A policy may have settled it all the same (Drop,
		// then an error), so end it only once.
		if (err != nil || !returned) && c.state.Swap(awaitEnded) != awaitEnded {
			g.release()
		}
	}()
	err = g.pool.submit(g.ctx, c, mode)
	returned = true
	if errors.Is(err, ErrOverloaded) && g.ctx.Err() != nil {
		if first := g.firstErr(); first != nil {
			// The wait for room ended because a sibling failed and cancelled
			// the group: that failure, not overload, is why.
			err = fmt.Errorf("bgpool: Group.Submit: the group has failed: %w", first)
		}
	}
	return err
}

// firstErr returns the group's first error, nil if none.
func (g *Group) firstErr() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// Wait blocks until every task that the group admitted has ended, in any
// outcome, and returns the first error among them: a task's own error, a
// *PanicError, ErrDropped for a task discarded without running, or an error
// matching the cause of Shutdown's deadline for a task that Shutdown
// abandoned. When Shutdown's deadline passes while tasks of the group are
// still running, Wait returns then, with that error, without waiting for
// tasks that may never return.
//
// Wait cancels the group's context before it returns; from then on Submit
// refuses. Wait may be called more than once, and concurrently; every call
// returns the same error. A task that ends is reported to Wait before Stats
// counts it, so a Stats taken just after Wait returns may still show it
// Running. Calling Wait from one of the group's own tasks waits forever.
func (g *Group) Wait() error {
	if g.pool == nil {
		return errZeroGroup
	}
	if g.state.Or(groupWaiting)&^(groupWaiting|groupClosed) == 0 {
		g.closeIdle()
	}
	select {
	case <-g.done: // every admitted task has ended
	case <-g.pool.life.abandoned: // Shutdown's deadline passed: running tasks may never return
		select {
		case <-g.done: // they had all ended
		default:
			g.fail(g.pool.abandonErr())
			g.close()
		}
	}
	g.unhook()
	g.cancel(nil)
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// add counts a task about to be submitted, unless Wait has returned.
func (g *Group) add() bool {
	for {
		s := g.state.Load()
		if s&groupClosed != 0 {
			return false
		}
		if g.state.CompareAndSwap(s, s+1) {
			return true
		}
	}
}

// release uncounts a task that has ended or was not admitted.
func (g *Group) release() {
	if g.state.Add(^uint64(0)) == groupWaiting {
		g.closeIdle()
	}
}

// closeIdle closes the group if Wait is waiting and no task is left.
func (g *Group) closeIdle() {
	if g.state.CompareAndSwap(groupWaiting, groupWaiting|groupClosed) {
		close(g.done)
	}
}

// close closes the group whatever is left, unless it is closed already.
func (g *Group) close() {
	for {
		s := g.state.Load()
		if s&groupClosed != 0 {
			return
		}
		if g.state.CompareAndSwap(s, s|groupClosed) {
			close(g.done)
			return
		}
	}
}

// taskEnded records how c, a task of the group, ended.
func (g *Group) taskEnded(c *awaited, err error) {
	if err != nil {
		g.failBy(c, err)
	}
	g.release()
}

// echoes reports whether err, which c returned, is only the group's
// cancellation after another task failed: context.Canceled, or the first
// error itself. Such a task is counted Failed, but not passed to the error
// handler: the first failure is the one worth a log line.
func (g *Group) echoes(c *awaited, err error) bool {
	g.mu.Lock()
	first, by := g.err, g.firstBy
	g.mu.Unlock()
	return first != nil && by != c && (errors.Is(err, context.Canceled) || errors.Is(err, first))
}

// fail records err if it is the group's first error, and then cancels the
// group's context with err as the cause.
func (g *Group) fail(err error) { g.failBy(nil, err) }

// failBy is fail for an error of c's.
func (g *Group) failBy(c *awaited, err error) {
	g.mu.Lock()
	first := g.err == nil
	if first {
		g.err, g.firstBy = err, c
	}
	g.mu.Unlock()
	if first {
		g.cancel(err)
	}
}

// run runs a task of the group with the group's context. ctx is the pool's
// context for the task, whose deadline, with WithTaskTimeout, the task keeps.
// That deadline costs a timer and a context per task: merging two parents
// lazily, as the pool's own task context does for one, is not worth its code
// for this combination.
func (g *Group) run(ctx context.Context, task Task) error {
	tctx := g.taskCtx
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		tctx, cancel = context.WithDeadline(tctx, deadline)
		defer cancel()
	}
	return task(tctx)
}
