package bgpool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// A Task is a unit of background work. Its ctx carries the values of the
// context it was submitted with, but not that context's cancellation: it is
// cancelled only when the pool's task timeout passes or when Shutdown's
// deadline passes. A returned error is counted Failed and passed to the
// pool's error handler.
type Task func(ctx context.Context) error

// MaxWorkers is the largest size New and Tune accept: ants, which runs the
// workers, counts them in an int32.
const MaxWorkers = math.MaxInt32

// MaxQueueSize is the largest queue WithQueueSize accepts. New allocates
// the queue's buffer at once, 32 bytes a slot on 64-bit machines, so this
// largest queue takes 32 MiB.
const MaxQueueSize = 1 << 20

// idleTimeout is how often reap retires idle workers, which return their
// goroutines to ants, which then expires idle goroutines on its own
// schedule.
const idleTimeout = time.Second

// A Pool runs Tasks in the background on at most Workers goroutines, with a
// bounded FIFO queue in front of them and a Policy for when the queue is
// full. Create one with New; the zero Pool is not usable. All methods are
// safe for concurrent use. A steady stream of tasks costs a channel
// operation per task; "How it works" in the package documentation
// describes the design, and the benchmarks module measures it.
type Pool struct {
	// Set by New and read-only after.
	opts    options
	queue   chan item    // the FIFO queue; its capacity is QueueSize
	limiter Limiter      // nil without a rate limit
	adapt   *controller  // nil without WithAdaptiveConcurrency
	delays  *queueDelays // nil without WithQueueDelayTarget
	// stamp: tasks need their admission time (WithMaxQueueWait,
	// WithObserver, WithTaskWrapper, WithQueueDelayTarget), which their
	// runners keep (see runner.stamp, stampedTask).
	stamp  bool
	stamps stampBlocks
	// block: the policy is Block, so submit waits without an Overflow (see
	// isBlock).
	block bool
	// route: whether tasks take the workers' fast path (see runTasks),
	// run through run, or pass through overload control first.
	route route
	// tagged: submit stamps tasks or marks them for overload control
	// (see tag).
	tagged bool
	epoch  time.Time       // the origin of the pool's clock (see now)
	base   context.Context // parent of every task's cancellation
	cancel context.CancelCauseFunc
	life   lifecycle // the signals of the phases (see phase)

	// Read on every task, written rarely: they share a cache line.
	workers atomic.Int64 // the size cap
	phase   phaseWord    // open, draining, drained or abandoned (see phase), and phaseShrunk
	_       [52]byte

	// Written when a worker starts, retires or parks: each on a line of its
	// own, so that parking does not make every submitter reload the line
	// above.
	active atomic.Int64 // worker loops started and not yet returned
	_      [56]byte
	parked atomic.Int64 // workers on the idle stack, asleep or about to be (see park.go)
	_      [56]byte
	idle   atomic.Uint64 // the idle stack's top (see idleTop)
	_      [56]byte

	reaping atomic.Bool  // the reaper is due
	waiting atomic.Int64 // submitters blocked in wait, for Tune
	// handingOff counts the Jobs Shutdown took from the queue to hand off
	// and has not counted yet (see handOffQueued), for Stats.
	handingOff atomic.Int64
	handoffs   handoffs
	handlers   handlers  // requests in a handler behind Middleware, for Serve
	signals    sync.Pool // Do's recycled channels (see newSignal)
	// spare tells submitters waiting for room in a hand-off-only queue that
	// a worker has parked (see wait); it holds one signal.
	spare chan struct{}
	// indexed are the worker records by index (worker.idx - 1), for the
	// idle stack: a copy made anew, under mu, when a record is added.
	indexed atomic.Pointer[[]*worker]

	stats counters

	// mu guards the workers' and CallerRuns tasks' records and the loops'
	// start; it is taken to start or retire a worker loop, to run a task on
	// a submitter, and by Stats and Shutdown, never per task.
	mu      sync.Mutex
	loops   antsLoops   // runs the worker loops
	reaper  *time.Timer // runs reap; made with the first loop
	all     []*worker   // every worker record made, for Stats and Shutdown
	free    []*worker   // records of loops that have returned, to reuse
	callers map[*slot]struct{}
}

// item is a task's record on its way to a worker: everything the core
// needs to know of a task travels in it, none of it in context values.
type item struct {
	// ctx is the submitter's context, for its values only: the task runs
	// with a context of the pool's that answers them (see taskContext).
	ctx context.Context
	// run is the task. Its type says what else there is to know (see
	// waiter, job and at): a plain Task; an *awaited, a task someone waits
	// for (Do, Group, Future); a *jobRecord, a Job whose args the pool can
	// hand off; a *stampedTask, a plain Task with its admission time; or a
	// routedTask. A Task is pointer-shaped, so making it a runner allocates
	// nothing.
	run runner
}

// A runner is what an item runs.
type runner interface {
	run(ctx context.Context) error
	// stamp returns where the task keeps its admission time, on the
	// pool's clock, when the pool stamps its tasks (see Pool.stamp); nil
	// for a runner that keeps none. The item does not keep it: 32 bytes,
	// not 40, are cheaper to copy through the queue, and a Go compiler
	// keeps a struct of four words in registers.
	stamp() *time.Duration
}

func (t Task) run(ctx context.Context) error { return t(ctx) }

func (Task) stamp() *time.Duration { return nil }

