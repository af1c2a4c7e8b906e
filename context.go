package bgpool

import (
	"context"
	"math"
	"sync/atomic"
	"time"
	"unsafe"
)

// taskContext is the context a task runs with: its values come from the
// submitter's context, its cancellation from the pool. It replaces the
// stack context.WithoutCancel + context.WithCancel + context.AfterFunc that
// would otherwise be built for every task, and costs one small allocation
// (none when the submitter passed context.Background or context.TODO).
//
// Value asks the pool's context first. That context is a cancelCtx derived
// from context.Background and carries no values of its own, so the only key
// it answers is the context package's internal cancellation key: children
// made with context.WithCancel and friends then attach directly to the
// pool's cancellation, and context.Cause reports the pool's cause, not the
// submitter's (whose request may long be over).
type taskContext struct {
	pool   context.Context // cancelled when Shutdown abandons tasks
	values context.Context // the submitter's context, used only for Value
}

func (c *taskContext) Deadline() (time.Time, bool) { return c.pool.Deadline() }
func (c *taskContext) Done() <-chan struct{}       { return c.pool.Done() }
func (c *taskContext) Err() error                  { return c.pool.Err() }

func (c *taskContext) Value(key any) any {
	if v := c.pool.Value(key); v != nil {
		return v
	}
	return c.values.Value(key)
}

func (c *taskContext) String() string { return "bgpool.taskContext" }

// newTaskContext returns the context for it's task.
func newTaskContext(pool context.Context, it *item) context.Context {
	if c := it.waiter(); c != nil { // made inside the record Do, Group or Future waits on (see do.go)
		return c.taskContext(pool)
	}
	if valueless(&it.ctx) {
		return pool
	}
	return &taskContext{pool: pool, values: it.ctx}
}

// valueless reports whether ctx is context.Background() or
// context.TODO(), which carry no values, so that a task submitted with one
// runs with the pool's context itself. It compares the interfaces' type
// words alone: each of those two types has a single value, so that is
// exact, and it costs two instructions where ctx == context.Background()
// calls the runtime to compare two values of one type (about 20
// instructions a task, measured with benchmarks/instructions.sh).
// It takes a pointer, to the item's field, so that the interface is not
// copied to be read.
func valueless(ctx *context.Context) bool {
	t := typeWord(ctx)
	return t == backgroundType || t == todoType
}

var backgroundType, todoType = typeWordOf(context.Background()), typeWordOf(context.TODO())

// typeWord returns the first word of the interface value at ctx, which
// identifies its dynamic type (Go's layout of interface values: a type word
// and a data word).
func typeWord(ctx *context.Context) unsafe.Pointer {
	return (*[2]unsafe.Pointer)(unsafe.Pointer(ctx))[0]
}

func typeWordOf(ctx context.Context) unsafe.Pointer { return typeWord(&ctx) }

// deadlineContext is the context of a task run with WithTaskTimeout. It
// reports its deadline and expiry from the clock alone and builds a real
// context.WithDeadline, with its timer and its registration under the pool's
// context, only when the task first asks for Done (directly, or by deriving
// a context from it): a task that never waits on its context pays a
// thirty-second of an allocation (see slot.deadlineContext) and no timer.
type deadlineContext struct {
	pool     *Pool                         // its base context gives cancellation and poolKey
	values   context.Context               // the submitter's context, for values only; nil for none
	deadline time.Duration                 // on the pool's monotonic clock (Pool.now): 8 bytes rather than a time.Time's 24
	inner    atomic.Pointer[deadlineState] // set once, on first use of Done (the first of racing makers wins)
}

type deadlineState struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// deadlineBatch is how many deadline contexts a slot allocates at once
// (see slot.deadlineContext).
const deadlineBatch = 32

// deadlineContext returns the context of a task that starts now in s and may
// run for d. It reads the monotonic clock only, once: on virtual machines
// the wall clock can cost as much as the rest of a task's overhead.
//
// The contexts come from a block of deadlineBatch that s allocates and hands
// out one by one, never twice: one allocation serves a batch of tasks. The
// block stays reachable while any of its contexts is, so a context that a
// task keeps keeps 1.25 KB alive, and a slot keeps up to a batch of
// finished tasks' contexts (and their submitters' values) until it has run
// as many more tasks or its worker retires (a CallerRuns slot: until
// callerSlots lets it go).
func (s *slot) deadlineContext(p *Pool, ctx context.Context, d time.Duration) *deadlineContext {
	now := p.now()
	deadline := now + d
	if deadline < now { // saturate, as context.WithTimeout does: MaxInt64 means no limit
		deadline = math.MaxInt64
	}
	if len(s.deadlines) == 0 {
		s.deadlines = make([]deadlineContext, deadlineBatch)
	}
	c := &s.deadlines[0]
	s.deadlines = s.deadlines[1:]
	c.pool, c.deadline = p, deadline
	if !valueless(&ctx) {
		c.values = ctx
	}
	return c
}

// real returns the context.WithDeadline that backs Done, creating it on
// first use.
func (c *deadlineContext) real() context.Context {
	if s := c.inner.Load(); s != nil {
		return s.ctx
	}
	ctx, cancel := context.WithDeadline(c.pool.base, c.pool.epoch.Add(c.deadline))
	if !c.inner.CompareAndSwap(nil, &deadlineState{ctx, cancel}) { // another goroutine made it first
		cancel()
		return c.inner.Load().ctx
	}
	return ctx
}

// release stops the timer, if one was made; the worker calls it when the
// task returns.
func (c *deadlineContext) release() {
	if s := c.inner.Load(); s != nil {
		s.cancel()
	}
}

func (c *deadlineContext) Deadline() (time.Time, bool) { return c.pool.epoch.Add(c.deadline), true }
func (c *deadlineContext) Done() <-chan struct{}       { return c.real().Done() }

func (c *deadlineContext) Err() error {
	if s := c.inner.Load(); s != nil {
		return s.ctx.Err()
	}
	if err := c.pool.base.Err(); err != nil {
		return err
	}
	if c.pool.now() >= c.deadline {
		return context.DeadlineExceeded
	}
	return nil
}

// Value answers the context package's own cancellation key (the only key
// besides poolKey that the pool's context answers) from the real deadline
// context, so that context.Cause and derived contexts see the deadline;
// every other key from the submitter's context.
func (c *deadlineContext) Value(key any) any {
	if v := c.pool.base.Value(key); v != nil {
		if _, ours := key.(poolKey); ours {
			return v
		}
		return c.real().Value(key)
	}
	if c.values == nil {
		return nil
	}
	return c.values.Value(key)
}

func (c *deadlineContext) String() string { return "bgpool.deadlineContext" }
