package bgriver_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
	bgriver "github.com/bgpool/bgpool/contrib/river"
)

// badArgs are args whose JSON encoding fails.
type badArgs struct{}

func (badArgs) Kind() string                 { return mailKind }
func (badArgs) MarshalJSON() ([]byte, error) { return nil, errors.New("no JSON for you") }

// noteArgs carry a string, which PostgreSQL's jsonb refuses if it holds a
// NUL character although encoding/json encodes it.
type noteArgs struct {
	Note string `json:"note"`
}

func (noteArgs) Kind() string { return mailKind }

// badOptsArgs are args whose own InsertOpts River refuses.
type badOptsArgs struct{}

func (badOptsArgs) Kind() string                   { return mailKind }
func (badOptsArgs) InsertOpts() river.InsertOpts   { return river.InsertOpts{Priority: 9} }
func (a badOptsArgs) MarshalJSON() ([]byte, error) { return []byte(`{}`), nil }

var _ river.JobArgsWithInsertOpts = badOptsArgs{}

// jobErrors returns the JobErrors joined in err, in order.
func jobErrors(t *testing.T, err error) []*bgpool.JobError {
	t.Helper()
	joined, ok := err.(interface{ Unwrap() []error })
	require.True(t, ok, "the error joins JobErrors: %v", err)
	var out []*bgpool.JobError
	for _, e := range joined.Unwrap() {
		var je *bgpool.JobError
		require.ErrorAs(t, e, &je)
		out = append(out, je)
	}
	return out
}

