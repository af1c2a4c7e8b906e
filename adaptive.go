package bgpool

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// WithAdaptiveConcurrency lets the pool find its own size: the cap on tasks
// running at once moves between min and max, starting from New's size
// clamped to that range, so that a pool sized far above what its tasks'
// downstream can serve does not overload it. Stats.Workers reports the
// current cap. The default is a fixed cap.
//
// The pool reads how long its tasks run: it lowers the cap when run times
// rise above the lowest run time of a task that succeeded, raises it while
// they do not, and does not raise it far beyond what the tasks use. Tasks
// that fail count with their run time (a timeout is a long run); tasks that
// never ran (dropped, expired, rejected) are not seen. The package
// documentation gives the rule. It suits tasks that wait for something
// shared (a database, an API); a task whose run time does not grow with
// load, CPU-bound work say, gives it nothing to read: size such a pool to
// GOMAXPROCS instead.
//
// The control starts no goroutine and never blocks. It costs a brief lock
// per task it reads, and it reads one in 16 tasks shorter than 50µs. Tune sets the current cap, clamped to [min, max], and
// the pool goes on from there. min below 1, max below min, or max above
// MaxWorkers is an error from New.
func WithAdaptiveConcurrency(min, max int) Option {
	return optionFunc(func(o *options) error {
		if min < 1 || max < min || max > MaxWorkers {
			return fmt.Errorf("bgpool: WithAdaptiveConcurrency(%d, %d): need 1 <= min <= max <= MaxWorkers", min, max)
		}
		o.adaptMin, o.adaptMax = min, max
		return nil
	})
}

// WithQueueDelayTarget gives the queue a controlled delay (CoDel): while
// the tasks taken from the queue have waited longer than target for a whole
// interval of 100 ms, the pool drops, at the head, every task that waited
// longer than target, until the queue has emptied. Dropped tasks are
// counted Dropped (and Stats.Delayed), reported to observers as
// OutcomeExpired, and end Do, Future and Group calls with ErrDropped. A
// burst that drains within the interval drops nothing, unlike
// WithMaxQueueWait, which drops every task that waited too long: a queue
// that absorbs a burst is doing its job, one that stands only adds delay.
// Once Shutdown has begun nothing is dropped for its delay: Shutdown's
// deadline decides what is too late. As with WithMaxQueueWait, a Submit's
// wait for room under Block or BlockFor counts as queue wait. No task is
// dropped before it has waited target. The control never blocks; it costs
// a clock read on Submit for a task that waits in the queue, for its
// admission time (kept in a record taken from a block of 64: a sixty-fourth
// of an allocation a task), and an atomic load or two on the worker, which
// judges waits by its last reading of the clock (see "Overload control" in
// the package documentation).
//
// The queue stays first in, first out, also while it stands: serving the
// newest task first would need a second structure beside the channel, a
// cost on every pool's path. The default, zero, means no target. A target
// below zero is an error; 5ms is CoDel's usual one.
func WithQueueDelayTarget(target time.Duration) Option {
	return optionFunc(func(o *options) error {
		if target < 0 {
			return fmt.Errorf("bgpool: WithQueueDelayTarget(%v): target must not be negative", target)
		}
		o.delayTarget = target
		return nil
	})
}

// delayInterval is CoDel's interval: how long the queue's delay must stay
// above the target before the pool drops.
const delayInterval = 100 * time.Millisecond

// delayMemory is how long after its last drop the queue's delay control
// drops again as soon as the delay is above target, without waiting for
// another interval: the standing queue emptied by the drops is the same
// overload coming back.
const delayMemory = 10 * delayInterval

// queueDelays measures the queue's delay and controls it. All methods are
// safe for concurrent use; each costs an atomic load or two.
type queueDelays struct {
	queue  chan item // the pool's queue: its emptying ends a standing queue
	target time.Duration
	small  time.Duration // target / 8: a wait worth showing in Stats
	last   atomic.Int64  // the wait of the task taken last, for Stats
	// standing is when the queue's delay rose above target, on the pool's
	// clock, plus one; zero while it is below, or the queue has emptied.
	standing atomic.Int64
	// dropped is when the pool last dropped a task, on its clock, plus
	// one; zero before the first.
	dropped atomic.Int64
}

// newQueueDelays returns the delay control for target.
func newQueueDelays(target time.Duration, queue chan item) *queueDelays {
	return &queueDelays{queue: queue, target: target, small: target / 8}
}

// emptied records that the queue has emptied, which ends a standing
// queue: a worker found it so and parks.
func (q *queueDelays) emptied() {
	if q.standing.Load() != 0 {
		q.standing.Store(0)
	}
	if q.last.Load() != 0 {
		q.last.Store(0)
	}
}

