package bgpool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Shutdown stops the pool and waits for it to drain. It stops admitting
// tasks at once (Submit then returns ErrClosed, and so do submitters blocked
// under Block), lets every queued task run, waits for running tasks to
// return, those that CallerRuns runs on submitters included, and then for
// the workers to leave. It returns nil when all of that finished before ctx
// ended. A pool with nothing queued or running returns nil at once, even
// with a ctx that has already ended.
//
// When ctx ends first, Shutdown counts every task still queued or running
// as Abandoned, cancels their contexts, and returns a *ShutdownError that
// says how many it abandoned and matches ctx.Err(). Nothing it does extends
// past ctx's end, the hand-off below included: it returns within a few
// milliseconds of it, whatever the tasks, the observer, the error handler
// and the Handoff do. (When every task has ended but a worker is still held
// by the observer or the error handler, it waits 100ms beyond the deadline
// for it.)
//
// With a Handoff (WithHandoff) and a deadline, Shutdown hands off the Jobs
// still queued when the time left is what their hand-off needs: it takes
// them out of the queue, while running tasks and queued closures go on
// until the deadline, and hands them off in bounded batches on a goroutine
// of its own, counting each batch HandedOff as the Handoff accepts it. See
// "Jobs and durable hand-off" in the package documentation for how the time
// is sized.
//
// Shutdown may be called more than once and concurrently with any other
// method; every call waits as described. Once a Shutdown that drained the
// pool returns nil, every worker has returned (ants' goroutines, which ran
// them, exit right after). Called from inside one of the pool's own tasks,
// Shutdown begins the shutdown and returns nil without waiting, since it
// would wait for its caller.
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

// The hand-off of queued Jobs at Shutdown.
//
// Shutdown starts it when the time left to its deadline comes down to the
// reserve: a fifth of the grace (5s at most), or twice what the store is
// expected to need for the queue (per call and per job, learnt from every
// hand-off the pool has made: Spill's and earlier batches), whichever is
// longer. It then takes the queue out; the closures go back in for the
// workers, the Jobs go to the Handoff in batches sized to take about
// handoffBatchTime each, until they are all stored or the deadline passes.
const (
	handoffShare      = 5
	maxHandoffShare   = 5 * time.Second
	handoffTick       = 50 * time.Millisecond
	handoffBatchTime  = 250 * time.Millisecond
	minHandoffBatch   = 100
	maxHandoffBatch   = 5000
	defaultPerJob     = 80 * time.Microsecond
	defaultPerCall    = 10 * time.Millisecond
	handoffEWMAWeight = 0.5
)

// handoffs is a pool's record of its hand-offs: the store's speed as
// measured, and the Shutdown hand-off under way, if any.
type handoffs struct {
	mu      sync.Mutex
	perJob  time.Duration // the store's time per job in a large batch
	perCall time.Duration // the store's time for a call of one job or a few
	started bool          // Shutdown's hand-off has begun
	stopped bool          // the deadline passed: unsent went to abandon
	unsent  []item        // Jobs taken from the queue, not yet in a call
	sending int           // Jobs in the call under way
	handed  int           // Jobs Shutdown's hand-off has counted HandedOff
	lost    int           // Jobs it has counted Abandoned (refused, or a failed call)
}

// reserve returns the time to keep for handing off n queued tasks, with
// grace the time Shutdown was given.
func (h *handoffs) reserve(n int, grace time.Duration) time.Duration {
	h.mu.Lock()
	perJob, perCall := h.perJob, h.perCall
	h.mu.Unlock()
	if perJob == 0 {
		perJob, perCall = defaultPerJob, defaultPerCall
	}
	batches := (n + maxHandoffBatch - 1) / maxHandoffBatch
	need := 2 * (time.Duration(batches)*perCall + time.Duration(n)*perJob)
	return max(need, min(grace/handoffShare, maxHandoffShare))
}

// measured records that a call of n jobs took d.
func (h *handoffs) measured(n int, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.perJob == 0 {
		h.perJob, h.perCall = defaultPerJob, defaultPerCall
	}
	if n >= minHandoffBatch {
		h.perJob = ewma(h.perJob, d/time.Duration(n))
	} else {
		h.perCall = ewma(h.perCall, d)
	}
}

func ewma(old, sample time.Duration) time.Duration {
	return time.Duration(handoffEWMAWeight*float64(sample) + (1-handoffEWMAWeight)*float64(old))
}

// batch returns how many jobs the next call should take.
func (h *handoffs) batch() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	perJob := h.perJob
	if perJob <= 0 {
		perJob = defaultPerJob
	}
	return min(max(int(handoffBatchTime/perJob), minHandoffBatch), maxHandoffBatch)
}

