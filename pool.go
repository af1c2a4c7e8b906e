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
// empty task costs about 115ns end to end from one submitter, and about
// 275ns from 8, when they contend for the pool's mutex; see the benchmarks
// module.
type Pool struct {
	opts    options
	ants    *ants.Pool
	limiter *rate.Limiter // nil without a rate limit
	loopFn  func()        // p.loop, bound once so that starting a worker does not allocate
	stamp   bool          // tasks need their admission time (WithMaxQueueWait, WithObserver)
	block   bool          // the policy is Block: submit waits itself (see isBlock)

	base   context.Context // parent of every task's cancellation
	cancel context.CancelCauseFunc

	closing chan struct{} // closed when Shutdown begins
	drained chan struct{} // closed when closing and no task nor worker is left

	abandonedFlag atomic.Bool // Shutdown's deadline passed; read without mu by execute
	releaseOnce   sync.Once   // ants is released once, by the first Shutdown to finish

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

// waiter is a submitter blocked in Overflow.Wait. Waiters are recycled
// through waiterPool, since under steady overload every Submit waits; see
// waitLocked for when one may be put back.
type waiter struct {
	it       item
	ready    chan struct{} // buffer 1: receives once the task is admitted
	admitted bool
}

var waiterPool = sync.Pool{New: func() any { return &waiter{ready: make(chan struct{}, 1)} }}

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
		block:   isBlock(o.policy),
		closing: make(chan struct{}),
		drained: make(chan struct{}),
		workers: size,
	}
	if o.limit > 0 && o.limit != rate.Inf {
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
	if p.admitsLocked() {
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
	if p.block {
		// What Block does through an Overflow, without allocating one and
		// without releasing p.mu in between.
		if err := p.waitLocked(ctx, ctx, task); err != nil {
			return p.reject(err)
		}
		return nil
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

// admitsLocked reports whether a task arriving now is admitted at once: no
// earlier submitter is waiting for room (they go first) and there is room.
// Requires p.mu.
func (p *Pool) admitsLocked() bool {
	return len(p.waiters) == 0 && p.roomLocked()
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
		p.wakeIdleLocked()
		looking++
	}
	n := min(need-looking, p.workers-p.active)
	if n <= 0 {
		return 0
	}
	p.active += n
	return n
}

// wakeIdleLocked takes the most recently parked loop off p.idle and wakes
// it. The send cannot block: a loop's wake channel is empty while it is on
// p.idle, since only the loop's waker sends, and a loop that was taken off
// p.idle drains its channel before it parks again (unidleLocked). Requires
// p.mu and a non-empty p.idle.
func (p *Pool) wakeIdleLocked() {
	w := p.idle[len(p.idle)-1]
	p.idle[len(p.idle)-1] = nil
	p.idle = p.idle[:len(p.idle)-1]
	w.wake <- struct{}{}
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
//
// The worker's goroutine starts with a 2 KiB stack, and the Go runtime
// copies it to one twice the size as soon as a call would come within
// about 900 bytes (the runtime's guard) of its end. With 10,000 workers that
// doubling costs 20 MiB, so the deepest paths are kept short. The deepest is
// parking: the runtime's select and, below it, the idle timer's
// registration (since Go 1.23 a timer joins the heap only when something
// blocks on its channel) need about 750 bytes, and ants' own frame takes
// 100. So loop itself holds almost nothing and calls parkLocked directly,
// while everything else a task needs happens in runNext, a sibling of
// parkLocked rather than its caller; and the rarely taken branches of
// nextLocked, runNext and parkLocked live in separate functions
// (nextGateLocked, finishLocked, unidleLocked) so that their locals do not
// sit in the frames of the common path. BenchmarkSleepTasks' peak-stack-B
// shows when this breaks: about 2 KiB a worker when the paths fit, 4 KiB
// when they do not.
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
		switch p.runNext(&inTask) {
		case nextPark:
			if w == nil {
				w = newWorker()
			}
			if !p.parkLocked(w) {
				p.exitLocked()
				p.mu.Unlock()
				return
			}
		case nextExit:
			return
		}
	}
}

// runNext takes the next task from the queue and runs it, with *inTask true
// while it runs, and then books it. It reports nextRun when the loop should
// call it again, nextPark when the queue is empty and the loop should park,
// and nextExit when the loop must return, in which case it has released p.mu
// and taken the loop out of p.active. Requires p.mu, which it releases while
// the task runs and holds again when it returns anything but nextExit.
func (p *Pool) runNext(inTask *bool) int {
	it, starts, next := p.nextLocked()
	if starts > 0 || next == nextExit {
		p.mu.Unlock()
		p.startLoops(starts)
		if next == nextExit {
			return nextExit
		}
		p.mu.Lock()
		if next == nextPark {
			return nextRun // the queue may have changed while p.mu was released: look again
		}
	}
	if next == nextPark {
		return nextPark
	}
	p.mu.Unlock()

	*inTask = true
	out, ran, err := p.execute(it, false)
	*inTask = false

	p.mu.Lock()
	p.finishLocked(it.at, out, ran, err)
	return nextRun
}

// finishLocked books a task that a worker loop ran: it frees the worker's
// slot, counts the outcome, reports it to the observer, and admits waiting
// submitters into the room the task made. Requires p.mu, which it may release
// and reacquire. It is kept out of line on purpose (see loop).
//
//go:noinline
func (p *Pool) finishLocked(admitted time.Time, out Outcome, ran time.Duration, err error) {
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
		p.observe(out, admitted, true, ran, err)
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
		p.observe(OutcomeAbandoned, time.Time{}, true, 0, nil)
	} else {
		p.observe(OutcomeFailed, time.Time{}, true, 0, errGoexit)
	}
}