// keep records that a worker took a task from the queue at now after it
// waited, and reports whether the task may run. The queue being empty
// after it ends a standing queue. exact tells whether now was read as the
// task was taken: otherwise now is a worker's earlier reading (see
// runControlled), and waited may be short of the truth, which tells that
// a queue stands, and that a task waited too long, but not that one did
// not.
func (q *queueDelays) keep(now, waited time.Duration, exact bool) bool {
	if waited < q.small && q.standing.Load() == 0 && q.last.Load() < int64(q.small) {
		return true // the common case: nothing to show, no standing queue
	}
	// One line written by every worker: written only when the delay is
	// worth showing, an eighth of the target or more, or was.
	if exact && (waited >= q.small || time.Duration(q.last.Load()) >= q.small) {
		q.last.Store(int64(waited))
	}
	since := q.standing.Load()
	if since == 0 && waited <= q.target { // no standing queue
		return true
	}
	if since == 0 && waited > q.target {
		// The queue has stood above target since this task's wait passed
		// it, which may be long before a worker came for it; if the pool
		// was dropping a moment ago, the overload it dropped for goes on.
		if last := q.dropped.Load(); last != 0 && now-time.Duration(last-1) < delayMemory {
			since = int64(now-delayInterval) + 1
		} else {
			since = int64(now-waited+q.target) + 1
		}
		if !q.standing.CompareAndSwap(0, since) {
			since = q.standing.Load()
		}
	}
	dropping := since != 0 && now-time.Duration(since-1) >= delayInterval
	if since != 0 && (len(q.queue) == 0 || exact && !dropping && waited <= q.target) {
		q.standing.Store(0)
	}
	if dropping && waited > q.target {
		q.dropped.Store(int64(now) + 1)
		return false
	}
	return true
}

// The controller's constants (see controller.sample).
const (
	adaptWindow     = 50 * time.Millisecond // the shortest window
	adaptMaxWindow  = time.Second           // a window ends with fewer samples after this
	adaptMinSamples = 8                     // samples a window needs before adaptMaxWindow
	adaptRiseQuiet  = 5 * time.Second       // how often the lowest run time may rise while the pool is quiet
	adaptRiseBusy   = 30 * time.Second      // and while it is not
)

// controller moves a pool's cap (WithAdaptiveConcurrency). It has no
// goroutine: workers feed it the run time of each task they time (see
// longShot), each taking c's lock briefly as the task returns; every window (50 ms, longer for slow
// or rare tasks) it sets the cap to
//
//	cap × lowest / median + headroom,  at most 2 × used + headroom
//
// where median is the window's median run time, lowest the lowest run time
// of a task that succeeded, headroom 1.5 √cap (at least 3), and used how many
// tasks ran at once on average (their run times over the window). Run times
// that grow with the cap shrink it; flat ones let it grow by the headroom;
// a pool that uses little of its cap keeps it near what it uses. lowest
// rises only slowly (by an eighth at most, every 5 s while the pool uses
// under half its cap, every 30 s otherwise), so that a long overload does
// not become the new normal, and a downstream that has become slower for
// good is learnt.
type controller struct {
	min, max int

	mu     sync.Mutex // guards the rest; taken once per task that ran
	begun  time.Duration
	n      int // samples in the window, some overwritten past len(runs)
	runs   [64]time.Duration
	busy   time.Duration // the window's run times, summed
	winLow time.Duration // the window's lowest run time of a success
	lowest time.Duration // zero before the first success
	rose   time.Duration // when lowest last rose
}

// sample records a task that ran for ran and ended at now (ok: it
// succeeded), standing for weight tasks, in a pool whose cap is cur. At the
// end of a window it reports the new cap and true if the cap should change.
func (c *controller) sample(now, ran time.Duration, weight int, ok bool, cur int) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.runs[c.n%len(c.runs)] = ran
	c.n++
	c.busy += ran * time.Duration(weight)
	if ok {
		if c.winLow == 0 || ran < c.winLow {
			c.winLow = ran
		}
		if c.lowest == 0 || ran < c.lowest {
			c.lowest = ran
		}
	}
	elapsed := now - c.begun
	if elapsed < max(adaptWindow, 2*c.lowest) || c.n < adaptMinSamples && elapsed < adaptMaxWindow {
		return 0, false
	}
	runs := c.runs[:min(c.n, len(c.runs))]
	slices.Sort(runs)
	median := runs[len(runs)/2]
	used := float64(c.busy) / float64(elapsed)
	lowest := c.lowest
	if lowest == 0 { // nothing has succeeded yet: the window's fastest is the best guess
		lowest = runs[0]
	}
	ratio := 1.0
	if median > lowest {
		ratio = float64(lowest) / float64(median)
	}
	headroom := max(3, 1.5*math.Sqrt(float64(cur)))
	next := min(float64(cur)*ratio+headroom, 2*used+headroom)
	if quiet := used < float64(cur)/2; c.winLow > c.lowest && c.lowest > 0 &&
		(quiet && now-c.rose >= adaptRiseQuiet || now-c.rose >= adaptRiseBusy) {
		c.lowest = min(c.winLow, c.lowest+c.lowest/8)
		c.rose = now
	}
	c.begun, c.n, c.busy, c.winLow = now, 0, 0, 0
	capped := min(max(int(next), c.min), c.max)
	return capped, capped != cur
}

