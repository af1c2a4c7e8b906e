package bgpool_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

// listen returns a listener on a free loopback port.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// newServer returns an http.Server for h whose error log goes to t.Log.
func newServer(t *testing.T, h http.Handler) *http.Server {
	return &http.Server{Handler: h, ErrorLog: log.New(testWriter{t}, "", 0)}
}

// startServe runs bgpool.Serve on a goroutine and returns the channel that
// receives its result and the function that ends its ctx (SIGTERM, as it
// were). The test's cleanup ends ctx and waits for Serve to return.
func startServe(t *testing.T, srv *http.Server, ln net.Listener, p *bgpool.Pool, grace time.Duration, opts ...bgpool.ServeOption) (<-chan error, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		result <- bgpool.Serve(ctx, srv, ln, p, grace, opts...)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(20 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return result, cancel
}

// refused reports whether a new connection to addr is refused.
func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		// Refused once the listener is closed; reset if the dial was still in
		// the listen backlog when it closed.
		return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
	}
	c.Close()
	return false
}

func TestServeRejectsBadInput(t *testing.T) {
	p := newPool(t, 1, quietLogger())
	srv := &http.Server{}
	tests := []struct {
		name  string
		ctx   context.Context
		srv   *http.Server
		ln    bool
		pool  *bgpool.Pool
		grace time.Duration
		opts  []bgpool.ServeOption
		want  string
	}{
		{"a nil context", nil, srv, true, p, time.Second, nil, "bgpool: Serve: nil context"},
		{"a nil server", context.Background(), nil, true, p, time.Second, nil, "bgpool: Serve: nil server"},
		{"a nil listener", context.Background(), srv, false, p, time.Second, nil, "bgpool: Serve: nil listener"},
		{"a nil pool", context.Background(), srv, true, nil, time.Second, nil, "bgpool: Serve: nil pool"},
		{"a negative grace", context.Background(), srv, true, p, -time.Second, nil, "must not be negative"},
		{"a nil option", context.Background(), srv, true, p, time.Second, []bgpool.ServeOption{nil}, "option 0 is nil"},
		{"a negative shutdown delay", context.Background(), srv, true, p, time.Second,
			[]bgpool.ServeOption{bgpool.WithShutdownDelay(-time.Second, nil)}, "delay must not be negative"},
		{"a shutdown delay longer than grace", context.Background(), srv, true, p, time.Second,
			[]bgpool.ServeOption{bgpool.WithShutdownDelay(2*time.Second, nil)}, "longer than grace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ln net.Listener
			if tt.ln {
				ln = listen(t)
			}
			err := bgpool.Serve(tt.ctx, tt.srv, ln, tt.pool, tt.grace, tt.opts...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			if ln != nil {
				assert.True(t, refused(ln.Addr().String()), "Serve closes the listener")
			}
		})
	}
	done := make(chan struct{})
	require.NoError(t, p.TrySubmit(context.Background(), func(context.Context) error { close(done); return nil }),
		"bad input leaves the pool alone")
	<-done

	err := bgpool.ListenAndServe(context.Background(), nil, p, time.Second)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "bgpool: ListenAndServe: nil server")
}