var errGoexit = errors.New("bgpool: task called runtime.Goexit")

// What nextLocked (and runNext) tell a worker loop to do.
const (
	nextRun  = iota // nextLocked: run the task it returned; runNext: call it again
	nextPark        // the queue is empty: park with parkLocked, then ask again
	nextExit        // return: the loop has been taken out of p.active
)

// nextLocked returns the next task for a worker loop, already counted in
// p.running, or tells the loop to park or to return (see nextRun). It also
// returns how many more loops the caller must start (with startLoops, after
// releasing p.mu) for tasks that waiting submitters moved into the room it
// made. Requires p.mu, which it may release and reacquire.
func (p *Pool) nextLocked() (it item, starts int, next int) {
	for {
		if p.active > p.workers { // Tune shrank the pool: retire this loop
			p.exitLocked()
			p.ensurePickersLocked() // wakes a parked loop if needed; starts none, as active >= workers
			return item{}, starts, nextExit
		}
		if p.queue.Len() == 0 {
			if p.closed {
				p.exitLocked()
				return item{}, starts, nextExit
			}
			return item{}, starts, nextPark
		}
		if p.throttled || p.limiter != nil || p.opts.maxQueueWait > 0 {
			next, n := p.nextGateLocked()
			starts += n
			if next == nextExit {
				p.exitLocked()
				return item{}, starts, nextExit
			}
			if next == nextPark { // the front task expired: look again
				continue
			}
		}
		it, _ = p.queue.Pop()
		p.running++ // before admitting waiters: this loop's slot is taken
		if len(p.waiters) > 0 {
			starts += p.admitWaitersLocked()
		}
		return it, starts, nextRun
	}
}

