package bgpool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/ants/v2"
	"golang.org/x/time/rate"

	"github.com/bgpool/bgpool/internal/ring"
)

// A Task is a unit of background work. Its ctx carries the values of the
// context it was submitted with, but not that context's cancellation: it is
// cancelled only when the pool's task timeout passes or when Shutdown's
// deadline passes. A returned error is counted Failed and passed to the
// pool's error handler.
type Task func(ctx context.Context) error

// Stats is a snapshot of a pool's state and counters. Every task submitted
// ends in exactly one of Completed, Failed, Panicked, Dropped, Rejected and
// Abandoned, or is still Queued or Running; so once the pool is quiet,
// Submitted equals the sum of those six.
type Stats struct {
	Workers   int // the cap on tasks running at once: New's size, or the last Tune
	Running   int // tasks executing on workers now (not idle workers, not CallerRuns tasks)
	Queued    int // tasks admitted and waiting for a worker
	QueueSize int // the queue's capacity

	Submitted uint64 // calls to Submit and TrySubmit, and tasks Go kept for after a response (WithAfterResponse)
	Completed uint64 // tasks that returned nil
	Failed    uint64 // tasks that returned an error
	Panicked  uint64 // tasks that panicked
	Dropped   uint64 // tasks discarded by Drop or DropOldest, by WithMaxQueueWait, or kept by a WithAfterResponse handler that panicked
	Rejected  uint64 // tasks refused with an error: ErrOverloaded, ErrClosed, or bad input
	Abandoned uint64 // tasks queued or running when Shutdown's deadline passed
}

// idleTimeout is how long a worker waits for a task before it returns its
// goroutine to ants, which then expires idle goroutines on its own schedule.
const idleTimeout = time.Second

// A Pool runs Tasks in the background on at most Workers goroutines, with a
// bounded FIFO queue in front of them and a Policy for when the queue is
// full. Create one with New; the zero Pool is not usable. All methods are
// safe for concurrent use.
//
// The goroutines belong to an ants.Pool of the same size. Each ants worker
// runs a loop that takes tasks from the queue until the queue is empty (and
// stays empty for a second), so a steady stream of tasks costs one mutex
// hand-off per task rather than one ants submission. On a 2-core machine an
// empty task costs about 100ns end to end; see the benchmarks module.
type Pool struct {
	opts    options
	ants    *ants.Pool
	limiter *rate.Limiter // nil without a rate limit
	loopFn  func()        // p.loop, bound once so that starting a worker does not allocate
	stamp   bool          // tasks need their admission time (WithMaxQueueWait, WithObserver)

	base   context.Context // parent of every task's cancellation
	cancel context.CancelCauseFunc

	closing chan struct{} // closed when Shutdown begins
	drained chan struct{} // closed when closing and no task nor worker is left

	abandonedFlag atomic.Bool // Shutdown's deadline passed; read without mu by execute

	mu        sync.Mutex
	queue     ring.Ring[item]
	waiters   []*waiter // Overflow.Wait callers, oldest first
	idle      []*worker // parked workers, most recently parked last
	workers   int       // the size cap
	active    int       // worker loops started and not yet returned
	running   int       // tasks executing on worker loops
	throttled bool      // the rate limiter has no token; rateTimer will clear this
	rateTimer *time.Timer
	closed    bool // Shutdown has begun
	isDrained bool // drained is closed
	stats     Stats
}

// item is a queued task.
type item struct {
	ctx  context.Context // the submitter's context, for values only
	task Task
	at   time.Time // admission time, set only when p.stamp
}

// waiter is a submitter blocked in Overflow.Wait.
type waiter struct {
	it       item
	ready    chan struct{} // receives once the task is admitted
	admitted bool
}

// worker is the parking state of one worker loop, made when it first parks.
type worker struct {
	wake  chan struct{} // buffer 1: a task is waiting for this worker
	timer *time.Timer
}

type poolKey struct{}

