package bgpool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/bgpool/bgpool"
)

// A handler answers at once and leaves the slow part to the pool.
func ExampleMiddleware() {
	pool, _ := bgpool.New(4)
	mails := make(chan string, 1)

	mux := http.NewServeMux()
	mux.HandleFunc("POST /signup", func(w http.ResponseWriter, r *http.Request) {
		email := r.FormValue("email")
		err := bgpool.Go(r, func(ctx context.Context) error {
			mails <- "welcome mail sent to " + email // slow work, after the response
			return nil
		})
		if err != nil {
			http.Error(w, "try again later", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	srv := httptest.NewServer(bgpool.Middleware(pool)(mux))
	defer srv.Close()

	resp, _ := http.PostForm(srv.URL+"/signup", map[string][]string{"email": {"ada@example.com"}})
	resp.Body.Close()
	fmt.Println(resp.Status)
	fmt.Println(<-mails)

	_ = pool.Shutdown(context.Background())
	// Output:
	// 202 Accepted
	// welcome mail sent to ada@example.com
}

// Without WithShedding, the handler decides what an overloaded pool means
// for the client; 503 with Retry-After is the usual answer.
func ExampleGo() {
	pool, _ := bgpool.New(1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.Reject))
	hold := make(chan struct{})
	started := make(chan struct{})
	_ = pool.Submit(context.Background(), func(context.Context) error { close(started); <-hold; return nil })
	<-started // the only worker is busy and there is no queue

	handler := func(w http.ResponseWriter, r *http.Request) {
		err := bgpool.Go(r, func(context.Context) error { return nil })
		if errors.Is(err, bgpool.ErrOverloaded) || errors.Is(err, bgpool.ErrClosed) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too busy, retry later", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
	srv := httptest.NewServer(bgpool.Middleware(pool)(http.HandlerFunc(handler)))
	defer srv.Close()

	resp, _ := http.Get(srv.URL)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status, "Retry-After:", resp.Header.Get("Retry-After"))
	fmt.Print(string(body))

	close(hold)
	_ = pool.Shutdown(context.Background())
	// Output:
	// 503 Service Unavailable Retry-After: 1
	// too busy, retry later
}

// With WithAfterResponse, tasks start only once the handler has returned.
func ExampleWithAfterResponse() {
	pool, _ := bgpool.New(1)
	done := make(chan struct{})
	handler := func(w http.ResponseWriter, r *http.Request) {
		_ = bgpool.Go(r, func(context.Context) error {
			fmt.Println("task runs")
			close(done)
			return nil
		})
		fmt.Println("handler returns")
	}
	srv := httptest.NewServer(bgpool.Middleware(pool, bgpool.WithAfterResponse())(http.HandlerFunc(handler)))
	defer srv.Close()

	resp, _ := http.Get(srv.URL)
	resp.Body.Close()
	<-done
	_ = pool.Shutdown(context.Background())
	// Output:
	// handler returns
	// task runs
}

// Serve runs the server until ctx ends, then shuts down the server and
// drains the pool within one grace period. A real program passes
// signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt).
func ExampleServe() {
	pool, _ := bgpool.New(4)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, stop := context.WithCancel(context.Background())

	mux := http.NewServeMux()
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		_ = bgpool.Go(r, func(ctx context.Context) error {
			time.Sleep(100 * time.Millisecond) // runs to completion after the stop
			return nil
		})
		w.WriteHeader(http.StatusAccepted)
	})
	srv := &http.Server{Handler: bgpool.Middleware(pool)(mux)}

	served := make(chan error, 1)
	go func() { served <- bgpool.Serve(ctx, srv, ln, pool, 10*time.Second) }()

	resp, _ := http.Post("http://"+ln.Addr().String()+"/report", "", nil)
	resp.Body.Close()
	fmt.Println(resp.Status)

	stop() // SIGTERM
	fmt.Println("Serve returned:", <-served)
	fmt.Println("completed:", pool.Stats().Completed)
	// Output:
	// 202 Accepted
	// Serve returned: <nil>
	// completed: 1
}