func TestHandoffStoresTheOthersWhenSomeJobsAreRefused(t *testing.T) {
	tests := []struct {
		name string
		bad  map[int]bgpool.JobArgs
	}{
		{"args whose JSON encoding fails", map[int]bgpool.JobArgs{17: badArgs{}}},
		{"a string that PostgreSQL's jsonb refuses", map[int]bgpool.JobArgs{33: noteArgs{Note: "nul \x00 here"}}},
		{"args whose own InsertOpts River refuses", map[int]bgpool.JobArgs{0: badOptsArgs{}}},
		{"three refused of three kinds", map[int]bgpool.JobArgs{2: noteArgs{Note: "\x00"}, 25: badArgs{}, 49: badOptsArgs{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, schema := testSchema(t)
			ctx := context.Background()
			h := bgriver.NewHandoff(insertOnlyClient(t, db, schema), nil)
			const n = 50
			jobs := make([]bgpool.JobArgs, n)
			for i := range jobs {
				jobs[i] = mailArgs{N: i}
				if b, ok := tt.bad[i]; ok {
					jobs[i] = b
				}
			}
			err := h.Handoff(ctx, jobs)
			require.Error(t, err)
			got := jobErrors(t, err)
			require.Len(t, got, len(tt.bad), "one JobError per refused job: %v", err)
			prev := -1
			for _, je := range got {
				assert.Contains(t, tt.bad, je.Index, "JobError %d names a refused job: %v", je.Index, je)
				assert.Greater(t, je.Index, prev, "in order")
				prev = je.Index
			}
			rows, err := countJobs(ctx, db, schema, mailKind, "available")
			require.NoError(t, err)
			assert.Equal(t, n-len(tt.bad), rows, "every other job is stored")
			var stored []int
			r, err := db.Query(ctx, "SELECT (args->>'n')::int FROM "+schema+".river_job WHERE args ? 'n' ORDER BY 1")
			require.NoError(t, err)
			for r.Next() {
				var v int
				require.NoError(t, r.Scan(&v))
				stored = append(stored, v)
			}
			require.NoError(t, r.Err())
			for _, v := range stored {
				assert.NotContains(t, tt.bad, v, "a refused job's index is not stored")
			}
			assert.Len(t, stored, n-len(tt.bad))
		})
	}
}

func TestHandoffStoresNoneWhenEveryJobIsRefused(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	h := bgriver.NewHandoff(insertOnlyClient(t, db, schema), nil)
	err := h.Handoff(ctx, []bgpool.JobArgs{noteArgs{Note: "\x00"}, badOptsArgs{}})
	require.Error(t, err)
	var je *bgpool.JobError
	assert.False(t, errors.As(err, &je), "not a JobError: the whole batch failed: %v", err)
	rows, err := countJobs(ctx, db, schema, mailKind, "")
	require.NoError(t, err)
	assert.Zero(t, rows)
}

func TestHandoffStoresNoneWhenTheContextHasEnded(t *testing.T) {
	db, schema := testSchema(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h := bgriver.NewHandoff(insertOnlyClient(t, db, schema), nil)
	err := h.Handoff(ctx, []bgpool.JobArgs{mailArgs{N: 1}, badArgs{}})
	require.Error(t, err)
	assert.ErrorIs(t, err, context.Canceled)
	var je *bgpool.JobError
	assert.False(t, errors.As(err, &je), "not a JobError: the whole batch failed: %v", err)
	rows, err := countJobs(context.Background(), db, schema, mailKind, "")
	require.NoError(t, err)
	assert.Zero(t, rows)
}

// receiptArgs are unique by their idempotency key: River stores one row per
// key, however many times the job is inserted.
type receiptArgs struct {
	Key   string `json:"key" river:"unique"`
	Email string `json:"email"`
}

func (receiptArgs) Kind() string { return "bgriver_test_receipt" }

func (receiptArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

func TestHandoffRetriedWithUniqueJobsStoresEachJobOnce(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	h := bgriver.NewHandoff(insertOnlyClient(t, db, schema), nil)
	batch := []bgpool.JobArgs{
		receiptArgs{Key: "signup-1", Email: "ada@example.com"},
		receiptArgs{Key: "signup-2", Email: "bob@example.com"},
	}
	require.NoError(t, h.Handoff(ctx, batch))
	// The retry of a hand-off whose commit went through although the call
	// returned an error (its reply came after the deadline), with one job
	// more: the stored ones are skipped, the new one stored.
	retry := append(batch, receiptArgs{Key: "signup-3", Email: "cy@example.com"})
	require.NoError(t, h.Handoff(ctx, retry))
	require.NoError(t, h.Handoff(ctx, batch[:1]), "the same unique job alone")

	var keys []string
	r, err := db.Query(ctx, "SELECT args->>'key' FROM "+schema+".river_job WHERE kind = $1 ORDER BY 1", receiptArgs{}.Kind())
	require.NoError(t, err)
	for r.Next() {
		var k string
		require.NoError(t, r.Scan(&k))
		keys = append(keys, k)
	}
	require.NoError(t, r.Err())
	assert.Equal(t, []string{"signup-1", "signup-2", "signup-3"}, keys, "one row per idempotency key")
}

func TestHandoffWithoutUniqueJobsStoresARetryTwice(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	h := bgriver.NewHandoff(insertOnlyClient(t, db, schema), nil)
	job := []bgpool.JobArgs{mailArgs{N: 1}}
	require.NoError(t, h.Handoff(ctx, job))
	require.NoError(t, h.Handoff(ctx, job))
	rows, err := countJobs(ctx, db, schema, mailKind, "")
	require.NoError(t, err)
	assert.Equal(t, 2, rows, "without UniqueOpts a retried hand-off stores the job again: what the README warns of")
}

func TestDrainHandsOffEveryJobButTheRefusedOne(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	var mu sync.Mutex
	var handled []error
	p, err := bgpool.New(1,
		bgpool.WithQueueSize(100),
		bgpool.WithHandoff(bgriver.NewHandoff(insertOnlyClient(t, db, schema), nil)),
		bgpool.WithErrorHandler(func(_ context.Context, err error) {
			mu.Lock()
			defer mu.Unlock()
			handled = append(handled, err)
		}),
	)
	require.NoError(t, err)
	started := make(chan struct{})
	blocker := bgpool.NewJob(func(ctx context.Context, _ noteArgs) error {
		close(started)
		<-ctx.Done() // the one worker is busy until Shutdown gives up
		return ctx.Err()
	})
	require.NoError(t, blocker.Submit(ctx, p, noteArgs{}))
	<-started
	work := bgpool.NewJob(func(context.Context, mailArgs) error { return nil })
	bad := bgpool.NewJob(func(context.Context, badArgs) error { return nil })
	for i := range 99 {
		if i == 40 {
			require.NoError(t, bad.Submit(ctx, p, badArgs{}))
		}
		require.NoError(t, work.Submit(ctx, p, mailArgs{N: i}))
	}
	require.Equal(t, 100, p.Stats().Queued)

	shutdownCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err = p.Shutdown(shutdownCtx)
	var se *bgpool.ShutdownError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 99, se.HandedOff, "every job but the refused one handed off")
	s := p.Stats()
	assert.Equal(t, uint64(99), s.HandedOff)
	assert.Equal(t, uint64(2), s.Abandoned, "the running job and the refused one")
	rows, err := countJobs(ctx, db, schema, mailKind, "available")
	require.NoError(t, err)
	assert.Equal(t, 99, rows, "River's table holds the 99")
	mu.Lock()
	defer mu.Unlock()
	var je *bgpool.JobError
	assert.True(t, slices.ContainsFunc(handled, func(e error) bool { return errors.As(e, &je) }),
		"the error handler hears of the refused job: %v", handled)
}