// New returns a pool that runs at most size tasks at once. The defaults are
// a queue of size tasks, the Block policy, no rate limit, no task timeout, no
// maximum queue wait, and an error handler that logs to slog.Default().
//
// New returns an error, and no pool, when size < 1 or an option is invalid.
// The pool starts no goroutine until the first task arrives. Call Shutdown
// when done with it.
func New(size int, opts ...Option) (*Pool, error) {
	if size < 1 {
		return nil, fmt.Errorf("bgpool: New(%d): size must be at least 1", size)
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

	ap, err := ants.NewPool(size, ants.WithNonblocking(true))
	if err != nil {
		return nil, fmt.Errorf("bgpool: New: %v", err)
	}
	p := &Pool{
		opts:    o,
		ants:    ap,
		stamp:   o.maxQueueWait > 0 || o.observer != nil,
		closing: make(chan struct{}),
		drained: make(chan struct{}),
		workers: size,
	}
	if o.rateSet {
		p.limiter = rate.NewLimiter(o.limit, o.burst)
	}
	p.loopFn = p.loop
	p.base, p.cancel = context.WithCancelCause(context.WithValue(context.Background(), poolKey{}, p))
	p.stats.QueueSize = o.queueSize
	return p, nil
}

// Submit hands task to the pool; it runs on a worker with a context that
// carries ctx's values but not its cancellation (see Task).
//
// When a worker is free or the queue has room, Submit returns nil at once.
// Otherwise the pool's Policy decides: with the default Block, Submit waits
// until the task is admitted or ctx ends. ctx bounds only that wait; a task
// that finds room is admitted even if ctx is already done.
//
// Submit returns ErrClosed once Shutdown has begun, an error matching
// ErrOverloaded when the policy refused the task, and an error for a nil ctx
// or task. Every call is counted in Stats.
func (p *Pool) Submit(ctx context.Context, task Task) error {
	return p.submit(ctx, task, true)
}

// TrySubmit is like Submit but never waits and ignores the policy: when no
// worker is free and the queue is full it returns ErrOverloaded and counts
// the task Rejected. After Shutdown has begun it returns ErrClosed.
func (p *Pool) TrySubmit(ctx context.Context, task Task) error {
	return p.submit(ctx, task, false)
}

func (p *Pool) submit(ctx context.Context, task Task, overflow bool) error {
	if ctx == nil || task == nil {
		p.mu.Lock()
		p.stats.Submitted++
		p.mu.Unlock()
		if ctx == nil {
			return p.reject(errors.New("bgpool: Submit: nil context"))
		}
		return p.reject(errors.New("bgpool: Submit: nil task"))
	}
	it := item{ctx: ctx, task: task}
	if p.stamp {
		it.at = time.Now()
	}
	p.mu.Lock()
	p.stats.Submitted++
	if p.closed {
		p.mu.Unlock()
		return p.reject(ErrClosed)
	}
	if len(p.waiters) == 0 && p.roomLocked() {
		p.queue.Push(it)
		n := p.ensurePickersLocked()
		p.mu.Unlock()
		p.startLoops(n)
		return nil
	}
	if !overflow {
		p.mu.Unlock()
		return p.reject(ErrOverloaded)
	}
	p.mu.Unlock()

	o := Overflow{pool: p, ctx: ctx, task: task}
	err := p.opts.policy.Overflow(ctx, &o)
	if !o.settled {
		if err == nil {
			err = ErrOverloaded
		}
		p.reject(err)
	}
	return err
}

// roomLocked reports whether a new task can be admitted now: the queue holds
// fewer than QueueSize tasks beyond those that free workers are about to
// take. Requires p.mu.
func (p *Pool) roomLocked() bool {
	return p.queue.Len() < p.opts.queueSize+p.freeLocked()
}

// freeLocked returns how many queued tasks can start at once: free worker
// slots, limited by the rate limiter's tokens. Requires p.mu.
func (p *Pool) freeLocked() int {
	if p.throttled {
		return 0
	}
	free := p.workers - p.running
	if free <= 0 {
		return 0
	}
	if p.limiter != nil {
		if tokens := int(p.limiter.Tokens()); tokens < free {
			free = max(tokens, 0)
		}
	}
	return free
}

// ensurePickersLocked makes sure enough worker loops will look at the queue
// to start every task that can start now: it wakes parked loops first, and
// returns how many new loops the caller must start with startLoops once it
// has released p.mu. Requires p.mu.
func (p *Pool) ensurePickersLocked() int {
	need := min(p.queue.Len(), p.freeLocked())
	looking := p.active - p.running - len(p.idle)
	for need > looking && len(p.idle) > 0 {
		w := p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		w.wake <- struct{}{}
		looking++
	}
	n := min(need-looking, p.workers-p.active)
	if n <= 0 {
		return 0
	}
	p.active += n
	return n
}

// startLoops starts n worker loops on ants. The caller has already counted
// them in p.active, which never exceeds ants' capacity, so ants can refuse a
// loop only for the few instructions during which a loop that has already
// left p.active is on its way back into ants' idle list (or an expired one
// out of it); yielding until then is cheaper than ants' blocking Submit and,
// unlike it, cannot wait on a running task.
func (p *Pool) startLoops(n int) {
	for range n {
		for {
			err := p.ants.Submit(p.loopFn)
			if err == nil {
				break
			}
			if errors.Is(err, ants.ErrPoolOverload) {
				runtime.Gosched()
				continue
			}
			// ants was released: Shutdown has finished and nothing is queued.
			p.mu.Lock()
			p.active--
			p.checkDrainedLocked()
			p.mu.Unlock()
			break
		}
	}
}

// loop is the body of an ants worker: it runs queued tasks until there is
// nothing it may start.
func (p *Pool) loop() {
	var w *worker
	inTask := false
	defer func() {
		if w != nil && w.timer != nil {
			w.timer.Stop()
		}
		if inTask {
			p.taskExited()
		}
	}()
	p.mu.Lock()
	for {
		it, starts, ok := p.nextLocked(&w)
		if !ok {
			p.mu.Unlock()
			p.startLoops(starts)
			return
		}
		p.mu.Unlock()
		p.startLoops(starts)

		inTask = true
		out, ran, err := p.execute(it, false)
		inTask = false

		p.mu.Lock()
		p.running--
		abandoned := p.abandonedFlag.Load() // authoritative under p.mu: abandon counted it
		if !abandoned {
			p.countLocked(out)
		}
		if p.opts.observer != nil {
			p.mu.Unlock()
			if abandoned {
				out, err = OutcomeAbandoned, nil
			}
			p.observe(out, it.at, ran, err)
			p.mu.Lock()
		}
		if len(p.waiters) > 0 {
			if n := p.admitWaitersLocked(); n > 0 {
				p.mu.Unlock()
				p.startLoops(n)
				p.mu.Lock()
			}
		}
	}
}

// taskExited repairs the books when a task ended its worker's goroutine with
// runtime.Goexit (t.FailNow in a test, say): the task counts Failed and
// another loop takes over the queue.
func (p *Pool) taskExited() {
	p.mu.Lock()
	p.running--
	p.active--
	abandoned := p.abandonedFlag.Load()
	if !abandoned {
		p.stats.Failed++
	}
	n := p.ensurePickersLocked()
	p.checkDrainedLocked()
	p.mu.Unlock()
	if n > 0 {
		// ants counts this dying goroutine until it has exited, so the
		// replacement must be started from elsewhere.
		go p.startLoops(n)
	}
	if abandoned {
		p.observe(OutcomeAbandoned, time.Time{}, 0, nil)
	} else {
		p.observe(OutcomeFailed, time.Time{}, 0, errGoexit)
	}
}

var errGoexit = errors.New("bgpool: task called runtime.Goexit")

// nextLocked returns the next task for a worker loop, already counted in
// p.running, parking the loop while the queue is empty. It also returns how
// many more loops the caller must start (with startLoops, after releasing
// p.mu) for tasks that waiting submitters moved into the room it made. When
// it reports false the loop must return: it has already been taken out of
// p.active. Requires p.mu, which it may release and reacquire.
func (p *Pool) nextLocked(w **worker) (it item, starts int, ok bool) {
	for {
		if p.active > p.workers { // Tune shrank the pool: retire this loop
			p.exitLocked()
			p.ensurePickersLocked() // wakes a parked loop if needed; starts none, as active >= workers
			return item{}, starts, false
		}
		it, ok = p.queue.Peek()
		if !ok {
			if p.closed || !p.parkLocked(w) {
				p.exitLocked()
				return item{}, starts, false
			}
			continue
		}
		if p.throttled {
			p.exitLocked()
			return item{}, starts, false
		}
		var now time.Time
		if p.stamp || p.limiter != nil {
			now = time.Now()
		}
		if p.opts.maxQueueWait > 0 && now.Sub(it.at) > p.opts.maxQueueWait {
			p.queue.Pop()
			p.stats.Dropped++
			if len(p.waiters) > 0 {
				starts += p.admitWaitersLocked()
			}
			if p.opts.observer != nil {
				p.mu.Unlock()
				p.observe(OutcomeExpired, it.at, 0, nil)
				p.mu.Lock()
			}
			continue
		}
		if p.limiter != nil && !p.limiter.AllowN(now, 1) {
			p.throttleLocked(now)
			p.exitLocked()
			return item{}, starts, false
		}
		p.queue.Pop()
		p.running++ // before admitting waiters: this loop's slot is taken
		if len(p.waiters) > 0 {
			starts += p.admitWaitersLocked()
		}
		return it, starts, true
	}
}

// exitLocked takes a returning loop out of p.active. Requires p.mu.
func (p *Pool) exitLocked() {
	p.active--
	p.checkDrainedLocked()
}

// parkLocked waits, without p.mu, until a submitter wakes this loop, Shutdown
// begins, or idleTimeout passes. It reports false when the loop should
// return its goroutine to ants. Requires p.mu.
func (p *Pool) parkLocked(wp **worker) bool {
	w := *wp
	if w == nil {
		w = &worker{wake: make(chan struct{}, 1)}
		*wp = w
	}
	p.idle = append(p.idle, w)
	p.mu.Unlock()
	if w.timer == nil {
		w.timer = time.NewTimer(idleTimeout)
	} else {
		w.timer.Reset(idleTimeout)
	}
	expired := false
	select {
	case <-w.wake: // a submitter took this loop off p.idle to start a task
	case <-w.timer.C: // idle too long: give the goroutine back to ants
		expired = true
	case <-p.closing: // Shutdown began: drain the queue, then return
	}
	p.mu.Lock()
	if i := slices.Index(p.idle, w); i >= 0 {
		p.idle = slices.Delete(p.idle, i, i+1)
		return !expired
	}
	// Taken off p.idle by a waker, whose signal may not have been received.
	select {
	case <-w.wake:
	default:
	}
	return true
}

// throttleLocked marks the pool as waiting for a rate-limiter token and arms
// the timer that ends the wait. Requires p.mu.
func (p *Pool) throttleLocked(now time.Time) {
	p.throttled = true
	missing := 1 - p.limiter.TokensAt(now)
	d := time.Duration(missing/float64(p.limiter.Limit())*float64(time.Second)) + time.Microsecond
	if p.rateTimer == nil {
		p.rateTimer = time.AfterFunc(d, p.unthrottle)
	} else {
		p.rateTimer.Reset(d)
	}
}

// unthrottle runs when a rate-limiter token should be available again.
func (p *Pool) unthrottle() {
	p.mu.Lock()
	p.throttled = false
	n := p.admitWaitersLocked()
	p.mu.Unlock()
	p.startLoops(n)
}

// admitWaitersLocked moves waiting submitters' tasks into the queue while
// there is room, oldest first, and returns how many loops the caller must
// start (see ensurePickersLocked). Requires p.mu.
func (p *Pool) admitWaitersLocked() int {
	for len(p.waiters) > 0 && !p.closed && p.roomLocked() {
		w := p.waiters[0]
		p.waiters[0] = nil
		p.waiters = p.waiters[1:]
		if p.stamp {
			w.it.at = time.Now()
		}
		p.queue.Push(w.it)
		w.admitted = true
		w.ready <- struct{}{}
	}
	return p.ensurePickersLocked()
}

// wait is Overflow.Wait: it queues the submitter behind earlier waiters until
// its task is admitted, ctx ends, or Shutdown begins.
func (p *Pool) wait(ctx, submitCtx context.Context, task Task) error {
	w := &waiter{it: item{ctx: submitCtx, task: task}, ready: make(chan struct{}, 1)}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.waiters = append(p.waiters, w)
	n := p.admitWaitersLocked()
	p.mu.Unlock()
	p.startLoops(n)

	var err error
	select {
	case <-w.ready: // admitted: the task is queued or taken by a worker
		return nil
	case <-ctx.Done(): // the submitter stopped waiting
		err = overloaded(ctx.Err())
	case <-p.closing: // Shutdown began: nothing more is admitted
		err = ErrClosed
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.admitted {
		return nil
	}
	if i := slices.Index(p.waiters, w); i >= 0 {
		p.waiters = slices.Delete(p.waiters, i, i+1)
	}
	return err
}

// dropOldest is Overflow.DropOldest.
func (p *Pool) dropOldest(submitCtx context.Context, task Task) error {
	it := item{ctx: submitCtx, task: task}
	if p.stamp {
		it.at = time.Now()
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return p.reject(ErrClosed)
	}
	dropped, wasQueued := it, false
	if len(p.waiters) == 0 && p.roomLocked() { // room appeared: nothing is dropped
		p.queue.Push(it)
		dropped.task = nil
	} else {
		p.stats.Dropped++
		if old, ok := p.queue.Pop(); ok {
			dropped, wasQueued = old, true
			p.queue.Push(it)
		}
	}
	n := p.ensurePickersLocked()
	p.mu.Unlock()
	p.startLoops(n)
	if dropped.task != nil {
		var at time.Time
		if wasQueued {
			at = dropped.at
		}
		p.observe(OutcomeDropped, at, 0, nil)
	}
	return nil
}

// runHere is Overflow.Run.
func (p *Pool) runHere(submitCtx context.Context, task Task) {
	out, ran, err := p.execute(item{ctx: submitCtx, task: task}, true)
	p.mu.Lock()
	p.countLocked(out)
	p.mu.Unlock()
	p.observe(out, time.Time{}, ran, err)
}

// drop counts a task discarded on arrival.
func (p *Pool) drop() {
	p.mu.Lock()
	p.stats.Dropped++
	p.mu.Unlock()
	p.observe(OutcomeDropped, time.Time{}, 0, nil)
}

// countLocked counts a task that ran. Requires p.mu.
func (p *Pool) countLocked(out Outcome) {
	switch out {
	case OutcomeCompleted:
		p.stats.Completed++
	case OutcomeFailed:
		p.stats.Failed++
	case OutcomePanicked:
		p.stats.Panicked++
	}
}

// execute runs one task with its context, timeout and panic recovery, and
// hands an error to the error handler. A task that Shutdown abandoned reports
// no error: Shutdown has already accounted for it.
// It returns how long the task ran when an observer needs it.
func (p *Pool) execute(it item, callerRuns bool) (out Outcome, ran time.Duration, err error) {
	var ctx context.Context
	if p.opts.taskTimeout > 0 {
		dc := newDeadlineContext(p.base, it.ctx, time.Now().Add(p.opts.taskTimeout))
		defer dc.release()
		ctx = dc
	} else {
		ctx = newTaskContext(p.base, it.ctx)
	}
	var start time.Time
	if p.opts.observer != nil {
		start = time.Now()
	}
	err, isPanic := call(ctx, it.task)
	if !start.IsZero() {
		ran = time.Since(start)
	}
	if err == nil {
		return OutcomeCompleted, ran, nil
	}
	if callerRuns || !p.abandonedFlag.Load() {
		p.handleError(ctx, err)
	}
	if isPanic {
		return OutcomePanicked, ran, err
	}
	return OutcomeFailed, ran, err
}

// call runs task, turning a panic into a *PanicError.
func call(ctx context.Context, task Task) (err error, isPanic bool) {
	defer func() {
		if v := recover(); v != nil {
			err, isPanic = &PanicError{Value: v, Stack: debug.Stack()}, true
		}
	}()
	return task(ctx), false
}

// handleError passes err to the error handler, recovering a panic in it.
func (p *Pool) handleError(ctx context.Context, err error) {
	defer func() {
		if v := recover(); v != nil {
			p.logger().ErrorContext(ctx, "bgpool: error handler panicked", "panic", v, "error", err)
		}
	}()
	if p.opts.onError != nil {
		p.opts.onError(ctx, err)
		return
	}
	var pe *PanicError
	if errors.As(err, &pe) {
		p.logger().ErrorContext(ctx, "bgpool: task panicked", "panic", pe.Value, "stack", string(pe.Stack))
		return
	}
	p.logger().ErrorContext(ctx, "bgpool: task failed", "error", err)
}

func (p *Pool) logger() *slog.Logger {
	if p.opts.logger != nil {
		return p.opts.logger
	}
	return slog.Default()
}

// checkDrainedLocked closes p.drained once Shutdown has begun and neither a
// queued task nor a worker loop is left. Requires p.mu.
func (p *Pool) checkDrainedLocked() {
	if p.closed && !p.isDrained && p.active == 0 && p.queue.Len() == 0 {
		p.isDrained = true
		close(p.drained)
	}
}

// Shutdown stops the pool and waits for it to drain. It stops admitting
// tasks at once (Submit then returns ErrClosed, and submitters blocked in
// Block return ErrClosed), lets every queued task run, and waits for running
// tasks to return. It returns nil when all of that finished before ctx
// ended. When ctx ends first, Shutdown cancels every task's context, counts
// every task still queued or running as Abandoned (a task that returns later
// is not counted again), and returns an error that matches ctx.Err() and
// says how many tasks it abandoned.
//
// Shutdown may be called more than once and concurrently with any other
// method; every call waits as described. Once it returns, the pool's own
// goroutines are gone; only tasks that ignore their cancelled context may
// still be running. Called from inside one of the pool's own tasks (with that
// task's context, or one derived from it), Shutdown begins the shutdown and
// returns nil without waiting, since it would wait for its caller.
func (p *Pool) Shutdown(ctx context.Context) error {
	if ctx == nil {
		return errors.New("bgpool: Shutdown: nil context")
	}
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.closing)
		p.checkDrainedLocked()
	}
	p.mu.Unlock()
	if ctx.Value(poolKey{}) == p {
		return nil
	}

	select {
	case <-p.drained: // every task ran and every worker loop returned
	case <-ctx.Done(): // the deadline came first, unless drained is also ready
		select {
		case <-p.drained:
		default:
			return p.abandon(ctx)
		}
	}
	p.stopTimer()
	_ = p.ants.ReleaseContext(ctx) // wait for ants' goroutines to exit
	p.mu.Lock()
	n := p.stats.Abandoned
	p.mu.Unlock()
	if n > 0 {
		return fmt.Errorf("bgpool: shutdown: %d tasks were abandoned by an earlier Shutdown", n)
	}
	return nil
}

