package bgriver_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgpool/bgpool"
	bgriver "github.com/bgpool/bgpool/contrib/river"
)

// mailArgs are the test jobs' args; Sleep is how long the work takes.
type mailArgs struct {
	N     int           `json:"n"`
	Sleep time.Duration `json:"sleep"`
}

func (mailArgs) Kind() string { return "bgriver_test_mail" }

var mailKind = mailArgs{}.Kind()

// The child processes: the test binary runs itself with BGRIVER_CHILD set
// to one of these, and BGRIVER_SCHEMA, BGRIVER_N and BGRIVER_RESCUE_AFTER.
const (
	childInsertAndWork = "insert-and-work" // insert N jobs, then work them inside a pool until killed
	childWork          = "work"            // work jobs inside a pool until N are completed, then exit 0
)

func TestMain(m *testing.M) {
	if mode := os.Getenv("BGRIVER_CHILD"); mode != "" {
		if err := runChild(mode); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

// runChild is a worker process: a pool of 4, and a River client that works
// mailArgs inside it.
func runChild(mode string) error {
	ctx := context.Background()
	schema := os.Getenv("BGRIVER_SCHEMA")
	n, err := strconv.Atoi(os.Getenv("BGRIVER_N"))
	if err != nil {
		return err
	}
	db, err := connect(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	p, err := bgpool.New(4)
	if err != nil {
		return err
	}
	defer p.Shutdown(context.Background())

	work := bgpool.NewJob(func(ctx context.Context, a mailArgs) error {
		select {
		case <-time.After(a.Sleep):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	workers := river.NewWorkers()
	bgriver.AddWorker(workers, p, work)
	cfg := &river.Config{
		Schema:            schema,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 8}},
		Workers:           workers,
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
	}
	if d, err := time.ParseDuration(os.Getenv("BGRIVER_RESCUE_AFTER")); err == nil {
		cfg.JobTimeout = d / 2
		cfg.RescueStuckJobsAfter = d
	}
	client, err := river.NewClient(riverpgxv5.New(db), cfg)
	if err != nil {
		return err
	}
	if mode == childInsertAndWork {
		params := make([]river.InsertManyParams, n)
		for i := range params {
			params[i] = river.InsertManyParams{Args: mailArgs{N: i, Sleep: 100 * time.Millisecond}}
		}
		if _, err := client.InsertMany(ctx, params); err != nil {
			return err
		}
	}
	if err := client.Start(ctx); err != nil {
		return err
	}
	if mode == childInsertAndWork {
		select {} // until the parent kills us
	}
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		done, err := countJobs(ctx, db, schema, mailKind, "completed")
		if err != nil {
			return err
		}
		if done >= n {
			stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			return client.Stop(stopCtx)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%d jobs not completed within 90s", n)
}

// startChild starts the test binary as a child process in mode.
func startChild(t *testing.T, mode, schema string, n int, rescueAfter time.Duration) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		"BGRIVER_CHILD="+mode,
		"BGRIVER_SCHEMA="+schema,
		"BGRIVER_N="+strconv.Itoa(n),
		"BGRIVER_RESCUE_AFTER="+rescueAfter.String(),
	)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(t, cmd.Start())
	return cmd
}

// waitChild waits for a child that should exit 0 by itself, killing it
// after limit.
func waitChild(t *testing.T, cmd *exec.Cmd, limit time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "the worker process")
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the worker process did not finish within %v", limit)
	}
}

// assertBalanced checks the pool's Stats invariant.
func assertBalanced(t *testing.T, s bgpool.Stats) {
	t.Helper()
	assert.Equal(t, s.Submitted, s.Ended()+uint64(s.Queued+s.Running), "Submitted = Ended()+Queued+Running: %+v", s)
}

func TestDrainHandsOffToRiver(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	p, err := bgpool.New(1,
		bgpool.WithQueueSize(100),
		bgpool.WithHandoff(bgriver.NewHandoff(insertOnlyClient(t, db, schema), nil)),
		bgpool.WithErrorHandler(func(context.Context, error) {}),
	)
	require.NoError(t, err)

	started := make(chan struct{})
	var once atomic.Bool
	work := bgpool.NewJob(func(ctx context.Context, a mailArgs) error {
		if once.CompareAndSwap(false, true) {
			close(started)
		}
		<-ctx.Done() // the one worker is busy until Shutdown gives up
		return ctx.Err()
	})
	require.NoError(t, work.Submit(ctx, p, mailArgs{N: -1}))
	<-started
	for i := range 100 {
		require.NoError(t, work.Submit(ctx, p, mailArgs{N: i}))
	}
	queued := p.Stats().Queued
	require.Equal(t, 100, queued)

	shutdownCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err = p.Shutdown(shutdownCtx)
	require.Error(t, err)
	var se *bgpool.ShutdownError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 100, se.HandedOff, "the Shutdown error counts the jobs handed off")

	s := p.Stats()
	assert.Equal(t, uint64(queued), s.HandedOff, "HandedOff equals the queued count")
	assert.Equal(t, uint64(1), s.Abandoned, "the running job")
	assertBalanced(t, s)
	rows, err := countJobs(ctx, db, schema, mailKind, "available")
	require.NoError(t, err)
	assert.Equal(t, queued, rows, "River's table holds the handed-off jobs")

	// A restarted worker process completes every one of them.
	waitChild(t, startChild(t, childWork, schema, queued, 0), 60*time.Second)
	done, err := countJobs(ctx, db, schema, mailKind, "completed")
	require.NoError(t, err)
	assert.Equal(t, queued, done, "completed by the restarted worker")
}