// stop ends Shutdown's hand-off at the deadline: it returns the Jobs not yet
// sent, for abandon to count, how many were handed off, and how many are in
// the call under way.
func (h *handoffs) stop() (unsent []item, handed, lost, sending int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	unsent, h.unsent = h.unsent, nil
	return unsent, h.handed, h.lost, h.sending
}

// next takes the next batch to send, and reports false when there is none
// or the deadline has passed.
func (h *handoffs) next() ([]item, bool) {
	n := h.batch()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || len(h.unsent) == 0 {
		return nil, false
	}
	n = min(n, len(h.unsent))
	b := h.unsent[:n:n]
	h.unsent = h.unsent[n:]
	h.sending = n
	return b, true
}

func (p *Pool) handingOffStarted() bool {
	p.handoffs.mu.Lock()
	defer p.handoffs.mu.Unlock()
	return p.handoffs.started
}

// startHandoff starts Shutdown's hand-off of the queued Jobs, once: it
// takes the queue, puts the closures back for the workers, and hands the
// Jobs off on a goroutine of its own, so that neither a slow store nor the
// error handler can hold Shutdown past its deadline.
func (p *Pool) startHandoff(deadline time.Time) {
	h := &p.handoffs
	h.mu.Lock()
	if h.started {
		h.mu.Unlock()
		return
	}
	h.started = true
	var others []item
	for it, ok := p.takeTask(); ok; it, ok = p.takeTask() {
		if _, ok := it.job(); ok {
			h.unsent = append(h.unsent, it)
		} else {
			others = append(others, it)
		}
	}
	p.handingOff.Add(int64(len(h.unsent)))
	h.mu.Unlock()
	var lost []item
	for _, it := range others {
		select {
		case p.queue <- it: // back in the queue, in order, for the workers
		default: // a submitter that raced Shutdown took the room: rare
			lost = append(lost, it)
		}
	}
	p.abandonItems(lost)
	go p.handOffQueued(deadline)
}

// handOffQueued hands off the Jobs that startHandoff took, batch by batch,
// until they are all handed off or the deadline has passed.
func (p *Pool) handOffQueued(deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for {
		b, ok := p.handoffs.next()
		if !ok {
			return
		}
		handed := p.handOff(ctx, b)
		h := &p.handoffs
		h.mu.Lock()
		h.sending = 0
		h.handed += handed
		h.lost += len(b) - handed
		h.mu.Unlock()
		p.handingOff.Add(-int64(len(b)))
		if p.closing() {
			p.checkDrained()
		}
	}
}

// handOff hands off the Jobs its in one Handoff call, counts each HandedOff
// or, if the store refused it, Abandoned, and returns how many it handed
// off. Errors go to the error handler.
func (p *Pool) handOff(ctx context.Context, its []item) int {
	args := make([]JobArgs, len(its))
	for i, it := range its {
		q, _ := it.job()
		args[i] = q.jobArgs()
	}
	start := time.Now()
	err := p.callHandoff(ctx, args)
	p.handoffs.measured(len(its), time.Since(start))
	refused := refusedJobs(err, len(its))
	switch {
	case err == nil:
	case refused != nil:
		n := 0
		for _, r := range refused {
			if r {
				n++
			}
		}
		p.handleError(ctx, fmt.Errorf("bgpool: shutdown: the Handoff refused %s, which are abandoned, and stored the others: %w", jobs(n), err))
	case ctx.Err() != nil:
		p.handleError(ctx, fmt.Errorf("bgpool: shutdown: the hand-off of %s did not confirm by the deadline; they are counted abandoned, but the store may have them (see WithHandoff on retried hand-offs): %w", jobs(len(its)), err))
	default:
		p.handleError(ctx, fmt.Errorf("bgpool: shutdown: the hand-off of %s failed; they are abandoned: %w", jobs(len(its)), err))
	}
	var handed, lost []item
	for i, it := range its {
		if err == nil || refused != nil && !refused[i] {
			handed = append(handed, it)
		} else {
			lost = append(lost, it)
		}
	}
	// Counted before they leave handingOff, so that Stats never misses them.
	// Nobody waits for a Job (Job.Do's task is not one), so there is no
	// one to tell but the observer.
	p.settleItems(OutcomeHandedOff, handed)
	p.settleItems(OutcomeAbandoned, lost)
	return len(handed)
}

// refusedJobs reads err as a Handoff's answer for n jobs: when it is made
// only of *JobError values with valid indexes, it returns which jobs were
// refused (the others were stored); otherwise nil (none was stored).
func refusedJobs(err error, n int) []bool {
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	refused := make([]bool, n)
	for _, e := range errs {
		je, ok := e.(*JobError)
		if !ok || je.Index < 0 || je.Index >= n {
			return nil
		}
		refused[je.Index] = true
	}
	return refused
}

