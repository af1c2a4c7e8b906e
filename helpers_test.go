package bgpool_test

// Helpers shared by the root package's tests. A helper that waits does so
// for a bounded time and fails the test instead of hanging, and whatever a
// helper starts is stopped by the test's cleanup.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgpool/bgpool"
)

// newPool returns a pool of size workers built with opts, which the test's
// cleanup shuts down, abandoning whatever is left after 10s. A test that
// wants the pool's log kept quiet passes quietLogger().
func newPool(t *testing.T, size int, opts ...bgpool.Option) *bgpool.Pool {
	t.Helper()
	p, err := bgpool.New(size, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
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

// occupy holds n free workers of p with tasks that ignore their context
// and return only when release is called, which the test's cleanup also
// does. It returns once all n have started, failing the test if they have
// not within 10s.
func occupy(t *testing.T, p *bgpool.Pool, n int) (release func()) {
	t.Helper()
	started, finish := make(chan struct{}, n), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(finish) }) }
	t.Cleanup(release)
	for range n {
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
			started <- struct{}{}
			<-finish
			return nil
		}))
	}
	for i := range n {
		receive(t, started, 10*time.Second, fmt.Sprintf("only %d of %d occupying tasks started", i, n))
	}
	return release
}

// gate is a task that tells when it starts and holds its worker until
// released.
type gate struct {
	started chan struct{}
	release chan struct{}
}

func newGate(capacity int) *gate {
	return &gate{started: make(chan struct{}, capacity), release: make(chan struct{})}
}

func (g *gate) task(ctx context.Context) error {
	g.started <- struct{}{}
	<-g.release
	return nil
}

func (g *gate) waitStarted(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-g.started:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d gated tasks started", i, n)
		}
	}
}

func (g *gate) open() { close(g.release) }

// assertBalanced checks that s accounts for every submitted task:
// Submitted == Ended()+Queued+Running, with Queued and Running not
// negative. It reports whether s does; msgAndArgs, if any, are added to
// the failure message.
func assertBalanced(t *testing.T, s bgpool.Stats, msgAndArgs ...any) bool {
	t.Helper()
	if s.Queued >= 0 && s.Running >= 0 && s.Submitted == s.Ended()+uint64(s.Queued)+uint64(s.Running) {
		return true
	}
	return assert.Fail(t, fmt.Sprintf("Stats do not add up: Submitted = Ended()+Queued+Running: %+v", s), msgAndArgs...)
}

// noop is a task that does nothing.
func noop(context.Context) error { return nil }

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

var _ io.Writer = (*syncBuffer)(nil)

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
