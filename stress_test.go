package bgpool_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

// builtinPolicies returns every built-in policy by name, and whether a
// Submit under it that returns nil may still see its task discarded.
func builtinPolicies() map[string]struct {
	policy   bgpool.Policy
	discards bool
} {
	return map[string]struct {
		policy   bgpool.Policy
		discards bool
	}{
		"Block":      {bgpool.Block, false},
		"BlockFor":   {bgpool.BlockFor(time.Millisecond), false},
		"Drop":       {bgpool.Drop, true},
		"Reject":     {bgpool.Reject, false},
		"DropOldest": {bgpool.DropOldest, true},
		"CallerRuns": {bgpool.CallerRuns, false},
	}
}

// Submit results, per call.
const (
	resultPending int32 = iota
	resultNil
	resultOverloaded
	resultClosed
	resultOther
)

func TestSubmitRacingShutdownFromManyGoroutines(t *testing.T) {
	for name, pol := range builtinPolicies() {
		t.Run(name, func(t *testing.T) {
			const goroutines, perGoroutine = 16, 300
			p, err := bgpool.New(4, bgpool.WithQueueSize(4), bgpool.WithPolicy(pol.policy))
			require.NoError(t, err)

			// One slot per call: what Submit returned, and how often its task ran.
			results := make([]atomic.Int32, goroutines*perGoroutine)
			runs := make([]atomic.Int32, goroutines*perGoroutine)
			var afterReturn, afterBegin atomic.Int64 // calls that began after Shutdown returned, began
			var lateNonClosed, earlyClosed atomic.Int64
			var shutdownBegan, shutdownReturned atomic.Bool

			start := make(chan struct{})
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					<-start
					for i := range perGoroutine {
						slot := g*perGoroutine + i
						task := func(context.Context) error {
							runs[slot].Add(1)
							if slot%7 == 0 {
								time.Sleep(50 * time.Microsecond)
							}
							return nil
						}
						returned, began := shutdownReturned.Load(), shutdownBegan.Load()
						if returned {
							afterReturn.Add(1)
						}
						if began {
							afterBegin.Add(1)
						}
						var err error
						if i%3 == 0 {
							err = p.TrySubmit(context.Background(), task)
						} else {
							err = p.Submit(context.Background(), task)
						}
						switch {
						case err == nil:
							results[slot].Store(resultNil)
						case errors.Is(err, bgpool.ErrClosed):
							results[slot].Store(resultClosed)
							if !shutdownBegan.Load() {
								earlyClosed.Add(1)
							}
						case errors.Is(err, bgpool.ErrOverloaded):
							results[slot].Store(resultOverloaded)
						default:
							results[slot].Store(resultOther)
						}
						if returned && !errors.Is(err, bgpool.ErrClosed) {
							lateNonClosed.Add(1)
						}
					}
				})
			}
			// Tune races Shutdown too; the cap never exceeds 4.
			wg.Go(func() {
				<-start
				for i := range 200 {
					p.Tune(1 + i%4)
				}
			})

			close(start)
			// Shut down when about half the calls are made.
			require.Eventually(t, func() bool { return p.Stats().Submitted >= goroutines*perGoroutine/2 },
				10*time.Second, 100*time.Microsecond)
			shutdownBegan.Store(true)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, p.Shutdown(ctx), "Shutdown drains: no task blocks")
			shutdownReturned.Store(true)
			wg.Wait()

			assert.Zero(t, earlyClosed.Load(), "ErrClosed before Shutdown began")
			assert.Zero(t, lateNonClosed.Load(), "a Submit that began after Shutdown returned did not get ErrClosed")

			var nils, overloaded, submitOverloaded, closed, other, ranTwice, ranRefused, lost uint64
			for i := range results {
				n := runs[i].Load()
				if n > 1 {
					ranTwice++
				}
				switch results[i].Load() {
				case resultNil:
					nils++
					if n == 0 && !pol.discards {
						lost++
					}
				case resultOverloaded:
					overloaded++
					if i%perGoroutine%3 != 0 {
						submitOverloaded++
					}
					if n != 0 {
						ranRefused++
					}
				case resultClosed:
					closed++
					if n != 0 {
						ranRefused++
					}
				default:
					other++
				}
			}
			assert.Zero(t, other, "Submit returned neither nil, ErrOverloaded nor ErrClosed")
			assert.Zero(t, ranTwice, "tasks that ran more than once")
			assert.Zero(t, ranRefused, "tasks that ran although Submit refused them")
			assert.Zero(t, lost, "tasks accepted with nil that never ran, under a policy that does not discard")
			if name == "Block" || name == "CallerRuns" || name == "Drop" || name == "DropOldest" {
				assert.Zero(t, submitOverloaded, "%s never returns ErrOverloaded from Submit with a live context; only TrySubmit may", name)
			}

			s := p.Stats()
			assert.Equal(t, uint64(goroutines*perGoroutine), s.Submitted)
			assertBalanced(t, s, "once shut down")
			assert.Equal(t, nils, s.Completed+s.Dropped, "Submit returned nil: the task completed or was dropped")
			assert.Equal(t, overloaded+closed, s.Rejected, "Submit returned an error: the task was rejected")
			assert.Zero(t, s.Abandoned)
			assert.Zero(t, s.Running)
			assert.Zero(t, s.Queued)
			t.Logf("nil %d, overloaded %d, closed %d (%d began after Shutdown began, %d after it returned); %+v",
				nils, overloaded, closed, afterBegin.Load(), afterReturn.Load(), s)
		})
	}
}