func TestSpillToRiverUnderOverload(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	p, err := bgpool.New(2,
		bgpool.WithQueueSize(3),
		bgpool.WithPolicy(bgpool.Spill),
		bgpool.WithHandoff(bgriver.NewHandoff(insertOnlyClient(t, db, schema), nil)),
	)
	require.NoError(t, err)

	release := make(chan struct{})
	var running atomic.Int32
	work := bgpool.NewJob(func(ctx context.Context, a mailArgs) error {
		running.Add(1)
		<-release
		return nil
	})
	for i := range 2 {
		require.NoError(t, work.Submit(ctx, p, mailArgs{N: i}))
	}
	require.Eventually(t, func() bool { return running.Load() == 2 }, 5*time.Second, time.Millisecond)
	const overflow = 25
	for i := range 3 + overflow {
		require.NoError(t, work.Submit(ctx, p, mailArgs{N: 2 + i}))
	}

	s := p.Stats()
	assert.Equal(t, uint64(overflow), s.HandedOff, "handed off")
	assert.Equal(t, 3, s.Queued)
	assertBalanced(t, s)
	rows, err := countJobs(ctx, db, schema, mailKind, "")
	require.NoError(t, err)
	assert.Equal(t, overflow, rows, "River rows equal the overflow count")

	close(release)
	require.NoError(t, p.Shutdown(ctx))
	s = p.Stats()
	assert.Equal(t, uint64(5), s.Completed)
	assertBalanced(t, s)
}

// riverWorker starts a River client that works mailArgs inside p.
func riverWorker(t *testing.T, db *pgxpool.Pool, schema string, p *bgpool.Pool, work *bgpool.Job[mailArgs]) *river.Client[pgx.Tx] {
	t.Helper()
	workers := river.NewWorkers()
	bgriver.AddWorker(workers, p, work)
	c, err := river.NewClient(riverpgxv5.New(db), &river.Config{
		Schema:            schema,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 10}},
		Workers:           workers,
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
	})
	return c
}

