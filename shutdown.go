package bgpool

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Shutdown stops the pool and waits for it to drain. It stops admitting
// tasks at once (Submit then returns ErrClosed, and submitters blocked in
// Block return ErrClosed), lets every queued task run, and waits for running
// tasks to return, those that CallerRuns runs on submitters included, and
// then for the workers to leave. It returns nil when all of that finished
// before ctx ended; parked workers are not work, so a pool with nothing
// queued or running returns nil at once (within a few milliseconds, while
// its parked workers leave), even with a ctx that has already ended.
//
// When ctx ends before every task has ended, Shutdown counts every task
// still queued or running as Abandoned (a task that returns later is not
// counted again), then cancels every task's context, and returns an error
// that matches ctx.Err() and says how many tasks it abandoned. When every
// task has ended but a worker is still held by the observer or the error
// handler, it waits 100ms beyond ctx's deadline and then returns an error
// that matches ctx.Err(). So Shutdown returns by its deadline plus at most
// 100ms, whatever the tasks and the observer do: the observer hears of
// abandoned queued tasks from a goroutine of their own.
//
// With a Handoff (WithHandoff), Shutdown keeps a reserve of its grace for
// handing off the Jobs still queued: the reserve is a fifth of the time
// from the call to ctx's deadline, 5 seconds at most. The drain ends at the
// deadline less the reserve; then Shutdown abandons running tasks and queued
// closures as above, takes the queued Jobs out of the queue and hands them
// off in one Handoff call whose context ends at ctx's deadline (not at its
// cancellation), and counts them HandedOff, or Abandoned if the call fails.
// So running tasks get four fifths of the grace, and Shutdown still returns
// by its deadline (plus the margin below) when the Handoff honours its
// context. When ctx has no deadline, or it has passed already, the drain
// ends when ctx does and the hand-off gets 5 seconds of its own. Jobs that
// had started, or that a worker held while it waited for a rate-limit
// token, are abandoned like other tasks.
//
// Shutdown may be called more than once and concurrently with any other
// method; every call waits as described, and a call after an abandonment
// returns an error that repeats the count. Once a Shutdown that drained the
// pool returns nil, the pool's own goroutines are gone. After an abandonment
// they exit shortly after their tasks return, so only tasks that ignore
// their cancelled context can keep them. Called from inside one of the
// pool's own tasks (with that task's context, or one derived from it),
// Shutdown begins the shutdown and returns nil without waiting, since it
// would wait for its caller; the pool then releases its goroutines by
// itself once it has drained.
func (p *Pool) Shutdown(ctx context.Context) error {
	if ctx == nil {
		return errors.New("bgpool: Shutdown: nil context")
	}
	// p.mu orders this with runHere's registration, which checks closed
	// under it, and with notify's sends on the wake channels.
	p.mu.Lock()
	first := !p.closed.Load()
	if first {
		p.closed.Store(true)
		for _, c := range p.closingShards {
			close(c)
		}
		p.wakeParked()
	}
	p.mu.Unlock()
	if first {
		p.checkDrained()
	}
	if ctx.Value(poolKey{}) == p {
		return nil
	}

	drain, stop := p.drainContext(ctx)
	defer stop()
	select {
	case <-p.done: // drained, or abandoned by another Shutdown
	case <-drain.Done(): // the deadline (less the hand-off's reserve) came first, unless done is also ready
		select {
		case <-p.done:
		default:
			return p.abandon(ctx, drain)
		}
	}
	if p.abandoned.Load() {
		return fmt.Errorf("bgpool: shutdown: %d tasks were abandoned by an earlier Shutdown",
			p.stats.load(OutcomeAbandoned))
	}
	// Every task has ended; wait for the workers to leave, within ctx and
	// releaseMargin beyond it: parked workers leave at once, but an
	// observer or error handler may still hold one.
	select {
	case <-p.released:
		return nil
	case <-ctx.Done():
	}
	t := time.NewTimer(releaseMargin)
	defer t.Stop()
	select {
	case <-p.released:
		return nil
	case <-t.C:
		return fmt.Errorf("bgpool: shutdown: every task ended, but workers are still busy in the observer or error handler: %w", ctx.Err())
	}
}

