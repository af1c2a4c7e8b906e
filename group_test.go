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

	"github.com/bgpool/bgpool"
)

var errLookup = errors.New("lookup failed")

func TestGroupWaitsForEveryTask(t *testing.T) {
	p := newPool(t, 4, bgpool.WithQueueSize(8))
	g, _ := p.NewGroup(context.Background())
	var ran atomic.Int64
	for range 100 {
		require.NoError(t, g.Submit(func(context.Context) error {
			ran.Add(1)
			return nil
		}))
	}
	require.NoError(t, g.Wait())
	assert.Equal(t, int64(100), ran.Load(), "tasks run when Wait returns")
	s := waitStats(t, p, idleWith(100))
	assertBalanced(t, s)
}

// TestGroupUnderEveryPolicy submits two group tasks to a saturated pool
// (its one worker busy, its one queue slot taken) under each policy, and
// checks what Submit and Wait return, that Wait never waits for a task the
// pool did not keep, and that Stats add up.
func TestGroupUnderEveryPolicy(t *testing.T) {
	tests := []struct {
		name   string
		policy bgpool.Policy
		// blocks: Submit waits for room, so the pool is released first.
		blocks bool
		// waitsForRelease: a group task is queued, so Wait returns only
		// once the pool is released; otherwise it returns while the pool is
		// still saturated.
		waitsForRelease bool
		submitErr       error // each Submit's error (errors.Is), nil for none
		waitErr         error // Wait's error (errors.Is), nil for none
		ran             int64
		completed       uint64 // the holder and the queued plain task included
		dropped         uint64 // the queued plain task included
		rejected        uint64
	}{
		{name: "Block waits for room and runs both", policy: bgpool.Block, blocks: true, waitsForRelease: true,
			ran: 2, completed: 4},
		{name: "BlockFor refuses both after its wait", policy: bgpool.BlockFor(20 * time.Millisecond),
			submitErr: context.DeadlineExceeded, completed: 2, rejected: 2},
		{name: "Drop drops both and Wait reports ErrDropped", policy: bgpool.Drop,
			waitErr: bgpool.ErrDropped, completed: 2, dropped: 2},
		{name: "Reject refuses both and Wait reports nothing", policy: bgpool.Reject,
			submitErr: bgpool.ErrOverloaded, completed: 2, rejected: 2},
		{name: "DropOldest drops the queued task, then the first for the second", policy: bgpool.DropOldest, waitsForRelease: true,
			waitErr: bgpool.ErrDropped, ran: 1, completed: 2, dropped: 2},
		{name: "CallerRuns runs both in Submit", policy: bgpool.CallerRuns, ran: 2, completed: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(t, 1, bgpool.WithQueueSize(1), bgpool.WithPolicy(tt.policy), quietLogger())
			release := occupy(t, p, 1)
			require.NoError(t, p.Submit(context.Background(), noop)) // takes the queue's one slot

			g, _ := p.NewGroup(context.Background())
			var ran atomic.Int64
			task := func(context.Context) error {
				ran.Add(1)
				return nil
			}
			submitted := make(chan error, 2)
			go func() {
				submitted <- g.Submit(task)
				if !tt.blocks { // one after the other, so that DropOldest drops the first
					submitted <- g.Submit(task)
				}
			}()
			if tt.blocks { // both at once: neither may end before the other has been counted
				go func() { submitted <- g.Submit(task) }()
				waitStats(t, p, func(s bgpool.Stats) bool { return s.Waiting == 2 })
			}
			var errs []error
			collect := func() {
				for range 2 {
					errs = append(errs, receive(t, submitted, 2*time.Second, "Submit did not return"))
				}
			}
			if !tt.blocks {
				collect()
				s := p.Stats()
				assertBalanced(t, s, "while saturated")
			}
			waited := make(chan error, 1)
			go func() { waited <- g.Wait() }()
			var err error
			if tt.waitsForRelease {
				release()
				err = receive(t, waited, 2*time.Second, "Wait did not return after the pool was released")
			} else {
				err = receive(t, waited, 2*time.Second, "Wait did not return while the pool was saturated")
				release()
			}
			if tt.blocks {
				collect()
			}

			for i, e := range errs {
				if tt.submitErr == nil {
					assert.NoError(t, e, "Submit %d", i)
				} else {
					assert.ErrorIs(t, e, tt.submitErr, "Submit %d", i)
					assert.ErrorIs(t, e, bgpool.ErrOverloaded, "Submit %d", i)
				}
			}
			if tt.waitErr == nil {
				assert.NoError(t, err, "Wait")
			} else {
				assert.ErrorIs(t, err, tt.waitErr, "Wait")
			}
			assert.Equal(t, tt.ran, ran.Load(), "group tasks run")

			shutdown(t, p)
			s := p.Stats()
			assertBalanced(t, s)
			assert.Equal(t, uint64(4), s.Submitted, "submitted: the holder, the queued task, two group tasks")
			assert.Equal(t, tt.dropped, s.Dropped, "dropped")
			assert.Equal(t, tt.rejected, s.Rejected, "rejected")
			assert.Equal(t, tt.completed, s.Completed, "completed")
		})
	}
}

