package bgpool_test

// One test per known defect of the core, written before the fix: each states
// the behaviour the rewritten core must have. A test that would hang on the
// defect waits a bounded time and fails instead, and every pool is shut down
// with a short deadline by the test's cleanup, so a failing test leaves
// nothing running.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
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

func TestDefect01RateLimitedTaskStarts(t *testing.T) {
	p := defectPool(t, 1, bgpool.WithRateLimit(10, 1))
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

func TestDefect02SizeBeyondInt32(t *testing.T) {
	if strconv.IntSize < 64 {
		t.Skip("sizes beyond math.MaxInt32 need a 64-bit int")
	}
	huge := []int64{1 << 31, 1 << 32} // int64, so that the file compiles where int has 32 bits

	t.Run("New refuses a size beyond math.MaxInt32", func(t *testing.T) {
		for _, size := range huge {
			p, err := bgpool.New(int(size))
			if p != nil {
				stopPool(p)
			}
			assert.True(t, p == nil, "New(%d) returned a pool", size)
			if assert.Error(t, err, "New(%d)", size) {
				assert.Contains(t, err.Error(), strconv.FormatInt(size, 10))
			}
		}
	})

	t.Run("New accepts math.MaxInt32 and runs a task", func(t *testing.T) {
		p := defectPool(t, math.MaxInt32)
		ran := make(chan struct{})
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
			close(ran)
			return nil
		}))
		receive(t, ran, 2*time.Second, "the task did not run")
	})

	t.Run("Tune clamps a size beyond math.MaxInt32", func(t *testing.T) {
		p := defectPool(t, 1)
		p.Tune(int(huge[1]))
		assert.Equal(t, math.MaxInt32, p.Stats().Workers)

		ran := make(chan struct{})
		submitted := make(chan error, 1)
		go func() {
			submitted <- p.Submit(context.Background(), func(context.Context) error {
				close(ran)
				return nil
			})
		}()
		receive(t, ran, 2*time.Second, "a task submitted after Tune did not run")
		assert.NoError(t, receive(t, submitted, 2*time.Second, "Submit did not return"))
	})
}

func TestDefect03QueueSizeTooLarge(t *testing.T) {
	t.Run("New refuses a queue of math.MaxInt", func(t *testing.T) {
		p, err := bgpool.New(1, bgpool.WithQueueSize(math.MaxInt))
		if p != nil {
			stopPool(p)
		}
		assert.True(t, p == nil, "New returned a pool")
		assert.Error(t, err)
	})

	t.Run("New accepts a queue of 1<<20 that admits and runs tasks", func(t *testing.T) {
		p := defectPool(t, 1, bgpool.WithQueueSize(1<<20))
		release := hold(t, p)
		var ran atomic.Int32
		for range 3 {
			require.NoError(t, p.TrySubmit(context.Background(), func(context.Context) error {
				ran.Add(1)
				return nil
			}))
		}
		release()
		waitStats(t, p, idleWith(4))
		assert.Equal(t, int32(3), ran.Load())
	})
}

func TestDefect04PanickingObserverKeepsThePoolWorking(t *testing.T) {
	var logs syncBuffer
	var armed atomic.Bool // the cleanup disarms the observer: an unfixed Shutdown would panic on the test's goroutine
	armed.Store(true)
	p := defectPool(t, 1,
		bgpool.WithObserver(func(bgpool.TaskEvent) {
			if armed.Load() {
				panic("boom")
			}
		}),
		bgpool.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	t.Cleanup(func() { armed.Store(false) })

	for i := range 3 {
		ran := make(chan struct{})
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
			close(ran)
			return nil
		}))
		receive(t, ran, 2*time.Second, fmt.Sprintf("task %d of 3 did not run", i+1))
	}
	assert.NoError(t, shutdownWithin(t, p, 2*time.Second, 3*time.Second))
	assert.Equal(t, uint64(3), p.Stats().Completed)
	assert.Contains(t, logs.String(), "observer panicked")
}