func TestServeLetsInFlightRequestsSubmitAndDrainsThePool(t *testing.T) {
	p := newPool(t, 2, quietLogger())
	handlerIn := make(chan struct{})
	handlerGo := make(chan struct{})
	taskHold := make(chan struct{})
	taskDone := make(chan struct{})
	goErr := make(chan error, 1)
	h := bgpool.Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(handlerIn)
		<-handlerGo
		err := bgpool.Go(r, func(context.Context) error {
			<-taskHold
			close(taskDone)
			return nil
		})
		goErr <- err
		w.WriteHeader(http.StatusAccepted)
	}))
	srv := newServer(t, h)
	shutdownBegan := make(chan struct{})
	srv.RegisterOnShutdown(func() { close(shutdownBegan) })
	ln := listen(t)
	addr := ln.Addr().String()
	result, stop := startServe(t, srv, ln, p, 10*time.Second)

	status := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + addr)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	wait(t, handlerIn, "the request")
	stop() // SIGTERM
	wait(t, shutdownBegan, "srv.Shutdown")
	assert.True(t, refused(addr), "new connections are refused once srv.Shutdown has begun")

	close(handlerGo) // the in-flight request submits a task during the shutdown
	assert.NoError(t, wait(t, goErr, "Go"))
	assert.Equal(t, http.StatusAccepted, wait(t, status, "the response"))

	select {
	case err := <-result:
		t.Fatalf("Serve returned %v before the pool drained", err)
	default:
	}
	close(taskHold)
	assert.NoError(t, wait(t, result, "Serve"))
	wait(t, taskDone, "the task")
	s := p.Stats()
	assert.Equal(t, uint64(1), s.Completed)
	assert.ErrorIs(t, p.TrySubmit(context.Background(), func(context.Context) error { return nil }), bgpool.ErrClosed)
}

func TestServeAbandonsWhatDoesNotFinishWithinGrace(t *testing.T) {
	const grace = 200 * time.Millisecond

	t.Run("a task longer than grace is abandoned and counted", func(t *testing.T) {
		p := newPool(t, 2, quietLogger())
		started := make(chan struct{})
		h := bgpool.Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			assert.NoError(t, bgpool.Go(r, func(ctx context.Context) error {
				close(started)
				<-ctx.Done() // cancelled by the pool at the deadline
				return ctx.Err()
			}))
		}))
		ln := listen(t)
		result, stop := startServe(t, newServer(t, h), ln, p, grace)
		resp, _ := get(t, "http://"+ln.Addr().String())
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		wait(t, started, "the task")

		begin := time.Now()
		stop()
		err := wait(t, result, "Serve")
		elapsed := time.Since(begin)
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "abandoned 1 task ")
		assert.GreaterOrEqual(t, elapsed, grace)
		assert.Less(t, elapsed, grace+2*time.Second)
		assert.Equal(t, uint64(1), p.Stats().Abandoned)
	})

	t.Run("a request longer than grace has its connection closed", func(t *testing.T) {
		p := newPool(t, 2, quietLogger())
		entered := make(chan struct{})
		release := make(chan struct{})
		returned := make(chan struct{})
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer close(returned)
			close(entered)
			<-release
		})
		t.Cleanup(func() {
			close(release)
			<-returned
		})
		ln := listen(t)
		result, stop := startServe(t, newServer(t, h), ln, p, grace)
		clientErr := make(chan error, 1)
		go func() {
			resp, err := http.Get("http://" + ln.Addr().String())
			if err == nil {
				resp.Body.Close()
			}
			clientErr <- err
		}()
		wait(t, entered, "the request")

		begin := time.Now()
		stop()
		err := wait(t, result, "Serve")
		elapsed := time.Since(begin)
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "in-flight requests did not finish")
		assert.Less(t, elapsed, grace+2*time.Second)
		assert.Error(t, wait(t, clientErr, "the client"), "the client's connection was closed")
	})
}

// failingListener is a listener whose Accept fails when told to.
type failingListener struct {
	net.Listener
	fail chan struct{}
}

var errListenerBroke = errors.New("listener broke")

func (l *failingListener) Accept() (net.Conn, error) {
	<-l.fail
	return nil, errListenerBroke
}

func TestServeShutsThePoolDownWhenTheListenerFails(t *testing.T) {
	p := newPool(t, 1, quietLogger())
	ran := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		close(ran)
		return nil
	}))
	ln := &failingListener{Listener: listen(t), fail: make(chan struct{})}
	result, _ := startServe(t, newServer(t, http.NotFoundHandler()), ln, p, 5*time.Second)
	close(ln.fail)

	err := wait(t, result, "Serve")
	assert.ErrorIs(t, err, errListenerBroke)
	wait(t, ran, "the queued task")
	assert.ErrorIs(t, p.TrySubmit(context.Background(), func(context.Context) error { return nil }), bgpool.ErrClosed)
	assert.Equal(t, uint64(1), p.Stats().Completed)
}

