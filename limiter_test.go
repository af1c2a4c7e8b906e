package bgpool_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/bgpool/bgpool"
)

// gateLimiter is a Limiter whose Wait blocks until a token is put in its
// channel, or returns err when err is set.
type gateLimiter struct {
	tokens chan struct{}
	err    error
	waits  atomic.Int64
}

func (l *gateLimiter) Wait(ctx context.Context) error {
	l.waits.Add(1)
	if l.err != nil {
		return l.err
	}
	select {
	case <-l.tokens:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestWithLimiterGatesEveryTaskStart(t *testing.T) {
	l := &gateLimiter{tokens: make(chan struct{})}
	p := newPool(t, 2, bgpool.WithLimiter(l), bgpool.WithQueueSize(10))
	var ran atomic.Int64
	for range 3 {
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error { ran.Add(1); return nil }))
	}
	require.Eventually(t, func() bool { return l.waits.Load() == 2 }, 5*time.Second, time.Millisecond,
		"each worker waits for a token with the task it took")
	assert.Zero(t, ran.Load(), "no task starts without a token")
	s := p.Stats()
	assert.Equal(t, 3, s.Queued, "tasks waiting for a token are Queued")
	for range 3 {
		l.tokens <- struct{}{}
	}
	shutdown(t, p)
	assert.Equal(t, int64(3), ran.Load())
}

func TestASlowLimiterDoesNotHoldShutdownPastItsDeadline(t *testing.T) {
	l := &gateLimiter{tokens: make(chan struct{})} // never gives a token
	var seen sync.Map
	p := newPool(t, 1, bgpool.WithLimiter(l), bgpool.WithObserver(func(ev bgpool.TaskEvent) {
		seen.Store(ev.Outcome, true)
	}))
	require.NoError(t, p.Submit(context.Background(), noop))
	require.Eventually(t, func() bool { return l.waits.Load() == 1 }, 5*time.Second, time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	begin := time.Now()
	err := p.Shutdown(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(begin), time.Second, "Shutdown returns by its deadline")
	s := p.Stats()
	assert.Equal(t, uint64(1), s.Abandoned, "the task waiting for its token is abandoned: %+v", s)
	assert.Equal(t, s.Submitted, s.Ended())
	require.Eventually(t, func() bool { _, ok := seen.Load(bgpool.OutcomeAbandoned); return ok }, 5*time.Second, time.Millisecond)
}

func TestAFailingLimiterDropsTheTaskAndReportsIt(t *testing.T) {
	boom := errors.New("limiter down")
	l := &gateLimiter{err: boom}
	var handled atomic.Value
	p := newPool(t, 1, bgpool.WithLimiter(l), bgpool.WithErrorHandler(func(_ context.Context, err error) {
		handled.Store(err)
	}))
	ran := false
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error { ran = true; return nil }))
	shutdown(t, p)
	assert.False(t, ran)
	s := p.Stats()
	assert.Equal(t, uint64(1), s.Dropped)
	assert.Equal(t, s.Submitted, s.Ended())
	err, _ := handled.Load().(error)
	assert.ErrorIs(t, err, boom)
}

func TestWithLimiterRejectsNil(t *testing.T) {
	_, err := bgpool.New(1, bgpool.WithLimiter(nil))
	assert.ErrorContains(t, err, "limiter must not be nil")
	_, err = bgpool.New(1, bgpool.WithLimiter((*gateLimiter)(nil)))
	assert.ErrorContains(t, err, "limiter must not be nil", "a typed nil is refused too")
}

// A later WithRateLimit replaces an earlier WithLimiter, as options of one
// kind do.
func TestWithRateLimitAndWithLimiterReplaceEachOther(t *testing.T) {
	l := &gateLimiter{tokens: make(chan struct{})}
	p := newPool(t, 1, bgpool.WithLimiter(l), bgpool.WithRateLimit(rate.Inf, 1))
	done := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error { close(done); return nil }))
	select {
	case <-done: // rate.Inf, the later option, means no limiter at all
	case <-time.After(5 * time.Second):
		t.Fatal("the task waited for the replaced limiter")
	}
	assert.Zero(t, l.waits.Load())
}

type goexitLimiter struct{}

func (goexitLimiter) Wait(context.Context) error { runtime.Goexit(); return nil }

func TestALimiterThatCallsGoexitDropsTheTaskAndTellsDo(t *testing.T) {
	var events []bgpool.TaskEvent
	var mu sync.Mutex
	p := newPool(t, 1, quietLogger(), bgpool.WithLimiter(goexitLimiter{}), bgpool.WithObserver(func(ev bgpool.TaskEvent) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}))
	var ran atomic.Bool
	done := make(chan error, 1)
	go func() {
		done <- p.Do(context.Background(), func(context.Context) error { ran.Store(true); return nil })
	}()
	assert.ErrorIs(t, receive(t, done, 5*time.Second, "Do did not return"), bgpool.ErrDropped)
	shutdown(t, p)
	assert.False(t, ran.Load())
	s := p.Stats()
	assert.Equal(t, uint64(1), s.Dropped, "%+v", s)
	assert.Equal(t, uint64(0), s.Failed, "%+v", s)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, events, 1)
	assert.False(t, events[0].Started, "the task never started")
}

// A task that waits for a rate-limit token starts once the token arrives,
// and Shutdown then drains the pool.
func TestRateLimitedTaskStartsOnceATokenArrives(t *testing.T) {
	p := newPool(t, 1, bgpool.WithRateLimit(10, 1))
	require.NoError(t, p.Submit(context.Background(), noop))
	waitStats(t, p, idleWith(1)) // the first task took the only token
	time.Sleep(10 * time.Millisecond)

	ran := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		close(ran)
		return nil
	}))
	receive(t, ran, 2*time.Second, "a task that waited for a rate-limit token did not start")
	assert.NoError(t, receive(t, shutdownAsync(context.Background(), p), 2*time.Second, "Shutdown did not return"))
}