func TestDefect05PolicyMisbehaviourIsAccounted(t *testing.T) {
	t.Run("a caller-run task that calls runtime.Goexit counts Failed", func(t *testing.T) {
		p := defectPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.CallerRuns), quietLogger())
		release := hold(t, p)
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
		assert.True(t, balanced(s), "Stats out of balance: %+v", s)
		assert.Equal(t, uint64(1), s.Failed)
	})

	t.Run("a policy that panics counts the task Rejected", func(t *testing.T) {
		p := defectPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.PolicyFunc(
			func(context.Context, *bgpool.Overflow) error { panic("policy boom") })))
		hold(t, p)

		var recovered any
		func() {
			defer func() { recovered = recover() }()
			_ = p.Submit(context.Background(), noop)
		}()
		assert.Contains(t, fmt.Sprint(recovered), "policy boom", "the policy's panic did not reach Submit's caller")
		s := p.Stats()
		assert.Equal(t, uint64(1), s.Rejected)
		assert.True(t, balanced(s), "Stats out of balance: %+v", s)
	})

	t.Run("Overflow.Wait with a nil context returns an error", func(t *testing.T) {
		var waitErr error
		var waitPanic any
		p := defectPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.PolicyFunc(
			func(_ context.Context, o *bgpool.Overflow) error {
				func() {
					defer func() { waitPanic = recover() }()
					var noCtx context.Context
					waitErr = o.Wait(noCtx)
				}()
				return o.Reject()
			})))
		hold(t, p)

		err := p.Submit(context.Background(), noop)
		assert.Nil(t, waitPanic, "Wait(nil) panicked")
		assert.Error(t, waitErr)
		assert.ErrorIs(t, err, bgpool.ErrOverloaded)
	})
}

// callerRunsPool returns a pool of one worker without a queue whose policy
// is CallerRuns, with only a caller-run task left running: task, on a
// goroutine whose Submit result arrives on submitted. started is closed by
// task when it starts.
func callerRunsPool(t *testing.T, started <-chan struct{}, task bgpool.Task) (p *bgpool.Pool, submitted <-chan error) {
	t.Helper()
	p = defectPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.CallerRuns), quietLogger())
	release := hold(t, p)
	result := make(chan error, 1)
	go func() { result <- p.Submit(context.Background(), task) }()
	receive(t, started, 2*time.Second, "the caller-run task did not start")
	release()
	// The holding task is done; only the caller-run task is left, and it
	// counts as Running.
	waitStats(t, p, func(s bgpool.Stats) bool { return s.Completed == 1 && s.Running == 1 && s.Queued == 0 })
	return p, result
}

func TestDefect06ShutdownAccountsForCallerRunTasks(t *testing.T) {
	t.Run("Shutdown waits for a caller-run task", func(t *testing.T) {
		started, finish := make(chan struct{}), make(chan struct{})
		var once sync.Once
		unblock := func() { once.Do(func() { close(finish) }) }
		t.Cleanup(unblock)
		p, submitted := callerRunsPool(t, started, func(context.Context) error {
			close(started)
			<-finish
			return nil
		})

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		done := shutdownAsync(ctx, p)
		select {
		case err := <-done: // the defect: it did not wait
			t.Fatalf("Shutdown returned %v while a caller-run task was running", err)
		case <-time.After(100 * time.Millisecond): // still waiting, as it should
		}
		unblock()
		assert.NoError(t, receive(t, done, 3*time.Second, "Shutdown did not return"))
		assert.Equal(t, uint64(2), p.Stats().Completed, "Shutdown returned before the caller-run task was counted")
		assert.NoError(t, receive(t, submitted, 2*time.Second, "Submit did not return"))
	})

	t.Run("Shutdown's deadline abandons a caller-run task", func(t *testing.T) {
		started, cancelled, testDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
		t.Cleanup(func() { close(testDone) })
		p, submitted := callerRunsPool(t, started, func(ctx context.Context) error {
			close(started)
			select {
			case <-ctx.Done(): // Shutdown's deadline passed
				close(cancelled)
				return ctx.Err()
			case <-testDone: // the defect: nothing cancelled it
				return nil
			}
		})

		err := shutdownWithin(t, p, 100*time.Millisecond, 2*time.Second)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		receive(t, cancelled, 2*time.Second, "the caller-run task's context was not cancelled")
		receive(t, submitted, 2*time.Second, "Submit did not return")
		s := p.Stats()
		assert.Equal(t, uint64(1), s.Abandoned)
		assert.Equal(t, uint64(1), s.Completed, "only the holding task completed")
		assert.Equal(t, uint64(0), s.Failed)
	})

	t.Run("Overflow.Run after Shutdown began returns ErrClosed", func(t *testing.T) {
		inPolicy := make(chan struct{})
		runErr := make(chan error, 1)
		var ran atomic.Bool
		p := defectPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.PolicyFunc(
			func(ctx context.Context, o *bgpool.Overflow) error {
				close(inPolicy)
				if err := o.Wait(ctx); !errors.Is(err, bgpool.ErrClosed) {
					runErr <- fmt.Errorf("Wait returned %v, want ErrClosed", err)
					return err
				}
				err := o.Run() // Shutdown has begun
				runErr <- err
				return err
			})))
		release := hold(t, p)
		submitted := make(chan error, 1)
		go func() {
			submitted <- p.Submit(context.Background(), func(context.Context) error {
				ran.Store(true)
				return nil
			})
		}()
		receive(t, inPolicy, 2*time.Second, "the policy was not called")

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		done := shutdownAsync(ctx, p)
		assert.ErrorIs(t, receive(t, runErr, 2*time.Second, "Overflow.Run did not return"), bgpool.ErrClosed)
		assert.ErrorIs(t, receive(t, submitted, 2*time.Second, "Submit did not return"), bgpool.ErrClosed)
		release()
		assert.NoError(t, receive(t, done, 3*time.Second, "Shutdown did not return"))
		assert.False(t, ran.Load(), "the task ran after Shutdown began")
		s := p.Stats()
		assert.Equal(t, uint64(1), s.Rejected)
		assert.True(t, balanced(s), "Stats out of balance: %+v", s)
	})
}

