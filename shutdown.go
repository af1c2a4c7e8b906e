package bgpool

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Shutdown stops the pool and waits for it to drain. It stops admitting
// tasks at once: Submit then returns ErrClosed, and so do submitters
// blocked under Block. It lets every queued task run, waits for running
// tasks (those CallerRuns runs on submitters included), then for the
// workers to leave. It returns nil when all of that finished before ctx
// ended. A pool with nothing queued or running returns nil at once, even
// with a ctx that has already ended.
//
// When ctx ends first, Shutdown counts every task still queued or running
// as Abandoned, cancels their contexts, and returns a *ShutdownError with
// the counts that matches ctx.Err(). It returns within a few milliseconds
// of ctx's end, whatever the tasks, the observer, the error handler and
// the Handoff do. Only when every task has ended but the observer or the
// error handler still holds a worker does it wait up to 100ms more.
//
// With WithHandoff and a deadline, Shutdown hands off the Jobs still
// queued once the time left is what their hand-off needs, and counts them
// HandedOff; running tasks and queued closures go on until the deadline.
// See "Jobs and durable hand-off" in the package documentation.
//
// Shutdown may be called more than once and concurrently with any other
// method; every call waits as described. Once it returns nil, every worker
// has returned. Called from one of the pool's own tasks, it begins the
// shutdown and returns nil without waiting, since it would wait for its
// caller.
func (p *Pool) Shutdown(ctx context.Context) error {
	if ctx == nil {
		return errors.New("bgpool: Shutdown: nil context")
	}
	p.beginShutdown()
	if p.isPoolContext(ctx) {
		return nil
	}

	if err := p.drain(ctx); err != nil {
		return err
	}
	if p.isAbandoned() {
		n := int(p.stats.load(OutcomeAbandoned))
		verb := "were"
		if n == 1 {
			verb = "was"
		}
		return fmt.Errorf("bgpool: shutdown: %s %s abandoned by an earlier Shutdown", tasks(n), verb)
	}
	// Every task has ended; wait for the workers to leave, within ctx and
	// releaseMargin beyond it: parked workers leave at once, but an
	// observer or error handler may still hold one.
	select {
	case <-p.life.released:
		return nil
	case <-ctx.Done():
	}
	t := time.NewTimer(releaseMargin)
	defer t.Stop()
	select {
	case <-p.life.released:
		return nil
	case <-t.C:
		return fmt.Errorf("bgpool: shutdown: every task ended, but workers are still busy in the observer or error handler: %w", ctx.Err())
	}
}

// drain waits until the pool has drained or been abandoned, and abandons it
// when ctx ends first. With a Handoff and a deadline it starts the hand-off
// of the queued Jobs when the time left comes down to what it needs: it
// looks again at least every handoffTick, since the queue shrinks as the
// workers drain it. It never busy-waits.
func (p *Pool) drain(ctx context.Context) error {
	deadline, ok := ctx.Deadline()
	plan := p.opts.handoff != nil && ok
	var tick *time.Timer
	var tickC <-chan time.Time
	if plan {
		grace := time.Until(deadline)
		tick = time.NewTimer(time.Hour)
		defer tick.Stop()
		for {
			if !p.handingOffStarted() {
				wait := time.Until(deadline) - p.handoffs.reserve(len(p.queue), grace)
				if wait <= 0 {
					p.startHandoff(deadline)
				} else {
					tick.Reset(min(wait, handoffTick))
					tickC = tick.C
				}
			}
			select {
			case <-p.life.done: // drained, or abandoned by another Shutdown
				return nil
			case <-ctx.Done(): // the deadline came first
				return p.abandonAt(ctx)
			case <-tickC: // time to look at the queue again
				tickC = nil
			}
		}
	}
	select {
	case <-p.life.done: // drained, or abandoned by another Shutdown
		return nil
	case <-ctx.Done(): // the deadline came first
		return p.abandonAt(ctx)
	}
}

// abandonAt abandons the pool at ctx's end, unless it has drained at the
// same moment.
func (p *Pool) abandonAt(ctx context.Context) error {
	select {
	case <-p.life.done:
		if !p.isAbandoned() {
			return nil
		}
	default:
	}
	return p.abandon(ctx)
}

// releaseMargin is how long Shutdown waits beyond its deadline for workers
// that have no task left to leave.
const releaseMargin = 100 * time.Millisecond

