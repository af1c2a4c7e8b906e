package bgpool

import (
	"context"
	"time"
)

// Parking. A worker that finds the queue empty parks: it puts itself on the
// pool's idle stack and sleeps on its own wake channel, a plain receive
// from a channel no other worker shares. Whoever wants a parked worker pops
// one from the stack and claims it, and so owes it exactly one item on its
// wake channel, which holds one, so that the send never waits: a notice
// (look at the queue, retire, Shutdown began), or a task handed over while
// the queue is empty (see submitSlow; with WithQueueSize(0), the only way
// in).
//
// Why not park on the queue itself? A worker parked on the queue must also
// hear of Tune, the reaper and Shutdown, which takes a select on two
// channels; that select costs about three times a plain receive, each time
// a worker parks (the floor's workers park on the queue alone, a single
// receive). And a notice sent into the queue, when the worker it was meant
// for had just been handed a task, would stay in the buffer and take a
// task's place.
//
// The handshakes. A worker parks, and then looks again at what would keep
// it awake: a task in the queue, Shutdown begun, the cap below active. The
// other sides do the reverse: a submitter fills the queue and then looks
// at the stack (see admitted), Tune lowers the cap and then pops the
// surplus, Shutdown closes the pool and then pops every parked worker. One
// of the two sides sees the other, so no task waits in the queue while a
// worker sleeps, and no worker sleeps through Shutdown. A submitter waiting
// for room in a hand-off-only queue counts itself in Pool.waiting and then
// looks at the stack; a parking worker looks at waiting and tells it
// through Pool.spare. A worker that a submitter woke passes the wake on
// while tasks remain queued (see wakeForQueue): it may have taken, in its
// last look, a task that a submitter who found no worker parked left.
//
// Only a worker asleep is handed a task. One still looking at the queue
// (parkIdle) may have taken a task there, and a second one, handed to it,
// would run after the first however old it was; such a worker is woken
// with a notice, and the task goes to the queue, in order.
//
// The stack is a Treiber stack of worker records, linked through
// worker.below by index, with a version in the top word that changes on
// every push and pop, so that a pop cannot succeed on a top that was popped
// and pushed again meanwhile (ABA); the version has 32 bits, so that would
// take a popper stalled between its load and its swap for 2^32 pushes and
// pops of others. A worker that leaves the stack on its
// own (unpark) cannot take itself out of the middle: it marks its entry
// stale, and the popper that meets the entry drops it; a worker that parks
// again while its stale entry is still on the stack reuses the entry.

// A worker's place with respect to the idle stack (worker.park).
const (
	// parkBusy: not on the stack. The worker runs tasks, or is on its way
	// to park. A popper that claims a parked worker moves it here, and then
	// sends it one item.
	parkBusy uint32 = iota
	// parkIdle: on the stack, and looking at the queue one last time (see
	// next). A popper may claim it, but sends it a notice only: the worker
	// may have taken a task from the queue meanwhile, and a task handed to
	// it would wait behind that one, or run before it although it came
	// first.
	parkIdle
	// parkAsleep: on the stack, asleep on its wake channel or about to be,
	// with nothing in hand: a popper may hand it a task.
	parkAsleep
	// parkStale: its entry is on the stack, but the worker left on its own
	// (unpark) and is awake; the popper that meets the entry drops it.
	parkStale
)

// A notice is what wakes a parked worker when no task is handed to it. As
// an item's runner it is never run (see next). A notice is a byte, which
// converts to an interface without allocating.
type notice uint8

const (
	noticeQueue  notice = iota + 1 // look at the queue: a task came in
	noticeRetire                   // retire, if it may (the reaper; Tune made the pool smaller)
	noticeClose                    // Shutdown began
)

func (notice) run(context.Context) error { return nil }

func (notice) stamp() *time.Duration { return nil }

// noticeItem returns the item that carries n.
func noticeItem(n notice) item { return item{run: n} }

