package bgpool_test

// Helpers shared by the root package's tests. A helper that waits does so
// for a bounded time and fails the test instead of hanging, and whatever a
// helper starts is stopped by the test's cleanup.

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgpool/bgpool"
)

// defectPool returns a pool that the test's cleanup shuts down with a short
// deadline, so that a test failing on a hang does not wait long for it.
func defectPool(t *testing.T, size int, opts ...bgpool.Option) *bgpool.Pool {
	t.Helper()
	p, err := bgpool.New(size, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { stopPool(p) })
	return p
}

// stopPool shuts p down, abandoning whatever is left after a second.
func stopPool(p *bgpool.Pool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.Shutdown(ctx)
}

// quietLogger discards the pool's log: some of these tests fail tasks on
// purpose.
func quietLogger() bgpool.Option {
	return bgpool.WithLogger(slog.New(slog.DiscardHandler))
}

// receive returns the next value from ch, failing the test if none arrives
// within d.
func receive[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch: // arrived (or ch was closed) in time
		return v
	case <-time.After(d): // the defect: it never arrives
		t.Fatalf("%s within %v", what, d)
		var zero T
		return zero
	}
}

// shutdownAsync calls p.Shutdown(ctx) on a goroutine of its own, so that the
// test can bound how long it waits for it.
func shutdownAsync(ctx context.Context, p *bgpool.Pool) <-chan error {
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(ctx) }()
	return done
}

// shutdownWithin shuts p down with a deadline of deadline and fails the test
// if Shutdown has not returned within wait.
func shutdownWithin(t *testing.T, p *bgpool.Pool, deadline, wait time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	return receive(t, shutdownAsync(ctx, p), wait, "Shutdown did not return")
}

// hold occupies one free worker of p with a task that ignores its context
// and returns only when release is called, which the test's cleanup also
// does.
func hold(t *testing.T, p *bgpool.Pool) (release func()) {
	t.Helper()
	started, finish := make(chan struct{}), make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		close(started)
		<-finish
		return nil
	}))
	receive(t, started, 2*time.Second, "the holding task did not start")
	var once sync.Once
	release = func() { once.Do(func() { close(finish) }) }
	t.Cleanup(release)
	return release
}

// waitStats polls p.Stats until cond holds, failing the test after 2s.
func waitStats(t *testing.T, p *bgpool.Pool, cond func(bgpool.Stats) bool) bgpool.Stats {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		s := p.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stats did not reach the expected state within 2s: %+v", s)
		}
		time.Sleep(time.Millisecond)
	}
}

// idleWith reports whether s shows no task queued or running and completed
// tasks done.
func idleWith(completed uint64) func(bgpool.Stats) bool {
	return func(s bgpool.Stats) bool {
		return s.Completed == completed && s.Running == 0 && s.Queued == 0
	}
}

// balanced reports whether s accounts for every submitted task: Submitted ==
// Completed+Failed+Panicked+Dropped+Rejected+Abandoned+HandedOff+Queued+Running, with
// Queued and Running not negative.
func balanced(s bgpool.Stats) bool {
	if s.Queued < 0 || s.Running < 0 {
		return false
	}
	return s.Submitted == s.Ended()+uint64(s.Queued)+uint64(s.Running)
}

// verifyNoLeak waits up to 3s for the goroutines started since opt was taken
// to exit, then reports any that are left.
func verifyNoLeak(t *testing.T, opt goleak.Option) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		if goleak.Find(opt) == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	goleak.VerifyNone(t, opt)
}