func TestAddWorkerRunsRiverJobsInsideThePool(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	var peak, now atomic.Int32
	var observed atomic.Int32
	p, err := bgpool.New(2, bgpool.WithObserver(func(ev bgpool.TaskEvent) {
		if ev.Outcome == bgpool.OutcomeCompleted {
			observed.Add(1)
		}
	}))
	require.NoError(t, err)
	work := bgpool.NewJob(func(ctx context.Context, a mailArgs) error {
		n := now.Add(1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		time.Sleep(a.Sleep)
		now.Add(-1)
		return nil
	})
	c := riverWorker(t, db, schema, p, work)
	const n = 20
	params := make([]river.InsertManyParams, n)
	for i := range params {
		params[i] = river.InsertManyParams{Args: mailArgs{N: i, Sleep: 10 * time.Millisecond}}
	}
	_, err = c.InsertMany(ctx, params)
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		done, err := countJobs(ctx, db, schema, mailKind, "completed")
		return err == nil && done == n
	}, 30*time.Second, 20*time.Millisecond, "River completes every job")
	s := p.Stats()
	assert.Equal(t, uint64(n), s.Completed, "the pool ran and counted every job")
	assert.Equal(t, int32(n), observed.Load(), "the pool's observer saw every job")
	assert.LessOrEqual(t, peak.Load(), int32(2), "the pool's cap held while River had 10 workers")
	require.NoError(t, p.Shutdown(ctx))
}

// jobRow is what River recorded of a job.
type jobRow struct {
	State   string
	Attempt int
	Errors  []string // each attempt's error
	Snoozes int64    // the "snoozes" key of its metadata
	Later   bool     // scheduled_at in the future
}

// readJob reads the one job of kind in schema.
func readJob(ctx context.Context, db *pgxpool.Pool, schema, kind string) (jobRow, error) {
	var j jobRow
	err := db.QueryRow(ctx, `SELECT state::text, attempt,
		coalesce((SELECT array_agg(e->>'error') FROM unnest(errors) e), '{}'),
		coalesce((metadata->>'snoozes')::bigint, 0), scheduled_at > now()
		FROM `+schema+`.river_job WHERE kind = $1`, kind).
		Scan(&j.State, &j.Attempt, &j.Errors, &j.Snoozes, &j.Later)
	return j, err
}

// fullPool returns a pool of one worker, busy until the test ends, with no
// queue and the Reject policy: it refuses every task with ErrOverloaded.
func fullPool(t *testing.T) *bgpool.Pool {
	t.Helper()
	p, err := bgpool.New(1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.Reject))
	require.NoError(t, err)
	release, started := make(chan struct{}), make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		close(started)
		<-release
		return nil
	}))
	<-started
	t.Cleanup(func() {
		close(release)
		assert.NoError(t, p.Shutdown(context.Background()))
	})
	return p
}

func TestAddWorkerSnoozesWhenThePoolIsFull(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	p := fullPool(t)
	var ran atomic.Bool
	work := bgpool.NewJob(func(context.Context, mailArgs) error { ran.Store(true); return nil })
	c := riverWorker(t, db, schema, p, work)
	_, err := c.Insert(ctx, mailArgs{N: 1}, nil)
	require.NoError(t, err)

	// River records a snooze as the job made available again later: same
	// attempt, no error, one more snooze in its metadata.
	var j jobRow
	require.Eventually(t, func() bool {
		j, err = readJob(ctx, db, schema, mailKind)
		return err == nil && j.Snoozes >= 1
	}, 10*time.Second, 5*time.Millisecond, "the job is snoozed")
	assert.False(t, ran.Load(), "the work did not run")
	assert.Zero(t, j.Attempt, "a snooze uses no attempt")
	assert.Empty(t, j.Errors, "a snooze records no error")
	assert.Positive(t, p.Stats().Rejected, "the pool counted the refusal")
}

