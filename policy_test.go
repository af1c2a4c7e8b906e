package bgpool_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

func TestBlockWaitsForRoom(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0))
	release := occupy(t, p, 1)
	ran := make(chan struct{})
	submitted := make(chan error, 1)
	go func() {
		submitted <- p.Submit(context.Background(), func(context.Context) error { close(ran); return nil })
	}()
	select {
	case err := <-submitted:
		t.Fatalf("Submit returned %v while the pool was full", err)
	case <-time.After(20 * time.Millisecond):
	}
	release()
	require.NoError(t, <-submitted)
	<-ran
}

func TestBlockGivesUpWhenTheContextEnds(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0))
	release := occupy(t, p, 1)
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err := p.Submit(ctx, noop)
	assert.ErrorIs(t, err, bgpool.ErrOverloaded)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, uint64(1), p.Stats().Rejected)

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	err = p.Submit(ctx, noop)
	assert.ErrorIs(t, err, bgpool.ErrOverloaded)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestBlockIsInterruptedByShutdown(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0))
	release := occupy(t, p, 1)
	submitted := make(chan error, 1)
	go func() { submitted <- p.Submit(context.Background(), noop) }()
	require.Eventually(t, func() bool { return p.Stats().Waiting == 1 }, 5*time.Second, time.Millisecond)
	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown(context.Background()) }()
	assert.ErrorIs(t, <-submitted, bgpool.ErrClosed)
	release()
	require.NoError(t, <-shut)
	s := p.Stats()
	assert.Equal(t, uint64(1), s.Rejected)
	assert.Equal(t, s.Submitted, s.Ended())
}

func TestBlockAdmitsWaitersInFIFOOrder(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0))
	release := occupy(t, p, 1)
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.Submit(context.Background(), func(context.Context) error {
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				return nil
			})
		}()
		// Each submitter is waiting before the next one starts.
		require.Eventually(t, func() bool { return p.Stats().Waiting == 1+i }, 5*time.Second, time.Millisecond)
		time.Sleep(time.Millisecond)
	}
	release()
	wg.Wait()
	shutdown(t, p)
	assert.Equal(t, []int{0, 1, 2, 3, 4}, order)
}

func TestBlockForWaitsAtMostD(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.BlockFor(20*time.Millisecond)))
	release := occupy(t, p, 1)
	defer release()
	start := time.Now()
	err := p.Submit(context.Background(), noop)
	elapsed := time.Since(start)
	assert.ErrorIs(t, err, bgpool.ErrOverloaded)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, elapsed, 20*time.Millisecond)

	p2 := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.BlockFor(0)))
	release2 := occupy(t, p2, 1)
	defer release2()
	assert.ErrorIs(t, p2.Submit(context.Background(), noop), bgpool.ErrOverloaded)
}

func TestBlockForSucceedsWhenRoomAppearsInTime(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.BlockFor(10*time.Second)))
	release := occupy(t, p, 1)
	go func() {
		time.Sleep(5 * time.Millisecond)
		release()
	}()
	require.NoError(t, p.Submit(context.Background(), noop))
}

func TestDropDiscardsTheNewTask(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(1), bgpool.WithPolicy(bgpool.Drop))
	release := occupy(t, p, 1)
	kept := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error { close(kept); return nil }))
	ran := false
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error { ran = true; return nil }), "Drop returns nil")
	release()
	shutdown(t, p)
	<-kept
	assert.False(t, ran)
	s := p.Stats()
	assert.Equal(t, uint64(1), s.Dropped)
	assert.Equal(t, uint64(2), s.Completed)
}

func TestRejectReturnsErrOverloadedAtOnce(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(1), bgpool.WithPolicy(bgpool.Reject))
	release := occupy(t, p, 1)
	require.NoError(t, p.Submit(context.Background(), noop))
	err := p.Submit(context.Background(), noop)
	assert.ErrorIs(t, err, bgpool.ErrOverloaded)
	assert.Equal(t, uint64(1), p.Stats().Rejected)
	release()
}