func TestGroupFirstErrorCancelsSiblings(t *testing.T) {
	p := newPool(t, 4, quietLogger())
	g, ctx := p.NewGroup(context.Background())
	siblings := make(chan error, 3)
	started := make(chan struct{}, 3)
	for range 3 {
		require.NoError(t, g.Submit(func(ctx context.Context) error {
			started <- struct{}{}
			<-ctx.Done()
			siblings <- ctx.Err()
			return ctx.Err()
		}))
	}
	for range 3 {
		receive(t, started, 2*time.Second, "a sibling did not start")
	}
	require.NoError(t, g.Submit(func(context.Context) error { return errLookup }))

	err := g.Wait()
	assert.ErrorIs(t, err, errLookup, "Wait returns the first error, not the siblings' context.Canceled")
	assert.ErrorIs(t, context.Cause(ctx), errLookup, "the group's context has the first error as its cause")
	for range 3 {
		assert.ErrorIs(t, receive(t, siblings, time.Second, "a sibling was not cancelled"), context.Canceled)
	}
	s := waitStats(t, p, func(s bgpool.Stats) bool { return s.Failed == 4 })
	assertBalanced(t, s)
}

func TestGroupPanicReachesWait(t *testing.T) {
	var handled atomic.Pointer[bgpool.PanicError]
	p := newPool(t, 2, bgpool.WithErrorHandler(func(_ context.Context, err error) {
		var pe *bgpool.PanicError
		if errors.As(err, &pe) {
			handled.Store(pe)
		}
	}))
	g, ctx := p.NewGroup(context.Background())
	require.NoError(t, g.Submit(func(context.Context) error { panic("lookup exploded") }))

	err := g.Wait()
	var pe *bgpool.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "lookup exploded", pe.Value)
	assert.Contains(t, string(pe.Stack), "group_test.go", "the stack shows where the task panicked")
	assert.ErrorIs(t, context.Cause(ctx), err, "the panic cancels the group")

	s := waitStats(t, p, func(s bgpool.Stats) bool { return s.Panicked == 1 })
	assertBalanced(t, s)
	require.NotNil(t, handled.Load(), "the pool's error handler hears of the panic too")
	assert.Equal(t, "lookup exploded", handled.Load().Value)
}

func TestGroupTaskThatCallsGoexitFailsTheGroup(t *testing.T) {
	p := newPool(t, 1, quietLogger())
	g, _ := p.NewGroup(context.Background())
	require.NoError(t, g.Submit(func(context.Context) error {
		runtime.Goexit()
		return nil
	}))
	err := g.Wait()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Goexit")
	waitStats(t, p, func(s bgpool.Stats) bool { return s.Failed == 1 })
}

type requestKey struct{}

