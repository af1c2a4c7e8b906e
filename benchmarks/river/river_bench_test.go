// Package river_test measures what durability costs: a Job run in process
// against the same Job inserted into River on PostgreSQL and worked inside
// the same pool (contrib/river). It is a module of its own so that the
// benchmarks module does not take River's dependencies (and its go 1.26).
package river_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/bgpool/bgpool"
	bgriver "github.com/bgpool/bgpool/contrib/river"
)

type noopArgs struct{ N int }

func (noopArgs) Kind() string { return "bench_noop" }

const databaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// BenchmarkJob reports jobs/s from submission (or insertion) to completion
// of b.N empty Jobs, on a pool of 8.
func BenchmarkJob(b *testing.B) {
	b.Run("engine=in-process", func(b *testing.B) {
		p, err := bgpool.New(8, bgpool.WithQueueSize(1024))
		if err != nil {
			b.Fatal(err)
		}
		var done atomic.Int64
		job := bgpool.NewJob(func(context.Context, noopArgs) error { done.Add(1); return nil })
		ctx := context.Background()
		b.ReportAllocs()
		start := time.Now()
		n := 0
		for b.Loop() {
			if err := job.Submit(ctx, p, noopArgs{N: n}); err != nil {
				b.Fatal(err)
			}
			n++
		}
		if err := p.Shutdown(ctx); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(done.Load())/time.Since(start).Seconds(), "jobs/s")
	})

	b.Run("engine=river", func(b *testing.B) {
		ctx := context.Background()
		db, err := pgxpool.New(ctx, databaseURL)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		if err := db.Ping(ctx); err != nil {
			b.Fatalf("PostgreSQL is not answering at %s: %v", databaseURL, err)
		}
		schema := fmt.Sprintf("bgriver_bench_%x", rand.Uint64())
		if _, err := db.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
			b.Fatal(err)
		}
		defer db.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") //nolint:errcheck
		m, err := rivermigrate.New(riverpgxv5.New(db), &rivermigrate.Config{Schema: schema})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
			b.Fatal(err)
		}

		p, err := bgpool.New(8, bgpool.WithQueueSize(1024))
		if err != nil {
			b.Fatal(err)
		}
		var done atomic.Int64
		job := bgpool.NewJob(func(context.Context, noopArgs) error { done.Add(1); return nil })
		workers := river.NewWorkers()
		bgriver.AddWorker(workers, p, job)
		c, err := river.NewClient(riverpgxv5.New(db), &river.Config{
			Schema:            schema,
			Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 100}},
			Workers:           workers,
			FetchCooldown:     time.Millisecond,
			FetchPollInterval: 10 * time.Millisecond,
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		start := time.Now()
		n := 0
		for b.Loop() {
			if _, err := c.Insert(ctx, noopArgs{N: n}, nil); err != nil {
				b.Fatal(err)
			}
			n++
		}
		for done.Load() < int64(n) {
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "jobs/s")
		stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := c.Stop(stopCtx); err != nil {
			b.Fatal(err)
		}
		if err := p.Shutdown(stopCtx); err != nil {
			b.Fatal(err)
		}
	})
}
