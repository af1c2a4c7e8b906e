package bgpool

import (
	"context"
	"time"
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

// newTaskContext returns the context for a task submitted with ctx.
func newTaskContext(pool, ctx context.Context) context.Context {
	if ctx == context.Background() || ctx == context.TODO() {
		return pool
	}
	return &taskContext{pool: pool, values: ctx}
}