func TestDefect07ShutdownFromATaskLeavesNoGoroutine(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	p, err := bgpool.New(1)
	require.NoError(t, err)
	t.Cleanup(func() { stopPool(p) })

	shut := make(chan error, 1)
	require.NoError(t, p.Submit(context.Background(), func(ctx context.Context) error {
		shut <- p.Shutdown(ctx)
		return nil
	}))
	assert.NoError(t, receive(t, shut, 2*time.Second, "Shutdown called from a task did not return"))
	verifyNoLeak(t, opt)
}

func TestDefect08ShutdownOfAnIdlePoolWithADoneContext(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	t.Run("Shutdown returns nil on a pool that never ran a task", func(t *testing.T) {
		p := defectPool(t, 2)
		assert.NoError(t, receive(t, shutdownAsync(cancelled, p), 2*time.Second, "Shutdown did not return"))
	})

	t.Run("Shutdown returns nil on a pool whose workers parked", func(t *testing.T) {
		p := defectPool(t, 2)
		for range 3 {
			require.NoError(t, p.Submit(context.Background(), noop))
		}
		waitStats(t, p, idleWith(3))
		assert.NoError(t, receive(t, shutdownAsync(cancelled, p), 2*time.Second, "Shutdown did not return"))
	})

	t.Run("Serve with no grace returns nil when it got no request", func(t *testing.T) {
		p := defectPool(t, 1)
		assert.NoError(t, serveAndStop(t, &http.Server{}, p, nil))
	})

	t.Run("Serve with no grace returns nil after a completed request", func(t *testing.T) {
		p := defectPool(t, 1)
		connClosed := make(chan struct{}, 1)
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ran := make(chan struct{})
				if err := p.Submit(r.Context(), func(context.Context) error {
					close(ran)
					return nil
				}); err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				<-ran
				w.WriteHeader(http.StatusNoContent)
			}),
			ConnState: func(_ net.Conn, state http.ConnState) {
				if state == http.StateClosed {
					connClosed <- struct{}{}
				}
			},
		}
		assert.NoError(t, serveAndStop(t, srv, p, func(addr string) {
			client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := client.Get("http://" + addr)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusNoContent, resp.StatusCode)
			receive(t, connClosed, 2*time.Second, "the server did not close the connection")
			waitStats(t, p, idleWith(1))
		}))
	})
}

// serveAndStop runs bgpool.Serve with no grace on a new loopback listener,
// calls use (if not nil) with the listener's address, ends Serve's ctx, and
// returns what Serve returned.
func serveAndStop(t *testing.T, srv *http.Server, p *bgpool.Pool, use func(addr string)) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- bgpool.Serve(ctx, srv, ln, p, 0) }()
	t.Cleanup(cancel)
	if use != nil {
		use(ln.Addr().String())
	}
	cancel()
	return receive(t, result, 2*time.Second, "Serve did not return")
}