// A ShutdownError is the error Shutdown returns when its ctx ended before
// the pool drained: what it abandoned and what it handed off, so that a
// caller can read the counts without parsing the message. It matches ctx's
// error (context.DeadlineExceeded, say) with errors.Is.
type ShutdownError struct {
	// Queued and Running are the tasks abandoned in the queue (or held for
	// a rate-limit token) and while running.
	Queued, Running int
	// HandedOff is the number of queued Jobs that the Handoff accepted
	// during this Shutdown (WithHandoff).
	HandedOff int
	// Pending is the number of Jobs still in a Handoff call at the
	// deadline: the store may or may not have them. They are counted, and
	// a failure reported to the error handler, when the call returns.
	Pending int
	// Err is ctx's error.
	Err error
}

var _ error = (*ShutdownError)(nil)

// Error says what was abandoned, for example "bgpool: shutdown: abandoned 3
// tasks (1 queued, 2 running): context deadline exceeded".
func (e *ShutdownError) Error() string {
	msg := fmt.Sprintf("bgpool: shutdown: abandoned %s (%d queued, %d running)", tasks(e.Queued+e.Running), e.Queued, e.Running)
	if e.HandedOff > 0 || e.Pending > 0 {
		msg += fmt.Sprintf(", handed off %s", jobs(e.HandedOff))
	}
	if e.Pending > 0 {
		msg += fmt.Sprintf(", %s still with the Handoff", jobs(e.Pending))
	}
	return msg + ": " + e.Err.Error()
}

// Unwrap returns ctx's error.
func (e *ShutdownError) Unwrap() error { return e.Err }

func tasks(n int) string { return plural(n, "task") }
func jobs(n int) string  { return plural(n, "job") }

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// abandon ends a Shutdown whose ctx ended before the pool drained. It
// counts what is held, running and queued as Abandoned, takes the Jobs that
// a hand-off under way has not sent yet, then cancels the tasks' context
// (counting first, so that a task that returns at once on cancellation is
// still counted Abandoned, once), and releases ants without waiting.
func (p *Pool) abandon(ctx context.Context) error {
	cause := fmt.Errorf("bgpool: shutdown deadline passed: %w", context.Cause(ctx))
	if !p.markAbandoned(cause) {
		if !p.isAbandoned() { // it drained meanwhile
			return nil
		}
		return &ShutdownError{Queued: int(p.stats.load(OutcomeAbandoned)), Err: ctx.Err()}
	}
	running, held := 0, 0
	var waiters []*awaited
	p.mu.Lock()
	for _, w := range p.all {
		switch {
		case w.state.CompareAndSwap(slotRunning, slotAbandoned), w.state.CompareAndSwap(slotStarting, slotAbandoned):
			running++
		case w.state.CompareAndSwap(slotHolding, slotAbandoned):
			held++
		default:
			continue
		}
		if c := w.waiter.Load(); c != nil && !c.bound { // Job.Do waits for its work to return
			waiters = append(waiters, c)
		}
	}
	for s := range p.callers {
		if s.state.CompareAndSwap(slotRunning, slotAbandoned) {
			running++
		}
	}
	p.mu.Unlock()
	p.count(OutcomeAbandoned, running+held) // told when their workers let go of them (see finish)
	unsent, handed, failed, pending := p.handoffs.stop()
	lost := p.takeQueued() + p.abandonItems(unsent) + failed
	p.handingOff.Add(-int64(len(unsent))) // counted first, so that Stats never misses them
	p.announceAbandoned()
	for _, c := range waiters { // a waiter returns now, even if its task never does
		c.end(p.abandonErr(), false)
	}
	p.release()
	return &ShutdownError{Queued: held + lost, Running: running, HandedOff: handed, Pending: pending, Err: ctx.Err()}
}

// takeQueued empties the queue after an abandonment, counts each task
// Abandoned, and returns how many. The observer hears of them from a
// goroutine of its own, so that a slow observer cannot hold up Shutdown.
func (p *Pool) takeQueued() int {
	var lost []item
	for it, ok := p.takeTask(); ok; it, ok = p.takeTask() {
		lost = append(lost, it)
	}
	return p.abandonItems(lost)
}

// abandonItems settles its Abandoned and returns how many: the queued
// tasks that the deadline left, and the Jobs a hand-off had not sent yet.
func (p *Pool) abandonItems(its []item) int {
	p.settleItems(OutcomeAbandoned, its)
	return len(its)
}