// closeFailingListener is a listener whose Close closes the listener it
// wraps and then reports errClose.
type closeFailingListener struct {
	net.Listener
}

var errClose = errors.New("close boom")

func (l closeFailingListener) Close() error {
	_ = l.Listener.Close()
	return errClose
}

// When the listener's Close fails at the end of Serve, Serve returns that
// error, as a close error: not one saying the server did not finish within
// grace, nor one about in-flight requests or a deadline. The pool is shut
// down all the same (its queued task runs, it refuses tasks), and the
// listener is closed.
func TestServeReportsTheListenersCloseErrorNotAGraceTimeout(t *testing.T) {
	p := newPool(t, 1, quietLogger())
	hold := make(chan struct{})
	ran := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		<-hold
		close(ran)
		return nil
	}))
	ln := closeFailingListener{listen(t)}
	addr := ln.Addr().String()
	srv := newServer(t, http.NotFoundHandler())
	shutdownBegan := make(chan struct{})
	srv.RegisterOnShutdown(func() { close(shutdownBegan) })
	result, stop := startServe(t, srv, ln, p, 10*time.Second)
	resp, _ := get(t, "http://"+addr)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)

	stop()
	wait(t, shutdownBegan, "srv.Shutdown")
	close(hold) // the pool's shutdown still runs the task
	err := wait(t, result, "Serve")
	require.Error(t, err)
	assert.ErrorIs(t, err, errClose)
	assert.Contains(t, err.Error(), "bgpool: serve: closing the listener: close boom")
	assert.NotContains(t, err.Error(), "in-flight requests", "no request was in flight")
	assert.NotErrorIs(t, err, context.DeadlineExceeded)
	assert.NotContains(t, err.Error(), "did not finish within grace")
	wait(t, ran, "the queued task")
	assert.Equal(t, uint64(1), p.Stats().Completed)
	assert.ErrorIs(t, p.TrySubmit(context.Background(), func(context.Context) error { return nil }), bgpool.ErrClosed)
	assert.True(t, refused(addr), "the listener is closed all the same")
}

func TestServeWithShutdownDelayKeepsServingWhileNotReady(t *testing.T) {
	const delay = 2 * time.Second
	p := newPool(t, 1, quietLogger())
	var ready bgpool.Readiness
	mux := http.NewServeMux()
	mux.Handle("GET /readyz", &ready)
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	})
	ln := listen(t)
	base := "http://" + ln.Addr().String()
	result, stop := startServe(t, newServer(t, mux), ln, p, 5*time.Second, bgpool.WithShutdownDelay(delay, &ready))

	resp, body := get(t, base+"/readyz")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "ready\n", body)

	begin := time.Now()
	stop() // SIGTERM
	for {
		resp, _ := get(t, base+"/readyz")
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		require.Less(t, time.Since(begin), delay, "readiness did not turn 503")
		time.Sleep(5 * time.Millisecond)
	}
	resp, body = get(t, base+"/hello")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "requests are still served during the delay")
	assert.Equal(t, "hello", body)
	require.Less(t, time.Since(begin), delay, "the test was too slow to check the delay")

	assert.NoError(t, wait(t, result, "Serve"))
	assert.GreaterOrEqual(t, time.Since(begin), delay)
}

func TestListenAndServe(t *testing.T) {
	t.Run("serves on srv.Addr until ctx ends", func(t *testing.T) {
		p := newPool(t, 1, quietLogger())
		addrs := make(chan string, 1)
		srv := newServer(t, bgpool.StatsHandler(p))
		srv.Addr = "127.0.0.1:0"
		srv.BaseContext = func(ln net.Listener) context.Context {
			addrs <- ln.Addr().String()
			return context.Background()
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		result := make(chan error, 1)
		go func() { result <- bgpool.ListenAndServe(ctx, srv, p, 5*time.Second) }()

		addr := wait(t, addrs, "the listener")
		resp, _ := get(t, "http://"+addr)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		cancel()
		assert.NoError(t, wait(t, result, "ListenAndServe"))
		assert.True(t, refused(addr))
	})

	t.Run("returns the listen error and shuts the pool down", func(t *testing.T) {
		p := newPool(t, 1, quietLogger())
		taken := listen(t)
		srv := newServer(t, http.NotFoundHandler())
		srv.Addr = taken.Addr().String()
		err := bgpool.ListenAndServe(context.Background(), srv, p, time.Second)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "bgpool: ListenAndServe: ")
		assert.ErrorIs(t, err, syscall.EADDRINUSE)
		assert.ErrorIs(t, p.TrySubmit(context.Background(), func(context.Context) error { return nil }), bgpool.ErrClosed)
	})
}

