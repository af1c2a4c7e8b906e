package bgpool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// A Handoff takes Jobs that the pool will not run and stores them where
// another process, or this one after a restart, runs them: a durable queue
// such as River on PostgreSQL (see the contrib/river module).
//
// Handoff stores every job and returns nil, or stores none and returns an
// error. A Handoff that can tell that some jobs can never be stored, because
// of the jobs themselves (args that do not marshal, say), may instead store
// all the others and return one *JobError for each job it refused, joined
// with errors.Join: the pool then counts the others HandedOff, and only the
// refused ones fall back. Handoff must return by the time ctx ends. The pool
// passes at most a few thousand jobs a call, and calls it from several
// goroutines at once, so it must be safe for concurrent use.
type Handoff interface {
	Handoff(ctx context.Context, jobs []JobArgs) error
}

// A JobError is a Handoff's refusal of one job, for a reason of the job's
// own: Index is its place in the slice that Handoff was given. A Handoff
// that returns only JobErrors (joined with errors.Join) has stored every
// other job; see Handoff.
type JobError struct {
	Index int
	Err   error
}

var _ error = (*JobError)(nil)

// Error names the job's index and the reason.
func (e *JobError) Error() string {
	return fmt.Sprintf("bgpool: hand-off refused job %d: %v", e.Index, e.Err)
}

// Unwrap returns the reason.
func (e *JobError) Unwrap() error { return e.Err }

// WithHandoff sets where the pool sends Jobs it will not run, so that they
// are not lost:
//
//   - Under the Spill policy, a Job that finds no room is handed off, alone,
//     on the submitting goroutine, instead of being dropped.
//   - When the time left to Shutdown's deadline comes down to what the
//     queued Jobs need, they are taken out of the queue and handed off, in
//     batches, on a goroutine of the pool's, instead of being abandoned at
//     the deadline. See "Jobs and durable hand-off" in the package
//     documentation.
//
// A Job handed off is counted HandedOff, batch by batch as the Handoff
// accepts it. If the Handoff returns an error (or panics), the Jobs of that
// call fall back to what would have happened without it, Dropped under
// Spill and Abandoned at Shutdown, and the error goes to the error handler
// (on the goroutine of the hand-off, never on Shutdown's); a *JobError
// makes only its job fall back. Plain tasks (closures) have nothing to hand
// off and are never passed: they are dropped or abandoned as before. Jobs
// started, and Jobs a worker holds while it waits for a rate-limit token,
// are not handed off: they are abandoned at Shutdown's deadline like other
// tasks. Shutdown hands off only with a deadline: a ctx without one that is
// cancelled abandons the queued Jobs, since nothing says how long the
// hand-off may take.
//
// A call whose answer does not come by the deadline may still have stored
// its Jobs (a commit whose reply was lost): Shutdown counts them Abandoned
// when the call returns, and the error handler's message says that the
// store may have them. To make such a Job safe to hand off twice, give it a
// unique key in the store (River's unique jobs, UniqueOpts, see the
// contrib/river module).
//
// The default is no Handoff. A nil h, also a typed nil, is an error.
func WithHandoff(h Handoff) Option {
	return optionFunc(func(o *options) error {
		if isNil(h) {
			return errors.New("bgpool: WithHandoff(nil): handoff must not be nil")
		}
		o.handoff = h
		return nil
	})
}

// handoffTimeout bounds Spill's hand-off, which runs on a submitter whose
// context may already be done (WithAfterResponse) and has no deadline of
// its own to keep.
const handoffTimeout = 5 * time.Second

// callHandoff calls the Handoff, turning a panic into an error.
func (p *Pool) callHandoff(ctx context.Context, jobs []JobArgs) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("bgpool: handoff panicked: %v", v)
		}
	}()
	return p.opts.handoff.Handoff(ctx, jobs)
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
		if !p.enqueue(it) { // back in the queue, in order, for the workers; else a submitter that raced Shutdown took the room: rare
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
