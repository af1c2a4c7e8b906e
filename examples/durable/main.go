// Command durable is a signup service whose welcome mail survives deploys,
// crashes and kill -9: the mail is a River job on PostgreSQL, inserted in
// the same transaction as the user row, and worked inside a bgpool.Pool.
//
// One binary, two processes (see README.md), from examples/durable:
//
//	go run . -mode worker   # works welcome mails inside a pool of 4
//	go run . -mode web      # POST /signup?email=... inserts the user and the mail in one transaction
//
// The web process also runs an in-process Job on its own pool (an audit
// line per signup) with the Spill policy and a River hand-off: under a
// spike the overflow goes to River instead of being dropped, and on SIGTERM
// or SIGINT bgpool.ListenAndServe drains the pool and hands what is still
// queued to River within the grace. The worker process works both kinds.
// On SIGTERM or SIGINT it stops River (running jobs finish; the rest stay in
// the table) and then drains its pool. Delivery is at least once: after a
// crash, River runs the jobs that were running again (-rescue-after later),
// and the mail job records its mail and completes its River job in one
// transaction, so that a rerun sends nothing twice.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/bgpool/bgpool"
	bgriver "github.com/bgpool/bgpool/contrib/river"
)

// WelcomeArgs is the welcome mail: one args type for River and for bgpool.
type WelcomeArgs struct {
	Email string `json:"email"`
}

func (WelcomeArgs) Kind() string { return "welcome_mail" }

// AuditArgs is an audit line, written in process when there is room.
type AuditArgs struct {
	Event string `json:"event"`
	Email string `json:"email"`
}

func (AuditArgs) Kind() string { return "audit" }

var audit = bgpool.NewJob(func(ctx context.Context, a AuditArgs) error {
	slog.InfoContext(ctx, "audit", "event", a.Event, "email", a.Email)
	return nil
})

// welcomeJob is the welcome mail's work. River delivers a job at least once:
// after a crash, the job that was running runs again. So the work records
// the mail (a row in durable_mails, the outbox that a relay sends, with the
// River job's ID as the provider's idempotency key) and completes the River
// job in the same transaction: both or neither. A rerun finds the record
// and only completes the job. delay stands for the provider's latency.
func welcomeJob(db *pgxpool.Pool, delay time.Duration) *bgpool.Job[WelcomeArgs] {
	return bgpool.NewJob(func(ctx context.Context, a WelcomeArgs) error {
		job, ok := bgriver.JobFromContext[WelcomeArgs](ctx)
		if !ok {
			return errors.New("durable: welcome mail outside a River job")
		}
		return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, "INSERT INTO durable_mails (job_id, email) VALUES ($1, $2) ON CONFLICT DO NOTHING", job.ID, a.Email)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				slog.InfoContext(ctx, "welcome mail already sent", "email", a.Email, "job", job.ID)
			} else {
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return ctx.Err()
				}
				slog.InfoContext(ctx, "welcome mail sent", "email", a.Email, "job", job.ID)
			}
			_, err = river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job)
			return err
		})
	})
}

// config is what the flags set.
type config struct {
	mode, addr, dbURL string
	grace             time.Duration
	rescueAfter       time.Duration // worker: River's RescueStuckJobsAfter; its JobTimeout is half of it
	mailDelay         time.Duration // worker: how long sending a mail takes
}

func main() {
	var cfg config
	flag.StringVar(&cfg.mode, "mode", "web", "web or worker")
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "web: address to listen on")
	flag.StringVar(&cfg.dbURL, "db", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL URL; add &search_path=NAME for a schema of your own (it must exist)")
	flag.DurationVar(&cfg.grace, "grace", 10*time.Second, "how long shutdown may take, from SIGTERM or SIGINT to exit")
	flag.DurationVar(&cfg.rescueAfter, "rescue-after", time.Minute, "worker: how long a job may stay running before River runs it again (after a crash); the job timeout is half of it")
	flag.DurationVar(&cfg.mailDelay, "mail-delay", 0, "worker: how long sending a welcome mail takes (the provider's latency)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		slog.Error("durable stopped", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	db, err := pgxpool.New(context.Background(), cfg.dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrate(context.Background(), db); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	switch cfg.mode {
	case "web":
		return web(ctx, db, cfg.addr, cfg.grace)
	case "worker":
		return worker(ctx, db, cfg)
	}
	return fmt.Errorf("unknown -mode %q: web or worker", cfg.mode)
}

// migrate creates River's tables, the users and the mails tables, in the
// first schema of the connection's search_path, under an advisory lock,
// since the web and the worker process may start together.
func migrate(ctx context.Context, db *pgxpool.Pool) error {
	conn, err := db.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	const lockID = 0x6267706f6f6c // "bgpool"
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockID); err != nil {
		return err
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", lockID) //nolint:errcheck // released with the session anyway
	m, err := rivermigrate.New(riverpgxv5.New(db), nil)
	if err != nil {
		return err
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return err
	}
	_, err = db.Exec(ctx, `CREATE TABLE IF NOT EXISTS durable_users (
		id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
	CREATE TABLE IF NOT EXISTS durable_mails (
		job_id bigint PRIMARY KEY, email text UNIQUE NOT NULL, sent_at timestamptz NOT NULL DEFAULT now())`)
	return err
}

