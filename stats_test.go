package bgpool_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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

// Stats.Submitted is not promised to be monotone: Pool.Stats' doc says a
// task between two places as the counters are read is left out of it, so
// that it "can read a few lower than in the snapshot before". What is
// promised is that the outcome counters never go down, and that every
// snapshot adds up. While 8 goroutines submit tasks that succeed, fail and
// are dropped, a sampler records snapshots, and every one of them is
// balanced and has Ended() no lower than the one before.
func TestStatsEndedNeverGoesDownWhileTasksAreSubmittedAndEnd(t *testing.T) {
	p := newPool(t, 4, bgpool.WithQueueSize(8), bgpool.WithPolicy(bgpool.Drop),
		bgpool.WithErrorHandler(func(context.Context, error) {}), quietLogger())
	tasks := []bgpool.Task{
		noop,
		func(context.Context) error { return errors.New("task failed") },
	}
	const submitters, perSubmitter, maxSamples = 8, 2000, 1 << 16

	stop := make(chan struct{})
	samples := make(chan []bgpool.Stats, 1)
	go func() {
		var got []bgpool.Stats
		for {
			select {
			case <-stop:
				samples <- got
				return
			default:
			}
			if len(got) < maxSamples {
				got = append(got, p.Stats())
			}
		}
	}()

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
	receive(t, done, 30*time.Second, "the submitters did not finish")
	close(stop)
	got := receive(t, samples, 10*time.Second, "the sampler did not stop")
	final := waitStats(t, p, func(s bgpool.Stats) bool { return s.Running == 0 && s.Queued == 0 && s.Waiting == 0 })

	require.Greater(t, len(got), 1, "snapshots taken while the tasks were submitted")
	got = append(got, final)
	var prev bgpool.Stats
	for i, s := range got {
		if !assertBalanced(t, s, "snapshot %d", i) {
			break
		}
		if !assert.GreaterOrEqual(t, s.Ended(), prev.Ended(),
			"snapshot %d: Ended() went down from %+v to %+v", i, prev, s) {
			break
		}
		prev = s
	}
	assert.Equal(t, uint64(submitters*perSubmitter), final.Submitted, "%+v", final)
	assert.Equal(t, final.Submitted, final.Ended(), "every task ended: %+v", final)
	assert.Positive(t, final.Ended()-got[0].Ended(), "tasks ended while the sampler watched")
	t.Logf("%d snapshots; final %+v", len(got), final)
}