func TestGroupTaskContext(t *testing.T) {
	t.Run("has the group's values and is cancelled with the parent", func(t *testing.T) {
		p := newPool(t, 2)
		parent, cancel := context.WithCancel(context.WithValue(context.Background(), requestKey{}, "req-7"))
		g, _ := p.NewGroup(parent)
		seen := make(chan any, 1)
		cancelled := make(chan error, 1)
		require.NoError(t, g.Submit(func(ctx context.Context) error {
			seen <- ctx.Value(requestKey{})
			<-ctx.Done()
			cancelled <- ctx.Err()
			return nil
		}))
		assert.Equal(t, "req-7", receive(t, seen, 2*time.Second, "the task did not start"))
		cancel()
		assert.ErrorIs(t, receive(t, cancelled, 2*time.Second, "the task was not cancelled with the parent"), context.Canceled)
		assert.NoError(t, g.Wait(), "a task that returns nil on cancellation does not fail the group")
	})

	t.Run("keeps the pool's task timeout", func(t *testing.T) {
		p := newPool(t, 1, bgpool.WithTaskTimeout(20*time.Millisecond), quietLogger())
		g, _ := p.NewGroup(context.WithValue(context.Background(), requestKey{}, "req-8"))
		require.NoError(t, g.Submit(func(ctx context.Context) error {
			if ctx.Value(requestKey{}) != "req-8" {
				return errors.New("the task lost the group's values")
			}
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("the task has no deadline")
			}
			<-ctx.Done()
			return ctx.Err()
		}))
		assert.ErrorIs(t, g.Wait(), context.DeadlineExceeded)
	})

	t.Run("lets a task shut the pool down without waiting for itself", func(t *testing.T) {
		p := newPool(t, 1)
		g, _ := p.NewGroup(context.Background())
		require.NoError(t, g.Submit(func(ctx context.Context) error {
			return p.Shutdown(ctx) // would wait for this very task if ctx did not say whose task it is
		}))
		assert.NoError(t, g.Wait())
	})
}

// TestGroupShutdownWhileWaiting: Shutdown's deadline passes while a group
// task runs and ignores its context and another waits in the queue; Wait
// returns by the deadline with the abandonment's error.
func TestGroupShutdownWhileWaiting(t *testing.T) {
	p := newPool(t, 1, quietLogger())
	g, ctx := p.NewGroup(context.Background())
	started, finish := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(finish) })
	require.NoError(t, g.Submit(func(context.Context) error {
		close(started)
		<-finish // ignores its context: it never returns before the test ends
		return nil
	}))
	require.NoError(t, g.Submit(noop)) // queued behind it
	receive(t, started, 2*time.Second, "the first task did not start")

	waited := make(chan error, 1)
	go func() { waited <- g.Wait() }()
	begin := time.Now()
	err := shutdownWithin(t, p, 50*time.Millisecond, 2*time.Second)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "Shutdown abandons")

	err = receive(t, waited, time.Second, "Wait did not return at Shutdown's deadline")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "Wait reports the abandonment")
	assert.Less(t, time.Since(begin), time.Second)
	assert.Error(t, ctx.Err(), "the group's context is cancelled")
	s := p.Stats()
	assert.Equal(t, uint64(2), s.Abandoned, "abandoned")
	assertBalanced(t, s)
}

func TestGroupShutdownDrainsGroupTasks(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(3))
	g, _ := p.NewGroup(context.Background())
	var ran atomic.Int64
	release := occupy(t, p, 1)
	for range 3 {
		require.NoError(t, g.Submit(func(context.Context) error {
			ran.Add(1)
			return nil
		}))
	}
	shut := shutdownAsync(context.Background(), p)
	assert.ErrorIs(t, g.Submit(noop), bgpool.ErrClosed, "the pool admits nothing once Shutdown has begun")
	release()
	assert.NoError(t, g.Wait())
	assert.NoError(t, receive(t, shut, 2*time.Second, "Shutdown did not return"))
	assert.Equal(t, int64(3), ran.Load(), "queued group tasks run during the drain")
}

func TestGroupExpiredTaskReportsErrDropped(t *testing.T) {
	// Long enough that the task occupying the worker never expires, however
	// slowly its worker starts on a loaded machine.
	p := newPool(t, 1, bgpool.WithQueueSize(1), bgpool.WithMaxQueueWait(500*time.Millisecond), quietLogger())
	release := occupy(t, p, 1)
	g, _ := p.NewGroup(context.Background())
	var ran atomic.Bool
	require.NoError(t, g.Submit(func(context.Context) error {
		ran.Store(true)
		return nil
	}))
	time.Sleep(600 * time.Millisecond) // longer than the maximum queue wait
	release()
	assert.ErrorIs(t, g.Wait(), bgpool.ErrDropped)
	assert.False(t, ran.Load(), "an expired task does not run")
}