// at returns the task's admission time on the pool's clock, zero when the
// pool does not stamp its tasks.
func (it *item) at() time.Duration {
	if s, ok := it.run.(*stampedTask); ok { // the common case, without a call
		return s.at
	}
	if it.run != nil {
		if at := it.run.stamp(); at != nil {
			return *at
		}
	}
	return 0
}

// setAt sets the task's admission time, in a pool that stamps its tasks:
// its runner is one that keeps it (see tag).
func (it *item) setAt(at time.Duration) {
	if s := it.run.stamp(); s != nil {
		*s = at
	}
}

// waiter returns the record of whoever waits for the task, if anyone does.
func (it *item) waiter() *awaited {
	c, _ := it.run.(*awaited)
	return c
}

// job returns the task's Job, if it is one, for a hand-off.
func (it *item) job() (queuedJob, bool) {
	q, ok := it.run.(queuedJob)
	return q, ok
}

// poolKey is the context key under which a task's context answers with its
// pool, for FromContext and for Shutdown called from a task.
type poolKey struct{}

// New returns a pool that runs at most size tasks at once. The defaults are
// a queue of size tasks, the Block policy, no rate limit, no task timeout, no
// maximum queue wait, no Handoff, and an error handler that logs to
// slog.Default().
//
// New returns an error, and no pool, when size is below 1 or above
// MaxWorkers, when an option is invalid, or when the policy is Spill and
// there is no WithHandoff. It allocates the queue and starts no goroutine.
// Call Shutdown when done with the pool.
func New(size int, opts ...Option) (*Pool, error) {
	if size < 1 {
		return nil, fmt.Errorf("bgpool: New(%d): size must be at least 1", size)
	}
	if size > MaxWorkers {
		return nil, fmt.Errorf("bgpool: New(%d): size must be at most MaxWorkers (%d)", size, MaxWorkers)
	}
	o := options{queueSize: -1}
	for i, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("bgpool: New: option %d is nil", i)
		}
		if err := opt.apply(&o); err != nil {
			return nil, err
		}
	}
	o.setDefaults(size)
	if isSpill(o.policy) && o.handoff == nil {
		return nil, errors.New("bgpool: New: the Spill policy needs WithHandoff")
	}
	if o.queueSize > MaxQueueSize {
		return nil, fmt.Errorf("bgpool: New: queue size %d is larger than MaxQueueSize (%d)", o.queueSize, MaxQueueSize)
	}

	queue := make(chan item, o.queueSize)
	var adapt *controller
	var delays *queueDelays
	if o.adaptMax > 0 {
		adapt = &controller{min: o.adaptMin, max: o.adaptMax}
		size = min(max(size, o.adaptMin), o.adaptMax)
	}
	if o.delayTarget > 0 {
		delays = newQueueDelays(o.delayTarget, queue)
	}
	observed := o.maxQueueWait > 0 || len(o.observers) > 0 || o.wrap != nil
	stamp := observed || delays != nil
	p := &Pool{
		opts:    o,
		queue:   queue,
		limiter: o.limiter,
		adapt:   adapt,
		delays:  delays,
		stamp:   stamp,
		block:   isBlock(o.policy),
		route:   routeOf(observed || o.limiter != nil, delays != nil || adapt != nil),
		epoch:   time.Now(),
		callers: make(map[*slot]struct{}),
		spare:   make(chan struct{}, 1),
	}
	p.tagged = p.stamp || p.route != routeFast
	p.life.init()
	p.signals.New = newSignal
	p.workers.Store(int64(size))
	p.base, p.cancel = context.WithCancelCause(context.WithValue(context.Background(), poolKey{}, p))
	return p, nil
}

// A route is the way a pool's tasks go on a worker.
type route uint8

const (
	routeFast       route = iota // the fast path alone
	routeGuarded                 // run: a limiter, a maximum queue wait, an observer or a wrapper
	routeControlled              // overload control, then the fast path
)

// routeOf returns the route of a pool whose tasks are guarded, or
// controlled; guarded pools apply overload control in run.
func routeOf(guarded, controlled bool) route {
	switch {
	case guarded:
		return routeGuarded
	case controlled:
		return routeControlled
	}
	return routeFast
}

// now reads the pool's monotonic clock.
func (p *Pool) now() time.Duration { return time.Since(p.epoch) }

// Tune changes the cap on tasks running at once on workers to size, clamped
// to MaxWorkers. Growing takes effect at once, and queued tasks start.
// Shrinking lets running tasks finish; a task admitted while Tune runs may
// still start under the old size. The queue's capacity does not change. A
// size below 1 is ignored. With WithAdaptiveConcurrency, size is clamped to
// its bounds and the pool moves the cap on from there. Tune does not block
// beyond a brief lock.
func (p *Pool) Tune(size int) {
	if size < 1 {
		return
	}
	if p.adapt != nil {
		size = min(max(size, p.adapt.min), p.adapt.max)
	}
	p.setCap(min(size, MaxWorkers))
}

// setCap makes size the cap on running tasks, for Tune and the controller.
// Shrinking retires parked workers at once, and busy ones when their task
// returns.
func (p *Pool) setCap(size int) {
	old := p.workers.Swap(int64(size))
	if int64(size) < old {
		p.phase.setShrunk() // after the cap: see checkSurplus
		p.retireParked()
		return
	}
	// Start a worker for every queued task, and for every submitter
	// waiting for room, that the new room lets start now.
	for need := len(p.queue) + int(p.waiting.Load()); need > 0 && p.activate(); need-- {
		p.startWorker(nil)
	}
}

func (p *Pool) logger() *slog.Logger {
	if p.opts.logger != nil {
		return p.opts.logger
	}
	return slog.Default()
}