func TestServeCountsTheShutdownDelayInsideGrace(t *testing.T) {
	const delay, grace = time.Second, 1500 * time.Millisecond
	p := newPool(t, 1, quietLogger())
	started := make(chan struct{})
	h := bgpool.Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.NoError(t, bgpool.Go(r, func(ctx context.Context) error {
			close(started)
			<-ctx.Done() // longer than any grace
			return ctx.Err()
		}))
	}))
	ln := listen(t)
	result, stop := startServe(t, newServer(t, h), ln, p, grace, bgpool.WithShutdownDelay(delay, nil))
	get(t, "http://"+ln.Addr().String())
	wait(t, started, "the task")

	begin := time.Now()
	stop()
	err := wait(t, result, "Serve")
	elapsed := time.Since(begin)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, elapsed, grace)
	assert.Less(t, elapsed, grace+delay-300*time.Millisecond, "the delay is part of grace, not added to it")
	assert.Equal(t, uint64(1), p.Stats().Abandoned)
}

func TestServeWaitsForHijackedHandlersAndAdmitsTheirTasks(t *testing.T) {
	p := newPool(t, 2, quietLogger())
	hijacked, release := make(chan struct{}), make(chan struct{})
	submitted := make(chan error, 1)
	ran := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			submitted <- err
			return
		}
		defer conn.Close()
		close(hijacked)
		<-release // the websocket lives on after SIGTERM
		submitted <- bgpool.Go(r, func(context.Context) error { close(ran); return nil })
	})
	ln := listen(t)
	result, stop := startServe(t, newServer(t, bgpool.Middleware(p)(mux)), ln, p, 5*time.Second)
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	receive(t, hijacked, 5*time.Second, "the handler did not hijack its connection")
	stop() // SIGTERM
	select {
	case err := <-result:
		t.Fatalf("Serve returned %v while a hijacked handler was still running", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	assert.NoError(t, receive(t, submitted, 5*time.Second, "the handler did not submit"), "its task is admitted")
	receive(t, ran, 5*time.Second, "the task did not run")
	assert.NoError(t, receive(t, result, 5*time.Second, "Serve did not return"))
}

func TestServeKeepsItsGraceWhenTheHandoffDoesNotAnswer(t *testing.T) {
	// A request that uses most of the grace, and a Job queued behind it
	// for a store that never answers: Serve still returns at its deadline.
	h := &store{perCall: time.Hour}
	p, err := bgpool.New(1, bgpool.WithHandoff(h), bgpool.WithQueueSize(4), quietLogger())
	require.NoError(t, err)
	job := bgpool.NewJob(func(ctx context.Context, _ mailArgs) error { <-ctx.Done(); return ctx.Err() })
	inHandler := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_ = job.Go(r, mailArgs{}) // takes the worker until the deadline
		_ = job.Go(r, mailArgs{}) // queued: handed off at Shutdown
		close(inHandler)
		time.Sleep(600 * time.Millisecond) // uses the grace
	})
	ln := listen(t)
	result, stop := startServe(t, newServer(t, bgpool.Middleware(p)(mux)), ln, p, time.Second)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/")
		if err == nil {
			resp.Body.Close()
		}
	}()
	receive(t, inHandler, 5*time.Second, "the request did not reach the handler")
	start := time.Now()
	stop()
	err = receive(t, result, 10*time.Second, "Serve did not return")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 1500*time.Millisecond, "Serve returns at its one deadline: %v", err)
}
