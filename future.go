package bgpool

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// A Future is the result of a task submitted with Submit, which a caller
// waits for with Wait or Done. It is safe for concurrent use: any number of
// goroutines may wait for it.
type Future[T any] struct {
	c     awaited
	fn    func(context.Context) (T, error)
	value T // written by the task before it ends; read only when c.returned

	// Done's watch for Shutdown's abandonment (see Done).
	watching atomic.Bool
	mu       sync.Mutex  // guards unwatch
	unwatch  func() bool // nil until Done registers the watch
}

// Submit submits fn to p like Pool.Submit and returns a Future of its result.
// The error is Submit's: a task that was not admitted returns a nil Future
// and the error (ErrOverloaded, ErrClosed, bad input); under Block and
// BlockFor, ctx bounds the wait for room. fn runs like any task: with a
// context that has ctx's values but not its cancellation, under the pool's
// cap, policy, rate limit, task timeout and observer, and its error also
// goes to the pool's error handler.
//
// Submit allocates the Future and its channel, and nothing else (without
// WithTaskTimeout, whose task context costs one more); fn, if it is a fresh
// closure, is the caller's. Submit is safe for concurrent use.
func Submit[T any](ctx context.Context, p *Pool, fn func(ctx context.Context) (T, error)) (*Future[T], error) {
	if ctx == nil {
		return nil, p.submit(ctx, nil, applyPolicy) // ctx is nil: counted, and refused with Submit's error
	}
	if fn == nil {
		return nil, p.Submit(ctx, nil)
	}
	f := &Future[T]{fn: fn}
	f.c = awaited{ctx: ctx, pool: p, future: f, done: make(chan struct{})}
	if err := p.submit(ctx, &f.c, applyPolicy); err != nil {
		return nil, err
	}
	return f, nil
}

// Wait blocks until the task has ended, and returns what fn returned; or
// the zero T with a *PanicError if fn panicked, ErrDropped if the pool
// discarded the task without running it, or an error matching the cause of
// Shutdown's deadline if Shutdown abandoned it (Wait returns at that
// deadline even if fn never returns). When ctx ends first, Wait returns the
// zero T and ctx.Err(); the task goes on, and a later Wait still gets its
// result. A nil ctx is an error.
func (f *Future[T]) Wait(ctx context.Context) (T, error) {
	var zero T
	if ctx == nil {
		return zero, errors.New("bgpool: Future.Wait: nil context")
	}
	err, ended := f.c.wait(ctx)
	if ended && f.c.returned {
		return f.value, err
	}
	return zero, err
}

// Done returns a channel that is closed when the task has ended, in any
// outcome: returned, panicked, discarded without running, or abandoned by
// Shutdown (at its deadline, even if fn never returns). Wait then returns
// at once.
//
// The first call to Done on a Future whose task has not ended registers a
// watch on the pool's abandonment (about 100 ns and two allocations), which
// the task's end removes.
func (f *Future[T]) Done() <-chan struct{} {
	if f.watching.CompareAndSwap(false, true) {
		f.mu.Lock()
		if f.c.state.Load() != awaitEnded {
			p := f.c.pool
			f.unwatch = context.AfterFunc(p.base, func() { f.c.end(p.abandonErr(), false) })
		}
		f.mu.Unlock()
	}
	return f.c.done
}

// run runs fn; it is called by awaited.run.
func (f *Future[T]) run(ctx context.Context) error {
	v, err := f.fn(ctx)
	f.value = v
	return err
}

// ended removes Done's watch, if any. awaited.end calls it once, after
// marking the awaited ended, and Done marks watching before it looks at that
// state (both sequentially consistent atomics), so either ended sees the
// watch, registered under mu, or Done sees the end and registers none.
func (f *Future[T]) ended() {
	if !f.watching.Load() {
		return
	}
	f.mu.Lock()
	if f.unwatch != nil {
		f.unwatch()
	}
	f.mu.Unlock()
}
