package bgpool_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/bgpool/bgpool"
)

func TestTaskContextKeepsValuesButNotCancellation(t *testing.T) {
	p := newPool(t, 1)
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), valueKey{}, "trace-42"))
	release := make(chan struct{})
	type seen struct {
		value any
		err   error
		cause error
		child error
	}
	result := make(chan seen, 1)
	require.NoError(t, p.Submit(ctx, func(ctx context.Context) error {
		<-release
		child, stop := context.WithCancel(ctx)
		defer stop()
		result <- seen{ctx.Value(valueKey{}), ctx.Err(), context.Cause(ctx), child.Err()}
		return nil
	}))
	cancel() // the request is over
	close(release)
	got := <-result
	assert.Equal(t, "trace-42", got.value)
	assert.NoError(t, got.err, "the submitter's cancellation does not reach the task")
	assert.NoError(t, got.cause, "context.Cause does not report the submitter's cause")
	assert.NoError(t, got.child)
}

func TestTaskTimeoutCancelsTheTaskContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := bgpool.New(2, bgpool.WithTaskTimeout(time.Second),
			bgpool.WithErrorHandler(func(context.Context, error) {}))
		require.NoError(t, err)
		type seen struct {
			deadline time.Time
			err      error
			after    time.Duration
		}
		result := make(chan seen, 1)
		start := time.Now()
		require.NoError(t, p.Submit(context.Background(), func(ctx context.Context) error {
			d, _ := ctx.Deadline()
			<-ctx.Done()
			result <- seen{d, ctx.Err(), time.Since(start)}
			return ctx.Err()
		}))
		got := <-result
		assert.Equal(t, start.Add(time.Second), got.deadline)
		assert.ErrorIs(t, got.err, context.DeadlineExceeded)
		assert.Equal(t, time.Second, got.after)
		require.NoError(t, p.Shutdown(context.Background()))
		assert.Equal(t, uint64(1), p.Stats().Failed)
	})
}

func TestPanicsAreRecoveredCountedAndReported(t *testing.T) {
	var mu sync.Mutex
	var handled []error
	sentinel := errors.New("sentinel")
	p := newPool(t, 1, bgpool.WithErrorHandler(func(_ context.Context, err error) {
		mu.Lock()
		handled = append(handled, err)
		mu.Unlock()
	}))
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error { panic("boom") }))
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error { panic(sentinel) }))
	after := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error { close(after); return nil }))
	<-after // the single worker survived both panics
	shutdown(t, p)

	s := p.Stats()
	assert.Equal(t, uint64(2), s.Panicked)
	assert.Equal(t, uint64(1), s.Completed)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, handled, 2)
	var pe *bgpool.PanicError
	require.ErrorAs(t, handled[0], &pe)
	assert.Equal(t, "boom", pe.Value)
	assert.Contains(t, string(pe.Stack), "TestPanicsAreRecoveredCountedAndReported")
	assert.EqualError(t, pe, "bgpool: task panicked: boom")
	assert.NoError(t, pe.Unwrap())
	assert.ErrorIs(t, handled[1], sentinel, "Unwrap exposes an error panic value")
}

func TestErrorHandlerRunsBeforeTheTaskCountsAsFinished(t *testing.T) {
	var p *bgpool.Pool
	type seen struct {
		running int
		failed  uint64
		value   any
	}
	result := make(chan seen, 1)
	p = newPool(t, 1, bgpool.WithErrorHandler(func(ctx context.Context, err error) {
		s := p.Stats()
		result <- seen{s.Running, s.Failed, ctx.Value(valueKey{})}
	}))
	ctx := context.WithValue(context.Background(), valueKey{}, "v")
	require.NoError(t, p.Submit(ctx, func(context.Context) error { return errors.New("fail") }))
	got := <-result
	assert.Equal(t, 1, got.running)
	assert.Equal(t, uint64(0), got.failed)
	assert.Equal(t, "v", got.value, "the handler gets the task's context")
	shutdown(t, p)
	assert.Equal(t, uint64(1), p.Stats().Failed)
}

func TestDefaultErrorHandlerLogsToTheLogger(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	p := newPool(t, 1, bgpool.WithLogger(logger))
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error { return errors.New("disk full") }))
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error { panic("kaboom") }))
	shutdown(t, p)
	out := buf.String()
	assert.Contains(t, out, `msg="bgpool: task failed" error="disk full"`)
	assert.Contains(t, out, `msg="bgpool: task panicked" panic=kaboom stack=`)
}