func TestShutdownTwiceConcurrentlyWithAnExpiringDeadline(t *testing.T) {
	tests := []struct {
		name      string
		deadlines [2]time.Duration // 0: no deadline
	}{
		{"both expire", [2]time.Duration{20 * time.Millisecond, 20 * time.Millisecond}},
		{"different deadlines", [2]time.Duration{5 * time.Millisecond, 40 * time.Millisecond}},
		{"one without deadline", [2]time.Duration{20 * time.Millisecond, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const size, queued = 3, 4
			p := newPool(t, size, bgpool.WithQueueSize(queued), bgpool.WithErrorHandler(func(context.Context, error) {}))
			started := make(chan struct{}, size)
			var returned atomic.Int64
			for range size {
				require.NoError(t, p.Submit(context.Background(), func(ctx context.Context) error {
					started <- struct{}{}
					<-ctx.Done() // only Shutdown's abandonment ends this task
					returned.Add(1)
					return ctx.Err()
				}))
			}
			for range size {
				<-started
			}
			for range queued {
				require.NoError(t, p.TrySubmit(context.Background(), noop))
			}

			type result struct {
				err     error
				elapsed time.Duration
			}
			results := make([]result, 2)
			var wg sync.WaitGroup
			begin := time.Now()
			for i, d := range tt.deadlines {
				wg.Go(func() {
					ctx, cancel := context.Background(), context.CancelFunc(func() {})
					if d > 0 {
						ctx, cancel = context.WithTimeout(ctx, d)
					}
					defer cancel()
					err := p.Shutdown(ctx)
					results[i] = result{err, time.Since(begin)}
				})
			}
			done := make(chan struct{})
			go func() {
				wg.Wait()
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("a concurrent Shutdown did not return")
			}

			for i, d := range tt.deadlines {
				got := results[i]
				require.Error(t, got.err, "Shutdown %d: the tasks outlived the deadline", i)
				if d > 0 {
					assert.Less(t, got.elapsed, d+500*time.Millisecond, "Shutdown %d returns at its deadline", i)
				}
				// The first deadline abandons; the other call either abandons
				// nothing more or reports the earlier abandonment.
				if !errors.Is(got.err, context.DeadlineExceeded) {
					assert.ErrorContains(t, got.err, "abandoned by an earlier Shutdown", "Shutdown %d", i)
				}
			}
			s := p.Stats()
			assert.Equal(t, uint64(size+queued), s.Abandoned, "every task abandoned once, not once per Shutdown")
			require.Eventually(t, func() bool { return returned.Load() == size }, 5*time.Second, time.Millisecond,
				"the abandoned tasks see their context cancelled")
			require.Eventually(t, func() bool { return p.Stats().Running == 0 }, 5*time.Second, time.Millisecond)
			s = p.Stats()
			assert.Equal(t, uint64(size+queued), s.Abandoned, "abandoned tasks that return are not counted again")
			assert.Equal(t, s.Submitted, s.Ended(), "%+v", s)
			assert.ErrorContains(t, p.Shutdown(context.Background()), fmt.Sprintf("%d tasks were abandoned", size+queued))
		})
	}
}

