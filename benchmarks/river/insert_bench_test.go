package river_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/bgpool/bgpool"
	bgriver "github.com/bgpool/bgpool/contrib/river"
)

// signupArgs are args of a realistic size: an e-mail address and an id,
// about 60 bytes of JSON.
type signupArgs struct {
	Email string `json:"email"`
	User  int64  `json:"user"`
}

func (signupArgs) Kind() string { return "bench_signup" }

// benchSchema makes a schema with River's tables for b and returns a
// cleanup that drops it.
func benchSchema(b *testing.B) (*pgxpool.Pool, string) {
	b.Helper()
	ctx := context.Background()
	db, err := pgxpool.New(ctx, databaseURL)
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Ping(ctx); err != nil {
		db.Close()
		b.Fatalf("PostgreSQL is not answering at %s: %v", databaseURL, err)
	}
	schema := fmt.Sprintf("bgriver_bench_%x", rand.Uint64())
	if _, err := db.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = db.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		db.Close()
	})
	m, err := rivermigrate.New(riverpgxv5.New(db), &rivermigrate.Config{Schema: schema})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		b.Fatal(err)
	}
	return db, schema
}

// BenchmarkInsertChunk measures how fast River takes a chunk of jobs, the
// way a hand-off gives them: one call per chunk of 100, 1,000 or 5,000
// args, with InsertMany (one transaction, INSERT ... RETURNING, unique jobs
// handled), InsertManyFast (COPY FROM, no rows back, a unique conflict fails
// the chunk) and bgriver.NewHandoff (InsertMany plus the encoding check).
// It reports jobs/s and ms per chunk; the table grows across iterations, as
// it does under a real hand-off.
func BenchmarkInsertChunk(b *testing.B) {
	insertMany := func(c *river.Client[pgx.Tx]) func(context.Context, []bgpool.JobArgs) error {
		return func(ctx context.Context, jobs []bgpool.JobArgs) error {
			params := make([]river.InsertManyParams, len(jobs))
			for i, a := range jobs {
				params[i] = river.InsertManyParams{Args: a}
			}
			_, err := c.InsertMany(ctx, params)
			return err
		}
	}
	insertManyFast := func(c *river.Client[pgx.Tx]) func(context.Context, []bgpool.JobArgs) error {
		return func(ctx context.Context, jobs []bgpool.JobArgs) error {
			params := make([]river.InsertManyParams, len(jobs))
			for i, a := range jobs {
				params[i] = river.InsertManyParams{Args: a}
			}
			_, err := c.InsertManyFast(ctx, params)
			return err
		}
	}
	handoff := func(c *river.Client[pgx.Tx]) func(context.Context, []bgpool.JobArgs) error {
		return bgriver.NewHandoff(c, nil).Handoff
	}
	for _, m := range []struct {
		name   string
		insert func(*river.Client[pgx.Tx]) func(context.Context, []bgpool.JobArgs) error
	}{
		{"InsertMany", insertMany},
		{"InsertManyFast", insertManyFast},
		{"NewHandoff", handoff},
	} {
		for _, chunk := range []int{100, 1000, 5000} {
			b.Run(fmt.Sprintf("method=%s/chunk=%d", m.name, chunk), func(b *testing.B) {
				db, schema := benchSchema(b)
				c, err := river.NewClient(riverpgxv5.New(db), &river.Config{Schema: schema})
				if err != nil {
					b.Fatal(err)
				}
				insert := m.insert(c)
				jobs := make([]bgpool.JobArgs, chunk)
				ctx := context.Background()
				b.ReportAllocs()
				var n int64
				var elapsed time.Duration
				for b.Loop() {
					b.StopTimer()
					for i := range jobs {
						n++
						jobs[i] = signupArgs{Email: fmt.Sprintf("user-%d@example.com", n), User: n}
					}
					b.StartTimer()
					start := time.Now()
					if err := insert(ctx, jobs); err != nil {
						b.Fatal(err)
					}
					elapsed += time.Since(start)
				}
				b.ReportMetric(float64(n)/elapsed.Seconds(), "jobs/s")
				b.ReportMetric(elapsed.Seconds()*1000/float64(b.N), "ms/chunk")
			})
		}
	}
}

// BenchmarkHandoff100k measures what Shutdown's hand-off of 100,000 queued
// Jobs costs: the jobs go to River in chunks, one call per chunk, from one
// goroutine or two at once, with InsertMany, InsertManyFast or NewHandoff.
// It reports the seconds for the 100,000. With -short (a smoke run) it
// hands off 10,000 and reports the seconds they took, times ten.
func BenchmarkHandoff100k(b *testing.B) {
	total := 100_000
	if testing.Short() {
		total = 10_000
	}
	for _, method := range []string{"InsertMany", "InsertManyFast", "NewHandoff"} {
		for _, chunk := range []int{1000, 5000} {
			for _, par := range []int{1, 2} {
				b.Run(fmt.Sprintf("method=%s/chunk=%d/goroutines=%d", method, chunk, par), func(b *testing.B) {
					db, schema := benchSchema(b)
					c, err := river.NewClient(riverpgxv5.New(db), &river.Config{Schema: schema})
					if err != nil {
						b.Fatal(err)
					}
					h := bgriver.NewHandoff(c, nil)
					ctx := context.Background()
					var n int64
					b.ReportAllocs()
					var elapsed time.Duration
					for b.Loop() {
						b.StopTimer()
						chunks := make(chan []river.InsertManyParams, total/chunk)
						for range total / chunk {
							params := make([]river.InsertManyParams, chunk)
							for i := range params {
								n++
								params[i] = river.InsertManyParams{Args: signupArgs{Email: fmt.Sprintf("user-%d@example.com", n), User: n}}
							}
							chunks <- params
						}
						close(chunks)
						b.StartTimer()
						start := time.Now()
						errs := make(chan error, par)
						for range par {
							go func() {
								for params := range chunks {
									var err error
									switch method {
									case "InsertMany":
										_, err = c.InsertMany(ctx, params)
									case "InsertManyFast":
										_, err = c.InsertManyFast(ctx, params)
									default:
										jobs := make([]bgpool.JobArgs, len(params))
										for i, p := range params {
											jobs[i] = p.Args
										}
										err = h.Handoff(ctx, jobs)
									}
									if err != nil {
										errs <- err
										return
									}
								}
								errs <- nil
							}()
						}
						for range par {
							if err := <-errs; err != nil {
								b.Fatal(err)
							}
						}
						elapsed += time.Since(start)
					}
					b.ReportMetric(elapsed.Seconds()/float64(b.N)*100_000/float64(total), "s/100k")
					b.ReportMetric(float64(total*b.N)/elapsed.Seconds(), "jobs/s")
				})
			}
		}
	}
}