func TestAddWorkerFailsTheJobWhenThePoolIsClosed(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	p, err := bgpool.New(1)
	require.NoError(t, err)
	require.NoError(t, p.Shutdown(ctx)) // a closed pool refuses every task with ErrClosed
	var ran atomic.Bool
	work := bgpool.NewJob(func(context.Context, mailArgs) error { ran.Store(true); return nil })
	c := riverWorker(t, db, schema, p, work)
	_, err = c.Insert(ctx, mailArgs{N: 1}, nil)
	require.NoError(t, err)

	var j jobRow
	require.Eventually(t, func() bool {
		j, err = readJob(ctx, db, schema, mailKind)
		return err == nil && len(j.Errors) >= 1
	}, 10*time.Second, 5*time.Millisecond, "River records the error")
	assert.False(t, ran.Load(), "the work did not run")
	assert.GreaterOrEqual(t, j.Attempt, 1, "the refusal used an attempt")
	assert.Zero(t, j.Snoozes, "a closed pool is not snoozed")
	assert.Contains(t, j.Errors[0], bgpool.ErrClosed.Error())
}

func TestAddWorkerStopsSnoozingAfterMaxSnoozes(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	p := fullPool(t)
	work := bgpool.NewJob(func(context.Context, mailArgs) error { return nil })
	c := riverWorker(t, db, schema, p, work)
	// The job starts one snooze short of the bound, as if snoozed
	// MaxSnoozes-1 times already, so that the test takes seconds, not the
	// bound's 15.
	meta := fmt.Appendf(nil, `{"snoozes": %d}`, bgriver.MaxSnoozes-1)
	_, err := c.Insert(ctx, mailArgs{N: 1}, &river.InsertOpts{Metadata: meta})
	require.NoError(t, err)

	var j jobRow
	require.Eventually(t, func() bool {
		j, err = readJob(ctx, db, schema, mailKind)
		return err == nil && len(j.Errors) >= 1
	}, 15*time.Second, 5*time.Millisecond, "River records the refusal as an error")
	assert.Equal(t, int64(bgriver.MaxSnoozes), j.Snoozes, "snoozed up to the bound, and no further")
	assert.Equal(t, 1, j.Attempt, "the refusal past the bound used an attempt")
	assert.Contains(t, j.Errors[0], bgpool.ErrOverloaded.Error())
	assert.Contains(t, j.Errors[0], fmt.Sprintf("after %d snoozes", bgriver.MaxSnoozes))
}

func TestKill9LosesNothing(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	const n = 60
	const rescueAfter = 2 * time.Second

	// The first worker inserts n jobs and works them, 100ms each, four at
	// a time, until it is killed in the middle.
	first := startChild(t, childInsertAndWork, schema, n, rescueAfter)
	require.Eventually(t, func() bool {
		done, err1 := countJobs(ctx, db, schema, mailKind, "completed")
		running, err2 := countJobs(ctx, db, schema, mailKind, "running")
		return err1 == nil && err2 == nil && done >= 8 && running >= 1
	}, 30*time.Second, 10*time.Millisecond, "the first worker completes some jobs and is working on others")
	require.NoError(t, first.Process.Signal(syscall.SIGKILL))
	_ = first.Wait()
	done, err := countJobs(ctx, db, schema, mailKind, "completed")
	require.NoError(t, err)
	running, err := countJobs(ctx, db, schema, mailKind, "running")
	require.NoError(t, err)
	t.Logf("killed with %d of %d jobs completed and %d running", done, n, running)
	require.Less(t, done, n, "the kill came before the end")
	require.Positive(t, running, "jobs were in flight when the worker was killed")

	// The second worker rescues the stuck jobs (once it is River's leader,
	// when the dead one's lease has run out) and completes everything.
	start := time.Now()
	waitChild(t, startChild(t, childWork, schema, n, rescueAfter), 120*time.Second)
	t.Logf("the second worker finished in %v", time.Since(start).Round(time.Millisecond))
	done, err = countJobs(ctx, db, schema, mailKind, "completed")
	require.NoError(t, err)
	assert.Equal(t, n, done, "every job completed exactly once in River's table")
	total, err := countJobs(ctx, db, schema, mailKind, "")
	require.NoError(t, err)
	assert.Equal(t, n, total, "no job was duplicated")
}
