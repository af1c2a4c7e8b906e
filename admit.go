package bgpool

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

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
	return p.submit(ctx, runnerOf(task), applyPolicy)
}

// runnerOf returns task as an item's runner, nil for a nil task.
func runnerOf(task Task) runner {
	if task == nil {
		return nil
	}
	return task
}

// TrySubmit is like Submit but never waits and ignores the policy: when no
// worker is free and the queue is full it returns ErrOverloaded and counts
// the task Rejected. After Shutdown has begun it returns ErrClosed.
func (p *Pool) TrySubmit(ctx context.Context, task Task) error {
	return p.submit(ctx, runnerOf(task), neverWait)
}

// A submitMode says what submit does with a task that finds no room.
type submitMode uint8

const (
	applyPolicy submitMode = iota // Submit: the pool's Policy decides
	neverWait                     // TrySubmit: reject it
	keptFast                      // a kept task (WithAfterResponse): leave it unsettled for a goroutine (errKept)
)

// errKept is submit's answer in keptFast mode for a task that found no room
// at once: counted Submitted but not settled, it goes to overflowKept on a
// goroutine of its own, so that no policy (a hand-off, CallerRuns) holds
// the response.
var errKept = errors.New("bgpool: kept task needs the policy")

// submit is the hot path: count the call, and hand the task run to the
// queue if it has room. Everything else is in submitSlow and overflow. ctx
// is the submitter's: its values go with the task, and it bounds a wait
// for room.
func (p *Pool) submit(ctx context.Context, run runner, mode submitMode) error {
	// Counted before closed is read, so that a Shutdown that begins now
	// sees this task as unsettled and waits for it (see checkDrained).
	p.stats.addSubmitted()
	if ctx == nil || run == nil {
		return p.reject(badSubmit(ctx))
	}
	if p.closing() {
		return p.reject(ErrClosed)
	}
	if p.tagged || p.parked.Load() > 0 {
		return p.submitSlow(item{ctx: ctx, run: run}, mode)
	}
	select {
	case p.queue <- item{ctx: ctx, run: run}: // admitted: it waits in the queue
		if p.lookFurther() {
			p.admitted()
		}
		return nil
	default: // the queue is full
		return p.overflow(ctx, item{ctx: ctx, run: run}, mode)
	}
}

// submitSlow is submit for a pool that tags its tasks (see tag), or when a
// worker is parked: with the queue empty, the task is handed over to it,
// which spares it the queue's buffer and the worker a look at the queue.
func (p *Pool) submitSlow(it item, mode submitMode) error {
	var stamp *stampedTask
	if t, ok := it.run.(Task); ok && p.stamp && p.route == routeControlled {
		stamp = p.stamps.take() // tag's first case, written out: the common one of overload control
		stamp.task, it.run = t, stamp
	} else if p.tagged {
		stamp = p.tag(&it)
	}
	if p.parked.Load() > 0 && len(p.queue) == 0 && p.handOver(it) {
		return nil
	}
	if stamp != nil { // it waits from now on
		stamp.at = p.now()
	}
	if p.enqueue(it) {
		return nil
	}
	return p.overflow(it.ctx, it, mode)
}

// tag prepares it for a pool whose tasks leave the workers' fast path: it
// makes a plain Task a record that the fast path leaves to runRecord (a
// routedTask, or a stampedTask where the pool stamps its tasks), and
// stamps it with its admission time. Tagging a tagged item again only
// stamps it anew.
//
// A plain Task of a pool with overload control is the exception: tag
// returns its stampedTask unstamped, for the caller to stamp unless a
// worker asleep takes it at once (see submitSlow), since its admission
// time serves only the queue's delay control, which does not judge a task
// that waited in no queue (see runControlled); a clock read costs as much
// as the rest of its way to the worker.
func (p *Pool) tag(it *item) (unstamped *stampedTask) {
	if t, ok := it.run.(Task); ok && p.route != routeFast {
		if !p.stamp {
			it.run = routedTask(t)
			return nil
		}
		s := p.stamps.take()
		s.task = t
		it.run = s
		if p.route == routeControlled {
			return s
		}
		s.at = p.now()
		return nil
	}
	if p.stamp {
		it.setAt(p.now())
	}
	return nil
}

// A routedTask is a plain Task of a pool whose tasks are guarded or
// controlled: a type of its own, so that the workers' fast path leaves it
// to runRecord. Like a Task it is pointer-shaped, and making it a runner
// allocates nothing.
type routedTask Task

func (t routedTask) run(ctx context.Context) error { return t(ctx) }

func (routedTask) stamp() *time.Duration { return nil }

// A stampedTask is a plain Task of a pool that stamps its tasks, with its
// admission time.
type stampedTask struct {
	task Task
	at   time.Duration
}

func (t *stampedTask) run(ctx context.Context) error { return t.task(ctx) }

func (t *stampedTask) stamp() *time.Duration { return &t.at }

// stampBlocks hands out stampedTasks from blocks of stampBatch, each taken
// once, so that a stamped Submit costs a fraction of an allocation. A
// block stays reachable while any of its tasks is.
type stampBlocks struct{ cur atomic.Pointer[stampBlock] }

const stampBatch = 64

type stampBlock struct {
	taken atomic.Uint32
	tasks [stampBatch]stampedTask
}