func TestPanickingErrorHandlerIsRecovered(t *testing.T) {
	var buf syncBuffer
	p := newPool(t, 1, bgpool.WithLogger(slog.New(slog.NewTextHandler(&buf, nil))),
		bgpool.WithErrorHandler(func(context.Context, error) { panic("handler bug") }))
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error { return errors.New("x") }))
	require.NoError(t, p.Submit(context.Background(), noop))
	shutdown(t, p)
	s := p.Stats()
	assert.Equal(t, uint64(1), s.Failed)
	assert.Equal(t, uint64(1), s.Completed)
	assert.Contains(t, buf.String(), "error handler panicked")
}

func TestTaskCallingGoexitIsCountedAndReplaced(t *testing.T) {
	p := newPool(t, 1)
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		runtime.Goexit()
		return nil
	}))
	done := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error { close(done); return nil }))
	<-done
	shutdown(t, p)
	s := p.Stats()
	assert.Equal(t, uint64(1), s.Failed)
	assert.Equal(t, uint64(1), s.Completed)
}

func TestRateLimitCapsTaskStarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit, burst, tasks = 10, 3, 30
		p, err := bgpool.New(4, bgpool.WithQueueSize(tasks), bgpool.WithRateLimit(limit, burst))
		require.NoError(t, err)
		var mu sync.Mutex
		var starts []time.Time
		begin := time.Now()
		for i := 0; i < tasks; i++ {
			require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
				mu.Lock()
				starts = append(starts, time.Now())
				mu.Unlock()
				return nil
			}))
		}
		assert.Equal(t, begin, time.Now(), "Submit never waits for a token")
		require.NoError(t, p.Shutdown(context.Background()))

		require.Len(t, starts, tasks)
		// Token bucket: any k consecutive starts span at least (k-burst)/limit.
		for i := range starts {
			for j := i + burst; j < len(starts); j++ {
				minSpan := time.Duration(float64(j-i+1-burst) / limit * float64(time.Second))
				assert.GreaterOrEqual(t, starts[j].Sub(starts[i]), minSpan-time.Millisecond,
					"starts %d..%d", i, j)
			}
		}
		total := starts[len(starts)-1].Sub(begin)
		want := time.Duration(float64(tasks-burst) / limit * float64(time.Second))
		assert.InDelta(t, want.Seconds(), total.Seconds(), 0.01, "the queue drains at the rate")
	})
}

func TestRateLimitedWorkersWaitForTokensHoldingTheirTasks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := bgpool.New(4, bgpool.WithQueueSize(2), bgpool.WithRateLimit(1, 1), bgpool.WithPolicy(bgpool.Reject))
		require.NoError(t, err)
		// One task takes the only token and completes; then each of the four
		// workers holds a task and waits for its token, and two tasks wait
		// in the queue. The next is rejected: every worker is taken and the
		// queue is full.
		for i := 0; i < 6; i++ {
			require.NoError(t, p.Submit(context.Background(), noop), "task %d", i)
		}
		synctest.Wait()
		require.NoError(t, p.Submit(context.Background(), noop), "the task that took the token made room")
		synctest.Wait()
		assert.ErrorIs(t, p.Submit(context.Background(), noop), bgpool.ErrOverloaded)
		s := p.Stats()
		assert.Equal(t, 6, s.Queued, "tasks waiting for a token count as Queued")
		assert.Equal(t, 0, s.Running)
		assert.Equal(t, uint64(1), s.Completed)
		assertBalanced(t, s)

		time.Sleep(2*time.Second + time.Millisecond) // a token a second
		synctest.Wait()
		assert.Equal(t, uint64(3), p.Stats().Completed)

		// Shutdown's deadline ends the wait for tokens: what is left is
		// abandoned, and Shutdown returns at its deadline.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		begin := time.Now()
		assert.ErrorIs(t, p.Shutdown(ctx), context.DeadlineExceeded)
		assert.Equal(t, 500*time.Millisecond, time.Since(begin))
		synctest.Wait()
		s = p.Stats()
		assert.Equal(t, uint64(4), s.Abandoned)
		assert.Equal(t, s.Submitted, s.Ended())
	})
}

func TestRateInfMeansNoLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := bgpool.New(2, bgpool.WithQueueSize(100), bgpool.WithRateLimit(rate.Inf, 1))
		require.NoError(t, err)
		begin := time.Now()
		for i := 0; i < 100; i++ {
			require.NoError(t, p.Submit(context.Background(), noop))
		}
		require.NoError(t, p.Shutdown(context.Background()))
		assert.Equal(t, begin, time.Now())
		assert.Equal(t, uint64(100), p.Stats().Completed)
	})
}