func TestGroupTrySubmitNeverWaits(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0)) // Block, but TrySubmit ignores the policy
	release := occupy(t, p, 1)
	g, _ := p.NewGroup(context.Background())
	assert.ErrorIs(t, g.TrySubmit(noop), bgpool.ErrOverloaded)
	release()
	assert.NoError(t, g.Wait(), "a task TrySubmit refused is not the group's")
	assert.Equal(t, uint64(1), p.Stats().Rejected)
}

func TestGroupSubmitBlockedUntilTheGroupFails(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0), quietLogger())
	g, _ := p.NewGroup(context.Background())
	failNow := make(chan struct{})
	require.NoError(t, g.Submit(func(context.Context) error {
		<-failNow
		return errLookup
	}))
	submitted := make(chan error, 1)
	go func() { submitted <- g.Submit(noop) }() // blocks: the only worker is busy
	waitStats(t, p, func(s bgpool.Stats) bool { return s.Waiting == 1 })
	close(failNow)
	// The failure cancels the group's context, which ends the blocked Submit,
	// unless the worker freed by the failure admitted it first.
	if err := receive(t, submitted, 2*time.Second, "the blocked Submit did not return"); err != nil {
		assert.ErrorIs(t, err, errLookup, "the group's failure, not overload")
		assert.NotErrorIs(t, err, bgpool.ErrOverloaded)
	}
	assert.ErrorIs(t, g.Wait(), errLookup)
}

func TestGroupTasksMaySubmitSiblingsWhileWaitWaits(t *testing.T) {
	p := newPool(t, 4, bgpool.WithQueueSize(64))
	g, _ := p.NewGroup(context.Background())
	var ran atomic.Int64
	var spawn func(depth int) bgpool.Task
	spawn = func(depth int) bgpool.Task {
		return func(context.Context) error {
			ran.Add(1)
			if depth == 0 {
				return nil
			}
			for range 2 {
				if err := g.Submit(spawn(depth - 1)); err != nil {
					return err
				}
			}
			return nil
		}
	}
	require.NoError(t, g.Submit(spawn(5)))
	require.NoError(t, g.Wait())
	assert.Equal(t, int64(63), ran.Load(), "a binary tree of depth 5")
}

func TestGroupAfterWait(t *testing.T) {
	p := newPool(t, 2, quietLogger())
	g, ctx := p.NewGroup(context.Background())
	require.NoError(t, g.Submit(func(context.Context) error { return errLookup }))
	errs := make(chan error, 3)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { errs <- g.Wait() })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.ErrorIs(t, err, errLookup, "every Wait returns the first error")
	}
	assert.ErrorIs(t, g.Wait(), errLookup, "so does a later one")
	assert.Error(t, ctx.Err(), "Wait cancels the group's context")

	err := g.Submit(noop)
	require.Error(t, err, "Submit after Wait")
	assert.Contains(t, err.Error(), "after Wait")
	assert.Error(t, g.TrySubmit(noop), "TrySubmit after Wait")
	assert.Equal(t, uint64(1), p.Stats().Submitted, "a Submit after Wait submits nothing")
}

func TestGroupWaitCancelsContextOfAnEmptyGroup(t *testing.T) {
	p := newPool(t, 1)
	g, ctx := p.NewGroup(context.Background())
	assert.NoError(t, g.Wait())
	assert.ErrorIs(t, ctx.Err(), context.Canceled)
}

func TestGroupBadInput(t *testing.T) {
	t.Run("the zero Group is not usable", func(t *testing.T) {
		var g bgpool.Group
		assert.ErrorContains(t, g.Submit(noop), "zero Group")
		assert.ErrorContains(t, g.TrySubmit(noop), "zero Group")
		assert.ErrorContains(t, g.Wait(), "zero Group")
	})
	t.Run("a nil task is refused and counted", func(t *testing.T) {
		p := newPool(t, 1)
		g, _ := p.NewGroup(context.Background())
		assert.ErrorContains(t, g.Submit(nil), "nil task")
		assert.NoError(t, g.Wait())
		assert.Equal(t, uint64(1), p.Stats().Rejected)
	})
	t.Run("NewGroup panics on a nil context", func(t *testing.T) {
		p := newPool(t, 1)
		assert.PanicsWithValue(t, "bgpool: NewGroup: nil context", func() {
			//lint:ignore SA1012 a nil context is the bad input under test
			p.NewGroup(nil)
		})
	})
}