// take returns a stampedTask never handed out before. It is safe for
// concurrent use. Its common case is small enough to inline.
func (b *stampBlocks) take() *stampedTask {
	if cur := b.cur.Load(); cur != nil {
		if i := cur.taken.Add(1); i <= stampBatch {
			return &cur.tasks[i-1]
		}
	}
	return b.takeNew()
}

// takeNew is take when the current block is used up, or there is none yet:
// it starts a new block, or takes from one another goroutine started
// meanwhile.
func (b *stampBlocks) takeNew() *stampedTask {
	for {
		cur := b.cur.Load()
		if cur != nil {
			if i := cur.taken.Add(1); i <= stampBatch {
				return &cur.tasks[i-1]
			}
		}
		next := new(stampBlock)
		next.taken.Store(1)
		if b.cur.CompareAndSwap(cur, next) {
			return &next.tasks[0]
		}
	}
}

func badSubmit(ctx context.Context) error {
	if ctx == nil {
		return errors.New("bgpool: Submit: nil context")
	}
	return errors.New("bgpool: Submit: nil task")
}

// lookFurther reports whether a task that has just entered the queue needs
// admitted: a worker is parked, a worker may start below the cap, or the
// pool was abandoned. With none of these (the steady state under load, at
// the cap and open) nothing more is to do.
func (p *Pool) lookFurther() bool {
	return p.parked.Load() > 0 || p.active.Load() < p.workers.Load() || p.isAbandoned()
}

// admitted runs after a task has entered the queue and makes sure that a
// worker will take it: it wakes a parked worker, if there is one, for the
// queue (see park.go); else it starts one when tasks wait in the queue and
// the cap allows one more, and gives it the oldest, so that a task for
// which a worker is free never takes a slot of the queue for long; and,
// after an abandonment, it abandons the task itself, since no worker may
// be left.
//
// Together with the last check of a retiring worker (see worker.retire) this
// is a handshake: the worker leaves active and then looks at the queue, the
// submitter fills the queue and then looks at active, so one of the two sees
// the other and the task is never left behind.
func (p *Pool) admitted() {
	woken := p.parked.Load() > 0 && p.wakeIdle(1, noticeQueue) > 0 // a worker comes for the queue
	if !woken && len(p.queue) > 0 && p.active.Load() < p.workers.Load() && p.activate() {
		if head, ok := p.takeTask(); ok { // the new worker takes the oldest task, which frees its slot at once
			p.startWorker(&head)
		} else { // a worker took it meanwhile
			p.startWorker(nil)
		}
	}
	if p.isAbandoned() {
		p.takeQueued() // a submitter got a task in after the abandonment
	}
}

// enqueue admits it into the queue if the queue has room, or hands it to a
// parked worker if the queue has no buffer (WithQueueSize(0)), and reports
// whether it did.
func (p *Pool) enqueue(it item) bool {
	select {
	case p.queue <- it:
		if p.lookFurther() {
			p.admitted()
		}
		return true
	default:
	}
	return cap(p.queue) == 0 && p.handOver(it)
}

// overflow handles a task that found the queue full and no worker parked.
// A worker may still be free to start; otherwise the policy decides. Until
// the task is admitted, refused or run, Stats counts its Submit as Waiting.
func (p *Pool) overflow(ctx context.Context, it item, mode submitMode) error {
	if cap(p.queue) == 0 && p.handOver(it) || p.admitByStarting(it) {
		return nil
	}
	if mode == neverWait {
		return p.reject(ErrOverloaded)
	}
	if mode == keptFast {
		return errKept
	}
	if p.block {
		// What Block does through an Overflow, without allocating one.
		if err := p.wait(ctx, it); err != nil {
			return p.reject(err)
		}
		return nil
	}
	o := Overflow{pool: p, it: it}
	return p.applyPolicy(ctx, &o)
}

// admitByStarting admits it by starting workers while the cap allows, and
// reports whether it did. To keep FIFO order a new worker takes the task at
// the head of the queue, if any, which makes room for it at the back.
func (p *Pool) admitByStarting(it item) bool {
	for p.activate() {
		head, ok := p.takeTask()
		if !ok { // nothing queued: it goes to the new worker itself
			p.startWorker(&it)
			return true
		}
		p.startWorker(&head) // the oldest queued task goes to the new worker
		if p.enqueue(it) {   // into the room the head left
			return true
		}
		// A waiting submitter, who was first, took that room.
	}
	return false
}

// applyPolicy hands o to the pool's Policy. A task the policy leaves
// unsettled is counted Rejected, also when the policy panics or calls
// runtime.Goexit: the panic then goes on to the submitter, counted.
func (p *Pool) applyPolicy(ctx context.Context, o *Overflow) (err error) {
	returned := false
	defer func() {
		if !returned && !o.settled {
			p.reject(errors.New("bgpool: policy panicked or called runtime.Goexit"))
		}
	}()
	err = p.opts.policy.Overflow(ctx, o)
	returned = true
	if !o.settled {
		if err == nil {
			err = ErrOverloaded
		}
		p.reject(err)
	}
	return err
}

// saturated reports whether a task submitted now would find no room: the
// pool is closed, submitters are waiting for room, or no worker is free and
// the queue is full. It reads a few atomic counters and takes no lock, for
// WithShedding's check of every request.
func (p *Pool) saturated() bool {
	// Submitters wait for room only while the queue is full and no worker
	// is parked, so this also tells whether some are waiting.
	return p.closing() ||
		len(p.queue) >= cap(p.queue) && p.parked.Load() == 0 && p.active.Load() >= p.workers.Load()
}