// nextGateLocked is the part of nextLocked for pools with a rate limit or a
// maximum queue wait. It checks the task at the front of the (non-empty)
// queue and reports nextRun when the loop may take it, nextPark when it has
// discarded it as expired (the caller looks again), or nextExit when the
// loop must return because the rate limiter has no token; and how many loops
// the caller must start. Requires p.mu, which it may release and reacquire.
// It is kept out of line on purpose (see loop).
//
//go:noinline
func (p *Pool) nextGateLocked() (next, starts int) {
	if p.throttled {
		return nextExit, 0
	}
	it, _ := p.queue.Peek()
	now := time.Now()
	if p.opts.maxQueueWait > 0 && now.Sub(it.at) > p.opts.maxQueueWait {
		p.queue.Pop()
		p.stats.Dropped++
		if len(p.waiters) > 0 {
			starts = p.admitWaitersLocked()
		}
		if p.opts.observer != nil {
			p.mu.Unlock()
			p.observe(OutcomeExpired, it.at, false, 0, nil)
			p.mu.Lock()
		}
		return nextPark, starts
	}
	if p.limiter != nil && !p.limiter.AllowN(now, 1) {
		p.throttleLocked(now)
		return nextExit, 0
	}
	return nextRun, 0
}

// exitLocked takes a returning loop out of p.active. Requires p.mu.
func (p *Pool) exitLocked() {
	p.active--
	p.checkDrainedLocked()
}

// newWorker returns the parking state for a loop that parks for the first
// time.
func newWorker() *worker {
	return &worker{wake: make(chan struct{}, 1)}
}

// parkLocked waits, without p.mu, until a submitter wakes this loop, Shutdown
// begins, or idleTimeout passes. It reports false when the loop should
// return its goroutine to ants. Requires p.mu.
//
// Shutdown wakes parked loops through their own channels rather than
// through p.closing: a select locks every channel it waits on, on the way in
// and on the way out, so a channel shared by all parked loops made its lock
// one more point of contention on every park (9% of the CPU in sellock
// with 8 submitters on 2 cores).
func (p *Pool) parkLocked(w *worker) bool {
	p.idle = append(p.idle, w)
	p.mu.Unlock()
	if w.timer == nil {
		w.timer = time.NewTimer(idleTimeout)
	} else {
		w.timer.Reset(idleTimeout)
	}
	expired := false
	select {
	case <-w.wake: // a submitter, Tune or Shutdown took this loop off p.idle
	case <-w.timer.C: // idle too long: give the goroutine back to ants
		expired = true
	}
	p.mu.Lock()
	return p.unidleLocked(w) || !expired
}