// park puts w on the idle stack, idle: from then on a popper may claim it
// (see parkIdle).
func (p *Pool) park(w *worker) {
	p.parked.Add(1) // before w can be claimed, which counts it out
	for {
		switch w.park.Load() {
		case parkStale: // its entry is still on the stack: idle again there
			if w.park.CompareAndSwap(parkStale, parkIdle) {
				return
			}
			// A popper dropped the entry meanwhile: push it again.
		case parkBusy:
			w.park.Store(parkIdle) // before the push: a popper reads it
			p.pushIdle(w)
			return
		default:
			panic("bgpool: parking a worker that is parked")
		}
	}
}

// sleep moves w, parked and with nothing to do, from idle to asleep, and
// reports false when a popper claimed it first: either way w then waits on
// its wake channel.
func (p *Pool) sleep(w *worker) bool {
	return w.park.CompareAndSwap(parkIdle, parkAsleep)
}

// unpark takes w, idle, off the idle stack on its own and reports whether
// it could: false means a popper claimed it first, and w must take the
// notice that comes on its wake channel.
func (p *Pool) unpark(w *worker) bool {
	if w.park.CompareAndSwap(parkIdle, parkStale) {
		p.parked.Add(-1)
		return true
	}
	return false
}

// claimIdle pops a parked worker off the stack and claims it, or returns
// nil when none is parked. The caller must send the worker one item: a task
// only if asleep reports true, a notice otherwise (see parkIdle).
func (p *Pool) claimIdle() (w *worker, asleep bool) {
	for {
		w := p.popIdle()
		if w == nil {
			return nil, false
		}
		if asleep, ok := p.claimPopped(w); ok {
			return w, asleep
		}
	}
}

// claimPopped claims w, just popped off the stack, and reports false when
// its entry was stale: the entry is then dropped.
func (p *Pool) claimPopped(w *worker) (asleep, ok bool) {
	for {
		switch st := w.park.Load(); st {
		case parkIdle, parkAsleep:
			if w.park.CompareAndSwap(st, parkBusy) {
				p.parked.Add(-1)
				return st == parkAsleep, true
			}
		case parkStale:
			if w.park.CompareAndSwap(parkStale, parkBusy) {
				return false, false
			}
		default:
			panic("bgpool: a busy worker on the idle stack")
		}
		// It moved meanwhile, between stale, idle and asleep: look again.
	}
}

// wakeIdle claims up to n parked workers and sends each the notice what,
// and returns how many it woke.
func (p *Pool) wakeIdle(n int64, what notice) int64 {
	var woken int64
	for ; woken < n; woken++ {
		w, _ := p.claimIdle()
		if w == nil {
			break
		}
		w.wake <- noticeItem(what)
	}
	return woken
}

// handOver gives it to a worker asleep on the idle stack, and reports
// false when it could not: no worker was parked, or the one it claimed was
// still looking at the queue, which it then wakes for the queue instead.
func (p *Pool) handOver(it item) bool {
	w, asleep := p.claimIdle()
	if w == nil {
		return false
	}
	if !asleep {
		w.wake <- noticeItem(noticeQueue)
		return false
	}
	w.wake <- it
	return true
}

// signalSpare tells a submitter waiting for room in a hand-off-only queue
// that a worker has parked (see wait).
func (p *Pool) signalSpare() {
	select {
	case p.spare <- struct{}{}:
	default: // one is pending already
	}
}

// The idle stack's top word: the version in the high half, the index of
// the top worker (plus one; zero for an empty stack) in the low half.
func idleTop(version, idx uint32) uint64 { return uint64(version)<<32 | uint64(idx) }

// pushIdle pushes w onto the idle stack.
func (p *Pool) pushIdle(w *worker) {
	for {
		top := p.idle.Load()
		w.below.Store(uint32(top))
		if p.idle.CompareAndSwap(top, idleTop(uint32(top>>32)+1, w.idx)) {
			return
		}
	}
}

// popIdle pops the top of the idle stack, or returns nil when it is empty.
func (p *Pool) popIdle() *worker {
	for {
		top := p.idle.Load()
		idx := uint32(top)
		if idx == 0 {
			return nil
		}
		w := (*p.indexed.Load())[idx-1]
		if p.idle.CompareAndSwap(top, idleTop(uint32(top>>32)+1, w.below.Load())) {
			return w
		}
	}
}
