package bgpool_test

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

func TestDoReturnsHowTheTaskEnded(t *testing.T) {
	tests := []struct {
		name  string
		task  bgpool.Task
		check func(t *testing.T, err error)
	}{
		{"nil for a task that returns nil", noop, func(t *testing.T, err error) {
			assert.NoError(t, err)
		}},
		{"the task's own error", func(context.Context) error { return errLookup }, func(t *testing.T, err error) {
			assert.Equal(t, errLookup, err)
		}},
		{"a *PanicError for a panic", func(context.Context) error { panic(errLookup) }, func(t *testing.T, err error) {
			var pe *bgpool.PanicError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, errLookup, pe.Value)
			assert.ErrorIs(t, err, errLookup, "PanicError unwraps an error value")
		}},
		{"an error for runtime.Goexit", func(context.Context) error { runtime.Goexit(); return nil }, func(t *testing.T, err error) {
			assert.ErrorContains(t, err, "Goexit")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(t, 1, quietLogger())
			tt.check(t, p.Do(context.Background(), tt.task))
			s := waitStats(t, p, func(s bgpool.Stats) bool { return s.Running == 0 && s.Submitted == 1 })
			assertBalanced(t, s)
		})
	}
}

func TestDoTaskSeesValuesNotCancellation(t *testing.T) {
	p := newPool(t, 1)
	ctx := context.WithValue(context.Background(), requestKey{}, "req-1")
	err := p.Do(ctx, func(ctx context.Context) error {
		if got := ctx.Value(requestKey{}); got != "req-1" {
			return errors.New("the task lost the submitter's values")
		}
		if ctx.Done() != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		return nil
	})
	assert.NoError(t, err)
}

func TestDoWhenCtxEnds(t *testing.T) {
	t.Run("while the task is queued", func(t *testing.T) {
		p := newPool(t, 1)
		release := occupy(t, p, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		var ran atomic.Bool
		begin := time.Now()
		err := p.Do(ctx, func(ctx context.Context) error {
			ran.Store(true)
			return ctx.Err()
		})
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(begin), time.Second, "Do returns when ctx ends")
		assert.Equal(t, 1, p.Stats().Queued, "the task stays queued")
		release()
		s := waitStats(t, p, idleWith(2))
		assert.True(t, ran.Load(), "the task runs later, with a context that is not cancelled")
		assertBalanced(t, s)
	})

	t.Run("while the task runs", func(t *testing.T) {
		p := newPool(t, 1)
		ctx, cancel := context.WithCancel(context.Background())
		started, finish := make(chan struct{}), make(chan struct{})
		taskErr := make(chan error, 1)
		done := make(chan error, 1)
		go func() {
			done <- p.Do(ctx, func(ctx context.Context) error {
				close(started)
				<-finish
				taskErr <- ctx.Err()
				return nil
			})
		}()
		receive(t, started, 2*time.Second, "the task did not start")
		cancel()
		assert.ErrorIs(t, receive(t, done, time.Second, "Do did not return when ctx ended"), context.Canceled)
		assert.Equal(t, 1, p.Stats().Running, "the task goes on")
		close(finish)
		assert.NoError(t, receive(t, taskErr, 2*time.Second, "the task did not finish"), "the task's context was not cancelled")
		waitStats(t, p, idleWith(1))
	})

	t.Run("after the task ended, its result wins", func(t *testing.T) {
		p := newPool(t, 1, bgpool.WithPolicy(bgpool.CallerRuns), bgpool.WithQueueSize(0), quietLogger())
		release := occupy(t, p, 1)
		defer release()
		ctx, cancel := context.WithCancel(context.Background())
		err := p.Do(ctx, func(context.Context) error {
			cancel() // ctx ends while the task runs on the caller, before Do waits
			return errLookup
		})
		assert.Equal(t, errLookup, err)
	})
}

func TestDoAdmissionErrors(t *testing.T) {
	t.Run("Reject on a saturated pool", func(t *testing.T) {
		p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.Reject))
		occupy(t, p, 1)
		assert.ErrorIs(t, p.Do(context.Background(), noop), bgpool.ErrOverloaded)
	})
	t.Run("Block until ctx ends", func(t *testing.T) {
		p := newPool(t, 1, bgpool.WithQueueSize(0))
		occupy(t, p, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		err := p.Do(ctx, noop)
		assert.ErrorIs(t, err, bgpool.ErrOverloaded)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	})
	t.Run("after Shutdown", func(t *testing.T) {
		p := newPool(t, 1)
		shutdown(t, p)
		assert.ErrorIs(t, p.Do(context.Background(), noop), bgpool.ErrClosed)
	})
	t.Run("bad input", func(t *testing.T) {
		p := newPool(t, 1)
		assert.ErrorContains(t, p.Do(context.Background(), nil), "nil task")
		//lint:ignore SA1012 a nil context is the bad input under test
		assert.ErrorContains(t, p.Do(nil, noop), "nil context")
		assert.Equal(t, uint64(2), p.Stats().Rejected)
	})
}

func TestDoDroppedTaskReportsErrDropped(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.Drop))
	occupy(t, p, 1)
	assert.ErrorIs(t, p.Do(context.Background(), noop), bgpool.ErrDropped)
	assert.Equal(t, uint64(1), p.Stats().Dropped)
}

// TestDoTaskDoesNotLendItsNotification: a Do task submits a plain task with
// its own context, and that task is dropped. The drop must not be taken for
// the Do task's own end.
func TestDoTaskDoesNotLendItsNotification(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.Drop), quietLogger())
	err := p.Do(context.Background(), func(ctx context.Context) error {
		// The only worker runs this task: the plain task is dropped.
		if err := p.Submit(ctx, noop); err != nil {
			return err
		}
		time.Sleep(10 * time.Millisecond) // a wrong end would have reached Do by now
		return errLookup
	})
	assert.Equal(t, errLookup, err, "Do reports its own task's end, not the plain task's drop")
	assert.Equal(t, uint64(1), p.Stats().Dropped)
}

func TestDoAbandonedByShutdown(t *testing.T) {
	p := newPool(t, 1, quietLogger())
	started, finish := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(finish) })
	done := make(chan error, 1)
	go func() {
		done <- p.Do(context.Background(), func(context.Context) error {
			close(started)
			<-finish // ignores its context
			return nil
		})
	}()
	receive(t, started, 2*time.Second, "the task did not start")
	err := shutdownWithin(t, p, 20*time.Millisecond, 2*time.Second)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	err = receive(t, done, time.Second, "Do did not return at Shutdown's deadline")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "Do reports the abandonment")
	assert.ErrorContains(t, err, "shutdown deadline passed")
}

func TestDoWaitsDurablyInsideASynctestBubble(t *testing.T) {
	// A Do outside any bubble first: with one process-wide set of recycled
	// channels, the Do in the bubble below would wait on this call's
	// channel, which does not belong to the bubble, so its wait would not
	// be durable and the bubble's clock would never move: a hang.
	outside := newPool(t, 1)
	require.NoError(t, outside.Do(context.Background(), noop))
	synctest.Test(t, func(t *testing.T) {
		p, err := bgpool.New(1)
		require.NoError(t, err)
		require.NoError(t, p.Do(context.Background(), func(context.Context) error {
			time.Sleep(time.Second) // virtual: only a durable wait lets it pass
			return nil
		}))
		require.NoError(t, p.Shutdown(context.Background()))
	})
	require.NoError(t, outside.Do(context.Background(), noop), "and Do outside the bubble goes on")
}
