// Command server is a small HTTP service that runs background work on a
// bgpool.Pool and shuts down gracefully on SIGTERM or SIGINT.
//
//	go run ./examples/server -addr 127.0.0.1:8080 -grace 10s
//	curl -X POST 'http://127.0.0.1:8080/jobs?duration=2s'   # 202 at once; the job runs after
//	curl http://127.0.0.1:8080/stats                        # the pool's Stats as JSON
//	curl http://127.0.0.1:8080/readyz                       # 200, or 503 once shutting down
//
// On SIGTERM or SIGINT it logs "shutting down", then stops accepting
// connections (after -ready-delay, during which /readyz answers 503 and
// requests are still served), lets in-flight requests finish, lets queued and
// running jobs finish, and exits 0 if all of that took less than -grace. Jobs
// still running then are cancelled and counted Abandoned; it logs the error
// and exits 1. Everything it prints goes to stderr, in this order: "listening
// on http://ADDR", the log, and last the final Stats, "stats: {...}". A bad
// flag makes it print the error and the usage and exit 2, before it starts
// anything.
//
// Under go run, Ctrl-C reaches the go command too (the terminal signals its
// whole foreground process group). The go command ignores the signal, waits
// for the server, and then exits 1 whatever the server's status, since it
// was interrupted (golang/go#40467); when the server exits 1, it also prints
// "exit status 1" after the server's last line. kill -TERM on the pid of go
// run stops the go command only, and leaves the server running. For the
// exit status, and for kill -TERM, run the built binary:
//
//	go build -o server ./examples/server && ./server -grace 10s
//	kill -TERM <its pid>    # or Ctrl-C: exit 0 after a clean drain
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bgpool/bgpool"
)

func main() {
	cfg := parseFlags()
	stats, err := run(cfg)
	if err != nil {
		slog.Error("server stopped", "error", err)
	}
	if stats != nil { // the pool was made: its final Stats are the last line
		fmt.Fprintf(os.Stderr, "stats: %s\n", stats)
	}
	if err != nil {
		os.Exit(1)
	}
}

// config holds the command line's flags.
type config struct {
	addr              string
	grace, readyDelay time.Duration
	workers, queue    int
}

// parseFlags parses the command line. On a bad flag it does what the flag
// package does, before anything has started: it prints the error and the
// usage, and exits 2.
func parseFlags() config {
	var c config
	flag.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to listen on; port 0 picks a free port")
	flag.DurationVar(&c.grace, "grace", 10*time.Second, "how long shutdown may take, from SIGTERM to exit")
	flag.DurationVar(&c.readyDelay, "ready-delay", 0, "how long to keep serving, with /readyz answering 503, before closing the listener")
	flag.IntVar(&c.workers, "workers", 8, "jobs running at once")
	flag.IntVar(&c.queue, "queue", 64, "jobs waiting for a worker")
	flag.Parse()
	if err := c.check(); err != nil {
		fmt.Fprintln(flag.CommandLine.Output(), err)
		flag.Usage()
		os.Exit(2)
	}
	return c
}

// check reports the values that bgpool.New and bgpool.ListenAndServe would
// refuse, naming the flag. Left to them, the error would come only once the
// server had begun to start, and read as a failure to serve.
func (c config) check() error {
	switch {
	case c.workers < 1:
		return errors.New("-workers must be at least 1")
	case c.queue < 0:
		return errors.New("-queue must not be negative")
	case c.grace < 0:
		return errors.New("-grace must not be negative")
	case c.readyDelay < 0:
		return errors.New("-ready-delay must not be negative")
	case c.readyDelay > c.grace:
		return fmt.Errorf("-ready-delay %v is longer than -grace %v", c.readyDelay, c.grace)
	}
	return nil
}

// run serves until SIGTERM or SIGINT and drains the pool. It returns the
// pool's final Stats as JSON (nil if the pool could not be made) and what
// went wrong, and prints nothing after the shutdown has ended, so that main
// can print the error and then the Stats last.
func run(c config) ([]byte, error) {
	pool, err := bgpool.New(c.workers, bgpool.WithQueueSize(c.queue))
	if err != nil {
		return nil, err
	}

	// The process stops on SIGTERM (Kubernetes, systemd) or SIGINT (Ctrl-C).
	// The signal is logged before ctx ends, so the line comes before
	// anything the shutdown does, and only if a signal came.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(signals)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case sig := <-signals: // the shutdown begins once ctx ends
			slog.Info("shutting down", "signal", sig.String(), "grace", c.grace)
			cancel()
		case <-ctx.Done(): // ListenAndServe returned on its own: no signal to log
		}
	}()

	var ready bgpool.Readiness

	// Requests to /jobs get their pool from the middleware; while the pool
	// has no room, they are answered 503 without reaching the handler. The
	// stats and the probe stay outside it, so that they answer under load.
	withPool := bgpool.Middleware(pool, bgpool.WithShedding(time.Second))
	mux := http.NewServeMux()
	mux.Handle("POST /jobs", withPool(http.HandlerFunc(postJob)))
	mux.Handle("GET /stats", bgpool.StatsHandler(pool))
	mux.Handle("GET /readyz", &ready)

	srv := &http.Server{
		Addr:              c.addr,
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		// Requests must not inherit ctx, or SIGTERM would cancel the ones in
		// flight; the listener is printed so that port 0 can be used.
		BaseContext: func(ln net.Listener) context.Context {
			fmt.Fprintf(os.Stderr, "listening on http://%s\n", ln.Addr())
			return context.Background()
		},
	}
	err = bgpool.ListenAndServe(ctx, srv, pool, c.grace, bgpool.WithShutdownDelay(c.readyDelay, &ready))
	cancel()
	<-watched

	stats, _ := json.Marshal(pool.Stats())
	return stats, err
}

// postJob starts a job that takes ?duration= (default 1s) and answers 202 at
// once, or 503 when the pool has no room for it.
func postJob(w http.ResponseWriter, r *http.Request) {
	d := time.Second
	if s := r.URL.Query().Get("duration"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			http.Error(w, "bad duration: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	err := bgpool.Go(r, func(ctx context.Context) error {
		select {
		case <-time.After(d): // the work
			slog.InfoContext(ctx, "job done", "duration", d)
			return nil
		case <-ctx.Done(): // shutdown's deadline passed
			return ctx.Err()
		}
	})
	switch {
	case errors.Is(err, bgpool.ErrOverloaded), errors.Is(err, bgpool.ErrClosed):
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too busy, retry later", http.StatusServiceUnavailable)
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	default:
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintln(w, "accepted")
	}
}