// abandon ends a Shutdown whose ctx ended before the pool drained.
func (p *Pool) abandon(ctx context.Context) error {
	p.mu.Lock()
	queued, running := 0, 0
	var lost []time.Time // admission times of the abandoned queued tasks, for the observer
	if !p.abandonedFlag.Load() {
		p.abandonedFlag.Store(true)
		queued, running = p.queue.Len(), p.running
		p.stats.Abandoned += uint64(queued + running)
		for p.opts.observer != nil && p.queue.Len() > 0 {
			it, _ := p.queue.Pop()
			lost = append(lost, it.at)
		}
		p.queue.Clear()
		p.checkDrainedLocked()
	}
	total := p.stats.Abandoned
	p.mu.Unlock()
	for _, at := range lost {
		p.observe(OutcomeAbandoned, at, 0, nil)
	}
	p.cancel(fmt.Errorf("bgpool: shutdown deadline passed: %w", context.Cause(ctx)))
	p.stopTimer()
	p.ants.Release()
	if queued+running == 0 {
		return fmt.Errorf("bgpool: shutdown: %d tasks abandoned: %w", total, ctx.Err())
	}
	return fmt.Errorf("bgpool: shutdown: abandoned %d tasks (%d queued, %d running): %w",
		queued+running, queued, running, ctx.Err())
}

