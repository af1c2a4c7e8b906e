// Command durable is a signup service whose welcome mail survives deploys,
// crashes and kill -9: the mail is a River job on PostgreSQL, inserted in
// the same transaction as the user row, and worked inside a bgpool.Pool.
//
// One binary, two processes (see README.md):
//
//	go run . -mode worker   # works welcome mails inside a pool of 4
//	go run . -mode web      # POST /signup?email=... inserts the user and the mail in one transaction
//
// The web process also runs an in-process Job on its own pool (an audit
// line per signup) with the Spill policy and a River hand-off: under a
// spike the overflow goes to River instead of being dropped, and on SIGTERM
// bgpool.Serve drains the pool and hands what is still queued to River
// within the grace. The worker process works both kinds. On SIGTERM it
// stops River (running jobs finish; the rest stay in the table) and then
// drains its pool.
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

var (
	welcome = bgpool.NewJob(func(ctx context.Context, a WelcomeArgs) error {
		slog.InfoContext(ctx, "welcome mail sent", "email", a.Email)
		return nil
	})
	audit = bgpool.NewJob(func(ctx context.Context, a AuditArgs) error {
		slog.InfoContext(ctx, "audit", "event", a.Event, "email", a.Email)
		return nil
	})
)

func main() {
	mode := flag.String("mode", "web", "web or worker")
	addr := flag.String("addr", "127.0.0.1:8080", "web: address to listen on")
	dbURL := flag.String("db", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL URL")
	grace := flag.Duration("grace", 10*time.Second, "how long shutdown may take, from SIGTERM to exit")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, *mode, *addr, *dbURL, *grace); err != nil {
		slog.Error("durable stopped", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, mode, addr, dbURL string, grace time.Duration) error {
	db, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrate(context.Background(), db); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	switch mode {
	case "web":
		return web(ctx, db, addr, grace)
	case "worker":
		return worker(ctx, db, grace)
	}
	return fmt.Errorf("unknown -mode %q: web or worker", mode)
}

// migrate creates River's tables and the users table, under an advisory
// lock, since the web and the worker process may start together.
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
		id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`)
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
	mux := http.NewServeMux()
	mux.HandleFunc("POST /signup", signup(db, client))
	mux.Handle("GET /stats", bgpool.StatsHandler(p))
	srv := &http.Server{Addr: addr, Handler: bgpool.Middleware(p)(mux), ReadHeaderTimeout: 5 * time.Second}
	slog.Info("web: listening", "addr", addr)
	err = bgpool.ListenAndServe(ctx, srv, p, grace)
	slog.Info("web: stopped", "stats", fmt.Sprintf("%+v", p.Stats()))
	return err
}

// signup inserts the user and the welcome mail in one transaction: both, or
// neither. The audit line runs in process, or goes to River if the pool is
// full or shutting down.
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
		if err != nil {
			http.Error(w, "signup failed: "+err.Error(), http.StatusInternalServerError)
			return
		}
		if err := audit.Go(r, AuditArgs{Event: "signup", Email: email}); err != nil && !errors.Is(err, bgpool.ErrClosed) {
			slog.WarnContext(r.Context(), "audit not submitted", "error", err)
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "welcome, %s: your mail is on its way\n", email)
	}
}

// worker works welcome mails and audit lines inside a pool until ctx ends.
func worker(ctx context.Context, db *pgxpool.Pool, grace time.Duration) error {
	p, err := bgpool.New(4, bgpool.WithQueueSize(4), bgpool.WithPolicy(bgpool.Reject))
	if err != nil {
		return err
	}
	workers := river.NewWorkers()
	bgriver.AddWorker(workers, p, welcome)
	bgriver.AddWorker(workers, p, audit)
	client, err := river.NewClient(riverpgxv5.New(db), &river.Config{
		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 8}},
		Workers: workers,
	})
	if err != nil {
		return err
	}
	if err := client.Start(context.Background()); err != nil {
		return err
	}
	slog.Info("worker: started")
	<-ctx.Done()

	// River first, so that nothing new reaches the pool, then the pool; one
	// grace for both.
	stopCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	errRiver := client.Stop(stopCtx)
	errPool := p.Shutdown(stopCtx)
	slog.Info("worker: stopped", "stats", fmt.Sprintf("%+v", p.Stats()))
	return errors.Join(errRiver, errPool)
}