func TestShutdownReleasesEveryWorkerBlockedSubmittingToItsOwnPool(t *testing.T) {
	// Every worker runs a task that submits to its own full pool with the
	// task's context, which nothing cancels: under Block they would wait
	// forever (ants #197 deadlocks here for good). Shutdown must stop the
	// waits, let the tasks return and drain without abandoning anything.
	for name, pol := range builtinPolicies() {
		t.Run(name, func(t *testing.T) {
			const size = 3
			p, err := bgpool.New(size, bgpool.WithQueueSize(1), bgpool.WithPolicy(pol.policy))
			require.NoError(t, err)
			started := make(chan struct{}, size)
			begin := make(chan struct{})
			submitted := make(chan error, 4*size)
			for range size {
				require.NoError(t, p.Submit(context.Background(), func(ctx context.Context) error {
					started <- struct{}{}
					<-begin // every worker is taken: the queue is the only room
					for range 4 {
						submitted <- p.Submit(ctx, noop)
					}
					return nil
				}))
			}
			for range size {
				<-started
			}
			close(begin)
			// Wait until the nested submits have filled the queue and, under
			// Block, wait for room that never comes.
			require.Eventually(t, func() bool { s := p.Stats(); return s.Submitted+uint64(s.Waiting) >= size+2 }, 5*time.Second, time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, p.Shutdown(ctx), "Shutdown drains without abandoning")
			close(submitted)
			for err := range submitted {
				if err != nil {
					assert.True(t, errors.Is(err, bgpool.ErrClosed) || errors.Is(err, bgpool.ErrOverloaded),
						"a nested Submit: got %v, want nil, ErrClosed or ErrOverloaded", err)
				}
			}
			s := p.Stats()
			assert.Equal(t, uint64(size*5), s.Submitted)
			assert.Equal(t, s.Submitted, s.Ended(), "%+v", s)
			assert.Zero(t, s.Abandoned)
		})
	}
}

func TestBlockedSubmittersOfAHandOffOnlyPoolAllGetAWorker(t *testing.T) {
	// A queue of size zero: a Submit that finds no parked worker waits for
	// one, and a worker that parks as it starts waiting must still reach
	// it. Many submitters and a few workers make that race common; a lost
	// wake-up leaves a submitter waiting for ever, and the test hangs.
	for _, workers := range []int{1, 2, 4} {
		t.Run(fmt.Sprint(workers, " workers"), func(t *testing.T) {
			const goroutines, perGoroutine = 8, 2000
			p, err := bgpool.New(workers, bgpool.WithQueueSize(0))
			require.NoError(t, err)
			var ran atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, goroutines)
			for range goroutines {
				wg.Go(func() {
					for range perGoroutine {
						if err := p.Submit(context.Background(), func(context.Context) error { ran.Add(1); return nil }); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second): // a hang, not a slow run: the test takes about 0.1 s
				t.Fatalf("submitters still waiting after 30 s: %+v", p.Stats())
			}
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			require.NoError(t, p.Shutdown(context.Background()))
			assert.Equal(t, int64(goroutines*perGoroutine), ran.Load())
			assertBalanced(t, p.Stats())
		})
	}
}

func TestOneSubmitterOneWorkerRunsTasksInSubmissionOrder(t *testing.T) {
	// One worker and one submitter that submits task after task: the
	// worker runs them one at a time, so they must run in the order Submit
	// returned. A task that enters the queue just as the worker parks must
	// not be overtaken by the next one, however the next one reaches the
	// worker: through the queue, handed over to it asleep, or through the
	// paths of pools that stamp their tasks or control overload.
	for _, c := range []struct {
		name string
		opts []bgpool.Option
	}{
		{"a queue of 64", []bgpool.Option{bgpool.WithQueueSize(64)}},
		{"a queue of 1", []bgpool.Option{bgpool.WithQueueSize(1)}},
		{"no queue", []bgpool.Option{bgpool.WithQueueSize(0)}},
		{"an observer", []bgpool.Option{bgpool.WithQueueSize(64), bgpool.WithObserver(func(bgpool.TaskEvent) {})}},
		{"a queue delay target", []bgpool.Option{bgpool.WithQueueSize(64), bgpool.WithQueueDelayTarget(time.Second)}},
		{"adaptive concurrency", []bgpool.Option{bgpool.WithQueueSize(64), bgpool.WithAdaptiveConcurrency(1, 1)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := bgpool.New(1, c.opts...)
			require.NoError(t, err)
			n := 200000
			if testing.Short() {
				n = 20000
			}
			var mu sync.Mutex
			next, inversions, first := 0, 0, -1
			for i := range n {
				require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
					mu.Lock()
					if i != next {
						inversions++
						if first < 0 {
							first = i
						}
					}
					next = max(next, i+1)
					mu.Unlock()
					return nil
				}))
				if i%64 == 0 {
					runtime.Gosched() // let the worker empty the queue and park
				}
			}
			require.NoError(t, p.Shutdown(context.Background()))
			assert.Zero(t, inversions, "tasks run out of submission order (first at task %d)", first)
			assert.Equal(t, n, next, "every task ran")
		})
	}
}
