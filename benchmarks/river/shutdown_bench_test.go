package river_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/bgpool/bgpool"
	bgriver "github.com/bgpool/bgpool/contrib/river"
)

// BenchmarkShutdownHandoff is the deploy of the issue: 100,000 Jobs queued
// behind a task that holds the only worker, and Shutdown with a grace of 2s
// or 10s and River's hand-off (NewHandoff). It reports how many Jobs
// Shutdown counted HandedOff, how many rows River holds, and how long
// Shutdown took. Under -short it queues 10,000.
func BenchmarkShutdownHandoff(b *testing.B) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	for _, grace := range []time.Duration{2 * time.Second, 10 * time.Second} {
		b.Run(fmt.Sprintf("jobs=%d/grace=%v", n, grace), func(b *testing.B) {
			var handed, rows, took float64
			for b.Loop() {
				db, schema := benchSchema(b)
				c, err := river.NewClient(riverpgxv5.New(db), &river.Config{Schema: schema})
				if err != nil {
					b.Fatal(err)
				}
				p, err := bgpool.New(1, bgpool.WithQueueSize(n), bgpool.WithHandoff(bgriver.NewHandoff(c, nil)),
					bgpool.WithLogger(slog.New(slog.DiscardHandler)))
				if err != nil {
					b.Fatal(err)
				}
				started := make(chan struct{})
				if err := p.Submit(context.Background(), func(ctx context.Context) error {
					close(started)
					<-ctx.Done()
					return ctx.Err()
				}); err != nil {
					b.Fatal(err)
				}
				<-started
				job := bgpool.NewJob(func(context.Context, signupArgs) error { return nil })
				for i := range n {
					if err := job.Submit(context.Background(), p, signupArgs{Email: fmt.Sprintf("u%d@example.com", i), User: int64(i)}); err != nil {
						b.Fatal(err)
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), grace)
				start := time.Now()
				err = p.Shutdown(ctx)
				took = time.Since(start).Seconds()
				cancel()
				var se *bgpool.ShutdownError
				if !errors.As(err, &se) {
					b.Fatalf("Shutdown: %v", err)
				}
				// A call under way at the deadline is counted when it returns.
				for p.Stats().Queued > 0 {
					time.Sleep(10 * time.Millisecond)
				}
				handed = float64(p.Stats().HandedOff)
				var count int64
				if err := db.QueryRow(context.Background(), "SELECT count(*) FROM "+schema+".river_job").Scan(&count); err != nil {
					b.Fatal(err)
				}
				rows = float64(count)
			}
			b.ReportMetric(handed, "handed-off")
			b.ReportMetric(rows, "rows")
			b.ReportMetric(took, "shutdown-s")
		})
	}
}