// web serves POST /signup until ctx ends, then drains within grace.
func web(ctx context.Context, db *pgxpool.Pool, addr string, grace time.Duration) error {
	client, err := river.NewClient(riverpgxv5.New(db), &river.Config{}) // insert only
	if err != nil {
		return err
	}
	p, err := bgpool.New(4,
		bgpool.WithQueueSize(64),
		bgpool.WithPolicy(bgpool.Spill),
		bgpool.WithHandoff(bgriver.NewHandoff(client, nil)),
	)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: addr, Handler: handler(db, client, p), ReadHeaderTimeout: 5 * time.Second}
	slog.Info("web: listening", "addr", addr)
	err = bgpool.ListenAndServe(ctx, srv, p, grace)
	slog.Info("web: stopped", "stats", fmt.Sprintf("%+v", p.Stats()))
	return err
}

// handler is the web process's HTTP API, with p attached to each request.
func handler(db *pgxpool.Pool, client *river.Client[pgx.Tx], p *bgpool.Pool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /signup", signup(db, client))
	mux.Handle("GET /stats", bgpool.StatsHandler(p))
	return bgpool.Middleware(p)(mux)
}

// uniqueViolation is PostgreSQL's SQLSTATE for a duplicate key.
const uniqueViolation = "23505"

// signup inserts the user and the welcome mail in one transaction: both, or
// neither. An address already signed up answers 409. The audit line runs in
// process, or goes to River if the pool is full or shutting down.
func signup(db *pgxpool.Pool, client *river.Client[pgx.Tx]) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		email := r.FormValue("email")
		if email == "" {
			http.Error(w, "email is required", http.StatusBadRequest)
			return
		}
		err := pgx.BeginFunc(r.Context(), db, func(tx pgx.Tx) error {
			if _, err := tx.Exec(r.Context(), "INSERT INTO durable_users (email) VALUES ($1)", email); err != nil {
				return err
			}
			_, err := client.InsertTx(r.Context(), tx, WelcomeArgs{Email: email}, nil)
			return err
		})
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == uniqueViolation:
			http.Error(w, email+" has already signed up", http.StatusConflict)
			return
		case err != nil:
			slog.ErrorContext(r.Context(), "signup failed", "email", email, "error", err)
			http.Error(w, "signup failed; try again later", http.StatusInternalServerError)
			return
		}
		auditLine(r, client, AuditArgs{Event: "signup", Email: email})
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "welcome, %s: your mail is on its way\n", email)
	}
}

// auditLine submits the audit line to the request's pool. A pool that
// refuses it (closed once its Shutdown has begun, say, for a request that
// outlives the server's drain) does not lose it: the line goes to River,
// which the worker process works, and if River refuses it too, the line is
// logged as lost, with its content.
func auditLine(r *http.Request, client *river.Client[pgx.Tx], a AuditArgs) {
	err := audit.Go(r, a)
	if err == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if _, errRiver := client.Insert(ctx, a, nil); errRiver != nil {
		slog.ErrorContext(ctx, "audit lost", "event", a.Event, "email", a.Email, "error", errors.Join(err, errRiver))
		return
	}
	slog.WarnContext(ctx, "audit refused by the pool; handed to River", "event", a.Event, "email", a.Email, "error", err)
}

// worker works welcome mails and audit lines inside a pool until ctx ends.
func worker(ctx context.Context, db *pgxpool.Pool, cfg config) error {
	p, err := bgpool.New(4, bgpool.WithQueueSize(4), bgpool.WithPolicy(bgpool.Reject))
	if err != nil {
		return err
	}
	workers := river.NewWorkers()
	bgriver.AddWorker(workers, p, welcomeJob(db, cfg.mailDelay))
	bgriver.AddWorker(workers, p, audit)
	client, err := river.NewClient(riverpgxv5.New(db), &river.Config{
		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 8}},
		Workers: workers,
		// A job still running after RescueStuckJobsAfter belongs to a
		// worker that died (kill -9, a crash): River runs it again. The
		// default is an hour; the job timeout stays below it, so that a
		// live job is never taken for a dead one.
		RescueStuckJobsAfter: cfg.rescueAfter,
		JobTimeout:           cfg.rescueAfter / 2,
	})
	if err != nil {
		return err
	}
	if err := client.Start(context.Background()); err != nil {
		return err
	}
	slog.Info("worker: started", "rescue_after", cfg.rescueAfter)
	<-ctx.Done()

	// River first, so that nothing new reaches the pool, then the pool; one
	// grace for both.
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.grace)
	defer cancel()
	errRiver := client.Stop(stopCtx)
	errPool := p.Shutdown(stopCtx)
	slog.Info("worker: stopped", "stats", fmt.Sprintf("%+v", p.Stats()))
	return errors.Join(errRiver, errPool)
}
