package bgpool_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

func TestFutureReturnsWhatTheTaskReturned(t *testing.T) {
	p := newPool(t, 2, quietLogger())
	ctx := context.WithValue(context.Background(), requestKey{}, "42")

	f, err := bgpool.Submit(ctx, p, func(ctx context.Context) (int, error) {
		return strconv.Atoi(ctx.Value(requestKey{}).(string))
	})
	require.NoError(t, err)
	got, err := f.Wait(context.Background())
	assert.NoError(t, err)
	assert.Equal(t, 42, got)
	got, err = f.Wait(context.Background())
	assert.Equal(t, 42, got, "a second Wait gets the same result")
	assert.NoError(t, err)

	f2, err := bgpool.Submit(ctx, p, func(context.Context) (string, error) { return "partial", errLookup })
	require.NoError(t, err)
	s, err := f2.Wait(context.Background())
	assert.Equal(t, errLookup, err)
	assert.Equal(t, "partial", s, "the value is returned with the error, as the task returned it")

	f3, err := bgpool.Submit(ctx, p, func(context.Context) (*int, error) { panic("no") })
	require.NoError(t, err)
	ptr, err := f3.Wait(context.Background())
	var pe *bgpool.PanicError
	assert.ErrorAs(t, err, &pe)
	assert.Nil(t, ptr)
	<-f3.Done()
}

func TestFutureOfADroppedTaskReportsErrDropped(t *testing.T) {
	tests := []struct {
		name string
		opts []bgpool.Option
	}{
		{"Drop", []bgpool.Option{bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.Drop)}},
		{"DropOldest", []bgpool.Option{bgpool.WithQueueSize(1), bgpool.WithPolicy(bgpool.DropOldest)}},
		// Long enough that the task occupying the worker never expires,
		// however slowly its worker starts on a loaded machine.
		{"expired in the queue", []bgpool.Option{bgpool.WithQueueSize(1), bgpool.WithMaxQueueWait(500 * time.Millisecond)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(t, 1, tt.opts...)
			release := occupy(t, p, 1)
			f, err := bgpool.Submit(context.Background(), p, func(context.Context) (int, error) { return 1, nil })
			require.NoError(t, err, "Submit returns nil for a task that the pool drops")
			done := f.Done()
			if tt.name == "DropOldest" { // the future's task is the oldest: the next one drops it
				_, err := bgpool.Submit(context.Background(), p, func(context.Context) (int, error) { return 2, nil })
				require.NoError(t, err)
			}
			if tt.name == "expired in the queue" {
				time.Sleep(600 * time.Millisecond)
				release()
			}
			receive(t, done, 2*time.Second, "Done was not closed")
			got, err := f.Wait(context.Background())
			assert.ErrorIs(t, err, bgpool.ErrDropped)
			assert.Zero(t, got)
			release()
			s := waitStats(t, p, func(s bgpool.Stats) bool { return s.Running == 0 && s.Queued == 0 })
			assert.Equal(t, uint64(1), s.Dropped)
			assertBalanced(t, s)
		})
	}
}

func TestFutureWaitWhenCtxEnds(t *testing.T) {
	p := newPool(t, 1)
	finish := make(chan struct{})
	f, err := bgpool.Submit(context.Background(), p, func(context.Context) (string, error) {
		<-finish
		return "late", nil
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	got, err := f.Wait(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Empty(t, got)

	close(finish)
	got, err = f.Wait(context.Background())
	assert.NoError(t, err, "a later Wait gets the result")
	assert.Equal(t, "late", got)
}

func TestFutureAbandonedByShutdown(t *testing.T) {
	p := newPool(t, 1, quietLogger())
	started, finish := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(finish) })
	running, err := bgpool.Submit(context.Background(), p, func(context.Context) (int, error) {
		close(started)
		<-finish // ignores its context
		return 1, nil
	})
	require.NoError(t, err)
	queued, err := bgpool.Submit(context.Background(), p, func(context.Context) (int, error) { return 2, nil })
	require.NoError(t, err)
	receive(t, started, 2*time.Second, "the task did not start")
	done := running.Done()

	err = shutdownWithin(t, p, 20*time.Millisecond, 2*time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	receive(t, done, time.Second, "Done was not closed at Shutdown's deadline")
	for _, f := range []*bgpool.Future[int]{running, queued} {
		got, err := f.Wait(context.Background())
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Zero(t, got)
	}
}

func TestFutureAdmissionErrors(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.Reject))
	release := occupy(t, p, 1)
	f, err := bgpool.Submit(context.Background(), p, func(context.Context) (int, error) { return 1, nil })
	assert.ErrorIs(t, err, bgpool.ErrOverloaded)
	assert.Nil(t, f)
	release()
	waitStats(t, p, idleWith(1))

	_, err = bgpool.Submit[int](context.Background(), p, nil)
	assert.ErrorContains(t, err, "nil task")
	//lint:ignore SA1012 a nil context is the bad input under test
	_, err = bgpool.Submit(nil, p, func(context.Context) (int, error) { return 1, nil })
	assert.ErrorContains(t, err, "nil context")

	f, err = bgpool.Submit(context.Background(), p, func(context.Context) (int, error) { return 1, nil })
	require.NoError(t, err)
	//lint:ignore SA1012 a nil context is the bad input under test
	_, err = f.Wait(nil)
	assert.ErrorContains(t, err, "nil context")
	got, err := f.Wait(context.Background())
	assert.NoError(t, err)
	assert.Equal(t, 1, got)
	<-f.Done() // after the end: no watch is registered, and the channel is closed
}

// TestWaitingAllocations checks the allocations that the docs promise: a
// Future costs itself and its channel, Do the same, a Group task its
// record, all with a task value made once and a submitter's context with
// values (a worker runs each task; the pool allocates nothing per task).
func TestWaitingAllocations(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(128)) // no Submit waits for room
	ctx := context.WithValue(context.Background(), requestKey{}, "req")
	fn := func(context.Context) (int, error) { return 1, nil }
	task := func(context.Context) error { return nil }
	require.NoError(t, p.Do(ctx, task)) // start the worker

	future := testing.AllocsPerRun(1000, func() {
		f, _ := bgpool.Submit(ctx, p, fn)
		_, _ = f.Wait(ctx)
	})
	assert.Equal(t, 2.0, future, "Submit[T] and Future.Wait: the Future and its channel")

	do := testing.AllocsPerRun(1000, func() { _ = p.Do(ctx, task) })
	assert.Equal(t, 1.0, do, "Do: its record (its channel is recycled)")
	background := testing.AllocsPerRun(1000, func() { _ = p.Do(context.Background(), task) })
	assert.Equal(t, 1.0, background, "Do with Background: its record")

	group := testing.AllocsPerRun(100, func() {
		g, _ := p.NewGroup(ctx)
		for range 100 {
			_ = g.Submit(task)
		}
		_ = g.Wait()
	})
	assert.Equal(t, 108.0, group, "a Group of 100 tasks: a record per task, eight for NewGroup and Wait")
}
