package bgriver_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
	bgriver "github.com/bgpool/bgpool/contrib/river"
)

// inFlight is work that cannot be called back once started, such as a mail
// on its way to the provider: it counts its runs, tells when River cancels
// its context, and returns only when the test releases it.
type inFlight struct {
	runs      atomic.Int32
	started   chan struct{} // closed when the first run starts
	cancelled chan struct{} // closed when the first run's ctx ends
	release   chan struct{} // closed by the test: every run returns
	job       *bgpool.Job[mailArgs]
}

func newInFlight() *inFlight {
	f := &inFlight{started: make(chan struct{}), cancelled: make(chan struct{}), release: make(chan struct{})}
	f.job = bgpool.NewJob(func(ctx context.Context, _ mailArgs) error {
		if f.runs.Add(1) == 1 {
			close(f.started)
			context.AfterFunc(ctx, func() { close(f.cancelled) })
		}
		<-f.release
		return nil
	})
	return f
}

// workerClient starts a River client that works mailArgs inside a pool of
// its own, as a second process would; cfg's zero fields get the test's
// fast polling.
func workerClient(t *testing.T, db *pgxpool.Pool, schema string, job *bgpool.Job[mailArgs], jobTimeout time.Duration) *river.Client[pgx.Tx] {
	t.Helper()
	p, err := bgpool.New(2)
	require.NoError(t, err)
	workers := river.NewWorkers()
	bgriver.AddWorker(workers, p, job)
	c, err := river.NewClient(riverpgxv5.New(db), &river.Config{
		Schema:            schema,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}},
		Workers:           workers,
		JobTimeout:        jobTimeout,
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, c.Stop(ctx), "stop the River client")
		assert.NoError(t, p.Shutdown(ctx), "shut the pool down")
	})
	return c
}

// secondRunWindow is how long client B has to run the job a second time
// after client A's context for it has ended: River makes a job that A's
// worker gave up available at once (StopAndCancel) or within about a second
// (a timeout's first retry), and B polls every 20ms.
const secondRunWindow = 3 * time.Second

// assertRunOnce gives B the window to run the job a second time, releases
// the work, waits until River has completed the job, and checks that the
// work ran once and what River recorded.
func assertRunOnce(t *testing.T, db *pgxpool.Pool, schema string, f *inFlight) {
	t.Helper()
	ctx := context.Background()
	deadline := time.After(secondRunWindow)
	for f.runs.Load() < 2 {
		select {
		case <-deadline:
		case <-time.After(10 * time.Millisecond):
			continue
		}
		break
	}
	close(f.release)
	var j jobRow
	require.Eventually(t, func() bool {
		var err error
		j, err = readJob(ctx, db, schema, mailKind)
		return err == nil && j.State == "completed"
	}, 15*time.Second, 10*time.Millisecond, "River completes the job")
	assert.Equal(t, int32(1), f.runs.Load(), "the work ran exactly once")
	assert.Equal(t, 1, j.Attempt, "River recorded one attempt")
	assert.Empty(t, j.Errors, "and no error: the work completed")
}

func TestAddWorkerRunsAJobOnceWhenItsClientIsStoppedAndCancelled(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	f := newInFlight()
	a := workerClient(t, db, schema, f.job, 0)
	_, err := a.Insert(ctx, mailArgs{N: 1}, nil)
	require.NoError(t, err)
	<-f.started

	stopped := make(chan error, 1)
	go func() { stopped <- a.StopAndCancel(ctx) }()
	var stopErr error
	returned := false
	select {
	case <-f.cancelled: // the work's ctx ends: the work goes on, and A's Work waits for it
	case stopErr = <-stopped: // A's Work did not wait for its work
		returned = true
	case <-time.After(10 * time.Second):
		t.Fatal("StopAndCancel neither cancelled the work's ctx nor returned within 10s")
	}
	workerClient(t, db, schema, f.job, 0) // B, in a process of its own, starts
	assertRunOnce(t, db, schema, f)
	if !returned {
		stopErr = <-stopped
	}
	assert.NoError(t, stopErr, "A's StopAndCancel returns once its work has")
}

func TestAddWorkerRunsAJobOnceWhenItsJobTimeoutPasses(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	f := newInFlight()
	a := workerClient(t, db, schema, f.job, 300*time.Millisecond)
	_, err := a.Insert(ctx, mailArgs{N: 1}, nil)
	require.NoError(t, err)
	<-f.started
	select {
	case <-f.cancelled: // the job timeout has passed, and reached the work
	case <-time.After(time.Second): // it has passed, but not reached the work
	}
	workerClient(t, db, schema, f.job, 300*time.Millisecond) // B starts beside A
	assertRunOnce(t, db, schema, f)
}