// unidleLocked makes sure that a loop that has woken from parkLocked is off
// p.idle and its wake channel is empty. It reports whether a waker had
// already taken it off p.idle, in which case the loop must look at the queue
// whatever woke it. Requires p.mu. It is kept out of line on purpose (see
// loop).
//
//go:noinline
func (p *Pool) unidleLocked(w *worker) bool {
	if i := slices.Index(p.idle, w); i >= 0 {
		p.idle = slices.Delete(p.idle, i, i+1)
		return false
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
		if len(p.waiters) == 1 {
			// Keep the window's start: popping by reslicing uses up the
			// capacity, so a lone waiter would otherwise make append
			// allocate a new slice for every blocked Submit.
			p.waiters = p.waiters[:0]
		} else {
			p.waiters = p.waiters[1:]
		}
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
	p.mu.Lock()
	return p.waitLocked(ctx, submitCtx, task)
}

// waitLocked is wait with p.mu already held. Requires p.mu, which it
// releases.
//
// The waiter goes back to waiterPool only once nothing can refer to it or
// send to it: admitWaitersLocked sends on ready and removes the waiter from
// p.waiters in one critical section, and once it is off p.waiters no one
// sends, so after this call has either received the signal or, under p.mu,
// drained it or removed the waiter itself, its ready channel is empty and
// unreferenced.
func (p *Pool) waitLocked(ctx, submitCtx context.Context, task Task) error {
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	w := waiterPool.Get().(*waiter)
	w.it = item{ctx: submitCtx, task: task}
	p.waiters = append(p.waiters, w)
	n := p.admitWaitersLocked()
	p.mu.Unlock()
	p.startLoops(n)

	var err error
	select {
	case <-w.ready: // admitted: the task is queued or taken by a worker
		putWaiter(w)
		return nil
	case <-ctx.Done(): // the submitter stopped waiting
		err = overloaded(ctx.Err())
	case <-p.closing: // Shutdown began: nothing more is admitted
		err = ErrClosed
	}
	p.mu.Lock()
	if w.admitted {
		<-w.ready // sent under p.mu before admitted was set, so it does not block
		err = nil
	} else if i := slices.Index(p.waiters, w); i >= 0 {
		p.waiters = slices.Delete(p.waiters, i, i+1)
	}
	p.mu.Unlock()
	putWaiter(w)
	return err
}

// putWaiter recycles w, whose ready channel must be empty and which must be
// off p.waiters.
func putWaiter(w *waiter) {
	w.it = item{} // do not keep the task and its context alive
	w.admitted = false
	waiterPool.Put(w)
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
	dropped := false
	var droppedAt time.Time // the admission time of the dropped task; zero if it is this one
	if p.admitsLocked() {   // room appeared: nothing is dropped
		p.queue.Push(it)
	} else {
		dropped = true
		p.stats.Dropped++
		if old, ok := p.queue.Pop(); ok {
			droppedAt = old.at
			p.queue.Push(it)
		}
	}
	n := p.ensurePickersLocked()
	p.mu.Unlock()
	p.startLoops(n)
	if dropped {
		p.observe(OutcomeDropped, droppedAt, false, 0, nil)
	}
	return nil
}

// runHere is Overflow.Run.
func (p *Pool) runHere(submitCtx context.Context, task Task) {
	out, ran, err := p.execute(item{ctx: submitCtx, task: task}, true)
	p.mu.Lock()
	p.countLocked(out)
	p.mu.Unlock()
	p.observe(out, time.Time{}, true, ran, err)
}

// drop counts a task discarded on arrival.
func (p *Pool) drop() {
	p.mu.Lock()
	p.stats.Dropped++
	p.mu.Unlock()
	p.observe(OutcomeDropped, time.Time{}, false, 0, nil)
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
// method; every call waits as described. Once a Shutdown that drained the
// pool returns, the pool's own goroutines are gone. After an abandonment
// they exit shortly after their tasks return, so only tasks that ignore
// their cancelled context can keep them. Called from inside one of the pool's own tasks (with that
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
		for len(p.idle) > 0 { // parked loops do not watch p.closing; see parkLocked
			p.wakeIdleLocked()
		}
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
	p.release(true)
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
		p.observe(OutcomeAbandoned, at, false, 0, nil)
	}
	p.cancel(fmt.Errorf("bgpool: shutdown deadline passed: %w", context.Cause(ctx)))
	p.release(false)
	if queued+running == 0 {
		return fmt.Errorf("bgpool: shutdown: %d tasks abandoned: %w", total, ctx.Err())
	}
	return fmt.Errorf("bgpool: shutdown: abandoned %d tasks (%d queued, %d running): %w",
		queued+running, queued, running, ctx.Err())
}

// release stops the rate timer and releases ants, once for all Shutdown
// calls: concurrent calls into ants' Release race on its fields. With wait,
// after a drain, it waits for ants' goroutines to exit, which is prompt
// because no worker loop is left; concurrent callers wait with it (sync.Once
// blocks them until the first call is done). After an abandonment it does
// not wait: workers still running abandoned tasks exit when those return.
func (p *Pool) release(wait bool) {
	p.releaseOnce.Do(func() {
		p.mu.Lock()
		if p.rateTimer != nil {
			p.rateTimer.Stop()
		}
		p.mu.Unlock()
		if wait {
			_ = p.ants.ReleaseContext(context.Background())
		} else {
			p.ants.Release()
		}
	})
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
		p.wakeIdleLocked()
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
	return p.closed || !p.admitsLocked()
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
		p.observe(OutcomeDropped, time.Time{}, false, 0, nil)
	}
}
