// Command chi shows bgpool with the chi router: chi takes net/http
// middleware as it is, so bgpool.Middleware and bgpool.Go need no adapter.
//
//	cd examples/chi && go run . -addr 127.0.0.1:8080
//	curl -X POST http://127.0.0.1:8080/thumbnails/42
//	curl http://127.0.0.1:8080/debug/bgpool
//
// It stops on SIGTERM or SIGINT, draining the pool within 10 seconds.
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

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/bgpool/bgpool"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	pool, err := bgpool.New(8)
	if err != nil {
		slog.Error("new pool", "error", err)
		os.Exit(1)
	}
	srv := &http.Server{Addr: *addr, Handler: router(pool), ReadHeaderTimeout: 5 * time.Second}
	if err := bgpool.ListenAndServe(ctx, srv, pool, 10*time.Second); err != nil {
		slog.Error("server stopped", "error", err)
		os.Exit(1)
	}
}

// router returns the application's routes, with every request able to
// submit background tasks.
func router(pool *bgpool.Pool) http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	// The stats endpoint stays outside the shedding middleware, so that it
	// answers under load.
	r.Method(http.MethodGet, "/debug/bgpool", bgpool.StatsHandler(pool))
	r.Group(func(r chi.Router) {
		r.Use(bgpool.Middleware(pool, bgpool.WithShedding(time.Second)))
		r.Post("/thumbnails/{id}", postThumbnail)
	})
	return r
}

// postThumbnail renders a thumbnail in the background and answers 202 at
// once, or 503 when the pool has no room.
func postThumbnail(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	err := bgpool.Go(r, func(ctx context.Context) error {
		return renderThumbnail(ctx, id)
	})
	if errors.Is(err, bgpool.ErrOverloaded) || errors.Is(err, bgpool.ErrClosed) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too busy, retry later", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, "rendering thumbnail %s\n", id)
}

// rendered, when set, is told about every thumbnail rendered (for the test).
var rendered func(id string)

func renderThumbnail(ctx context.Context, id string) error {
	select {
	case <-time.After(10 * time.Millisecond): // the work
	case <-ctx.Done():
		return ctx.Err()
	}
	if rendered != nil {
		rendered(id)
	}
	return nil
}
