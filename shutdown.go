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

	select {
	case <-p.done: // drained, or abandoned by another Shutdown
	case <-ctx.Done(): // the deadline came first, unless done is also ready
		select {
		case <-p.done:
		default:
			return p.abandon(ctx)
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

// abandon ends a Shutdown whose ctx ended before the pool drained. It
// counts what is held, running and queued as Abandoned, then cancels the
// tasks' context (counting first, so that a task that returns at once on
// cancellation is still counted Abandoned, once), and releases ants without
// waiting.
func (p *Pool) abandon(ctx context.Context) error {
	cause := fmt.Errorf("bgpool: shutdown deadline passed: %w", context.Cause(ctx))
	p.cause.CompareAndSwap(nil, &cause)
	if !p.abandoned.CompareAndSwap(false, true) {
		return fmt.Errorf("bgpool: shutdown: %d tasks abandoned: %w",
			p.stats.load(OutcomeAbandoned), ctx.Err())
	}
	running, held := 0, 0
	p.mu.Lock()
	for _, w := range p.all {
		switch {
		case w.state.CompareAndSwap(slotRunning, slotAbandoned):
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
	queued := held + p.abandonQueued()
	p.cancel(*p.cause.Load())
	close(p.abandonedCh)
	p.doneOnce.Do(func() { close(p.done) })
	p.release()
	return fmt.Errorf("bgpool: shutdown: abandoned %d tasks (%d queued, %d running): %w",
		queued+running, queued, running, ctx.Err())
}

// abandonQueued empties the queue after an abandonment, counting each task
// Abandoned, and returns how many it took. The observer hears of them from
// a goroutine of its own, so that a slow observer cannot hold up Shutdown.
func (p *Pool) abandonQueued() int {
	var lost []time.Duration // admission times, for the observer
	n := 0
	for {
		select {
		case it := <-p.queue:
			p.stats.outcomes[OutcomeAbandoned].Add(1)
			p.notifyUnrun(it.ctx, OutcomeAbandoned)
			n++
			if p.opts.observer != nil {
				lost = append(lost, it.at)
			}
			continue
		default:
		}
		break
	}
	if len(lost) > 0 {
		go func() {
			for _, at := range lost {
				p.observe(OutcomeAbandoned, report{queued: true, at: at})
			}
		}()
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