// releaseMargin is how long Shutdown waits beyond its deadline for workers
// that have no task left to leave.
const releaseMargin = 100 * time.Millisecond

// checkDrained ends the shutdown once Shutdown has begun and every task
// submitted has reached its outcome, and releases ants on a goroutine of
// its own: the caller may be one of ants' workers, which ants waits for.
func (p *Pool) checkDrained() {
	if p.unsettled() != 0 {
		return
	}
	p.doneOnce.Do(func() {
		close(p.done)
		go p.release()
	})
}

// handoffShare and maxHandoffReserve size the part of Shutdown's grace kept
// for handing off queued Jobs: a fifth, 5 seconds at most. A share rather
// than a fixed time, so that a short grace in a test and a long one in
// production both leave most of it to the running tasks; capped, because
// inserting even thousands of rows in one batch takes well under a second,
// and running tasks should not lose more than that.
const (
	handoffShare      = 5
	maxHandoffReserve = 5 * time.Second
)

// drainContext returns the context that ends Shutdown's drain: ctx itself,
// or, with a Handoff and a deadline, ctx with its deadline moved earlier by
// the hand-off's reserve.
func (p *Pool) drainContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if p.opts.handoff == nil || !ok {
		return ctx, func() {}
	}
	reserve := min(time.Until(d)/handoffShare, maxHandoffReserve)
	if reserve <= 0 {
		return ctx, func() {}
	}
	return context.WithDeadline(ctx, d.Add(-reserve))
}

// handoffDeadline is when Shutdown's hand-off must end: ctx's deadline, or
// handoffTimeout from now if ctx has none left.
func handoffDeadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok && time.Until(d) > 0 {
		return d
	}
	return time.Now().Add(handoffTimeout)
}

// abandon ends a Shutdown whose drain ended (drain, which is ctx or ctx less
// the hand-off's reserve) before the pool drained. It counts what is held,
// running and queued as Abandoned, setting queued Jobs aside when there is
// a Handoff, then cancels the tasks' context (counting first, so that a task
// that returns at once on cancellation is still counted Abandoned, once),
// hands the Jobs off by ctx's deadline, and releases ants without waiting.
func (p *Pool) abandon(ctx, drain context.Context) error {
	cause := fmt.Errorf("bgpool: shutdown deadline passed: %w", context.Cause(drain))
	p.cause.CompareAndSwap(nil, &cause)
	if !p.abandoned.CompareAndSwap(false, true) {
		return fmt.Errorf("bgpool: shutdown: %d tasks abandoned: %w",
			p.stats.load(OutcomeAbandoned), drain.Err())
	}
	running, held := 0, 0
	p.mu.Lock()
	for _, w := range p.all {
		switch {
		case w.state.CompareAndSwap(slotRunning, slotAbandoned), w.state.CompareAndSwap(slotStarting, slotAbandoned):
			running++
		case w.state.CompareAndSwap(slotHolding, slotAbandoned):
			held++
		}
	}
	for s := range p.callers {
		if s.state.CompareAndSwap(slotRunning, slotAbandoned) {
			running++
		}
	}
	p.mu.Unlock()
	p.stats.outcomes[OutcomeAbandoned].Add(uint64(running + held))
	lost, jobs := p.takeQueued()
	p.cancel(*p.cause.Load())
	close(p.abandonedCh)
	handed := p.handOff(jobs, handoffDeadline(ctx))
	queued := held + lost + len(jobs.args) - handed
	p.doneOnce.Do(func() { close(p.done) })
	p.release()
	if p.opts.handoff != nil {
		return fmt.Errorf("bgpool: shutdown: abandoned %d tasks (%d queued, %d running), handed off %d queued jobs: %w",
			queued+running, queued, running, handed, drain.Err())
	}
	return fmt.Errorf("bgpool: shutdown: abandoned %d tasks (%d queued, %d running): %w",
		queued+running, queued, running, drain.Err())
}