func TestDefect09StatsAlwaysAddUp(t *testing.T) {
	for _, policy := range []struct {
		name   string
		policy bgpool.Policy
	}{
		{"every snapshot adds up under Drop", bgpool.Drop},
		{"every snapshot adds up under Reject", bgpool.Reject},
	} {
		t.Run(policy.name, func(t *testing.T) {
			p := defectPool(t, 2, bgpool.WithQueueSize(2), bgpool.WithPolicy(policy.policy),
				bgpool.WithErrorHandler(func(context.Context, error) {}))
			tasks := []bgpool.Task{
				noop,
				func(context.Context) error { return errors.New("task failed") },
				func(context.Context) error { panic("task panicked") },
			}
			const submitters, perSubmitter = 4, 2000
			var wg sync.WaitGroup
			for range submitters {
				wg.Go(func() {
					for i := range perSubmitter {
						_ = p.Submit(context.Background(), tasks[i%len(tasks)])
					}
				})
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()

			snapshots := 0
			deadline := time.Now().Add(10 * time.Second)
		read:
			for time.Now().Before(deadline) {
				select {
				case <-done: // every task is submitted
					break read
				default: // keep reading while they are
				}
				s := p.Stats()
				snapshots++
				if !balanced(s) {
					t.Errorf("snapshot %d out of balance: %+v", snapshots, s)
					break
				}
			}
			receive(t, done, 10*time.Second, "the submitters did not finish")
			s := waitStats(t, p, func(s bgpool.Stats) bool { return s.Running == 0 && s.Queued == 0 })
			assert.True(t, balanced(s), "Stats out of balance once quiet: %+v", s)
		})
	}

	t.Run("a running task that Shutdown abandoned is no longer Running", func(t *testing.T) {
		p := defectPool(t, 1, quietLogger())
		hold(t, p) // ignores its context: still running after Shutdown returns
		err := shutdownWithin(t, p, 100*time.Millisecond, 2*time.Second)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		s := p.Stats()
		assert.Equal(t, uint64(1), s.Abandoned)
		assert.Equal(t, 0, s.Running)
		assert.True(t, balanced(s), "Stats out of balance: %+v", s)
	})
}

func TestDefect10BlockingObserverDoesNotDelayShutdown(t *testing.T) {
	unblockObserver := make(chan struct{})
	p := defectPool(t, 1, bgpool.WithQueueSize(5), bgpool.WithObserver(func(ev bgpool.TaskEvent) {
		if ev.Outcome == bgpool.OutcomeAbandoned {
			<-unblockObserver
		}
	}))
	t.Cleanup(func() { close(unblockObserver) })
	hold(t, p)
	for range 5 {
		require.NoError(t, p.TrySubmit(context.Background(), noop))
	}

	err := shutdownWithin(t, p, 100*time.Millisecond, time.Second)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestDefect11NewStartsNoGoroutine(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	p, err := bgpool.New(4)
	require.NoError(t, err)
	t.Cleanup(func() { stopPool(p) })
	goleak.VerifyNone(t, opt)
}

// typedNilPolicy is a Policy whose nil pointer must not pass for a policy.
type typedNilPolicy struct{}

func (*typedNilPolicy) Overflow(_ context.Context, o *bgpool.Overflow) error { return o.Reject() }

func TestDefect12NilArgumentsAreCaughtAtTheCall(t *testing.T) {
	t.Run("New refuses a typed nil policy", func(t *testing.T) {
		p, err := bgpool.New(1, bgpool.WithPolicy((*typedNilPolicy)(nil)))
		if p != nil {
			stopPool(p)
		}
		assert.True(t, p == nil, "New returned a pool")
		assert.Error(t, err)
	})

	t.Run("Expvar panics at once on a nil pool", func(t *testing.T) {
		var recovered any
		func() {
			defer func() { recovered = recover() }()
			_ = bgpool.Expvar(nil)
		}()
		require.NotNil(t, recovered, "Expvar(nil) did not panic")
		assert.True(t, strings.HasPrefix(fmt.Sprint(recovered), "bgpool:"),
			"got panic %q, want one starting with %q", fmt.Sprint(recovered), "bgpool:")
	})
}

// closeErrListener is a real listener whose Close closes it and then fails,
// and which tells when Serve first accepts on it.
type closeErrListener struct {
	net.Listener
	acceptOnce sync.Once
	accepting  chan struct{}
}

func (l *closeErrListener) Accept() (net.Conn, error) {
	l.acceptOnce.Do(func() { close(l.accepting) })
	return l.Listener.Accept()
}

func (l *closeErrListener) Close() error {
	_ = l.Listener.Close()
	return errors.New("close boom")
}

func TestDefect13ServeReportsTheListenersCloseError(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := &closeErrListener{Listener: inner, accepting: make(chan struct{})}
	p := defectPool(t, 1)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	result := make(chan error, 1)
	go func() { result <- bgpool.Serve(ctx, &http.Server{}, ln, p, 2*time.Second) }()
	receive(t, ln.accepting, 2*time.Second, "Serve did not start accepting")
	cancel()

	err = receive(t, result, 5*time.Second, "Serve did not return")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "close boom")
	assert.NotContains(t, err.Error(), "did not finish within grace")
}