// Timing a task takes two clock reads, about 40ns each on a 2-core VM:
// nothing beside a task of a millisecond, a lot beside an empty one. So a
// worker times every task while its tasks run for longShot or longer, and
// one in shortEvery otherwise, each standing for shortEvery in the sums.
const (
	longShot   = 50 * time.Microsecond
	shortEvery = 16
)

// timed reports whether s's owner times its next task: the controller reads
// the run times of the tasks it times (see controller), and a worker of a
// pool with overload control reads the clock only for them (see
// runControlled).
func (s *slot) timed() bool {
	if s.long || s.sampling == 0 {
		return true
	}
	s.sampling--
	return false
}

// delayed reports whether WithQueueDelayTarget drops it, taken from the
// queue at now. Once Shutdown has begun nothing is dropped for its delay:
// the drain's deadline decides what is too late.
func (p *Pool) delayed(now time.Duration, it *item) bool {
	return !p.delays.keep(now, now-it.at(), true) && !p.closing()
}

// control is the queue's delay control on the workers' fast path, in
// claim: it settles a task that WithQueueDelayTarget drops, from the
// worker's hands with its slot still idle (where Shutdown's deadline does
// not look), and reports false. It returns the time it read, or zero.
func (p *Pool) control(it *item) (now time.Duration, keep bool) {
	if p.delays == nil {
		return 0, true
	}
	now = p.now()
	if p.delayed(now, it) {
		p.settle(outcomeDelayed, report{wait: it.waiter(), queued: true, at: it.at()})
		return now, false
	}
	return now, true
}

// runControlled runs it, a plain Task of a pool with overload control,
// admitted at at (zero without WithQueueDelayTarget): the queue's delay
// control, the claim and the timing, written out rather than through
// claim, control and startTiming; runClaimed does the rest. It sets *ctx to
// the task's context, for runTasks' guard.
//
// A clock read costs about as much as the rest of an empty task's way
// through the pool, so a worker reads the clock only for the tasks it
// times (see timed): as one starts, unless the task before it was timed
// too, whose end is the reading, and as it ends. The delay control judges
// the other tasks by the worker's last reading (slot.clock), which lags the
// clock by the run time of the tasks since, never more than shortEvery of
// them: a task's wait is never overstated, so no task is dropped before it
// has waited the target, and only an exact reading ends a standing queue
// (see queueDelays.keep). The first task a worker takes after it has slept
// waited no longer than the worker took to wake, since the queue was empty
// when it parked, and no queue stands: the control has nothing to judge,
// and the worker reads the clock only if it times the task.
func (w *worker) runControlled(at time.Duration, it item, ctx *context.Context) {
	p := w.pool
	woke := w.woke
	w.woke = false
	timed := w.timed()
	now, exact := w.clock, w.fresh
	if !exact && (timed || now == 0 && !woke) {
		now, exact = p.now(), true
		w.clock = now
	}
	w.fresh = false
	// Dropped from the worker's hands with its slot still idle, where
	// Shutdown's deadline does not look.
	if p.delays != nil && !woke && !p.delays.keep(now, max(0, now-at), exact) && !p.closing() {
		p.settle(outcomeDelayed, report{queued: true, at: at})
		return
	}
	if !w.state.CompareAndSwap(slotIdle, slotRunning) && !w.state.CompareAndSwap(slotStarting, slotRunning) || p.isAbandoned() {
		p.finish(&w.slot, it, OutcomeAbandoned, report{queued: true, at: at})
		return
	}
	w.start = 0
	if timed {
		w.start = now
	}
	w.runClaimed(it, ctx)
}

// startTiming records in s.start when the task in s starts, now if that
// is not zero, when the controller times it (see timed), and zero when it
// does not, so that no start is left from a task that panicked; ran reads
// it.
func (p *Pool) startTiming(s *slot, now time.Duration) {
	s.fresh, s.start = false, 0
	if p.adapt == nil {
		return
	}
	if !s.timed() {
		s.start = 0
		return
	}
	if now == 0 {
		now = p.now()
	}
	s.start = now
}

// outcomeOf is the outcome of a task of the fast path that returned err.
func outcomeOf(err error) Outcome {
	if err != nil {
		return OutcomeFailed
	}
	return OutcomeCompleted
}

// ran feeds the controller the task that ran in s from s.start (on the
// pool's clock) to now, and moves the cap when it says so; without
// WithAdaptiveConcurrency it only learns whether s's tasks are short (see
// timed). now becomes s's last clock reading.
func (p *Pool) ran(s *slot, out Outcome) {
	now := p.now()
	d := now - s.start
	s.start = 0
	s.clock, s.fresh = now, true
	weight := 1
	if !s.long {
		weight = shortEvery
	}
	s.long = d >= longShot
	if !s.long {
		s.sampling = shortEvery - 1
	}
	if p.adapt == nil {
		return
	}
	if next, ok := p.adapt.sample(now, d, weight, out == OutcomeCompleted, int(p.workers.Load())); ok {
		p.setCap(next)
	}
}