// abandonQueued empties the queue after an abandonment, for a submitter
// that got a task in after it (see admitted): it abandons plain tasks and
// hands Jobs off, as abandon does.
func (p *Pool) abandonQueued() {
	_, jobs := p.takeQueued()
	p.handOff(jobs, time.Now().Add(handoffTimeout))
}

// queuedJobs are Jobs taken from the queue to hand off: their args, and
// their submitted contexts and admission times for those who are told of
// their outcome.
type queuedJobs struct {
	args []JobArgs
	ctxs []context.Context
	ats  []time.Duration
}

// takeQueued empties the queue after an abandonment. It counts each plain
// task (and each Job, without a Handoff) Abandoned, and sets Jobs aside to
// hand off, keeping them Queued in Stats through p.handingOff. The observer
// hears of the abandoned tasks from a goroutine of its own, so that a slow
// observer cannot hold up Shutdown.
func (p *Pool) takeQueued() (abandoned int, jobs queuedJobs) {
	var lost []time.Duration // admission times, for the observer
	for {
		var it item
		select {
		case it = <-p.queue:
		default:
			if len(lost) > 0 {
				go func() {
					for _, at := range lost {
						p.observe(OutcomeAbandoned, report{queued: true, at: at})
					}
				}()
			}
			return abandoned, jobs
		}
		if p.opts.handoff != nil {
			if q, ok := jobOf(it.ctx); ok {
				p.handingOff.Add(1)
				jobs.args = append(jobs.args, q.jobArgs())
				jobs.ctxs = append(jobs.ctxs, it.ctx)
				jobs.ats = append(jobs.ats, it.at)
				continue
			}
		}
		p.stats.outcomes[OutcomeAbandoned].Add(1)
		p.notifyUnrun(it.ctx, OutcomeAbandoned)
		abandoned++
		if len(p.opts.observers) > 0 {
			lost = append(lost, it.at)
		}
	}
}

// handOff hands off the Jobs that takeQueued set aside, in one call that
// must end by deadline, counts each HandedOff, or Abandoned if the call
// failed (its error goes to the error handler), and returns how many were
// handed off. The observer hears of them from a goroutine of its own.
func (p *Pool) handOff(jobs queuedJobs, deadline time.Time) int {
	n := len(jobs.args)
	if n == 0 {
		return 0
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	out := OutcomeHandedOff
	if err := p.callHandoff(ctx, jobs.args); err != nil {
		out = OutcomeAbandoned
		p.handleError(ctx, fmt.Errorf("bgpool: shutdown: hand-off of %d queued jobs failed; they are abandoned: %w", n, err))
	}
	// Counted before they leave handingOff, so that Stats never misses them.
	p.stats.outcomes[out].Add(uint64(n))
	p.handingOff.Add(-int64(n))
	for _, c := range jobs.ctxs {
		p.notifyUnrun(c, out)
	}
	if len(p.opts.observers) > 0 {
		go func() {
			for _, at := range jobs.ats {
				p.observe(out, report{queued: true, at: at})
			}
		}()
	}
	if p.closed.Load() {
		p.checkDrained()
	}
	if out == OutcomeAbandoned {
		return 0
	}
	return n
}

// release releases ants once, and makes sure no worker loop starts after
// it. After a drain it waits for ants' goroutines to exit (our loops among
// them) and then closes p.released; Shutdown waits for that within its ctx.
// After an abandonment it does not wait: workers still running abandoned
// tasks exit when those return.
func (p *Pool) release() {
	p.releaseOnce.Do(func() {
		p.mu.Lock()
		a := p.ants
		p.antsGone = true
		if p.reaper != nil {
			p.reaper.Stop()
		}
		p.mu.Unlock()
		switch {
		case a == nil: // no worker ever started
		case p.abandoned.Load():
			a.Release()
		default:
			_ = a.ReleaseContext(context.Background())
		}
		close(p.released)
	})
}
