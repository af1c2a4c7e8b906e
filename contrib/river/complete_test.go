package bgriver_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
	bgriver "github.com/bgpool/bgpool/contrib/river"
)

func TestJobFromContextLetsTheWorkCompleteItsJobInItsOwnTransaction(t *testing.T) {
	db, schema := testSchema(t)
	ctx := context.Background()
	_, err := db.Exec(ctx, "CREATE TABLE "+schema+".done (job_id bigint PRIMARY KEY, n int NOT NULL)")
	require.NoError(t, err)
	p, err := bgpool.New(2)
	require.NoError(t, err)
	found := make(chan bool, 1)
	work := bgpool.NewJob(func(ctx context.Context, a mailArgs) error {
		job, ok := bgriver.JobFromContext[mailArgs](ctx)
		found <- ok
		if !ok {
			return nil
		}
		_, other := bgriver.JobFromContext[noteArgs](ctx)
		assert.False(t, other, "another args type finds no job")
		return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO "+schema+".done VALUES ($1, $2)", job.ID, a.N); err != nil {
				return err
			}
			_, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job)
			return err
		})
	})
	c := riverWorker(t, db, schema, p, work)
	res, err := c.Insert(ctx, mailArgs{N: 7}, nil)
	require.NoError(t, err)
	require.True(t, <-found, "the work finds its River job")
	require.Eventually(t, func() bool {
		j, err := readJob(ctx, db, schema, mailKind)
		return err == nil && j.State == "completed"
	}, 10*time.Second, 10*time.Millisecond)
	var n int
	require.NoError(t, db.QueryRow(ctx, "SELECT n FROM "+schema+".done WHERE job_id = $1", res.Job.ID).Scan(&n))
	assert.Equal(t, 7, n, "the record and the completion committed together")
	_, ok := bgriver.JobFromContext[mailArgs](ctx)
	assert.False(t, ok, "outside a work there is no job")
	require.NoError(t, p.Shutdown(ctx))
}