func TestMaxQueueWaitDropsTasksThatWaitedTooLong(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := bgpool.New(1, bgpool.WithQueueSize(5), bgpool.WithMaxQueueWait(time.Second))
		require.NoError(t, err)
		release := make(chan struct{})
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error { <-release; return nil }))
		ran := 0
		for i := 0; i < 3; i++ {
			require.NoError(t, p.Submit(context.Background(), func(context.Context) error { ran++; return nil }))
		}
		time.Sleep(2 * time.Second) // the queued tasks expire
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error { ran++; return nil }))
		close(release)
		require.NoError(t, p.Shutdown(context.Background()))
		s := p.Stats()
		assert.Equal(t, uint64(3), s.Dropped)
		assert.Equal(t, uint64(2), s.Completed)
		assert.Equal(t, 1, ran)
	})
}

func TestTaskTimeoutContextBehavesLikeContextWithDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := bgpool.New(1, bgpool.WithTaskTimeout(time.Second),
			bgpool.WithErrorHandler(func(context.Context, error) {}))
		require.NoError(t, err)
		type seen struct {
			value               any
			errBefore, errAfter error
			cause, childErr     error
			childDeadline       time.Time
			taskDeadline        time.Time
			afterFuncRan        bool
		}
		result := make(chan seen, 1)
		ctx := context.WithValue(context.Background(), valueKey{}, "v")
		require.NoError(t, p.Submit(ctx, func(ctx context.Context) error {
			var s seen
			s.value = ctx.Value(valueKey{})
			s.errBefore = ctx.Err()
			s.taskDeadline, _ = ctx.Deadline()
			// A task that never calls Done still sees the deadline pass.
			time.Sleep(2 * time.Second)
			s.errAfter = ctx.Err()
			s.cause = context.Cause(ctx)
			child, cancel := context.WithTimeout(ctx, time.Hour)
			defer cancel()
			s.childDeadline, _ = child.Deadline()
			<-child.Done()
			s.childErr = child.Err()
			ran := make(chan struct{})
			context.AfterFunc(ctx, func() { close(ran) })
			<-ran
			s.afterFuncRan = true
			result <- s
			return nil
		}))
		got := <-result
		assert.Equal(t, "v", got.value)
		assert.NoError(t, got.errBefore)
		assert.ErrorIs(t, got.errAfter, context.DeadlineExceeded)
		assert.ErrorIs(t, got.cause, context.DeadlineExceeded)
		assert.Equal(t, got.taskDeadline, got.childDeadline, "a child inherits the earlier deadline")
		assert.ErrorIs(t, got.childErr, context.DeadlineExceeded)
		assert.True(t, got.afterFuncRan)
		require.NoError(t, p.Shutdown(context.Background()))
	})
}

func TestTaskTimeoutContextsAreNeverShared(t *testing.T) {
	// A task may keep its context past its return (a goroutine it started,
	// a struct it stored): the contexts come in batches, and a kept one must
	// still be that task's after many more tasks on the same worker.
	synctest.Test(t, func(t *testing.T) {
		p, err := bgpool.New(1, bgpool.WithTaskTimeout(time.Hour))
		require.NoError(t, err)
		const tasks = 100 // several batches
		kept := make([]context.Context, tasks)
		deadlines := make([]time.Time, tasks)
		for i := range tasks {
			ctx := context.WithValue(context.Background(), valueKey{}, i)
			require.NoError(t, p.Do(ctx, func(ctx context.Context) error {
				kept[i] = ctx
				deadlines[i], _ = ctx.Deadline()
				return nil
			}))
			time.Sleep(time.Millisecond) // each its own deadline
		}
		for i, ctx := range kept {
			assert.Equal(t, i, ctx.Value(valueKey{}), "task %d's context answers its own values", i)
			d, ok := ctx.Deadline()
			assert.True(t, ok)
			assert.Equal(t, deadlines[i], d, "task %d's context keeps its deadline", i)
			if i > 0 {
				assert.NotSame(t, kept[i-1], ctx)
			}
		}
		require.NoError(t, p.Shutdown(context.Background()))
	})
}

func TestTaskTimeoutOfMaxInt64MeansNoLimit(t *testing.T) {
	p := newPool(t, 1, bgpool.WithTaskTimeout(math.MaxInt64))
	err := p.Do(context.Background(), func(ctx context.Context) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, ok := ctx.Deadline()
		if !ok || time.Until(d) < 100*365*24*time.Hour {
			return fmt.Errorf("deadline %v (%v) is not far in the future", d, ok)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		default:
			return nil
		}
	})
	assert.NoError(t, err, "a timeout of MaxInt64 saturates instead of overflowing")
}
