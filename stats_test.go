package bgpool_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/bgpool/bgpool"
)

// Every Stats snapshot accounts for every submitted task (Submitted ==
// Ended()+Queued+Running), under Drop and Reject with tasks that succeed,
// fail and panic, and a running task that Shutdown abandoned no longer
// counts as Running.
func TestStatsAlwaysAddUp(t *testing.T) {
	for _, policy := range []struct {
		name   string
		policy bgpool.Policy
	}{
		{"every snapshot adds up under Drop", bgpool.Drop},
		{"every snapshot adds up under Reject", bgpool.Reject},
	} {
		t.Run(policy.name, func(t *testing.T) {
			p := newPool(t, 2, bgpool.WithQueueSize(2), bgpool.WithPolicy(policy.policy),
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
				if !assertBalanced(t, s, "snapshot %d", snapshots) {
					break
				}
			}
			receive(t, done, 10*time.Second, "the submitters did not finish")
			s := waitStats(t, p, func(s bgpool.Stats) bool { return s.Running == 0 && s.Queued == 0 })
			assertBalanced(t, s, "once quiet")
		})
	}

	t.Run("a running task that Shutdown abandoned is no longer Running", func(t *testing.T) {
		p := newPool(t, 1, quietLogger())
		occupy(t, p, 1) // ignores its context: still running after Shutdown returns
		err := shutdownWithin(t, p, 100*time.Millisecond, 2*time.Second)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		s := p.Stats()
		assert.Equal(t, uint64(1), s.Abandoned)
		assert.Equal(t, 0, s.Running)
		assertBalanced(t, s)
	})
}