func TestDropOldestDropsTheOldestQueuedTask(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(2), bgpool.WithPolicy(bgpool.DropOldest))
	release := occupy(t, p, 1)
	var mu sync.Mutex
	var ran []string
	task := func(name string) bgpool.Task {
		return func(context.Context) error {
			mu.Lock()
			ran = append(ran, name)
			mu.Unlock()
			return nil
		}
	}
	for _, name := range []string{"a", "b", "c", "d"} {
		require.NoError(t, p.Submit(context.Background(), task(name)))
	}
	assert.Equal(t, 2, p.Stats().Queued)
	release()
	shutdown(t, p)
	assert.Equal(t, []string{"c", "d"}, ran)
	assert.Equal(t, uint64(2), p.Stats().Dropped)
}

func TestDropOldestWithoutAQueueDropsTheNewTask(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.DropOldest))
	release := occupy(t, p, 1)
	require.NoError(t, p.Submit(context.Background(), noop))
	assert.Equal(t, uint64(1), p.Stats().Dropped)
	release()
}

type valueKey struct{}

func TestCallerRunsRunsOnTheSubmittingGoroutine(t *testing.T) {
	var handled []error
	var mu sync.Mutex
	p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.CallerRuns),
		bgpool.WithTaskTimeout(time.Hour),
		bgpool.WithErrorHandler(func(_ context.Context, err error) {
			mu.Lock()
			handled = append(handled, err)
			mu.Unlock()
		}))
	release := occupy(t, p, 1)
	defer release()

	ctx := context.WithValue(context.Background(), valueKey{}, "v")
	ran := false
	var sawValue any
	var hasDeadline bool
	err := p.Submit(ctx, func(ctx context.Context) error {
		ran = true // no synchronisation needed: same goroutine, or the race detector complains
		sawValue = ctx.Value(valueKey{})
		_, hasDeadline = ctx.Deadline()
		return nil
	})
	require.NoError(t, err)
	assert.True(t, ran, "the task ran before Submit returned")
	assert.Equal(t, "v", sawValue)
	assert.True(t, hasDeadline, "the task timeout applies")

	require.NoError(t, p.Submit(ctx, func(context.Context) error { panic("caller boom") }), "a panic is recovered")
	require.NoError(t, p.Submit(ctx, func(context.Context) error { return errors.New("caller fail") }))

	s := p.Stats()
	assert.Equal(t, uint64(1), s.Completed)
	assert.Equal(t, uint64(1), s.Panicked)
	assert.Equal(t, uint64(1), s.Failed)
	assert.Equal(t, 1, s.Running, "CallerRuns tasks count as Running only while they run")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, handled, 2)
	var pe *bgpool.PanicError
	assert.ErrorAs(t, handled[0], &pe)
	assert.EqualError(t, handled[1], "caller fail")
}

func TestCustomPolicyCanCombineActions(t *testing.T) {
	blockThenDrop := bgpool.PolicyFunc(func(ctx context.Context, o *bgpool.Overflow) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
		defer cancel()
		if err := o.Wait(ctx); err == nil {
			return nil
		}
		return o.Drop()
	})
	p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(blockThenDrop))
	release := occupy(t, p, 1)
	require.NoError(t, p.Submit(context.Background(), noop))
	assert.Equal(t, uint64(1), p.Stats().Dropped)
	release()
}

func TestPolicyThatSettlesNothingCountsTheTaskRejected(t *testing.T) {
	custom := errors.New("custom refusal")
	tests := []struct {
		name    string
		returns error
		want    error
	}{
		{"returns nil", nil, bgpool.ErrOverloaded},
		{"returns its own error", custom, custom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lazy := bgpool.PolicyFunc(func(context.Context, *bgpool.Overflow) error { return tt.returns })
			p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(lazy))
			release := occupy(t, p, 1)
			defer release()
			assert.ErrorIs(t, p.Submit(context.Background(), noop), tt.want)
			assert.Equal(t, uint64(1), p.Stats().Rejected)
		})
	}
}