// TestGroupManySubmittersUnderDrop races submitters, dropping and Wait: Wait
// returns once the kept tasks have run, and every task is accounted for.
func TestGroupManySubmittersUnderDrop(t *testing.T) {
	p := newPool(t, 2, bgpool.WithQueueSize(2), bgpool.WithPolicy(bgpool.Drop))
	g, _ := p.NewGroup(context.Background())
	var ran atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				_ = g.Submit(func(context.Context) error {
					ran.Add(1)
					return nil
				})
			}
		})
	}
	wg.Wait()
	err := g.Wait()
	shutdown(t, p)
	s := p.Stats()
	assertBalanced(t, s)
	assert.Equal(t, uint64(400), s.Submitted)
	assert.Equal(t, uint64(ran.Load()), s.Completed, "every kept task ran before Wait returned")
	if s.Dropped > 0 {
		assert.ErrorIs(t, err, bgpool.ErrDropped)
	} else {
		assert.NoError(t, err)
	}
}

// TestGroupPolicyThatDropsAndFails: a policy of one's own that drops the
// task and returns an error as well. The group counts the task once.
func TestGroupPolicyThatDropsAndFails(t *testing.T) {
	errMine := errors.New("dropped, and told so")
	p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.PolicyFunc(
		func(_ context.Context, o *bgpool.Overflow) error {
			_ = o.Drop()
			return errMine
		})))
	release := occupy(t, p, 1)
	g, _ := p.NewGroup(context.Background())
	assert.ErrorIs(t, g.Submit(noop), errMine)
	assert.ErrorIs(t, g.Wait(), bgpool.ErrDropped, "the drop was the task's end")
	release()
}

// TestGroupPolicyThatPanics: the policy's panic goes on to the caller of
// Submit, and the group does not wait for the task it never admitted.
func TestGroupPolicyThatPanics(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.PolicyFunc(
		func(context.Context, *bgpool.Overflow) error { panic("policy bug") })))
	release := occupy(t, p, 1)
	defer release()
	g, _ := p.NewGroup(context.Background())
	assert.PanicsWithValue(t, "policy bug", func() { _ = g.Submit(noop) })
	waited := make(chan error, 1)
	go func() { waited <- g.Wait() }()
	assert.NoError(t, receive(t, waited, time.Second, "Wait waited for a task that was never admitted"))
}

func TestGroupSubmitAfterAFailureReportsTheGroupsError(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0), quietLogger())
	g, _ := p.NewGroup(context.Background())
	lookup := errors.New("lookup failed")
	failed := make(chan struct{})
	require.NoError(t, g.Submit(func(context.Context) error { defer close(failed); return lookup }))
	<-failed
	waitStats(t, p, func(s bgpool.Stats) bool { return s.Failed == 1 })
	occupy(t, p, 1) // the pool is full: a Submit under Block would wait
	err := g.Submit(noop)
	require.Error(t, err)
	assert.ErrorIs(t, err, lookup, "Submit after a failure names the group's error")
	assert.NotErrorIs(t, err, bgpool.ErrOverloaded, "a failed lookup is not overload")
	assert.ErrorIs(t, g.Wait(), lookup)
}

func TestGroupLogsOnlyTheFailureNotTheCancelledSiblings(t *testing.T) {
	var logged []error
	var mu sync.Mutex
	p := newPool(t, 10, bgpool.WithErrorHandler(func(_ context.Context, err error) {
		mu.Lock()
		logged = append(logged, err)
		mu.Unlock()
	}))
	g, _ := p.NewGroup(context.Background())
	started := make(chan struct{}, 10)
	for i := range 10 {
		require.NoError(t, g.Submit(func(ctx context.Context) error {
			started <- struct{}{}
			if i == 0 {
				for range 10 {
					<-started // every sibling is running
				}
				return errLookup
			}
			<-ctx.Done() // cancelled by the failure
			return ctx.Err()
		}))
	}
	assert.ErrorIs(t, g.Wait(), errLookup)
	shutdown(t, p)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []error{errLookup}, logged, "one log line: the failure, not its cancelled siblings")
	assert.Equal(t, uint64(10), p.Stats().Failed, "every task that returned an error is counted Failed")
}
