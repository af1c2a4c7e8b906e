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
// tasks to return, those that CallerRuns runs on submitters included. It
// returns nil when all of that finished before ctx ended; parked workers are
// not work, so a pool with nothing queued or running returns nil at once,
// even with a ctx that has already ended.
//
// When ctx ends first, Shutdown cancels every task's context, counts every
// task still queued or running as Abandoned (a task that returns later is
// not counted again), and returns an error that matches ctx.Err() and says
// how many tasks it abandoned. It returns within its deadline and a few
// microseconds more, whatever the tasks and the observer do: the observer
// hears of abandoned queued tasks from a goroutine of their own.
//
// Shutdown may be called more than once and concurrently with any other
// method; every call waits as described, and a call after an abandonment
// returns an error that repeats the count. Once a Shutdown that drained the
// pool returns, the pool's own goroutines are gone. After an abandonment
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
	p.mu.Lock() // ordered with runHere's registration, which checks closed under p.mu
	first := !p.closed.Load()
	if first {
		p.closed.Store(true)
		close(p.closing)
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
			p.stats.outcomes[OutcomeAbandoned].Load())
	}
	p.release()
	return nil
}

// checkDrained ends the shutdown once Shutdown has begun and every task
// submitted has reached its outcome, and releases ants on a goroutine of
// its own: the caller may be one of ants' workers, which ants waits for.
// Shutdown callers wait for that release (see release).
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
// counts what is held, running and queued as Abandoned, cancels the tasks'
// context, and releases ants without waiting.
func (p *Pool) abandon(ctx context.Context) error {
	if !p.abandoned.CompareAndSwap(false, true) {
		return fmt.Errorf("bgpool: shutdown: %d tasks abandoned: %w",
			p.stats.outcomes[OutcomeAbandoned].Load(), ctx.Err())
	}
	// Cancel first, so that the abandonment's cause is there for whoever
	// learns of it; a task that returns before the scan below is not
	// abandoned but ends as it ended.
	p.cancel(fmt.Errorf("bgpool: shutdown deadline passed: %w", context.Cause(ctx)))
	close(p.abandonedCh)
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
			if it.task == nil { // a retirement notice, not a task
				continue
			}
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

// release releases ants once, for all callers, and makes sure no worker
// loop starts after it. After a drain it waits for ants' goroutines to exit,
// which is prompt because no task is left; concurrent callers wait with it
// (sync.Once blocks them until the first call is done). After an
// abandonment it does not wait: workers still running abandoned tasks exit
// when those return.
func (p *Pool) release() {
	p.releaseOnce.Do(func() {
		p.mu.Lock()
		a := p.ants
		p.released = true
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
	})
}