func TestOverflowActionsSettleOnlyOnce(t *testing.T) {
	var second error
	twice := bgpool.PolicyFunc(func(_ context.Context, o *bgpool.Overflow) error {
		err := o.Drop()
		second = o.Reject()
		return err
	})
	p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(twice))
	release := occupy(t, p, 1)
	defer release()
	require.NoError(t, p.Submit(context.Background(), noop))
	assert.ErrorContains(t, second, "already settled")
	s := p.Stats()
	assert.Equal(t, uint64(1), s.Dropped)
	assert.Equal(t, uint64(0), s.Rejected)
}

func TestDropOldestDropsAnOlderTaskWhenALaterSubmitterTakesTheRoom(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(1), bgpool.WithPolicy(bgpool.DropOldest))
	release := occupy(t, p, 1)
	defer release()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // a later submitter that takes any room at once
		for {
			select {
			case <-stop:
				return
			default:
				_ = p.TrySubmit(context.Background(), noop)
			}
		}
	})
	ownDropped := 0
	for range 2000 {
		f, err := bgpool.Submit(context.Background(), p, func(context.Context) (int, error) { return 0, nil })
		require.NoError(t, err)
		select {
		case <-f.Done(): // settled during its own Submit: dropped, although an older task was queued
			ownDropped++
		default:
		}
	}
	close(stop)
	wg.Wait()
	assert.Zero(t, ownDropped, "DropOldest dropped the new task while older ones were queued")
}

// A task that an overflow policy ends abnormally is still counted once: a
// caller-run task that calls runtime.Goexit counts Failed, a policy that
// panics counts the task Rejected and its panic reaches Submit's caller,
// and Overflow.Wait with a nil context returns an error.
func TestMisbehavingPolicyIsAccounted(t *testing.T) {
	t.Run("a caller-run task that calls runtime.Goexit counts Failed", func(t *testing.T) {
		p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.CallerRuns), quietLogger())
		release := occupy(t, p, 1)
		exited := make(chan struct{})
		go func() {
			defer close(exited) // runs as runtime.Goexit ends this goroutine
			_ = p.Submit(context.Background(), func(context.Context) error {
				runtime.Goexit()
				return nil
			})
		}()
		receive(t, exited, 2*time.Second, "the submitter running the task did not end")
		release()

		s := waitStats(t, p, idleWith(1))
		assertBalanced(t, s)
		assert.Equal(t, uint64(1), s.Failed)
	})

	t.Run("a policy that panics counts the task Rejected", func(t *testing.T) {
		p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.PolicyFunc(
			func(context.Context, *bgpool.Overflow) error { panic("policy boom") })))
		occupy(t, p, 1)

		var recovered any
		func() {
			defer func() { recovered = recover() }()
			_ = p.Submit(context.Background(), noop)
		}()
		assert.Contains(t, fmt.Sprint(recovered), "policy boom", "the policy's panic did not reach Submit's caller")
		s := p.Stats()
		assert.Equal(t, uint64(1), s.Rejected)
		assertBalanced(t, s)
	})

	t.Run("Overflow.Wait with a nil context returns an error", func(t *testing.T) {
		var waitErr error
		var waitPanic any
		p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.PolicyFunc(
			func(_ context.Context, o *bgpool.Overflow) error {
				func() {
					defer func() { waitPanic = recover() }()
					var noCtx context.Context
					waitErr = o.Wait(noCtx)
				}()
				return o.Reject()
			})))
		occupy(t, p, 1)

		err := p.Submit(context.Background(), noop)
		assert.Nil(t, waitPanic, "Wait(nil) panicked")
		assert.Error(t, waitErr)
		assert.ErrorIs(t, err, bgpool.ErrOverloaded)
	})
}