func (p *Pool) stopTimer() {
	p.mu.Lock()
	if p.rateTimer != nil {
		p.rateTimer.Stop()
	}
	p.mu.Unlock()
}

// Stats returns a snapshot of the pool's state and counters. It does not
// block beyond a brief lock and is safe to call at any time, also after
// Shutdown.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Workers = p.workers
	s.Running = p.running
	s.Queued = max(0, p.queue.Len()-p.freeLocked())
	return s
}

// Tune changes the cap on tasks running at once to size. Growing takes
// effect at once: queued tasks start on the new workers. Shrinking lets
// running tasks finish and starts no task while more than size are running.
// The queue's capacity does not change. A size below 1 is ignored. Tune does
// not block beyond a brief lock.
func (p *Pool) Tune(size int) {
	if size < 1 {
		return
	}
	p.mu.Lock()
	p.workers = size
	p.ants.Tune(size)
	// Retire surplus parked loops now rather than after their idle timeout.
	for surplus := p.active - p.workers; surplus > 0 && len(p.idle) > 0; surplus-- {
		w := p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		w.wake <- struct{}{}
	}
	n := p.admitWaitersLocked()
	p.mu.Unlock()
	p.startLoops(n)
}

// saturated reports whether a task submitted now would find no room: the
// pool is closed, submitters are waiting for room, or no worker is free and
// the queue is full.
func (p *Pool) saturated() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed || len(p.waiters) > 0 || !p.roomLocked()
}

// countDiscarded counts tasks that were kept for after the response and
// discarded, never submitted, because the handler panicked: each is counted
// Submitted and Dropped, so that Stats' sum still adds up.
func (p *Pool) countDiscarded(tasks []item) {
	if len(tasks) == 0 {
		return
	}
	p.mu.Lock()
	p.stats.Submitted += uint64(len(tasks))
	p.stats.Dropped += uint64(len(tasks))
	p.mu.Unlock()
	for range tasks {
		p.observe(OutcomeDropped, time.Time{}, 0, nil)
	}
}
