package bgpool_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

// store is a Handoff that behaves like a database: each call costs perCall
// plus perJob a job, honours its ctx (a call that ends with ctx stores
// nothing), refuses the jobs whose args do not marshal to JSON and stores
// the others, as a Handoff may (see bgpool.JobError).
type store struct {
	perCall, perJob time.Duration
	mu              sync.Mutex
	rows            int
	calls           []int // the size of every call
}

func (s *store) Handoff(ctx context.Context, jobs []bgpool.JobArgs) error {
	s.mu.Lock()
	s.calls = append(s.calls, len(jobs))
	s.mu.Unlock()
	t := time.NewTimer(s.perCall + time.Duration(len(jobs))*s.perJob)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	var refused []error
	for i, j := range jobs {
		if _, err := json.Marshal(j); err != nil {
			refused = append(refused, &bgpool.JobError{Index: i, Err: err})
		}
	}
	s.mu.Lock()
	s.rows += len(jobs) - len(refused)
	s.mu.Unlock()
	return errors.Join(refused...)
}

func (s *store) stored() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rows
}

// badArgs are Job args that do not marshal.
type badArgs struct{}

func (badArgs) Kind() string                 { return "mail" }
func (badArgs) MarshalJSON() ([]byte, error) { return nil, errors.New("cannot marshal") }

func TestShutdownHandsOffALargeQueueWithinItsDeadline(t *testing.T) {
	// 20,000 Jobs behind a task that holds the only worker until the
	// deadline, and a store that takes 1s for them: a fixed fifth of the
	// grace (400ms) would lose most of them, so the hand-off starts as
	// early as the queue needs.
	const n = 20_000
	s := &store{perCall: time.Millisecond, perJob: 50 * time.Microsecond}
	p := drainingPool(t, n, 0, bgpool.WithHandoff(s), quietLogger())
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := p.Shutdown(ctx)
	elapsed := time.Since(start)
	var se *bgpool.ShutdownError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, n, se.HandedOff, "%v", err)
	assert.Equal(t, 1, se.Running, "the task that held the worker")
	assert.Equal(t, n, s.stored())
	st := p.Stats()
	assert.Equal(t, uint64(n), st.HandedOff)
	assert.Equal(t, uint64(1), st.Abandoned)
	assertBalanced(t, st)
	assert.Less(t, elapsed, 2100*time.Millisecond, "Shutdown returns by its deadline")
	s.mu.Lock()
	defer s.mu.Unlock()
	assert.Greater(t, len(s.calls), 1, "in bounded batches")
	for _, c := range s.calls {
		assert.LessOrEqual(t, c, 5000)
	}
}

func TestShutdownHandOffLosesOnlyTheJobTheStoreRefuses(t *testing.T) {
	s := &store{}
	var reported []error
	var mu sync.Mutex
	p := drainingPool(t, 0, 0, bgpool.WithQueueSize(60), bgpool.WithHandoff(s),
		bgpool.WithErrorHandler(func(_ context.Context, err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }))
	good := bgpool.NewJob(func(context.Context, mailArgs) error { return nil })
	bad := bgpool.NewJob(func(context.Context, badArgs) error { return nil })
	for i := range 50 {
		if i == 20 {
			require.NoError(t, bad.Submit(context.Background(), p, badArgs{}))
			continue
		}
		require.NoError(t, good.Submit(context.Background(), p, mailArgs{To: fmt.Sprint(i)}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := p.Shutdown(ctx)
	var se *bgpool.ShutdownError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 49, se.HandedOff)
	assert.Equal(t, 49, s.stored())
	st := p.Stats()
	assert.Equal(t, uint64(49), st.HandedOff)
	assert.Equal(t, uint64(2), st.Abandoned, "the refused Job and the running task")
	assertBalanced(t, st)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, reported, 1)
	assert.ErrorContains(t, reported[0], "refused 1 job")
	var je *bgpool.JobError
	require.ErrorAs(t, reported[0], &je)
	assert.Equal(t, 20, je.Index)
}

func TestShutdownHandOffNeverExtendsPastTheDeadline(t *testing.T) {
	// A store that never answers in time, 64 queued Jobs, a deadline of
	// 2ms: Shutdown returns at its deadline, not 5s later.
	for range 5 {
		s := &store{perCall: time.Hour}
		p := drainingPool(t, 64, 0, bgpool.WithHandoff(s), quietLogger())
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
		err := p.Shutdown(ctx)
		cancel()
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(start), 500*time.Millisecond)
		st := waitStats(t, p, func(s bgpool.Stats) bool { return s.Queued == 0 })
		assert.Equal(t, uint64(65), st.Abandoned)
		assertBalanced(t, st)
	}
}

func TestShutdownIsNotHeldByABlockingErrorHandlerOnAFailedHandOff(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	var called atomic.Bool
	h := &recordingHandoff{err: errors.New("store down")}
	p := drainingPool(t, 5, 0, bgpool.WithHandoff(h), bgpool.WithErrorHandler(func(context.Context, error) {
		called.Store(true)
		<-block
	}))
	start := time.Now()
	err := shutdownWithin(t, p, 200*time.Millisecond, 2*time.Second)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), time.Second)
	assert.Eventually(t, called.Load, time.Second, time.Millisecond, "the failure still reaches the error handler")
}

func TestShutdownReportsAHandOffWithoutAnAnswerAsUnknown(t *testing.T) {
	// The store commits, but its answer comes after the deadline, as an
	// error: what a database driver does when the commit's reply arrives
	// after the context ended.
	s := &lateStore{delay: 300 * time.Millisecond}
	var reported atomic.Value
	p := drainingPool(t, 10, 0, bgpool.WithHandoff(s),
		bgpool.WithErrorHandler(func(_ context.Context, err error) { reported.Store(err) }))
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	err := p.Shutdown(ctx)
	var se *bgpool.ShutdownError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 10, se.Pending, "the Jobs in the call under way: %v", err)
	assert.ErrorContains(t, err, "10 jobs still with the Handoff")
	assert.Eventually(t, func() bool { return reported.Load() != nil }, 2*time.Second, time.Millisecond)
	assert.ErrorContains(t, reported.Load().(error), "the store may have them")
	st := waitStats(t, p, func(s bgpool.Stats) bool { return s.Queued == 0 })
	assertBalanced(t, st)
}

// lateStore stores every job after delay, whatever its ctx, and then
// returns ctx's error if it has ended.
type lateStore struct {
	delay time.Duration
	rows  atomic.Int64
}

func (s *lateStore) Handoff(ctx context.Context, jobs []bgpool.JobArgs) error {
	time.Sleep(s.delay)
	s.rows.Add(int64(len(jobs)))
	return ctx.Err()
}

func TestShutdownErrorCountsReadWithoutParsing(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(2))
	release := hold(t, p)
	defer release()
	require.NoError(t, p.Submit(context.Background(), noop))
	err := shutdownWithin(t, p, 10*time.Millisecond, 2*time.Second)
	var se *bgpool.ShutdownError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, bgpool.ShutdownError{Queued: 1, Running: 1, Err: context.DeadlineExceeded}, *se)
	assert.EqualError(t, err, "bgpool: shutdown: abandoned 2 tasks (1 queued, 1 running): context deadline exceeded")
}
